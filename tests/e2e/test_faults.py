"""Faults of the machine and names the shell would split: one line, nothing half-written, nothing
tracked in git lost. No pipeline needed (not marked slow)."""

import errno
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import MNIST_MIRROR, REPO, assert_clean_failure, mirror_env, raw_params, run_stage

from mnist_vae.io import artifacts
from mnist_vae.io.errors import MachineFault


def test_a_file_size_limit_ends_the_stage_in_one_line_naming_the_file(tmp_path):
    """`ulimit -f` too small for data/binarized/mnist.npz: the binarize stage stops in one line
    naming the file and the limit (EFBIG), and leaves no temp file."""
    raw = tmp_path / "raw/mnist"
    raw.mkdir(parents=True)
    for f in Path(MNIST_MIRROR).glob("*.gz"):
        shutil.copy(f, raw / f.name)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env = mirror_env()
    env["PYTHONPATH"] = str(REPO / "src")
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # noqa: E731
    proc = subprocess.run([sys.executable, str(REPO / "stages/binarize.py"), "--datasets", "mnist", "--raw",
                           str(tmp_path / "raw")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          preexec_fn=limit, timeout=300)
    line = assert_clean_failure(proc, "could not write data/binarized/mnist.npz", "file-size limit (ulimit -f)")
    assert "Nothing was half-written" in line
    assert not [p for p in (tmp_path / "data/binarized").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "quota"),
                                        (errno.EROFS, "read-only file system"), (errno.EACCES, "no permission"),
                                        (errno.EPERM, "no permission")])
def test_a_write_the_machine_refuses_is_one_line_naming_the_file(tmp_path, monkeypatch, code, hint):
    """Every artifact writer goes through atomic_path: a refused write while writing, or a folder
    that cannot take the temp file, is a one-line MachineFault (a stage prints it and exits 2)."""
    target = tmp_path / "reports/x.json"

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(MachineFault) as err:
        artifacts.write_json(target, {"a": 1})
    message = str(err.value)
    assert "\n" not in message and f"could not write {target}" in message and hint in message
    assert not target.exists() and not list(target.parent.glob(".*.tmp"))
    monkeypatch.undo()
    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(MachineFault, match=f"could not write {target}.*{hint}"):
        artifacts.write_json(target, {"a": 1})


def test_other_os_errors_keep_their_traceback(tmp_path, monkeypatch):
    """Only the machine's faults become one line: anything else is a bug to see whole."""
    monkeypatch.setattr(Path, "write_bytes", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as err:
        artifacts.write_json(tmp_path / "x.json", {})
    assert not isinstance(err.value, MachineFault)


def test_per_model_commands_carry_no_name_for_the_shell_to_split():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]
        assert "${key}" not in cmd and "${item}" not in cmd, name


def scratch_repo(tmp_path: Path, models: dict) -> Path:
    """A git + DVC repository with this project's pipeline, `models` as params, and a small
    binarized MNIST: enough for DVC to run a train stage."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for item in ("dvc.yaml", "stages", "src", "reference.yaml", ".dvcignore"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, repo / item,
                                                            **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                               if src.is_dir() else {}))
    raw = raw_params()
    raw["models"] = models
    raw["anomaly"]["models"] = [next(iter(models))]
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (repo / "data/binarized").mkdir(parents=True)
    artifacts.write_npz(repo / "data/binarized/mnist.npz", train_x=np.zeros((8, 784), np.uint8),
                        test_x=np.zeros((30, 784), np.uint8))
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "scratch"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    return repo


def dvc_repro(repo: Path, stage: str) -> subprocess.CompletedProcess:
    env = mirror_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # stages call `python`
    return subprocess.run([sys.executable, "-m", "dvc", "repro", "-s", stage], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=300)


def test_dvc_hands_a_model_name_with_a_space_over_whole_to_the_params_check(tmp_path):
    """`dvc repro -s "train@vae 2d"`: the stage gets the name whole (DVC_STAGE), so the params check
    refuses it in one line, instead of argparse's 'unrecognized arguments: 2d'."""
    arch = raw_params()["models"]["vae2d"]
    repo = scratch_repo(tmp_path, {"vae 2d": arch})
    proc = dvc_repro(repo, "train@vae 2d")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "'models' has the key 'vae 2d', which is not a usable model name" in out, out[-3000:]
    assert "unrecognized arguments" not in out and "Traceback" not in out


def test_a_failed_stage_leaves_the_files_kept_in_git(tmp_path):
    """DVC removes a stage's outputs before it runs it, except `persist: true` ones: the git-kept
    metrics of a stage that then fails (here a bad param) are still there, as committed."""
    arch = raw_params()["models"]["vae2d"]
    repo = scratch_repo(tmp_path, {"vae2d": arch})
    kept = {}
    for name in ("train.json", "history.csv", "timings-train.json"):
        path = repo / "reports/models/vae2d" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"committed {name}\n")
        kept[path] = path.read_text()
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "outputs"], cwd=repo,
                   check=True)
    text = (repo / "params.yaml").read_text().replace("  lr: 0.001\n", "  lr: -1\n", 1)
    (repo / "params.yaml").write_text(text)
    proc = dvc_repro(repo, "train@vae2d")
    assert proc.returncode != 0 and "train.lr" in proc.stdout + proc.stderr
    assert {path: path.read_text() for path in kept} == kept
    status = subprocess.run(["git", "status", "--porcelain", "reports"], cwd=repo, capture_output=True, text=True)
    assert status.stdout == ""


def test_a_stage_run_by_hand_takes_its_argument_and_refuses_a_clash_with_dvc_stage(tmp_path):
    env = mirror_env()
    env["DVC_STAGE"] = "train@vae2d"
    proc = run_stage("train.py", "vae20d", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and "names model 'vae20d' but DVC runs stage 'train@vae2d'" in proc.stderr
    proc = run_stage("train.py", cwd=tmp_path, env=mirror_env())
    assert proc.returncode == 2 and "name a model" in proc.stderr
