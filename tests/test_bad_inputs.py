"""Bad inputs end in one clear line, and nothing non-finite passes: a diverging run stops before
it writes, every loader refuses NaN weights and arrays, every JSON written is valid JSON, the
gate fails on non-finite or absurd values whatever its rule, the YAML files reject duplicate
keys as DVC does, and broken tolerances / reference files name the file, entry and key."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, params_with
from mnist_vae import artifacts, gate, params, spread, yamlfile
from mnist_vae.errors import DataError, ParamsError


def test_training_stops_at_the_first_non_finite_loss_naming_model_epoch_and_param():
    from mnist_vae.training import Diverged, fit

    p = params_with({"train.lr": 10.0, "train.epochs": 3, "train.device": "cpu", "tracking.enabled": False})
    x = (np.random.default_rng(0).random((512, 784)) < 0.2).astype(np.uint8)
    with pytest.raises(Diverged) as err:
        fit(p.models["vae2d"], p.train, p.tracking, x, x[:128], progress=False, name="vae2d")
    message = str(err.value)
    assert message.startswith("train: model 'vae2d' diverged at epoch 1 (train loss nan")
    assert "lower train.lr (now 10)" in message and "nothing was written" in message
    # a model with its own learning rate is told to lower that one
    raw = params_with().model_dump()
    raw["models"]["vae2d"]["train"] = {"lr": 10.0}
    raw["train"].update(epochs=1, device="cpu")
    raw["tracking"]["enabled"] = False
    own = params.validate(raw)
    with pytest.raises(Diverged, match=r"lower models\.vae2d\.train\.lr \(now 10\)"):
        fit(own.models["vae2d"], own.train, own.tracking, x, x[:128], progress=False, name="vae2d")


def test_a_finite_run_is_not_stopped():
    from mnist_vae.training import fit

    p = params_with({"train.epochs": 1, "train.device": "cpu", "tracking.enabled": False})
    x = (np.random.default_rng(0).random((256, 784)) < 0.2).astype(np.uint8)
    out = fit(p.models["vae2d"], p.train, p.tracking, x, x[:64], progress=False, name="vae2d")
    assert math.isfinite(out["metrics"]["test_loss"])
    assert not any("seconds" in key for key in out["metrics"])  # timings are not metrics
    assert set(out["timings"]) == {"train_seconds", "tracking_seconds", "epoch_seconds", "machine"}
    assert out["timings"]["machine"]["threads"] == torch.get_num_threads() and out["timings"]["machine"]["device"] == "cpu"


def test_write_json_refuses_nan_naming_the_key_and_writes_nothing(tmp_path):
    path = tmp_path / "m.json"
    with pytest.raises(DataError, match=r"m\.json: refusing to write non-finite kl\.train\.mean = nan; nothing"):
        artifacts.write_json(path, {"kl": {"train": {"mean": float("nan"), "std": 1.0}}, "n": 3})
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match=r"losses\[1\] = inf"):
        artifacts.write_json(path, {"losses": [1.0, float("inf")]})
    artifacts.write_json(path, {"a": 1.5, "b": [1, 2], "c": "x"})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [1, 2], "c": "x"}


@pytest.fixture
def in_project(tmp_path, monkeypatch):
    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_npz_with_nan_names_the_file_the_array_and_the_stage(in_project):
    artifacts.write_npz("data/tracking/vae2d.npz", recon=np.array([[0.5, np.nan]], dtype=np.float32),
                        batch=np.array([0, 2]))
    with pytest.raises(DataError) as err:
        artifacts.read_npz("data/tracking/vae2d.npz", ["recon"])
    assert str(err.value).startswith("data/tracking/vae2d.npz: array 'recon' holds 1 non-finite values")
    assert "dvc repro -f -s train@vae2d" in str(err.value)
    artifacts.write_npz("data/tracking/vae2d.npz", recon=np.zeros((1, 2), dtype=np.float32))
    assert artifacts.read_npz("data/tracking/vae2d.npz", ["recon"])["recon"].shape == (1, 2)


def test_a_checkpoint_with_nan_weights_is_refused(in_project):
    from mnist_vae.model import VAE, checkpoint, load_checkpoint

    model = VAE(2, [8])
    with torch.no_grad():
        model.encoder[0].weight[0, 0] = float("nan")
    artifacts.write_torch("models/vae2d.pt", checkpoint(model))
    with pytest.raises(DataError, match=r"models/vae2d\.pt: weights encoder\.0\.weight hold NaN or infinity "
                                        r"\(the run diverged\); .*dvc repro -f -s train@vae2d"):
        load_checkpoint("models/vae2d.pt")


def test_restore_hint_for_a_file_no_stage_writes_names_the_params_entry(in_project):
    subprocess.run(["git", "init", "-q"], cwd=in_project, check=True)
    hint = artifacts.restore_hint("models/vae10d.pt")
    assert "git checkout" not in hint
    assert "'vae10d' is not a model under `models` in params.yaml" in hint and "train@vae10d" in hint
    assert artifacts.restore_hint("reports/models/vae10d/eval.json").startswith("no stage writes it")
    assert artifacts.restore_hint("notes/x.txt") == ("no stage in dvc.yaml writes it and git does not track it: "
                                                     "check the path")
    assert "dvc repro -f -s train@vae2d" in artifacts.restore_hint("models/vae2d.pt")


# --- the gate ---------------------------------------------------------------------------------

RULES = [{"match": "*:device", "ignore": True}, {"match": "f.json:loss", "abs": 1.0, "sigma_diff": 0.5},
         {"match": "f.json:noisy", "abs": 9.0, "sigma_diff": 3.0, "gated": False, "why": "noisy"},
         {"match": "new.json:*", "report": True}]


def rows_for(**values):
    diff = {}
    for name, (old, new) in values.items():
        path, key = {"loss": ("f.json", "loss"), "noisy": ("f.json", "noisy"), "b512": ("new.json", "test_loss")}[name]
        diff.setdefault(path, {})[key] = {"old": old, "new": new}
    return {r.metric: r for r in gate.compare(diff, RULES)}


@pytest.mark.parametrize("name, old, new, problem", [
    ("loss", 88.0, float("nan"), "not finite"),        # gated
    ("noisy", 30.0, float("nan"), "not finite"),       # shown, not gated: fails all the same
    ("b512", 94.0, float("nan"), "not finite"),        # not measured: fails all the same
    ("b512", 94.0, "NaN", "not finite"),               # a bare token read back as text
    ("noisy", 30.0, "high", "changed type (float -> str)"),
    ("b512", 94.07, 1.98e11, "beyond sanity (moved 1.98e+11, bound 47.03)"),  # no measured spread: half the value
    ("noisy", 30.0, 46.0, "beyond sanity (moved 16, bound 15)"),  # half the value, inside [3, 10] sigma_diff
    ("loss", 88.0, -1.0, "impossible value (must be in [0, inf])"),  # a negative loss, gated or not
])
def test_the_gate_fails_on_non_finite_and_absurd_values_whatever_the_rule(name, old, new, problem):
    row = next(iter(rows_for(**{name: (old, new)}).values()))
    assert row.problem == problem and gate.failures([row]) == [row]
    assert f"FAIL: {problem}" in gate.table([row])


def test_ungated_rows_within_the_sanity_bound_still_pass():
    rows = rows_for(noisy=(30.0, 45.0), b512=(94.07, 100.0))  # 5 sigma_diff; 6 %
    assert gate.failures(list(rows.values())) == []
    assert rows["f.json:noisy"].in_spread == pytest.approx(5.0)
    assert "(not gated)" in gate.table(list(rows.values()))


def test_a_misspelled_rule_kind_names_the_file_the_rule_and_the_key(tmp_path):
    path = tmp_path / "tolerances.yaml"
    path.write_text("rules:\n- {match: '*:device', ignore: true}\n- {match: 'f.json:loss', ignroe: true}\n")
    with pytest.raises(gate.RuleError) as err:
        gate.load_rules(path)
    assert str(err.value) == (f"{path}: rules[1]: rule for 'f.json:loss': unknown key 'ignroe' (a rule has `match`, "
                              "one of ignore, exact, abs, rel, report, and optionally sigma_diff, gated, why)")


def test_broken_tolerances_stop_the_gate_with_one_line_before_any_work(tmp_path):
    (tmp_path / "tolerances.yaml").write_text("rules: [\n")
    proc = subprocess.run([sys.executable, str(REPO / "tools/repro_check.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith("repro-check: FAILED: tolerances.yaml: not valid YAML")
    assert "git checkout -- tolerances.yaml" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "reproduce" not in proc.stdout  # it stopped before running the pipeline


# --- duplicate keys ---------------------------------------------------------------------------


def test_params_with_a_duplicated_key_is_refused_as_dvc_refuses_it(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("  epochs: 10\n", "  epochs: 10\n  epochs: 3\n", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    line = text.splitlines().index("  epochs: 10") + 1
    with pytest.raises(ParamsError) as err:
        params.load(path)
    assert str(err.value) == (f"params: {path} is not valid YAML: duplicate key 'epochs' (lines {line} and "
                              f"{line + 1})")


def test_every_yaml_reader_rejects_duplicate_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reference.yaml").write_text("numbers: []\nnumbers: []\n")
    with pytest.raises(DataError, match=r"reference\.yaml: not valid YAML \(duplicate key 'numbers' \(lines 1 and 2\)"):
        artifacts.read_yaml("reference.yaml")
    (tmp_path / "tolerances.yaml").write_text("rules: []\nrules: []\n")
    with pytest.raises(gate.RuleError, match="duplicate key 'rules'"):
        gate.load_rules("tolerances.yaml")
    assert yamlfile.loads("a: {b: 1}\nc: [1, {b: 2}]\n") == {"a": {"b": 1}, "c": [1, {"b": 2}]}


@pytest.mark.parametrize("doc, missing", [
    ([], "study"),
    ({"study": {"n_seeds": 8}, "metrics": {}}, "study.machines"),  # a summary from before runs named their machines
    ({"study": {"n_seeds": 8, "machines": {}}}, "metrics"),
])
def test_a_summary_the_report_cannot_read_is_named_with_its_missing_key(doc, missing):
    with pytest.raises(DataError, match=f"summary.json: no `{missing}`; regenerate it with `python tools/spread.py"):
        spread.check_summary(doc)
    good = {"study": {"n_seeds": 8, "machines": {}}, "metrics": {}}
    assert spread.check_summary(good) is good
