"""The study engine (mnist_vae.study.engine) and its tool (tools/study.py) on studies.yaml's
entries: what they plan, what the collectors compute from known runs, and one line for each
kind of bad input. tests/e2e/test_remote.py runs a study through runners and a collector;
tests/e2e/test_studies.py runs docs/studies.md's example."""

import json
import re
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
import yaml
from conftest import REPO

from mnist_vae.study import engine, spread

matplotlib.use("Agg")

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture(autouse=True)
def at_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the engine reads params.yaml and dvc.yaml where it runs, as the tool does


def planned(name):
    return [(e.name, list(e.sets)) for e in engine.plan(name, engine.find(name))]


def test_the_spread_entry_plans_todays_experiments():
    seeds = [(f"spread-seed-{s}", [f"train.seed={s}", f"evaluate.seed={s}", f"anomaly.seed={s}"]) for s in range(1, 15)]
    assert planned("spread") == [("spread-default", []), ("spread-autograd", ["train.step=autograd"]), *seeds]
    study = engine.find("spread")
    assert study.stages == [] and engine.run_args(study, engine.plan("spread", study)[1]) == [
        "-S", "train.step=autograd", "--force", "--downstream", "train"]  # the whole pipeline, as before
    assert engine.out_dir("spread", study).as_posix() == "reports/spread"


def test_the_spread_collector_gives_the_committed_summary_from_its_runs():
    """The committed reports/spread/summary.json (written by the old tools/spread.py) fed back
    through the seed-spread collector: the same metrics table, seeds and variants."""
    committed = json.loads((REPO / "reports/spread/summary.json").read_text())
    study = engine.find("spread")
    exps = {e.name: e for e in engine.plan("spread", study)}
    runs = []
    for label, metrics in committed["runs"].items():
        name = "spread-" + label.removeprefix("variant:")
        machine = committed["study"]["machines"][label.removeprefix("variant:")]
        runs.append(engine.Run(name, metrics, machine, exps.get(name)))
    doc = engine.seed_spread("spread", study, runs, engine.metric_paths("spread", study, PARAMS))
    assert doc["metrics"] == committed["metrics"]
    assert doc["runs"] == committed["runs"]
    assert {k: doc["study"][k] for k in ("seeds", "n_seeds", "machines", "what")} == \
        {k: committed["study"][k] for k in ("seeds", "n_seeds", "machines", "what")}
    assert list(doc["study"]["variants"]) == list(committed["study"]["variants"])
    assert "| seed-1 | " in spread.markdown(doc)


def test_the_latent_size_entry_plans_21_runs_of_the_20d_model():
    exps = planned("latent-size")
    expected = [(f"latent-size-{d}-seed-{s}", ["evaluate.iwae_images=1000", f"models.vae20d.latent_dim={d}",
                                               f"train.seed={s}", f"evaluate.seed={s}"])
                for d in (1, 2, 5, 10, 20, 50, 100) for s in (1, 2, 3)]
    assert exps == expected and len(exps) == 21
    for name, _ in exps:  # each a valid git ref name
        assert subprocess.run(["git", "check-ref-format", f"refs/exps/{name}"]).returncode == 0
    study = engine.find("latent-size")
    assert engine.run_args(study, engine.plan("latent-size", study)[0])[-1] == "evaluate@vae20d"  # no --force
    assert engine.metric_paths("latent-size", study, PARAMS) == {
        "eval.json:test_iwae_nll": "reports/models/vae20d/eval.json:test_iwae_nll",
        "eval.json:test_neg_elbo": "reports/models/vae20d/eval.json:test_neg_elbo",
        "train.json:test_kl": "reports/models/vae20d/train.json:test_kl",
        "eval.json:active_units": "reports/models/vae20d/eval.json:active_units"}
    assert PARAMS["train"]["epochs"] == 10  # the issue's 10 epochs are the default params'


def by_setting_study(**extra):
    return engine.entry("toy", {"about": "a toy", "sweep": ["models.vae20d.latent_dim=choice(2, 20)"],
                                "seeds": {"keys": ["train.seed"], "values": [1, 2, 3]}, "model": "vae20d",
                                "metrics": ["eval.json:test_iwae_nll", "eval.json:active_units"],
                                "draw": {"x": "models.vae20d.latent_dim",
                                         "y": ["eval.json:test_iwae_nll", "eval.json:active_units"],
                                         "log_x": True}, **extra})


def test_by_setting_summary_table_and_figure(tmp_path):
    study = by_setting_study(out=str(tmp_path / "toy"))
    engine.check("toy", study, PARAMS)
    paths = engine.metric_paths("toy", study, PARAMS)
    values = {(2, 1): (100.0, 2), (2, 2): (102.0, 2), (2, 3): (104.0, 1), (20, 1): (90.0, 18), (20, 2): (91.0, 19)}
    runs = [engine.Run(e.name, {paths["eval.json:test_iwae_nll"]: values[(e.setting[0][1], e.seed)][0],
                                paths["eval.json:active_units"]: values[(e.setting[0][1], e.seed)][1], "x.json:y": 5},
                       "a CPU", e)
            for e in engine.plan("toy", study) if (e.setting[0][1], e.seed) in values]
    runs.append(engine.Run("toy-machine-b", {}, "another CPU"))  # not a setting: left out
    doc = engine.by_setting("toy", study, runs, paths)
    two, twenty = doc["settings"]
    assert two["params"] == {"models.vae20d.latent_dim": 2} and twenty["params"] == {"models.vae20d.latent_dim": 20}
    assert two["metrics"]["eval.json:test_iwae_nll"] == {"n": 3, "mean": 102.0, "std": 2.0, "min": 100.0, "max": 104.0}
    assert twenty["metrics"]["eval.json:active_units"] == {"n": 2, "mean": 18.5, "std": pytest.approx(0.7071068),
                                                           "min": 18.0, "max": 19.0}
    assert [r["seed"] for r in twenty["runs"]] == [1, 2] and twenty["runs"][0]["machine"] == "a CPU"
    assert doc["study"]["metrics"] == paths and doc["study"]["about"] == "a toy"
    md = engine.markdown(doc)
    assert "| models.vae20d.latent_dim | eval.json:test_iwae_nll | eval.json:active_units |" in md
    assert "| 2 | 102 ± 2 (3) | 1.667 ± 0.58 (3) |" in md and "| 20 | 90.5 ± 0.71 (2) | 18.5 ± 0.71 (2) |" in md
    fig = engine.figure(doc)
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    assert fig.axes[1].get_title() == "eval.json:active_units"
    engine.write("toy", study, doc)
    png = (tmp_path / "toy/figure.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert json.loads((tmp_path / "toy/summary.json").read_text()) == doc
    assert (tmp_path / "toy/summary.md").read_text() == md


@pytest.mark.parametrize("body, message", [
    ({"about": "x", "sweep": ["train.lr=choice()"]}, "study 'bad': `train.lr=choice()` has no values"),
    ({"about": "x", "sweep": ["train.lr=range(3, 3)"]}, "study 'bad': `train.lr=range(3, 3)` has no values"),
    ({"about": "x", "sweep": ["train.nope=choice(1, 2)"]}, "study 'bad': `train.nope` is not a param of params.yaml"),
    ({"about": "x", "set": ["models.vae99d.latent_dim=3"]}, "study 'bad': `models.vae99d.latent_dim`: params.yaml has "
                                                            "no model 'vae99d' (models: vae20d, vae2d, vae20d-b512)"),
    ({"about": "x", "set": ["models.vae20d.train.epochs=3"]}, "`models.vae20d.train.epochs` is not a param of params.yaml"),
    ({"about": "x", "sweep": ["models.vae20d.latent_dim=choice(0, 2)"]},
     "study 'bad', experiment bad-0: params: 'models.vae20d.latent_dim' input should be greater than or equal to 1"),
    ({"about": "x", "model": "vae20d", "metrics": ["eval.json:nope"]},
     "study 'bad': metric 'eval.json:nope': reports/models/vae20d/eval.json has no key 'nope'"),
    ({"about": "x", "model": "vae20d", "metrics": ["history.csv:loss"]}, "metric 'history.csv:loss': no stage writes it"),
    ({"about": "x", "metrics": ["vae2d/anomaly.json:kl"]}, "metric 'vae2d/anomaly.json:kl': no stage writes "
                                                           "reports/models/vae2d/anomaly.json"),
    ({"about": "x", "metrics": ["vae99d/eval.json:active_units"]}, "no stage writes reports/models/vae99d/eval.json"),
    ({"about": "x", "stages": ["evaluate@vae99d"]}, "study 'bad': stage 'evaluate@vae99d' is not a stage of dvc.yaml"),
    ({"about": "x", "summary": "seed-spread"}, "a seed-spread summary needs `baseline: true` and `seeds`"),
    ({"about": "x", "model": "vae99d"}, "study 'bad': `model`: params.yaml has no model 'vae99d'"),
    ({"about": "x", "sweep": ["train.lr=choice(1, 2)"]}, "study 'bad': a by-setting summary names its `metrics`"),
    ({"about": "x", "sweep": "train.lr=choice(1, 2)"}, "studies.yaml: study 'bad': `sweep`: Input should be a valid "
                                                       "list, got 'train.lr=choice(1, 2)'"),
    ({"about": "x", "sweeps": []}, "studies.yaml: study 'bad': `sweeps`: Extra inputs are not permitted"),
    ({"sweep": []}, "studies.yaml: study 'bad': `about`: Field required"),
    ({"about": "x", "seeds": {"keys": ["train.seed"], "values": [1.5]}},
     "study 'bad': `seeds.values[0]`: Input should be a valid integer, got 1.5"),
])
def test_bad_input_ends_in_one_line_naming_it(body, message):
    with pytest.raises(engine.StudyError) as info:
        engine.check("bad", engine.entry("bad", body), PARAMS)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_the_tool_says_one_line_for_an_unknown_study_and_lists_the_known_ones():
    proc = subprocess.run([sys.executable, "tools/study.py", "nope", "plan"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: no study 'nope' in studies.yaml; known: spread, latent-size, same-seed\n"
    proc = subprocess.run([sys.executable, "tools/study.py", "latent-size", "plan", "--runners", "a", "b"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "has no baseline" in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("seeds, message", [
    (["-3"], "error: study 'latent-size', experiment latent-size-1-seed--3: params: 'train.seed' input should be "
             "greater than or equal to 0, got -3\n"),
    (["2", "2"], "error: study 'latent-size': experiments planned twice (a seed or a value repeated): "
                 "latent-size-1-seed-2, "),
])
def test_plan_refuses_the_seeds_run_would_refuse_in_one_line(seeds, message):
    """`plan --seeds` checks the experiments it lists, as `run` does (it planned `...-seed--3`,
    which only a run refused, at its stage, 26 s later)."""
    proc = subprocess.run([sys.executable, "tools/study.py", "latent-size", "plan", "--names", "--seeds", *seeds],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr
    with pytest.raises(engine.StudyError, match="greater than or equal to 0"):
        engine.check("latent-size", engine.find("latent-size"), PARAMS, seeds=[1, -3])
    engine.check("latent-size", engine.find("latent-size"), PARAMS, seeds=[7])  # a seed the entry lacks is fine


@pytest.mark.parametrize("line, message", [
    ("train.lr=1e-3", None),  # a float to DVC (hydra's parser), a string to YAML: the check once refused it
    ("train.lr=abc", "study 'bad', experiment bad: params: 'train.lr' input should be a valid number, got 'abc'"),
    ("train.lr=[1,2", "study 'bad', experiment bad: `dvc exp run -S` refuses train.lr=[1,2: "),
    ("train.step=null", "study 'bad', experiment bad: params: 'train.step' input should be 'fused' or 'autograd'"),
])
def test_each_override_is_typed_and_checked_as_dvc_exp_run_sets_it(line, message):
    study = engine.entry("bad", {"about": "x", "set": [line], "model": "vae20d", "metrics": ["eval.json:active_units"]})
    if message is None:
        engine.check("bad", study, PARAMS)
        return
    with pytest.raises(engine.StudyError) as info:
        engine.check("bad", study, PARAMS)
    assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)


def test_the_tools_plan_is_the_engines_and_its_matrix_repeats_the_baseline():
    rows = json.loads(subprocess.run([sys.executable, "tools/study.py", "spread", "plan", "--seeds", "1",
                                      "--runners", "a", "b"], cwd=REPO, capture_output=True, text=True,
                                     check=True).stdout)
    assert rows == [{"runner": "a", "name": "spread-default", "as": ""},
                    {"runner": "a", "name": "spread-autograd", "as": ""},
                    {"runner": "a", "name": "spread-seed-1", "as": ""},
                    {"runner": "b", "name": "spread-default", "as": "spread-machine-b"}]


def docs_example() -> tuple[str, dict]:
    block = re.findall(r"```yaml\n(.*?)```", (REPO / "docs/studies.md").read_text(), flags=re.S)[0]
    (name, body), = yaml.safe_load(block).items()
    return block, name, body


def test_the_docs_example_is_five_lines_that_validate_and_plan():
    block, name, body = docs_example()
    assert len(block.strip().splitlines()) == 6  # its name, then five lines
    study = engine.entry(name, body)
    engine.check(name, study, PARAMS)
    assert [e.name for e in engine.plan(name, study)] == ["epochs-5-seed-1", "epochs-5-seed-2", "epochs-10-seed-1",
                                                          "epochs-10-seed-2"]
    assert name not in engine.load()  # the example is the reader's to add


def test_the_same_seed_entry_plans_ten_roundings_and_summarises_against_the_committed_run(monkeypatch):
    study = engine.find("same-seed")
    plan = engine.plan("same-seed", study)
    assert [e.name for e in plan] == [f"same-seed-{v}" for v in ("fast", "fast-1-thread", "fast-autograd",
                                                                 "fast-autograd-1-thread", "autograd",
                                                                 "autograd-1-thread", "fast-aten-default",
                                                                 "fast-mkl-compatible", "fast-generic",
                                                                 "fast-autograd-generic")]
    assert list(plan[-1].sets) == ["numerics.mode=fast", "train.step=autograd", "numerics.kernels=generic"]
    assert all(e.kind == "variant" for e in plan)  # the committed run is not run again
    loss, train = "reports/models/m/train.json:test_loss", "reports/models/m/train.json:train_loss"
    base = {loss: 88.0, train: 90.0, "reports/models/m/train.json:epochs": 10}
    monkeypatch.setattr(engine, "committed_metrics", lambda rev: dict(base))
    # fast-1-thread trains fast's models (only the summed train loss differs); fast-autograd the
    # committed run's: each is the same trajectory again, no degree of freedom
    deltas = [0.01, 0.01, 0.0, 0.03, -0.01, 0.02, 0.04, -0.03, 0.05, -0.04]
    runs = [engine.Run(e.name, {**base, loss: 88.0 + d, train: 90.0 + i * 1e-5}, "cpu", e)
            for i, (e, d) in enumerate(zip(plan, deltas))]
    doc = engine.same_seed("same-seed", study, runs, {})
    row = doc["metrics"][loss]
    distinct = [d for i, d in enumerate(deltas) if i not in (1, 2)]
    assert row["df"] == 8 and row["sigma_same"] == pytest.approx(np.sqrt(np.mean(np.square(distinct))), rel=1e-6)
    assert doc["study"]["same_as"] == {"fast-1-thread": "fast", "fast-autograd": "committed"}
    assert row["variants"]["fast-1-thread"]["delta"] == pytest.approx(0.01)
    assert "reports/models/m/train.json:epochs" not in doc["metrics"]  # a run description, not measured
    assert set(doc["runs"]) == {"committed", *(f"variant:{e.name.removeprefix('same-seed-')}" for e in plan)}
    text = engine.same_seed_markdown(doc)
    assert "| `m/train.json:test_loss` | 88 |" in text and "fast-1-thread trained fast's models" in text
    with pytest.raises(engine.StudyError, match="need at least 2 variant experiments"):
        engine.same_seed("same-seed", study, runs[:1], {})
