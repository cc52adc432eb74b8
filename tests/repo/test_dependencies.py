"""dvc.yaml's code deps are derived from the imports, not kept by hand: for every stage as DVC
resolves it (foreach expanded), the project files its script imports (transitively,
function-level imports included) and the package's templates they name must be exactly the code
deps it declares. And a stage can read only the params it declares."""

import re
import subprocess
import sys

import pytest
from conftest import REPO, load_script

DEPS = load_script("tools/deps.py")  # the derivation `make deps` writes into dvc.yaml
code_closure, stage_script, is_code, rerun_table_of = (DEPS.code_closure, DEPS.stage_script, DEPS.is_code,
                                                       DEPS.rerun_table)


def mismatches(stages: dict) -> dict[str, dict[str, set[str]]]:
    """{stage: {"undeclared": imported but not a dep, "unused": a code dep it never imports}}."""
    out = {}
    for name, stage in stages.items():
        imported = code_closure(stage_script(stage["cmd"]))
        declared = {d for d in stage.get("deps", []) if is_code(d)}
        if imported != declared:
            out[name] = {"undeclared": imported - declared, "unused": declared - imported}
    return out


def spec() -> dict:
    """The stages as DVC resolves them (foreach expanded), by mnist_vae.io.pipeline."""
    from mnist_vae.io import pipeline

    return pipeline.stages(REPO / "dvc.yaml", REPO / "params.yaml")


def dvc_resolved() -> dict[str, dict]:
    """The same, by DVC itself: {address: {"cmd", "deps", "params", "outs"}}."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        out = {}
        for stage in repo.index.stages:
            params = sorted(key for dep in stage.deps if hasattr(dep, "params") for key in dep.params)
            out[stage.addressing] = {
                "cmd": stage.cmd,
                "deps": sorted(d.def_path for d in stage.deps if not hasattr(d, "params")),
                "params": params,
                "outs": sorted(o.def_path for o in stage.outs),
            }
        return out


def ours_like_dvc(stages: dict) -> dict[str, dict]:
    def paths(entries):
        return sorted(next(iter(e)) if isinstance(e, dict) else e for e in entries or [])

    return {name: {"cmd": s["cmd"], "deps": paths(s.get("deps")), "params": paths(s.get("params")),
                   "outs": paths([*(s.get("outs") or []), *(s.get("metrics") or []), *(s.get("plots") or [])])}
            for name, s in stages.items()}


def test_our_resolution_of_dvc_yaml_is_dvcs_own():
    """The stage scripts resolve foreach without importing DVC; they must agree with DVC."""
    ours = ours_like_dvc(spec())
    assert list(ours) == list(dvc_resolved())
    assert ours == dvc_resolved()
    assert {"train@vae20d", "evaluate@vae20d-b512", "render-gifs@vae2d", "anomaly-kl-stats@vae20d-b512"} <= set(ours)


def test_every_stage_declares_exactly_the_code_it_imports():
    """On the stages as DVC resolves them; and `make deps --check` agrees (it would write nothing)."""
    assert mismatches(spec()) == {}
    proc = subprocess.run([sys.executable, "tools/deps.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_make_deps_rewrites_a_stale_list_and_names_itself_when_checking():
    text = (REPO / "dvc.yaml").read_text()
    stale = text.replace("src/mnist_vae/core/step.py, ", "", 1).replace(
        "[stages/evaluate.py, ", "[stages/evaluate.py, src/mnist_vae/viz/gifs.py, ", 1)
    fixed, changes = DEPS.rewrite(stale)
    assert changes == {"train": {"added": ["src/mnist_vae/core/step.py"], "removed": []},
                       "evaluate": {"added": [], "removed": ["src/mnist_vae/viz/gifs.py"]}}
    assert fixed == text  # the committed file is the tool's own output, layout and comments included
    assert DEPS.rewrite(text) == (text, {})


def test_a_removed_or_extra_dep_line_is_caught():
    planted = spec()
    deps = planted["train@vae20d"]["deps"]
    deps.remove("src/mnist_vae/core/step.py")
    planted["evaluate@vae20d"]["deps"].append("src/mnist_vae/core/step.py")
    planted["report"]["deps"].remove("src/mnist_vae/viz/templates/report.html.j2")
    assert mismatches(planted) == {
        "train@vae20d": {"undeclared": {"src/mnist_vae/core/step.py"}, "unused": set()},
        "evaluate@vae20d": {"undeclared": set(), "unused": {"src/mnist_vae/core/step.py"}},
        "report": {"undeclared": {"src/mnist_vae/viz/templates/report.html.j2"}, "unused": set()},
    }


def test_function_level_imports_count():
    closure = code_closure(REPO / "stages/train.py")
    assert "src/mnist_vae/core/training.py" in closure and "src/mnist_vae/core/step.py" in closure  # imported inside main()
    assert "src/mnist_vae/io/data.py" not in closure  # the download code: editing it never retrains


def rerun_table() -> dict[str, list[str]]:
    """src file -> the stages that declare it (an edit reruns these, and what their outputs
    feed); per-model stages as their foreach name (train, not train@vae20d)."""
    return rerun_table_of(spec())


def test_docs_rerun_table_is_the_derived_one():
    """docs/pipeline.md's table of what an edit to each src file reruns is the one dvc.yaml implies."""
    text = (REPO / "docs/pipeline.md").read_text()
    rows = dict(re.findall(r"^\| `(src/mnist_vae/[\w/.]+)` \| ([^|]+) \|", text, flags=re.M))
    documented = {k: sorted(s.strip(" `") for s in v.split(",")) for k, v in rows.items()}
    assert documented == {k: sorted(v) for k, v in rerun_table().items()}


@pytest.mark.parametrize("module, expected", [
    ("src/mnist_vae/core/step.py", {"train"}),                             # the fast step: only training
    ("src/mnist_vae/core/evaluation.py", {"evaluate"}),                    # evaluation never retrains
    ("src/mnist_vae/viz/figures.py", {"render-grids", "render-gifs", "anomaly-kl-stats"}),  # what draws
    ("src/mnist_vae/io/data.py", {"download", "binarize"}),
    ("src/mnist_vae/viz/templates/report.html.j2", {"report"}),
])
def test_edits_rerun_what_a_reader_expects(module, expected):
    assert set(rerun_table()[module]) == expected


# --- params ----------------------------------------------------------------------------------


def test_a_stage_reads_only_declared_params(tmp_path):
    from mnist_vae.io import params

    argv = [str(REPO / "stages/evaluate.py"), "vae20d"]
    p = params.load_for_stage(REPO / "params.yaml", REPO / "dvc.yaml", argv)
    assert p.train.device == "auto" and p.evaluate.iwae_k == 1000  # declared: train.device, evaluate
    with pytest.raises(params.ParamsError, match="stage 'evaluate@vae20d' reads 'train.lr'.*does not declare"):
        p.train.lr
    with pytest.raises(params.ParamsError, match="reads 'grids'"):
        p.grids
    full = params.load_for_stage(REPO / "params.yaml", REPO / "dvc.yaml", [str(REPO / "stages/evaluate.py"), "x"])
    assert full.train.lr == 0.001  # not a dvc.yaml command line: the whole params


def test_declared_params_of_every_stage_exist_in_params_yaml():
    from mnist_vae.io import params

    p = params.load(REPO / "params.yaml")
    stages = spec()
    for name in stages:
        for key in params.declared_params(stages, name):
            node = p
            for part in key.split("."):
                node = node[part] if isinstance(node, dict) else getattr(node, part)


def test_the_rooms_import_only_io_and_io_imports_no_room():
    """core, viz and study build on io and never on one another (docs/pipeline.md's picture)."""
    assert DEPS.rooms().keys() == {"core", "io", "viz", "study"}
    assert DEPS.room_imports() == {("core", "io"), ("viz", "io"), ("study", "io")}


def test_the_architecture_picture_draws_every_stage_and_room():
    text = (REPO / "docs/pipeline.md").read_text()
    picture = text.split(DEPS.DIAGRAM_START, 1)[1].split(DEPS.DIAGRAM_END, 1)[0]
    for stage in ("download", "binarize", "train", "evaluate", "render_grids", "render_gifs", "anomaly_kl_stats",
                  "report"):
        assert f"{stage}[" in picture or f" {stage} " in picture, stage
    assert "room_core --> room_io" in picture and "train -.-> room_core" in picture
