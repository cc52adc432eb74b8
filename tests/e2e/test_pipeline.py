"""The real pipeline, run by DVC on the real MNIST files from the mirror, with a fast params
profile, in a temporary git repository holding this working tree.

`repo` (conftest) is reproduced once per session and only read; every test that changes anything
(params, commits, remotes, files) works on `work`, its own full copy, so results do not depend on
test order or `-k`."""

import contextlib
import json
import re
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    FAST_MODELS,
    REPO,
    assert_clean_failure,
    changed_stages,
    dvc,
    mirror_env,
    ran_stages,
    run_stage,
    set_params,
    sh,
    sigint_default,
)
from PIL import Image

from mnist_vae.io import layout
from mnist_vae.study.workspace import dvc_exe, git

pytestmark = pytest.mark.slow

BATCHES = math.ceil(1024 / 128)  # one epoch of the fast profile
FRAMES = 1 + math.ceil(BATCHES / 2)  # one before training, then every 2 batches
MODELS = FAST_MODELS
PER_MODEL = ("train", "evaluate", "render-grids", "render-gifs")


def each(stage: str, models=MODELS) -> set[str]:
    return {f"{stage}@{m}" for m in models}


def of_model(model: str) -> set[str]:
    return {f"{stage}@{model}" for stage in PER_MODEL}


ANOMALY = each("anomaly-kl-stats", ("vae20d",))
TRAIN, EVALUATE, GRIDS, GIFS = (each(s) for s in PER_MODEL)
STAGES = {"download", "binarize", "report"} | TRAIN | EVALUATE | GRIDS | GIFS | ANOMALY
REPORT = ("report.py", *yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]["cmd"].split()[3:])


def downstream_of(repo: Path, stages: set[str]) -> set[str]:
    """The stages and everything that depends on them, from DVC's own DAG (`dvc dag --dot`)."""
    edges = [line.replace('"', "").rstrip(";").split(" -> ") for line in dvc("dag", "--dot", cwd=repo).stdout.splitlines()
             if " -> " in line]
    found, frontier = set(stages), set(stages)
    while frontier:
        frontier = {b for a, b in edges if a in frontier} - found
        found |= frontier
    return found


def test_all_stages_ran_and_produced_their_outputs(repo):
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == STAGES
    for name, latent, parameters in (("vae20d", 20, 652_824), ("vae2d", 2, 749_988)):
        m = json.loads((repo / layout.train_metrics(name)).read_text())
        assert m["epochs"] == 1 and m["device"] == "cpu" and m["parameters"] == parameters
        assert m["test_loss"] == pytest.approx(m["test_bce"] + m["test_kl"])
        # 8 batches: far from the full run's 88 / 140, well below an untrained model's ~784 ln 2 = 543
        assert 100 < m["test_loss"] < 450
        history = (repo / layout.history(name)).read_text().splitlines()
        assert history[0] == "epoch,train_loss,test_loss,test_bce,test_kl" and history[1].startswith("1,")
        assert float(history[1].split(",")[2]) == pytest.approx(m["test_loss"], rel=1e-5)
        ev = json.loads((repo / layout.eval_metrics(name)).read_text())
        assert (ev["iwae_k"], ev["iwae_images"], ev["latent_dim"]) == (20, 100, latent)
        assert ev["test_iwae_nll"] < ev["test_neg_elbo"]  # the IWAE bound is the tighter one
        with np.load(repo / f"data/evaluation/{name}.npz") as f:
            assert f["iwae_nll"].shape == (100,) and f["latent_mean_variance"].shape == (latent,)
            assert f["iwae_nll"].mean() == pytest.approx(ev["test_iwae_nll"], rel=1e-5)
            assert ev["active_units"] == int((f["latent_mean_variance"] > 0.01).sum())


@pytest.mark.parametrize("name", ["vae20d", "vae2d"])
def test_the_fused_iwae_equals_the_plain_one_on_a_trained_model(repo, name):
    """The evaluate stage's fused log-likelihood against objective.py's plain log weights (the
    code before the fusion, kept as the oracle), on this session's trained models, 100 real test
    images and the same 200 draws each: per image within 1e-3 nats."""
    import torch

    from mnist_vae.core.model import load_checkpoint
    from mnist_vae.core.objective import iwae_bound, log_importance_weights

    model = load_checkpoint(repo / layout.checkpoint(name))
    with read_arrays(repo / "data/binarized/mnist.npz") as d:
        x = torch.from_numpy(d["test_x"][:100]).float()
    eps = torch.randn((200, 100, model.latent_dim), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        plain = torch.logsumexp(log_importance_weights(model, x, eps), dim=0) - math.log(200)
    draws = iter(eps.split(50))
    fused = iwae_bound(model, x, k=200, generator=None, chunk=50, draw=lambda n, shape: next(draws))
    assert -plain.mean().item() > 80  # a trained model's real values, not an untrained one's thousands
    assert (fused - plain).abs().max().item() < 1e-3


def test_the_fused_iwae_equals_the_plain_one_on_a_well_trained_model(binarized):
    """The same comparison on the default 20-d model trained as the committed run trains it, but
    for 3 epochs instead of 10 (on all 60,000 images its decoder is already sharp, which is where
    a float shortcut would show): per image within 1e-3 nats, an absolute bound, for every one of
    200 real test images."""
    import torch
    from conftest import params_with

    from mnist_vae.core.objective import iwae_bound, log_importance_weights
    from mnist_vae.core.training import fit

    p = params_with({"tracking.enabled": False, "train.epochs": 3})
    with read_arrays(binarized) as d:
        train_x, test_x = d["train_x"], d["test_x"]
    assert train_x.shape == (60000, 784)
    model = fit(p.models["vae20d"], p, train_x, test_x, progress=False)["model"]
    x = torch.from_numpy(test_x[:200]).float()
    eps = torch.randn((200, 200, model.latent_dim), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        plain = torch.logsumexp(log_importance_weights(model, x, eps), dim=0) - math.log(200)
    draws = iter(eps.split(50))
    fused = iwae_bound(model, x, k=200, generator=None, chunk=50, draw=lambda n, shape: next(draws))
    assert 80 < -plain.mean().item() < 100  # a well trained model's NLL (the reference's test ELBO: 96.56 at epoch 3)
    assert (fused - plain).abs().max().item() < 1e-3


def test_binarized_data_and_tracking_frames(repo):
    with read_arrays(repo / "data/binarized/mnist.npz") as d:
        assert d["train_x"].shape == (60000, 784) and d["test_x"].shape == (10000, 784)
        assert set(np.unique(d["train_x"])) == {0, 1}
        assert d["train_x"].mean() == pytest.approx(0.1323, abs=5e-5)  # the reference's train mean
        originals = d["test_x"][[1, 4, 12, 15, 22]]
    with np.load(repo / "data/tracking/vae2d.npz") as f:
        assert f["manifold"].shape == (FRAMES, 560, 560) and f["recon"].shape == (FRAMES, 56, 140)
        assert f["batch"].tolist() == [0, 2, 4, 6, 8]
        last_manifold = f["manifold"][-1]
    with np.load(repo / "data/tracking/vae20d.npz") as f:
        assert set(f.files) == {"batch", "recon"}  # no manifold frames for a 20-d latent
    manifold = np.asarray(Image.open(repo / layout.figure("vae2d", "manifold")))
    assert manifold.shape == (560, 560)
    assert np.array_equal(manifold, last_manifold)  # the final figure is the last tracking frame
    recon = np.asarray(Image.open(repo / layout.figure("vae20d", "reconstructions")))
    assert recon.shape == (56 * 4, 140 * 4)
    top = recon[:28 * 4:4, ::4]
    assert np.array_equal(top, np.hstack([o.reshape(28, 28) * 255 for o in originals]).astype(np.uint8))
    assert np.asarray(Image.open(repo / layout.figure("vae20d", "prior-samples"))).shape == (8 * 28, 8 * 28)
    for name in MODELS:  # every model: a manifold and a scatter, any latent size
        assert np.asarray(Image.open(repo / layout.figure(name, "manifold"))).shape == (560, 560)
        assert Image.open(repo / layout.figure(name, "latent-scatter")).size == (960, 840)


@pytest.mark.parametrize("model, gif, frames, ms, size", [
    ("vae2d", "manifold-all", len(range(0, FRAMES, 5)), 50, (560, 560)),
    ("vae2d", "manifold-early", len(range(0, min(FRAMES, 200), 2)), 100, (560, 560)),
    ("vae20d", "reconstruction-all", len(range(0, FRAMES, 5)), 50, (560, 224)),
    ("vae20d", "reconstruction-early", min(FRAMES, 150), 100, (560, 224)),
    ("vae2d", "reconstruction-early", min(FRAMES, 150), 100, (560, 224)),
])
def test_gifs_have_the_params_frame_counts_and_timings(repo, model, gif, frames, ms, size):
    folder = repo / layout.gifs_dir(model)
    with Image.open(folder / f"{gif}.gif") as im:
        assert (im.n_frames, im.size, im.info["loop"], im.info["duration"]) == (frames, size, 0, ms)
    kinds = ["reconstruction", "manifold"] if model == "vae2d" else ["reconstruction"]  # manifolds: 2-d latents
    names = sorted(f"{kind}-{span}.gif" for kind in kinds for span in ("all", "early"))
    assert sorted(p.name for p in folder.iterdir()) == names
    summary = json.loads((repo / layout.gifs_summary(model)).read_text())
    assert sorted(summary) == names
    row = summary[f"{gif}.gif"]
    assert (row["frames"], row["seconds_per_frame"]) == (frames, ms / 1000)
    assert row["bytes"] == (folder / f"{gif}.gif").stat().st_size < 5_000_000
    assert (row["grey_levels"], row["tolerance"]) == (255, 0) and row["worst_psnr_db"] > 55  # small: the first rung


def test_a_models_own_train_settings_override_the_shared_ones(repo):
    """The fast profile's vae20d has its own learning rate (as params.yaml's vae20d-b512 has its
    batch size): its checkpoint records it, the other model trained with the shared one."""
    from mnist_vae.core import model

    ckpt = model.read(repo / "models/vae20d.safetensors")
    assert ckpt["train"]["lr"] == 0.002 and ckpt["train"]["batch_size"] == 128 and ckpt["config"]["latent_dim"] == 20
    assert model.read(repo / "models/vae2d.safetensors")["train"]["lr"] == 0.001
    assert json.loads((repo / layout.train_metrics("vae20d")).read_text())["parameters"] == 652_824


def test_anomaly_metrics(repo):
    a = json.loads((repo / layout.anomaly_metrics("vae20d")).read_text())
    assert a["model"] == "vae20d"
    train = a["kl"]["train"]
    assert train["threshold"] == pytest.approx(train["mean"] + 3 * train["std"])
    assert train["mean"] == pytest.approx(train["fit_mean"]) and train["p50"] < train["p90"] < train["p99"]
    # even a one-epoch model tells uniform noise from digits, by either score
    assert a["kl"]["noise"]["auroc"] > 0.9 and a["neg_elbo"]["noise"]["auroc"] > 0.99
    assert a["neg_elbo"]["noise"]["detection_rate"] == 1.0
    with np.load(repo / layout.anomaly_arrays("vae20d")) as s:
        assert s["kl_train"].shape == (1024,) and s["kl_noise"].shape == (500,) and s["kl_fashion"].shape == (500,)  # data.test_limit
        assert float(s["kl_noise_image"][0]) == pytest.approx(a["noise_image"]["kl"])
    roc = (repo / layout.roc_table("vae20d", "kl", "noise")).read_text().splitlines()
    assert roc[0] == "fpr,tpr" and len(roc) == 1 + 201 and roc[1] == "1,1" and roc[-1] == "0,0"
    assert Image.open(repo / layout.anomaly_figure("vae20d", "kl-histogram")).size == (1080, 600)


def test_reproduced_pipeline_is_up_to_date_and_a_second_repro_runs_nothing(repo):
    assert "up to date" in dvc("status", cwd=repo).stdout
    assert ran_stages(dvc("repro", cwd=repo).stdout) == set()


@pytest.mark.parametrize("edit, changed, downstream", [
    ({"gifs": {"reconstruction_all.step": 3}}, GIFS, GIFS | {"report"}),
    ({"grids": {"prior_samples": 16}}, GRIDS, GRIDS),  # the page links the figures, it does not read them
    ({"anomaly": {"k": 2.5}}, ANOMALY, ANOMALY | {"report"}),
    ({"evaluate": {"iwae_k": 10}}, EVALUATE, EVALUATE | {"report"}),
    ({"train": {"step": "autograd"}}, TRAIN, STAGES - {"download", "binarize"}),
    # one model's entry: its own stages and the page that shows every model, never another model's
    ({"models": {"vae2d.encoder_hidden": [300, 100]}}, {"train@vae2d", "report"}, of_model("vae2d") | {"report"}),
    ({"data": {"threshold": 0.4}}, {"binarize"}, STAGES - {"download"}),
    ({"models": {"vae20d.train.lr": 0.003}}, {"train@vae20d", "report"},
     of_model("vae20d") | {"anomaly-kl-stats@vae20d", "report"}),
])
def test_param_edit_invalidates_exactly_its_dependents(work, edit, changed, downstream):
    set_params(work, edit)
    assert changed_stages(work) == changed
    assert downstream_of(work, changed) == downstream


@pytest.mark.parametrize("module, changed", [
    ("src/mnist_vae/core/step.py", TRAIN),
    ("src/mnist_vae/core/evaluation.py", EVALUATE),
    ("src/mnist_vae/viz/figures.py", GRIDS | GIFS | ANOMALY),
    ("src/mnist_vae/viz/gifs.py", GIFS),
    ("src/mnist_vae/viz/report.py", {"report"}),
    ("src/mnist_vae/study/spread.py", {"report"}),
    ("src/mnist_vae/viz/templates/report.html.j2", {"report"}),
])
def test_code_edit_invalidates_exactly_the_stages_that_import_it(work, module, changed):
    with open(work / module, "a") as fh:
        fh.write("\n# an edit\n")
    assert changed_stages(work) == changed


def test_training_is_deterministic(work):
    """Same seed, same machine, same thread count: byte-identical weights and frames, identical
    metrics (timings aside)."""
    model, frames = work / layout.checkpoint("vae20d"), work / layout.tracking_frames("vae20d")
    before, frames_before = model.read_bytes(), frames.read_bytes()
    metrics_path = work / layout.train_metrics("vae20d")
    metrics_text = metrics_path.read_text()
    run = run_stage("train.py", "vae20d", cwd=work)
    assert run.returncode == 0, run.stderr[-2000:]
    assert model.read_bytes() == before
    assert frames.read_bytes() == frames_before
    timing = {"train_seconds", "tracking_seconds"}
    drop = lambda m: {k: v for k, v in m.items() if k not in timing}  # noqa: E731
    assert drop(json.loads(metrics_path.read_text())) == drop(json.loads(metrics_text))


@pytest.mark.long
def test_no_output_follows_the_deflate_python_links(work):
    """Python's zlib replaced by zlib-ng's, as on Fedora 40 and later (whose zlib is zlib-ng): a
    forced rerun of every stage writes every output md5 of the plain run (deflated .npz members
    had other bytes; tests/io/test_formats.py shows the two deflates differ)."""
    from mnist_vae.study import gate

    plain = gate.output_hashes((work / "dvc.lock").read_text())
    (work / "src/sitecustomize.py").write_text("import sys\nfrom zlib_ng import zlib_ng\nsys.modules['zlib'] = zlib_ng\n")
    swapped = subprocess.run([sys.executable, "-c", "import zipfile; print(zipfile.zlib.__name__)"], cwd=work,
                             env={**os.environ, "PYTHONPATH": "src"}, capture_output=True, text=True, check=True)
    assert swapped.stdout.strip() == "zlib_ng.zlib_ng"  # what every stage (PYTHONPATH=src) now deflates with
    dvc("repro", "--force", cwd=work)
    again = gate.output_hashes((work / "dvc.lock").read_text())
    compared = sorted(p for p in plain if not gate._not_compared(p))
    assert len(compared) >= 20 and {p: again[p] for p in compared} == {p: plain[p] for p in compared}


def _start_training(work, epochs=50):
    set_params(work, {"train": {"epochs": epochs}})
    env = mirror_env(PYTHONPATH=str(work / "src"), PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "stages/train.py", "vae20d"], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=sigint_default)


def _wait_for(proc, text, seconds=120):
    seen, deadline = "", time.time() + seconds
    while time.time() < deadline:
        line = proc.stderr.readline()
        seen += line
        if text in line or not line:
            break
    assert text in seen, seen[-2000:]
    return seen


def test_ctrl_c_during_training_says_so_once_and_keeps_the_old_outputs(work):
    before = (work / "models/vae20d.safetensors").read_bytes()
    proc = _start_training(work)
    _wait_for(proc, "epoch  2/50")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted: no partial output was kept" in rest
    assert "Traceback" not in rest and "Exception ignored" not in rest, rest[-2000:]
    assert (work / "models/vae20d.safetensors").read_bytes() == before
    assert [p.name for d in ("models", "data/tracking", layout.model_dir("vae20d")) for p in (work / d).iterdir()
            if p.name.endswith(".tmp")] == []


def test_killed_repro_recovers_with_a_plain_repro(work):
    """DVC removes a stage's outputs before running it; a killed run leaves none (and no temp
    files: the write itself under a signal is tests/io/test_artifacts.py's), and `dvc repro` recovers."""
    set_params(work, {"train": {"epochs": 50}})
    proc = subprocess.Popen([dvc_exe(), "repro", "train@vae20d"], cwd=work, env=mirror_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, deadline = "", time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen += line
        if "epoch  2/50" in line or not line:
            break
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert "epoch  2/50" in seen, seen[-2000:]
    assert not (work / "models/vae20d.safetensors").exists()
    assert [p.name for d in ("models", "data/tracking") for p in (work / d).iterdir() if p.name.endswith(".tmp")] == []
    set_params(work, {"train": {"epochs": 1}})
    dvc("repro", cwd=work)
    assert changed_stages(work) == set()


DAMAGES = [
    ("truncate:models/vae20d.safetensors", ("evaluate.py", "vae20d"),  # not what dvc.lock records: hashed first
     ["models/vae20d.safetensors: md5", "is not the", "dvc repro -f -s train@vae20d"]),
    ("garbage:data/binarized/mnist.npz", ("train.py", "vae20d"),
     ["data/binarized/mnist.npz: not a readable .npz file", "dvc checkout data/binarized/mnist.npz"]),
    ("wrong-arrays:data/binarized/mnist.npz", ("render_grids.py", "vae2d"),
     ["data/binarized/mnist.npz: has no array 'test_x'", "dvc repro -f -s binarize"]),
    ("wrong-arrays:data/tracking/vae2d.npz", ("render_gifs.py", "vae2d"),
     ["data/tracking/vae2d.npz: has no array 'recon'", "dvc repro -f -s train@vae2d"]),
    ("truncate:models/vae20d.safetensors", ("anomaly_kl_stats.py", "vae20d"), ["models/vae20d.safetensors: md5"]),
    ("json:reports/models/vae2d/gifs.json", REPORT,
     ["reports/models/vae2d/gifs.json: not valid JSON", "dvc repro -f -s render-gifs@vae2d"]),
    ("csv:reports/models/vae2d/history.csv", REPORT,
     ["reports/models/vae2d/history.csv: has no column 'epoch'", "dvc repro -f -s train@vae2d"]),
]


@contextlib.contextmanager
def read_arrays(path):
    """An .npz artifact's arrays as the stages read them (bits unpacked)."""
    from mnist_vae.io import artifacts

    yield artifacts.read_npz(path)


def damage(target: Path, kind: str) -> None:
    if kind == "truncate":
        target.write_bytes(target.read_bytes()[:1000])
    elif kind == "garbage":
        target.write_bytes(b"\x93NUMPY" + os.urandom(500))
    elif kind == "json":
        target.write_text('{"vae2d-manifold-all.gif": ')
    elif kind == "csv":
        target.write_text("step,loss\n1,2.5\n")
    else:
        np.savez(target, unrelated=np.zeros(3))


@pytest.mark.long
def test_a_damaged_artifact_gives_one_line_and_repro_recovers(work):
    """Each damaged input stops the stage that reads it with one line naming the file and the
    command that restores it; then, with every kind of damage in place at once, one plain
    `dvc repro` sees the damaged files as changed and rebuilds them all."""
    for spec, stage, needles in DAMAGES:
        kind, path = spec.split(":")
        target = work / path
        original = target.read_bytes()
        damage(target, kind)
        try:
            assert_clean_failure(run_stage(*stage, cwd=work), *needles)
        finally:
            target.write_bytes(original)
    for spec in dict.fromkeys(spec for spec, _, _ in DAMAGES if not spec.startswith("wrong-arrays:data/binarized")):
        kind, path = spec.split(":")  # one damage per file: mnist.npz is garbage, not also re-saved
        damage(work / path, kind)
    assert {"binarize", "train@vae20d", "train@vae2d", "render-gifs@vae2d"} <= changed_stages(work)
    dvc("repro", cwd=work)
    assert changed_stages(work) == set()


@pytest.mark.long
def test_a_damaged_cache_object_is_named_and_the_documented_recovery_rebuilds_it(work):
    """One byte flipped in the DVC cache object of a checkpoint, then checked out: DVC's status
    still says up to date, but the stage that loads it, the gate and `make verify` each name the
    file in one line; docs/dvc.md's recovery (verify --remove, dvc repro -f -s) gives the bytes back."""
    from mnist_vae.io import integrity

    path = layout.checkpoint("vae2d")
    good = (work / path).read_bytes()
    obj = integrity.cache_object(work / ".dvc/cache", integrity.file_md5(work / path))
    obj.chmod(0o644)
    damaged = bytearray(obj.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    obj.write_bytes(bytes(damaged))
    (work / path).unlink()
    dvc("checkout", cwd=work)
    assert (work / path).read_bytes() == bytes(damaged)
    proc = dvc("repro", "-f", "-s", "evaluate@vae2d", cwd=work, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert re.search(rf"{path}: md5 \w+ is not the \w+ that dvc.lock records for train@vae2d's output", proc.stderr)
    gate = sh([sys.executable, "tools/repro_check.py", "--compare-only"], cwd=work, check=False)
    assert gate.returncode != 0 and f"{path} (workspace bytes)" in gate.stdout
    assert gate.stderr.strip().splitlines()[-1].startswith(f"repro-check: FAILED: {path} (workspace bytes): not the "
                                                           f"bytes dvc.lock records")
    verify = sh([sys.executable, "tools/verify_outputs.py"], cwd=work, check=False)
    assert verify.returncode == 1
    assert f"damaged cache object {obj}: holds {path} (train@vae2d)" in verify.stdout
    assert "then rebuild: dvc repro -f -s train@vae2d" in verify.stdout
    sh([sys.executable, "tools/verify_outputs.py", "--remove"], cwd=work, check=False)
    assert not obj.exists()
    dvc("repro", "-f", "-s", "train@vae2d", cwd=work)
    assert (work / path).read_bytes() == good and integrity.file_md5(obj) == integrity.file_md5(None, good)
    assert sh([sys.executable, "tools/verify_outputs.py"], cwd=work).returncode == 0


def test_tracking_off_fails_render_gifs_with_the_key_and_recovers(work):
    """Through DVC, on the one stage (no retraining): the failure names the key, and switching
    tracking back on makes the pipeline whole again from the run cache."""
    set_params(work, {"tracking": {"enabled": False}})
    proc = dvc("repro", "-s", "render-gifs@vae2d", cwd=work, check=False)
    assert proc.returncode != 0
    assert "'tracking.enabled' is false" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    set_params(work, {"tracking": {"enabled": True}})
    out = dvc("repro", cwd=work).stdout
    assert ran_stages(out) <= {"render-gifs@vae2d", "report"}
    assert changed_stages(work) == set()


def test_dvc_push_pull_round_trip(work, tmp_path):
    remote = tmp_path / "remote"
    dvc("remote", "add", "-d", "local", str(remote), cwd=work)
    dvc("push", cwd=work)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "remote")
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    dvc("pull", cwd=clone)
    assert (clone / "models/vae20d.safetensors").read_bytes() == (work / "models/vae20d.safetensors").read_bytes()
    assert changed_stages(clone) == set()
    assert ran_stages(dvc("repro", cwd=clone).stdout) == set()  # nothing retrains


@pytest.mark.parametrize("mode, shift, flag, tolerance, message", [
    ("exact", 0.05, [], "exact", "a bit-promising rerun must equal"),
    ("statistical", None, ["--statistical", "--other-settings"], "abs", "drifted beyond tolerance"),
])
def test_gate_fails_with_table_when_a_committed_metric_differs(work, mode, shift, flag, tolerance, message):
    """A committed 20-d test_loss off the reproduced one: the gate fails with the table. Both runs
    are universal (bits promised on any CPU), so the gate is exact and 0.05 nats fail; with --statistical
    (the tolerances for other machines and fast mode) 1.5 times the committed tolerance does."""
    from mnist_vae.study import gate

    path = work / layout.train_metrics("vae20d")
    real = path.read_text()
    if shift is None:
        shift = 1.5 * gate.rule_for(f"{layout.train_metrics('vae20d')}:test_loss", gate.load_rules(work / "tolerances.yaml"))["abs"]
    ok = sh([sys.executable, "tools/repro_check.py", "--compare-only", *flag], work)
    assert "repro-check: OK" in ok.stdout and f"{mode} mode" in ok.stdout
    edited = json.loads(real)
    edited["test_loss"] += shift
    path.write_text(json.dumps(edited))
    git(work, "commit", "-qam", "scratch: edited metric")
    path.write_text(real)
    proc = sh([sys.executable, "tools/repro_check.py", "--compare-only", *flag], work, check=False)
    assert proc.returncode != 0
    drift = [line for line in proc.stdout.splitlines() if line.endswith("DRIFT")]
    assert len(drift) == 1 and drift[0].split()[0] == f"{layout.train_metrics('vae20d')}:test_loss"
    assert drift[0].split()[1:4] == [f"{edited['test_loss']:.6g}", f"{json.loads(real)['test_loss']:.6g}", tolerance]
    assert message in proc.stderr


@pytest.mark.parametrize("edit, field", [
    (lambda m: m.update(bitwise_promise=False), "bitwise_promise False in the rerun against True"),
    (lambda m: m.update(numerics="fast"), "numerics fast in the rerun against universal"),
    (lambda m: m.clear(), "the rerun has no machine record"),
])
def test_a_rerun_that_drops_the_committed_promise_fails_in_one_line_and_statistical_is_on_purpose(work, edit, field):
    """The committed run promises its bits on any CPU; a rerun whose record breaks the promise (an
    autograd step, another torch, fast numerics, no record) is not judged by the tolerances without
    a word: one line names the model and the field, and --statistical takes the tolerances on purpose."""
    path = work / layout.timings("vae20d", "train")
    record = json.loads(path.read_text())
    edit(record["machine"])
    path.write_text(json.dumps(record))
    proc = sh([sys.executable, "tools/repro_check.py", "--compare-only", "--allow-changes"], work, check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert last.startswith("repro-check: FAILED: the committed run promises the same bits on this machine, but vae20d: ")
    assert field in last and "--statistical" in last
    proc = sh([sys.executable, "tools/repro_check.py", "--compare-only", "--allow-changes", "--statistical"], work,
              check=False)  # the fast profile: 1 epoch, a small IWAE, against tolerances measured at 10 epochs
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1].startswith(
        "repro-check: FAILED before comparing: the tolerances were measured by the spread study at other settings")
    assert "reports/models/vae20d/train.json:epochs 1 (the study's 10)" in proc.stderr
    assert "vae20d-b512 not rerun" in proc.stderr and "--other-settings" in proc.stderr  # the model set first
    proc = sh([sys.executable, "tools/repro_check.py", "--compare-only", "--allow-changes", "--statistical",
               "--other-settings"], work, check=False)
    assert "note: judged by tolerances measured at other settings" in proc.stdout
    assert "statistical mode" in proc.stdout and "repro-check: OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr


def test_gate_says_what_it_compares_an_edit_or_a_stale_stage_stops_it_in_one_line(work):
    """An uncommitted edit to params.yaml (or code) would be rerun and blamed on the reproduction,
    and a compare-only check of stale outputs compares old metrics: both stop before comparing,
    in one line naming the files or stages; --allow-changes compares anyway and says so."""
    params_file = work / "params.yaml"
    text = params_file.read_text()
    params_file.write_text(re.sub(r"(\n  k: )3\.0\b", r"\g<1>2.5", text, count=1))
    assert params_file.read_text() != text
    proc = sh([sys.executable, "tools/repro_check.py", "--compare-only"], work, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("repro-check: FAILED before comparing: params.yaml differ from HEAD")
    assert "--allow-changes" in line
    proc = sh([sys.executable, "tools/repro_check.py", "--compare-only", "--allow-changes"], work, check=False)
    assert "note: compared with HEAD although these differ (--allow-changes): params.yaml" in proc.stdout
    assert "anomaly-kl-stats@vae20d" in proc.stdout  # stale: its param changed
    git(work, "checkout", "--", "params.yaml")
    (work / layout.evaluation_arrays("vae20d")).unlink()
    proc = sh([sys.executable, "tools/repro_check.py", "--compare-only"], work, check=False)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and line.startswith("repro-check: FAILED before comparing: `dvc status` lists stale "
                                                    "stages (evaluate@vae20d")


def test_exact_gate_fails_when_an_output_differs_byte_for_byte(work):
    """A figure whose bytes differ from the committed one, every metric equal: the exact gate fails
    on that output alone."""
    png = work / "reports/images/vae2d/manifold.png"
    png.write_bytes(png.read_bytes() + b"\0")
    dvc("commit", "-f", "render-grids@vae2d", cwd=work)
    proc = sh([sys.executable, "tools/repro_check.py", "--compare-only"], work, check=False)
    assert proc.returncode != 0, proc.stdout
    drift = [line.split()[0] for line in proc.stdout.splitlines() if line.endswith("DRIFT")]
    assert drift == ["reports/images/vae2d/manifold.png"], proc.stdout
    assert "reports/images/vae2d/manifold.png (bytes): differs" in proc.stderr


def test_dvc_exp_run_with_a_set_param_reruns_only_what_depends_on_it(work):
    proc = dvc("exp", "run", "-S", "gifs.reconstruction_all.step=3", cwd=work)
    assert ran_stages(proc.stdout + proc.stderr) == GIFS | {"report"}  # the page shows the GIFs
    with Image.open(work / layout.gifs_dir("vae20d") / "reconstruction-all.gif") as im:
        assert im.n_frames == len(range(0, FRAMES, 3))
    assert "gifs.reconstruction_all.step" in dvc("exp", "show", "--csv", cwd=work).stdout
    # no result changed, so no metric column differs (timings are not metrics); the other changed
    # columns are deps (paths), here the report's folder of summaries
    header = dvc("exp", "show", "--only-changed", "--csv", cwd=work).stdout.splitlines()[0].split(",")
    standard = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}
    deps = {c for c in header if (work / c).exists()}
    assert set(header) - standard - deps == {"gifs.reconstruction_all.step"}, header
    assert deps <= {layout.MODELS_REPORTS}, header


def test_metrics_are_unchanged_after_a_forced_rerun_on_the_same_machine(work):
    """Results only in the metrics files: rerunning a stage changes none of them."""
    for stage in ("train@vae20d", "evaluate@vae2d"):
        dvc("repro", "-f", "-s", stage, cwd=work)
    assert json.loads(dvc("metrics", "diff", "--json", cwd=work).stdout or "{}") == {}
    timings = json.loads((work / layout.timings("vae20d", "train")).read_text())
    assert timings["train_seconds"] > 0 and len(timings["epoch_seconds"]) == 1
    for model in MODELS:
        assert not any("seconds" in k for k in json.loads((work / layout.train_metrics(model)).read_text()))


def test_a_diverging_run_stops_with_one_line_and_writes_nothing(work):
    before = {p: (work / p).read_bytes() for p in (layout.checkpoint("vae2d"), layout.train_metrics("vae2d"))}
    set_params(work, {"train": {"lr": 10}})
    line = assert_clean_failure(run_stage("train.py", "vae2d", cwd=work), "model 'vae2d' diverged at epoch 1",
                                "lower train.lr (now 10)")
    assert line.startswith("error: train: model 'vae2d' diverged")
    assert {p: (work / p).read_bytes() for p in before} == before


def test_after_a_failed_experiment_the_readme_recipe_returns_to_the_last_good_state(work):
    """A failing `dvc exp run -S` leaves params.yaml rewritten and the failed stage's outputs
    gone; the two commands of docs/dvc.md bring back the committed state."""
    proc = dvc("exp", "run", "-S", "gifs.min_psnr_db=1000", cwd=work, check=False)
    assert proc.returncode != 0
    assert "min_psnr_db: 1000" in (work / "params.yaml").read_text()
    assert changed_stages(work)
    for command in readme_recovery_commands():
        sh(command.split(), work)
    assert changed_stages(work) == set()
    assert git(work, "status", "--porcelain") == ""
    assert (work / layout.gifs_dir("vae2d") / "manifold-all.gif").exists()


def readme_recovery_commands() -> list[str]:
    text = (REPO / "docs/dvc.md").read_text()
    block = text.split("## After a failed experiment", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands and all(c.startswith(("git ", "dvc ")) for c in commands)
    return commands


def readme_dvc_commands() -> list[str]:
    """The dvc and python commands of docs/dvc.md's first block, as a user would type them."""
    text = (REPO / "docs/dvc.md").read_text()
    block = text.split("# Working with DVC", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip().startswith(("dvc ", "python "))]


@pytest.mark.long
def test_every_dvc_command_in_the_docs_runs_as_written(work):
    commands = readme_dvc_commands()
    assert len(commands) >= 10 and "dvc exp run --temp -n z3 -S models.vae2d.latent_dim=3" in commands
    before = git(work, "status", "--porcelain")
    for command in commands:
        argv = command.split()
        proc = sh([sys.executable, *argv[1:]] if argv[0] == "python" else argv, work, check=False)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
    assert git(work, "status", "--porcelain") == before  # the experiments left the workspace as it was
    # the readable comparison: the param each experiment changed and the metrics it moved, in 80 columns
    table = sh([sys.executable, "tools/compare.py", "--width", "80"], work).stdout
    assert max(map(len, table.splitlines())) <= 80, table
    assert "vae2d.latent_dim" in table and "anomaly.k" in table and "vae2d loss" in table, table
    rows = {line.split()[0]: line.split()[1:3] for line in table.splitlines()[2:]}
    assert rows["z3"] == ["3.0", "3"] and rows["k25"] == ["2.5", "2"], table
    assert yaml.safe_load((work / "params.yaml").read_text())["anomaly"]["k"] == 3.0
    shown = dvc("exp", "show", "--json", cwd=work).stdout
    assert '"k25"' in shown and '"z3"' in shown


def page_images(repo: Path) -> set[str]:
    from mnist_vae.viz.report import linked_files

    return {f"reports/{path}" for path in linked_files((repo / "reports/index.html").read_text())}


def model_images(repo: Path, models) -> set[str]:
    return {p.relative_to(repo).as_posix() for m in models for p in (repo / layout.images_dir(m)).rglob("*")
            if p.suffix in (".png", ".gif")}


def test_report_shows_exactly_the_images_it_declares(repo):
    html = (repo / "reports/index.html").read_text()
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["report"]
    outs = set(stage["outs"])
    assert layout.MODELS_REPORTS in stage["deps"]
    # the report reads only small files kept in git: nothing DVC caches is a dep of it
    assert not [d for d in stage["deps"] if d.startswith(layout.IMAGES)]
    assert all(f.name != ".gitignore" for f in (repo / layout.MODELS_REPORTS).rglob("*"))
    linked = page_images(repo)
    # every image shown is the report's own or one of a model's, and every model image is shown
    studies = {p for p in linked if p.startswith("reports/studies/")}  # a study's figure (tools/study.py), in git
    assert all((repo / p).is_file() for p in studies)
    assert linked - outs - studies == model_images(repo, MODELS)
    assert outs - {"reports/index.html"} <= linked
    assert len([p for p in linked if p.endswith(".gif")]) == 6  # 2 reconstruction GIFs a model, 2 manifold GIFs of the 2-d one
    for model in MODELS:
        assert f'<section class="model" id="model-{model}">' in html
    for number in ("87.65", "140.24", "27.57", "4.38"):  # the reference's, beside ours
        assert f'<td class="n">{number}</td>' in html


@pytest.mark.long
def test_a_model_is_one_params_entry_and_removing_it_leaves_nothing_behind(work):
    """Adding a model to params.yaml, and nothing else, trains, evaluates and draws it and gives
    it a section of the page; no other model's stages rerun. Removing it again cleans up."""
    entry = {"latent_dim": 10, "encoder_hidden": [64], "decoder_hidden": None}
    path = work / "params.yaml"
    original = path.read_text()
    raw = yaml.safe_load(original)
    raw["models"]["vae10d"] = entry
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert changed_stages(work) == of_model("vae10d") | {"report"}
    ran = ran_stages(dvc("repro", cwd=work).stdout)
    assert ran == of_model("vae10d") | {"report"}
    m = json.loads((work / layout.train_metrics("vae10d")).read_text())
    assert m["epochs"] == 1 and 100 < m["test_loss"] < 543
    assert json.loads((work / layout.eval_metrics("vae10d")).read_text())["latent_dim"] == 10
    html = (work / "reports/index.html").read_text()
    assert '<section class="model" id="model-vae10d">' in html
    new_images = model_images(work, ["vae10d"])
    assert len(new_images) == 4 + 2 and new_images <= page_images(work)  # 4 figures, 2 reconstruction GIFs
    for image in page_images(work):
        with Image.open(work / image) as im:
            im.verify()  # every image on the page is there and decodes
    assert changed_stages(work) == set()

    path.write_text(original)
    assert changed_stages(work) == {"report"}  # the page: no other stage reads the list of models
    dvc("repro", cwd=work)
    assert changed_stages(work) == set()
    html = (work / "reports/index.html").read_text()
    assert "vae10d" not in html and not any("vae10d" in p for p in page_images(work))


@pytest.mark.long
def test_renaming_a_model_then_make_prune_and_repro_leaves_nothing_of_the_old_name(work):
    """Rename vae2d, reproduce, prune (docs/pipeline.md), reproduce: `dvc status` clean, no file
    and no dvc.lock entry of the old name, git sees only the intended changes, and the page keeps
    the reference's rows of the renamed model."""
    path = work / "params.yaml"
    path.write_text(path.read_text().replace("  vae2d:\n", "  vae2d-small:\n", 1))
    assert "vae2d-small" in yaml.safe_load(path.read_text())["models"]
    dvc("repro", cwd=work)
    proc = sh([sys.executable, "tools/prune.py"], work)
    assert "dropping from dvc.lock: train@vae2d, evaluate@vae2d, render-grids@vae2d, render-gifs@vae2d" in proc.stdout
    assert ran_stages(dvc("repro", cwd=work).stdout) == {"report"}
    assert changed_stages(work) == set()
    lock = (work / "dvc.lock").read_text()
    assert "@vae2d:" not in lock and "@vae2d-small:" in lock
    for old in ("models/vae2d.safetensors", "data/tracking/vae2d.npz", "data/evaluation/vae2d.npz", "reports/images/vae2d",
                "reports/models/vae2d"):
        assert not (work / old).exists(), old
    status = git(work, "status", "--porcelain").splitlines()
    intended = ("params.yaml", "dvc.lock", "reports/models/vae2d", "reports/images/vae2d")
    assert all(line[3:].startswith(intended) or line.endswith(".gitignore") for line in status), status
    for ignore in work.rglob(".gitignore"):  # DVC's ignore entries of the old outputs went with them
        assert not {"/vae2d.safetensors", "/vae2d.npz", "/vae2d"} & set(ignore.read_text().split()), ignore
    assert "nothing to prune" in sh([sys.executable, "tools/prune.py"], work).stdout
    # the reference's 2-d setup bound to the renamed model (mnist_vae.study.reference): its rows and
    # per-epoch curve stay on the page
    html = (work / "reports/index.html").read_text()
    assert '<td class="n">140.24</td>' in html and '<td class="n">138.44</td>' in html
