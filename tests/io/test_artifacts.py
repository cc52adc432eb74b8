"""Atomic writes under failure and signals, and every artifact reader's clear errors."""

import json
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, sigint_default

from mnist_vae.io import artifacts, yamlfile
from mnist_vae.io.errors import DataError
from mnist_vae.study import gate


def test_failure_inside_atomic_path_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old bytes")
    with pytest.raises(RuntimeError, match="boom"):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            assert tmp.exists() and tmp.name.startswith(".model.pt.") and tmp.name.endswith(".tmp")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_success_replaces_with_normal_permissions(tmp_path):
    target = tmp_path / "a.json"
    artifacts.write_json(target, {"b": 1, "a": 2})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


WRITER = """
import sys, time
from mnist_vae.io import artifacts, cli

def main():
    with artifacts.atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"partial")
        print(tmp, flush=True)
        time.sleep(60)

cli.run(main)
"""


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)])
def test_signal_during_a_write_leaves_the_old_file_and_no_temp(tmp_path, signum, code):
    """A stage signalled while its temp file is half written: the temp goes, the old file stays."""
    target = tmp_path / "out.npz"
    target.write_bytes(b"previous run")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_default)
    tmp = proc.stdout.readline().strip()
    assert tmp.endswith(".tmp") and (tmp_path / tmp.split("/")[-1]).exists()  # the write is in progress
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code
    assert target.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz"]
    assert "Traceback" not in err


@pytest.fixture
def in_repo_copy(tmp_path, monkeypatch):
    """A folder with the project's dvc.yaml and params.yaml as the working directory (readers look
    up the stage, in dvc.yaml as resolved with params.yaml)."""
    for name in ("dvc.yaml", "params.yaml"):
        (tmp_path / name).write_text((REPO / name).read_text())
    (tmp_path / "data/binarized").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_npz_names_the_file_and_its_stage(in_repo_copy):
    with pytest.raises(DataError) as err:
        artifacts.read_npz("data/binarized/mnist.npz", ["train_x"])
    assert str(err.value) == ("data/binarized/mnist.npz: not found; restore it with `dvc checkout "
                              "data/binarized/mnist.npz` (from DVC's cache) or rebuild it with `dvc repro -f -s binarize`")


def test_garbage_npz_gives_no_unsafe_advice(in_repo_copy):
    path = in_repo_copy / "data/binarized/mnist.npz"
    path.write_bytes(b"\x93NUMPY garbage" * 10)
    with pytest.raises(DataError, match=r"mnist.npz: not a readable .npz file.*dvc repro -f -s binarize") as err:
        artifacts.read_npz(path.relative_to(in_repo_copy).as_posix(), ["train_x"])
    assert "allow_pickle" not in str(err.value)


def test_npz_of_pickled_objects_is_refused(in_repo_copy):
    path = "data/binarized/mnist.npz"
    np.savez(path, train_x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="holds pickled objects") as err:
        artifacts.read_npz(path, ["train_x"])
    assert "allow_pickle" not in str(err.value)


def test_truncated_npz(in_repo_copy):
    path = in_repo_copy / "data/binarized/mnist.npz"
    artifacts.write_npz(path, train_x=np.zeros((100, 784), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="not a readable .npz file"):
        artifacts.read_npz("data/binarized/mnist.npz", ["train_x"])


def test_npz_without_the_expected_array(in_repo_copy):
    artifacts.write_npz("data/binarized/mnist.npz", test_x=np.zeros((2, 784), dtype=np.uint8))
    with pytest.raises(DataError, match=r"has no array 'train_x' \(it has test_x\); .*binarize"):
        artifacts.read_npz("data/binarized/mnist.npz", ["train_x", "test_x"])


def test_tracking_npz_names_its_train_stage(in_repo_copy):
    (in_repo_copy / "data/tracking").mkdir()
    artifacts.write_npz("data/tracking/vae2d.npz")  # tracking was off: an empty archive
    with pytest.raises(DataError, match=r"has no array 'recon' \(it has none\); .*dvc repro -f -s train@vae2d"):
        artifacts.read_npz("data/tracking/vae2d.npz", ["recon"])


def test_truncated_checkpoint(in_repo_copy):
    from mnist_vae.core.model import VAE, checkpoint, load_checkpoint, save_checkpoint

    save_checkpoint("models/vae20d.safetensors", checkpoint(VAE(2, [8])))
    good = (in_repo_copy / "models/vae20d.safetensors").read_bytes()
    assert load_checkpoint("models/vae20d.safetensors").latent_dim == 2
    (in_repo_copy / "models/vae20d.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"models/vae20d.safetensors: not a readable checkpoint.*dvc repro -f -s train@vae20d"):
        load_checkpoint("models/vae20d.safetensors")


def test_checkpoint_of_something_else(in_repo_copy):
    from mnist_vae.core.model import load_checkpoint

    artifacts.write_checkpoint("models/vae2d.safetensors", {"weights": torch.zeros(3)}, {"note": 1})
    with pytest.raises(DataError, match=r"models/vae2d.safetensors: not a checkpoint of this project's VAE \(KeyError"):
        load_checkpoint("models/vae2d.safetensors")
    torch.save({"weights": torch.zeros(3)}, "models/vae2d.safetensors")  # the old format
    with pytest.raises(DataError, match="models/vae2d.safetensors: not a readable checkpoint"):
        load_checkpoint("models/vae2d.safetensors")
    with zipfile.ZipFile("models/vae2d.safetensors", "w") as zf:
        zf.writestr("x", "not torch")
    with pytest.raises(DataError, match="not a readable checkpoint"):
        load_checkpoint("models/vae2d.safetensors")


def test_stage_of_a_file_inside_an_out_directory(in_repo_copy):
    assert artifacts.producing_stage("reports/images/vae2d/gifs/manifold-all.gif") == "render-gifs@vae2d"
    assert artifacts.producing_stage("reports/models/vae2d/gifs.json") == "render-gifs@vae2d"
    assert artifacts.producing_stage("reports/models/vae2d/eval.json") == "evaluate@vae2d"
    assert artifacts.producing_stage("reports/models/vae20d-b512/anomaly.json") == "anomaly-kl-stats@vae20d-b512"
    assert artifacts.producing_stage("nowhere/x.npz") is None


@pytest.mark.parametrize("path, text, needle", [
    ("reports/models/vae20d/anomaly.json", '{"kl": ', "not valid JSON (line 1"),
    ("reference.yaml", "numbers: [a, b\n", "not valid YAML"),
    ("reports/models/vae2d/gifs.json", None, "not found"),
])
def test_text_artifacts_name_the_file_and_how_to_restore_it(in_repo_copy, path, text, needle):
    target = in_repo_copy / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        target.write_text(text)
    reader = artifacts.read_yaml if path.endswith(".yaml") else artifacts.read_json
    with pytest.raises(DataError) as err:
        reader(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {needle}")
    # written by a stage: DVC restores it; kept in git: git does
    expected = "git checkout -- reference.yaml" if path == "reference.yaml" else "dvc repro -f -s"
    assert expected in message


def test_csv_without_a_needed_column(in_repo_copy):
    path = in_repo_copy / "reports/models/vae2d/history.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("step,loss\n1,2.5\n")
    with pytest.raises(DataError, match=r"vae2d/history.csv: has no column 'epoch' \(it has step, loss\).*train@vae2d"):
        artifacts.read_csv("reports/models/vae2d/history.csv", ["epoch", "test_loss"])
    assert artifacts.read_csv("reports/models/vae2d/history.csv", ["step"])["loss"].tolist() == [2.5]


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
    from mnist_vae.core.model import VAE, checkpoint, load_checkpoint, save_checkpoint

    model = VAE(2, [8])
    with torch.no_grad():
        model.encoder[0].weight[0, 0] = float("nan")
    save_checkpoint("models/vae2d.safetensors", checkpoint(model))
    with pytest.raises(DataError, match=r"models/vae2d\.safetensors: weights encoder\.0\.weight hold NaN or infinity "
                                        r"\(the run diverged\); .*dvc repro -f -s train@vae2d"):
        load_checkpoint("models/vae2d.safetensors")


def test_restore_hint_for_a_file_no_stage_writes_names_the_params_entry(in_project):
    subprocess.run(["git", "init", "-q"], cwd=in_project, check=True)
    hint = artifacts.restore_hint("models/vae10d.safetensors")
    assert "git checkout" not in hint
    assert "'vae10d' is not a model under `models` in params.yaml" in hint and "train@vae10d" in hint
    assert artifacts.restore_hint("reports/models/vae10d/eval.json").startswith("no stage writes it")
    assert artifacts.restore_hint("notes/x.txt") == ("no stage in dvc.yaml writes it and git does not track it: "
                                                     "check the path")
    assert "dvc repro -f -s train@vae2d" in artifacts.restore_hint("models/vae2d.safetensors")


def test_every_yaml_reader_rejects_duplicate_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reference.yaml").write_text("numbers: []\nnumbers: []\n")
    with pytest.raises(DataError, match=r"reference\.yaml: not valid YAML \(duplicate key 'numbers' \(lines 1 and 2\)"):
        artifacts.read_yaml("reference.yaml")
    (tmp_path / "tolerances.yaml").write_text("rules: []\nrules: []\n")
    with pytest.raises(gate.RuleError, match="duplicate key 'rules'"):
        gate.load_rules("tolerances.yaml")
    assert yamlfile.loads("a: {b: 1}\nc: [1, {b: 2}]\n") == {"a": {"b": 1}, "c": [1, {"b": 2}]}


@pytest.mark.parametrize("columns", [
    {"epoch": [1, 2, 3], "train_loss": [157.94412, 108.59213, 1e-7], "test_kl": [23.628155, 0.0, 1.0]},
    {"fpr": np.linspace(0, 1, 257), "tpr": np.sqrt(np.linspace(0, 1, 257)) * 1e5},
    {"a": np.array([1, 2], dtype=np.int64), "b": np.array([0.5, np.nan], dtype=np.float32), "c": ["x", "y,z"]},
    {"empty": []},
])
def test_write_csv_writes_the_bytes_pandas_writes(tmp_path, columns):
    import pandas as pd

    artifacts.write_csv(tmp_path / "t.csv", columns)
    expected = pd.DataFrame(columns).to_csv(index=False, float_format="%.6g").encode()
    assert (tmp_path / "t.csv").read_bytes() == expected


def test_write_csv_refuses_columns_of_different_lengths(tmp_path):
    with pytest.raises(ValueError, match="different lengths"):
        artifacts.write_csv(tmp_path / "t.csv", {"a": [1, 2], "b": [1.0]})
    assert not (tmp_path / "t.csv").exists()


def test_a_missing_input_while_another_dvc_holds_the_lock_says_so(in_repo_copy, monkeypatch):
    """A stage run by hand while `dvc repro` is between stages: its input may be about to be
    written, so "restore it with dvc checkout" would be the wrong advice."""
    import zc.lockfile

    monkeypatch.delenv("DVC_STAGE", raising=False)
    (in_repo_copy / ".dvc/tmp").mkdir(parents=True, exist_ok=True)
    missing = "data/evaluation/vae2d.npz"
    Path(missing).unlink(missing_ok=True)
    with pytest.raises(DataError, match=r"not found; restore it with `dvc checkout"):
        artifacts.read_npz(missing)
    held = zc.lockfile.LockFile(str(in_repo_copy / ".dvc/tmp/lock"))  # what dvc repro holds
    try:
        with pytest.raises(DataError, match=r"vae2d.npz: not found; another dvc command holds this repository's lock "
                                            r"\(.dvc/tmp/lock\).*wait for it to end"):
            artifacts.read_npz(missing)
        monkeypatch.setenv("DVC_STAGE", "evaluate@vae2d")  # a stage DVC itself runs is inside that lock
        with pytest.raises(DataError, match=r"not found; restore it with `dvc checkout"):
            artifacts.read_npz(missing)
    finally:
        held.close()
