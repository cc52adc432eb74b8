import functools
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mnist_vae.study.workspace import copy_worktree, dvc_exe, git

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def _mirror(env: str, dataset: str) -> str:
    """The dataset's mirror folder: $MNIST_MIRROR / $FASHION_MNIST_MIRROR as the README names them
    (nothing outside the clone is assumed), else one download from the public mirrors into the
    user's cache, md5-checked, that every test then reads as its mirror."""
    given = os.environ.get(env)
    if given:
        return given
    from mnist_vae.io import data

    from filelock import FileLock

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-vae-tests" / dataset
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):  # pytest-xdist's workers: one downloads, the others wait
        ready = all((cache / f).exists() and data.verify(cache / f, md5, content) is None
                    for f, md5, content in data.dataset(dataset).resources)
        if not ready:
            data.download(dataset, cache, mirror_dir=None)
    return str(cache)


def __getattr__(name: str) -> str:  # MNIST_MIRROR, FASHION_MIRROR: resolved on first use, not at import
    if name == "MNIST_MIRROR":
        return _mirror("MNIST_MIRROR", "mnist")
    if name == "FASHION_MIRROR":
        return _mirror("FASHION_MNIST_MIRROR", "fashion-mnist")
    raise AttributeError(name)


@pytest.fixture
def small_model():
    from mnist_vae.core.model import VAE

    torch.manual_seed(0)
    return VAE(latent_dim=2, encoder_hidden=[16], decoder_hidden=None).eval()


def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def params_with(overrides: dict | None = None):
    """The repository's params with dotted-key overrides ({"train.epochs": 1}), validated."""
    from mnist_vae.io import params

    raw = raw_params()
    for key, value in (overrides or {}).items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return params.validate(raw)


def mirror_env(**extra: str) -> dict:
    """The environment for DVC and stage subprocesses: the venv's tools first on PATH, the
    mirrors, offline."""
    from mnist_vae.study.workspace import tool_env

    return tool_env(**{"MNIST_MIRROR": _mirror("MNIST_MIRROR", "mnist"),
                       "FASHION_MNIST_MIRROR": _mirror("FASHION_MNIST_MIRROR", "fashion-mnist"), "MNIST_VAE_OFFLINE": "1",
                       **extra})


def run_stage(script: str, *args: str, cwd, env: dict | None = None, timeout: float = 300):
    """A stage script (stages/<script>) run as DVC runs it, from `cwd`, with that copy's src."""
    import sys

    stage_env = env or mirror_env()
    stage_env["PYTHONPATH"] = str(Path(cwd) / "src") if (Path(cwd) / "src").is_dir() else str(REPO / "src")
    script_path = f"stages/{script}" if (Path(cwd) / "stages" / script).exists() else str(REPO / "stages" / script)
    return subprocess.run([sys.executable, script_path, *args], cwd=cwd, env=stage_env, capture_output=True,
                          text=True, timeout=timeout)


def assert_clean_failure(proc, *needles: str, code: int = 2) -> str:
    """The stage failed with exit `code`, one `error:` line holding every needle, no traceback."""
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in err, (needle, err[-3000:])
    return lines[0]


def sigint_default() -> None:
    """For a child a test interrupts (preexec_fn): SIGINT back to its default, since a test run
    started in the background (`cmd &`, nohup) hands its children SIGINT ignored, and Python then
    never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load_script(path: str):
    """A script of the repository (tools/, benchmarks/) as a module, registered under its own
    name so that its dataclasses and spawned processes find it."""
    name = "script_" + Path(path).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def binary_images(n: int, seed: int = 0, density: float = 0.2) -> torch.Tensor:
    """n random binary 784-pixel images as float32, seeded."""
    return (torch.rand((n, 784), generator=torch.Generator().manual_seed(seed)) < density).float()


# --- the real pipeline on a fast profile, shared by the slow test modules ----------------------

FAST = {
    "data": {"train_limit": 1024, "test_limit": 500},
    "train": {"epochs": 1},
    "tracking": {"every": 2},
    "evaluate": {"iwae_k": 20, "iwae_images": 100},
    "anomaly": {"noise_images": 500, "elbo_samples": 2},
}


def sh(args, cwd, check=True, env=None, **kw):
    proc = subprocess.run(args, cwd=cwd, env=env or mirror_env(), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def dvc(*args, cwd, check=True):
    return sh([dvc_exe(), *args], cwd, check)


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    p = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        for key, value in values.items():
            node = p[section]
            parts = key.split(".")
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def changed_stages(repo: Path) -> set[str]:
    return set(json.loads(dvc("status", "--json", cwd=repo).stdout or "{}"))


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _reproduce_fast_profile(root: Path) -> Path:
    """A git repository at `root` holding this working tree with the fast profile, reproduced."""
    copy_worktree(REPO, root, commit=False)
    sh([sys.executable, "tools/plots_template.py"], root)  # as `make setup` does: the offline plots page
    set_params(root, FAST)
    git(root, "init", "-q")
    git(root, "config", "user.name", "pipeline test")  # `dvc exp run` commits experiments
    git(root, "config", "user.email", "test@localhost")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "fast profile")
    t0 = time.perf_counter()
    dvc("repro", cwd=root)
    print(f"fast-profile dvc repro: {time.perf_counter() - t0:.1f} s")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "reproduced")
    return root


@pytest.fixture(scope="session")
def repo(tmp_path_factory, request):
    """A git repository holding this working tree with the fast profile, reproduced once per
    session. Read only: tests that change anything take `work`.

    Under pytest-xdist the first worker that needs it reproduces it once, in the session's shared
    temporary folder, while the others wait on a file lock; each worker then takes its own copy
    (DVC's lock allows one command per repository at a time)."""
    if not hasattr(request.config, "workerinput"):  # not an xdist worker (-n 0, or no xdist)
        return _reproduce_fast_profile(tmp_path_factory.mktemp("pipeline") / "repo")
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / "fast-profile"
    with FileLock(str(shared) + ".lock"):
        if not (shared / "done").exists():
            shutil.rmtree(shared, ignore_errors=True)
            _reproduce_fast_profile(shared / "repo")
            (shared / "done").write_text("")
    mine = tmp_path_factory.mktemp("pipeline") / "repo"
    shutil.copytree(shared / "repo", mine, symlinks=True)
    return mine


@pytest.fixture
def work(repo, tmp_path):
    """A full copy of the reproduced repository (git, DVC cache, outputs) that a test may change."""
    dest = tmp_path / "work"
    shutil.copytree(repo, dest, symlinks=True)
    return dest


