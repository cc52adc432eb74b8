"""Outputs verified, not trusted: md5s as DVC records them, damaged files and cache objects found."""

import subprocess

import yaml

from mnist_vae.io import integrity
from mnist_vae.study import gate
from mnist_vae.study.workspace import dvc_exe


def test_a_folders_md5_is_the_one_dvc_records(tmp_path):
    """The manifest hash, computed here, against `dvc add`'s own on the same folder."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc_exe(), "init", "-q"], cwd=tmp_path, check=True)
    folder = tmp_path / "gifs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.gif").write_bytes(b"GIF89a" + bytes(range(256)))
    (folder / "sub" / "b.txt").write_text("z\n")
    subprocess.run([dvc_exe(), "add", "-q", "gifs"], cwd=tmp_path, check=True)
    recorded = yaml.safe_load((tmp_path / "gifs.dvc").read_text())["outs"][0]["md5"]
    assert integrity.workspace_md5(folder) == recorded and recorded.endswith(".dir")
    assert integrity.workspace_md5(folder / "a.gif") == integrity.file_md5(None, b"GIF89a" + bytes(range(256)))


def _lock(entries: dict[str, str]) -> str:
    return yaml.safe_dump({"schema": "2.0", "stages": {
        "train@m": {"cmd": "x", "outs": [{"path": p, "hash": "md5", "md5": m} for p, m in entries.items()]}}})


def test_damaged_outputs_and_cache_objects_are_named(tmp_path):
    good, other = b"weights", b"weightz"
    (tmp_path / "models").mkdir()
    (tmp_path / "models/m.safetensors").write_bytes(other)
    (tmp_path / "reports/models/m").mkdir(parents=True)
    (tmp_path / "reports/models/m/timings-train.json").write_text("{}")
    md5 = integrity.file_md5(None, good)
    lock = _lock({"models/m.safetensors": md5, "reports/models/m/timings-train.json": "0" * 32,
                  "data/absent.npz": "1" * 32})
    bad = integrity.bad_outputs(lock, tmp_path)
    assert list(bad) == ["models/m.safetensors", "reports/models/m/timings-train.json"]  # absent files: not judged
    assert bad["models/m.safetensors"] == f"md5 {integrity.file_md5(None, other)} in the workspace, {md5} in dvc.lock (train@m)"
    # the gate judges what it compares: a timings file (another run's times) is not among them
    assert [r.metric for r in gate.verify_workspace(lock, tmp_path)] == ["models/m.safetensors (workspace bytes)"]
    cache = tmp_path / "cache"
    obj = integrity.cache_object(cache, md5)
    obj.parent.mkdir(parents=True)
    obj.write_bytes(other)  # a damaged object under the good name
    assert integrity.bad_cache_objects(lock, cache) == {obj: "models/m.safetensors (train@m)"}
    obj.write_bytes(good)
    assert integrity.bad_cache_objects(lock, cache) == {}


def test_the_statistical_gate_names_settings_the_tolerances_were_not_measured_at():
    study = {"reports/models/a/train.json:epochs": 10, "reports/models/a/eval.json:iwae_k": 1000,
             "reports/models/a/train.json:test_loss": 88.0, "reports/models/b/train.json:epochs": 10}
    diff = {"reports/models/a/train.json": {"epochs": {"old": 1, "new": 1}, "test_loss": {"old": 99.0, "new": 99.5}},
            "reports/models/a/eval.json": {"iwae_k": {"old": 1000, "new": 1000}},
            "reports/models/c/train.json": {"epochs": {"old": 10, "new": 10}}}
    assert gate.other_settings(diff, study) == ["b not rerun", "c not in the study",
                                                "reports/models/a/train.json:epochs 1 (the study's 10)"]
    same = {f"reports/models/{m}/train.json": {"epochs": {"new": 10}} for m in ("a", "b")}
    assert gate.other_settings(same, study) == []
