"""The benchmark's own code path, on a small set: `make bench` must keep working as the library
changes (its project loop is exactly the train stage's `fit`)."""

import importlib.util

import numpy as np

from conftest import REPO
from mnist_vae import artifacts


def load_benchmark():
    spec = importlib.util.spec_from_file_location("train_speed", REPO / "benchmarks/train_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_project_loop_reports_its_timings_and_loss(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    artifacts.write_npz(path, train_x=(rng.random((256, 784)) < 0.13).astype(np.uint8),
                        test_x=(rng.random((64, 784)) < 0.13).astype(np.uint8))
    out = load_benchmark().run_project(path, epochs=2, device="cpu", seed=0, tracking=False)
    assert set(out) == {"epoch_seconds", "test_loss", "train_seconds", "device"}
    assert len(out["epoch_seconds"]) == 2 and out["train_seconds"] >= sum(out["epoch_seconds"]) * 0.9
    assert out["device"] == "cpu" and 100 < out["test_loss"] < 543
