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


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # pytest-xdist runs one worker per core: one torch thread each
        torch.set_num_threads(1)


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
    "numerics": {"threads": 1},  # pytest-xdist runs one worker per core: one torch thread per process
    "train": {"epochs": 1},
    "tracking": {"every": 2},
    "evaluate": {"iwae_k": 20, "iwae_images": 100},
    "anomaly": {"noise_images": 500, "elbo_samples": 2, "models": ["vae20d"]},
}
# Two of params.yaml's models, one with train settings of its own (as vae20d-b512 has its batch
# size there): every per-model behaviour, with one model's stages fewer to run and rerun.
FAST_MODELS = ("vae20d", "vae2d")
FAST_OWN_TRAIN = {"vae20d": {"lr": 0.002}}


def set_fast_profile(repo: Path) -> None:
    set_params(repo, FAST)
    path = repo / "params.yaml"
    p = yaml.safe_load(path.read_text())
    p["models"] = {name: p["models"][name] for name in FAST_MODELS}
    for name, train in FAST_OWN_TRAIN.items():
        p["models"][name]["train"] = train
    path.write_text(yaml.safe_dump(p, sort_keys=False))


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
    set_fast_profile(root)
    sh([sys.executable, "tools/prune.py"], root)  # as a user does after removing a model: its dvc.lock entries go
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


def _uses_repo(item) -> bool:
    return "repo" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(session, config, items):
    """Each worker's order: the tests that need no fast reproduction first, so that the workers
    are busy while it builds in the background (`repo`); within each kind the long ones, then the
    slow ones, so that no long test is left to run alone at the end. pytest-xdist's worksteal
    hands each of N workers a contiguous share of the collection (len // N, of what is left, in
    turn), then lets an idle worker take the tail of another's share: the ordered tests are dealt
    round robin into shares of those sizes, so that every worker starts with its part of each kind."""
    items.sort(key=lambda item: (_uses_repo(item), item.get_closest_marker("long") is None,
                                 item.get_closest_marker("slow") is None))
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    sizes, left = [], len(items)
    for i in range(workers):
        sizes.append(left // (workers - i))
        left -= sizes[-1]
    shares = [[] for _ in sizes]
    turn = 0
    for item in list(items):
        while len(shares[turn % workers]) == sizes[turn % workers]:
            turn += 1
        shares[turn % workers].append(item)
        turn += 1
    items[:] = [item for share in shares for item in share]


def _session_dir(request, tmp_path_factory) -> Path:
    """This session's temporary folder, shared by its pytest-xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(request.config, "workerinput") else base


# the fast reproduction, built by a child process; it marks its end with `ok` or `failed` beside it
_BUILD = """
import sys
from pathlib import Path

import conftest

root = Path(sys.argv[1])
try:
    conftest._reproduce_fast_profile(root)
except BaseException:
    (root.parent / "failed").write_text("")
    raise
(root.parent / "ok").write_text("")
"""


@pytest.fixture(scope="session", autouse=True)
def _fast_profile_in_background(request, tmp_path_factory):
    """Start the session's fast reproduction at once, in a child process, when a collected test
    needs it (`repo`): it builds while the workers run the tests that do not. The first worker to
    get here starts it; the one that started it waits for it at the end, so that no worker that
    still needs it finds it killed (Ctrl-C reaches the child too: same process group)."""
    if not any(map(_uses_repo, request.session.items)):
        yield
        return
    from filelock import FileLock

    shared = _session_dir(request, tmp_path_factory) / "fast-profile"
    proc = None
    with FileLock(str(shared) + ".lock"):
        if not Path(str(shared) + ".log").exists():
            log = open(str(shared) + ".log", "w")  # noqa: SIM115 (the child writes it)
            env = mirror_env(PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO / "src")]))
            proc = subprocess.Popen([sys.executable, "-c", _BUILD, str(shared / "repo")], cwd=REPO, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
            log.close()
            Path(str(shared) + ".pid").write_text(str(proc.pid))
    yield
    if proc is not None:
        proc.wait()


def _build_alive(shared: Path) -> bool:
    """Whether the build child still runs: one killed by a signal writes neither `ok` nor
    `failed` (psutil, as a zombie not yet reaped by the worker that started it is gone too)."""
    import psutil

    pid = Path(str(shared) + ".pid")
    if not pid.exists():  # written just after the start, under the lock
        return True
    try:
        return psutil.Process(int(pid.read_text())).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return (shared / "ok").exists()  # it may have ended well since the loop looked


@pytest.fixture(scope="session")
def repo(request, tmp_path_factory, _fast_profile_in_background):
    """A git repository holding this working tree with the fast profile, reproduced once per
    session (by `_fast_profile_in_background`), which this waits for. Read only: tests that
    change anything take `work`. Each pytest-xdist worker takes its own copy (DVC's lock allows
    one command per repository at a time)."""
    shared = _session_dir(request, tmp_path_factory) / "fast-profile"
    log = Path(str(shared) + ".log")
    deadline = time.time() + 1800
    while not (shared / "ok").exists():
        if (shared / "failed").exists() or not _build_alive(shared) or time.time() > deadline:
            time.sleep(1)  # the child's last lines
            why = ("failed" if (shared / "failed").exists() else
                   "took over 30 minutes" if _build_alive(shared) else "was killed")
            pytest.fail(f"the fast reproduction {why} ({log}):\n{log.read_text()[-4000:]}", pytrace=False)
        time.sleep(0.5)
    mine = tmp_path_factory.mktemp("pipeline") / "repo"
    shutil.copytree(shared / "repo", mine, symlinks=True)
    return mine


@pytest.fixture(scope="session")
def binarized(tmp_path_factory) -> Path:
    """The real MNIST binarized as the binarize stage does it (data/binarized/mnist.npz), for the
    tests that need the data but not the fast reproduction."""
    from mnist_vae.io import data

    out = tmp_path_factory.mktemp("binarized") / "mnist.npz"
    data.binarize_dataset(_mirror("MNIST_MIRROR", "mnist"), out, raw_params()["data"]["threshold"])
    return out


@pytest.fixture(scope="session")
def binarized_fashion(binarized) -> Path:
    """Fashion-MNIST binarized as the binarize stage does it, beside :func:`binarized`."""
    from mnist_vae.io import data

    out = binarized.parent / "fashion-mnist.npz"
    data.binarize_dataset(_mirror("FASHION_MNIST_MIRROR", "fashion-mnist"), out, raw_params()["data"]["threshold"])
    return out


@pytest.fixture
def work(repo, tmp_path):
    """A full copy of the reproduced repository (git, DVC cache, outputs) that a test may change."""
    dest = tmp_path / "work"
    shutil.copytree(repo, dest, symlinks=True)
    return dest


