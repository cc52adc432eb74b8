"""The benchmark's own code path, on a small set: `make bench` must keep working as the library
changes (its project loop is exactly the train stage's `fit`)."""

import numpy as np
from conftest import load_script

from mnist_vae.io import artifacts


def load_benchmark():
    return load_script("benchmarks/train_speed.py")


def test_the_project_loop_reports_its_timings_and_loss(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    artifacts.write_npz(path, train_x=(rng.random((256, 784)) < 0.13).astype(np.uint8),
                        test_x=(rng.random((64, 784)) < 0.13).astype(np.uint8))
    out = load_benchmark().run_project(path, epochs=2, device="cpu", seed=0, tracking=False)
    assert set(out) == {"epoch_seconds", "test_loss", "train_seconds", "device"}
    assert len(out["epoch_seconds"]) == 2 and out["train_seconds"] >= sum(out["epoch_seconds"]) * 0.9
    assert out["device"] == "cpu" and 100 < out["test_loss"] < 543


def test_the_iwae_timing_runs_both_paths_and_they_agree():
    out = load_benchmark().iwae_side_by_side("vae2d", "cpu", images=20)
    assert out["images"] == 20 and out["k"] == 1000 and out["rows_per_pass"] == 2000
    assert min(out["fused_seconds"], out["plain_seconds"], out["floor_seconds"]) > 0
    assert out["max_abs_difference"] < 1e-3


def test_the_training_floor_times_every_product_of_an_epoch():
    bench = load_benchmark()
    small, large = (bench.training_floor("vae20d", "cpu", n_train=n, n_test=2000) for n in (1280, 12800))
    assert 0 < small < large  # ten times the batches: more products to time
