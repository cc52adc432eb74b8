"""The real pipeline, run by DVC on the real MNIST files from the mirror, with a fast params
profile, in a temporary git clone of this working tree. Also: DAG invalidation, determinism,
interruption, failure behaviour and a dvc push / pull round trip."""

import gzip
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import FASHION_MIRROR, MNIST_MIRROR, REPO
from mnist_vae.workspace import copy_worktree, dvc_exe, tool_env

pytestmark = pytest.mark.slow

FAST = {
    "train": {"epochs": 1, "train_limit": 1024, "test_limit": 500},
    "tracking": {"every": 2},
    "evaluate": {"iwae_k": 20, "iwae_images": 100},
    "anomaly": {"noise_images": 500, "elbo_samples": 2},
}
STAGES = {"download", "binarize", "train-20d", "train-2d", "evaluate-20d", "evaluate-2d",
          "render-grids", "render-gifs", "anomaly-kl-stats"}


def env():
    return tool_env(MNIST_MIRROR=MNIST_MIRROR, FASHION_MNIST_MIRROR=FASHION_MIRROR, MNIST_VAE_OFFLINE="1")


def sh(args, cwd, check=True, **kw):
    proc = subprocess.run(args, cwd=cwd, env=env(), capture_output=True, text=True, **kw)
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


def downstream_of(repo: Path, stages: set[str]) -> set[str]:
    """The stages and everything that depends on them, from DVC's own DAG (`dvc dag --dot`)."""
    edges = [line.replace('"', "").rstrip(";").split(" -> ") for line in dvc("dag", "--dot", cwd=repo).stdout.splitlines()
             if " -> " in line]
    found, frontier = set(stages), set(stages)
    while frontier:
        frontier = {b for a, b in edges if a in frontier} - found
        found |= frontier
    return found


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git repository holding this working tree with the fast profile, reproduced once."""
    root = tmp_path_factory.mktemp("pipeline") / "repo"
    copy_worktree(REPO, root, commit=False)
    set_params(root, FAST)
    sh(["git", "init", "-q"], root)
    sh(["git", "config", "user.name", "pipeline test"], root)  # `dvc exp run` commits experiments
    sh(["git", "config", "user.email", "test@localhost"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "fast profile"], root)
    t0 = time.perf_counter()
    dvc("repro", cwd=root)
    print(f"fast-profile dvc repro: {time.perf_counter() - t0:.1f} s")
    sh(["git", "add", "-A"], root)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "reproduced"], root)
    return root


def test_all_stages_ran_and_produced_their_outputs(repo):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == STAGES
    for metrics in ("train-vae20d", "train-vae2d"):
        m = json.loads((repo / f"reports/metrics/{metrics}.json").read_text())
        assert {"train_loss", "test_loss", "test_bce", "test_kl", "epochs", "train_seconds", "device"} <= set(m)
        assert m["epochs"] == 1 and m["device"] == "cpu"
        assert m["test_loss"] == pytest.approx(m["test_bce"] + m["test_kl"])
        # 8 batches: far from the full run's 88, well below an untrained model's ~784 ln 2 = 543
        assert 100 < m["test_loss"] < 450
    history = (repo / "reports/plots/history-vae20d.csv").read_text().splitlines()
    assert history[0].startswith("epoch,train_loss,test_loss") and len(history) == 2
    ev = json.loads((repo / "reports/metrics/eval-vae20d.json").read_text())
    assert ev["test_iwae_nll"] < ev["test_neg_elbo"] and 0 <= ev["active_units"] <= 20
    with np.load(repo / "data/evaluation/vae20d.npz") as f:
        assert f["iwae_nll"].shape == (100,) and f["latent_mean_variance"].shape == (20,)
        assert f["iwae_nll"].mean() == pytest.approx(ev["test_iwae_nll"], rel=1e-5)


def test_binarized_data_and_tracking_frames(repo):
    with np.load(repo / "data/binarized/mnist.npz") as d:
        assert d["train_x"].shape == (60000, 784) and d["test_x"].shape == (10000, 784)
        assert set(np.unique(d["train_x"])) == {0, 1}
        originals = d["test_x"][[1, 4, 12, 15, 22]]
    total_batches = math.ceil(1024 / 128)  # one epoch
    with np.load(repo / "data/tracking/vae2d.npz") as f:
        assert f["manifold"].shape == (1 + math.ceil(total_batches / 2), 560, 560)
        assert f["recon"].shape == (1 + math.ceil(total_batches / 2), 56, 140)
        last_manifold = f["manifold"][-1]
    manifold = np.asarray(Image.open(repo / "reports/figures/vae2d-manifold.png"))
    assert manifold.shape == (560, 560)
    assert np.array_equal(manifold, last_manifold)  # the final figure is the last tracking frame
    recon = np.asarray(Image.open(repo / "reports/figures/vae20d-reconstructions.png"))
    assert recon.shape == (56 * 4, 140 * 4)
    top = recon[:28 * 4:4, ::4]
    assert np.array_equal(top, np.hstack([o.reshape(28, 28) * 255 for o in originals]).astype(np.uint8))
    for gif in ("vae2d-manifold-all", "vae2d-manifold-early", "vae20d-reconstruction-all",
                "vae20d-reconstruction-early"):
        with Image.open(repo / f"reports/gifs/{gif}.gif") as im:
            assert im.n_frames >= 1 and im.info["loop"] == 0


def test_anomaly_metrics(repo):
    a = json.loads((repo / "reports/metrics/anomaly.json").read_text())
    assert a["kl"]["train"]["threshold"] == pytest.approx(a["kl"]["train"]["mean"] + 3 * a["kl"]["train"]["std"])
    for score in ("kl", "neg_elbo"):
        for other in ("noise", "fashion"):
            assert 0 <= a[score][other]["auroc"] <= 1
    assert a["noise_image"]["kl_z_score"] > 3
    assert (repo / "reports/figures/anomaly-kl-histogram.png").stat().st_size > 10_000


def test_reproduced_pipeline_is_up_to_date_and_a_second_repro_runs_nothing(repo):
    assert "up to date" in dvc("status", cwd=repo).stdout
    out = dvc("repro", cwd=repo).stdout
    assert "Running stage" not in out


@pytest.mark.parametrize("edit, changed, downstream", [
    ({"gifs": {"recon_all.step": 3}}, {"render-gifs"}, {"render-gifs"}),
    ({"grids": {"prior_samples": 16}}, {"render-grids"}, {"render-grids"}),
    ({"models": {"vae2d.encoder_hidden": [300, 100]}}, {"train-2d"},
     {"train-2d", "render-grids", "render-gifs", "evaluate-2d"}),  # never train-20d
    ({"data": {"threshold": 0.4}}, {"binarize"}, STAGES - {"download"}),
])
def test_param_edit_invalidates_exactly_its_dependents(repo, edit, changed, downstream):
    saved = (repo / "params.yaml").read_text()
    try:
        set_params(repo, edit)
        assert changed_stages(repo) == changed
        assert downstream_of(repo, changed) == downstream
    finally:
        (repo / "params.yaml").write_text(saved)
    assert changed_stages(repo) == set()


def test_training_is_deterministic(repo):
    """Same seed, same machine: byte-identical weights and identical metrics (timings aside)."""
    model, frames = repo / "models/vae20d.pt", repo / "data/tracking/vae20d.npz"
    before, frames_before = model.read_bytes(), frames.read_bytes()
    metrics_path = repo / "reports/metrics/train-vae20d.json"
    metrics_text = metrics_path.read_text()
    sh([sys.executable, "stages/train.py", "vae20d"], repo)
    assert model.read_bytes() == before
    assert frames.read_bytes() == frames_before
    timing = {"train_seconds", "tracking_seconds"}
    drop = lambda m: {k: v for k, v in m.items() if k not in timing}
    assert drop(json.loads(metrics_path.read_text())) == drop(json.loads(metrics_text))
    metrics_path.write_text(metrics_text)  # timings differ; with them restored DVC sees no change
    assert changed_stages(repo) == set()


def test_killed_training_leaves_no_partial_model_and_repro_recovers(repo):
    saved = (repo / "params.yaml").read_text()
    set_params(repo, {"train": {"epochs": 50}})
    proc = subprocess.Popen([dvc_exe(), "repro", "train-20d"], cwd=repo, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline:  # wait until training is under way (past the first epoch)
        line = proc.stdout.readline()
        seen += line
        if "epoch  2/50" in line or not line:
            break
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert "epoch  2/50" in seen, seen[-2000:]
    leftovers = [p.name for d in ("models", "data/tracking", "reports/metrics") for p in (repo / d).iterdir()
                 if p.name.endswith(".tmp")]
    assert leftovers == []
    assert not (repo / "models/vae20d.pt").exists()  # DVC removed the old one; no half-written new one
    (repo / "params.yaml").write_text(saved)
    dvc("repro", cwd=repo)
    assert (repo / "models/vae20d.pt").exists()
    assert changed_stages(repo) == set()


def test_dvc_push_pull_round_trip(repo, tmp_path):
    remote = tmp_path / "remote"
    dvc("remote", "add", "-d", "local", str(remote), cwd=repo)
    dvc("push", cwd=repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "remote"], repo)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    dvc("pull", cwd=clone)
    assert (clone / "models/vae20d.pt").read_bytes() == (repo / "models/vae20d.pt").read_bytes()
    assert changed_stages(clone) == set()
    assert "Running stage" not in dvc("repro", cwd=clone).stdout  # nothing retrains


def test_download_stage_rejects_a_flipped_byte(tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(MNIST_MIRROR, mirror)
    blob = bytearray((mirror / "train-labels-idx1-ubyte.gz").read_bytes())
    blob[1000] ^= 0x01
    (mirror / "train-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    e = env()
    e["MNIST_MIRROR"] = str(mirror)
    proc = subprocess.run([sys.executable, str(REPO / "stages/download.py"), "--datasets", "mnist",
                           "--out", str(tmp_path / "raw")], cwd=tmp_path, env=e, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train-labels-idx1-ubyte.gz" in proc.stderr and "md5 mismatch" in proc.stderr
    assert "expected d53e105ee54ea40749a09fcbcd1e9432" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "raw/mnist").iterdir()) == ["train-images-idx3-ubyte.gz"]


def test_download_stage_missing_mirror_directory(tmp_path):
    e = env()
    e["MNIST_MIRROR"] = str(tmp_path / "absent")
    proc = subprocess.run([sys.executable, str(REPO / "stages/download.py"), "--datasets", "mnist",
                           "--out", str(tmp_path / "raw")], cwd=tmp_path, env=e, capture_output=True, text=True)
    assert proc.returncode == 2
    assert f"MNIST_MIRROR={tmp_path / 'absent'}: mirror directory does not exist" in proc.stderr


def test_binarize_stage_reports_truncated_gz_and_wrong_magic(tmp_path):
    raw = tmp_path / "raw/mnist"
    raw.mkdir(parents=True)
    for f in Path(MNIST_MIRROR).glob("*.gz"):
        shutil.copy(f, raw / f.name)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    run = lambda: subprocess.run([sys.executable, str(REPO / "stages/binarize.py"), "--datasets", "mnist",
                                  "--raw", str(tmp_path / "raw")],
                                 cwd=tmp_path, env=env(), capture_output=True, text=True)
    target = raw / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:2000])
    proc = run()
    assert proc.returncode == 2 and "t10k-labels-idx1-ubyte.gz: not a readable gzip file" in proc.stderr
    payload = bytearray(gzip.decompress((Path(MNIST_MIRROR) / target.name).read_bytes()))
    payload[3] = 0x03  # labels file claiming to be an images file
    target.write_bytes(gzip.compress(bytes(payload)))
    proc = run()
    assert proc.returncode == 2 and "wrong IDX magic number 0x00000803" in proc.stderr
    assert not (tmp_path / "data/binarized/mnist.npz").exists()


def test_gate_fails_with_table_when_a_committed_metric_differs(repo):
    """A committed 20-d test_loss 2 nats off the reproduced one: the gate fails with the table."""
    path = repo / "reports/metrics/train-vae20d.json"
    real = path.read_text()
    ok = sh([sys.executable, "tools/repro_check.py", "--compare-only"], repo)
    assert "repro-check: OK" in ok.stdout
    edited = json.loads(real)
    edited["test_loss"] += 2
    path.write_text(json.dumps(edited))
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "scratch: edited metric"], repo)
    try:
        path.write_text(real)
        proc = sh([sys.executable, "tools/repro_check.py", "--compare-only"], repo, check=False)
        assert proc.returncode != 0
        drift = [l for l in proc.stdout.splitlines() if l.endswith("DRIFT")]
        assert len(drift) == 1 and drift[0].split()[0] == "reports/metrics/train-vae20d.json:test_loss"
        assert drift[0].split()[1:4] == [f"{edited['test_loss']:.6g}", f"{json.loads(real)['test_loss']:.6g}", "abs"]
        assert "drifted beyond tolerance" in proc.stderr
    finally:
        sh(["git", "reset", "-q", "--hard", "HEAD~1"], repo)


def test_dvc_exp_run_with_a_set_param_reruns_only_what_depends_on_it(repo):
    try:
        proc = dvc("exp", "run", "-S", "gifs.recon_all.step=3", cwd=repo)
        out = proc.stdout + proc.stderr
        ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
        assert ran == {"render-gifs"}, out[-3000:]
        with Image.open(repo / "reports/gifs/vae20d-reconstruction-all.gif") as im:
            assert im.n_frames == len(range(0, 1 + math.ceil(8 / 2), 3))
        assert "gifs.recon_all.step" in dvc("exp", "show", "--csv", cwd=repo).stdout
    finally:
        sh(["git", "reset", "-q", "--hard"], repo)
        dvc("checkout", "--force", cwd=repo)
    assert changed_stages(repo) == set()
