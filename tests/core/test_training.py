"""The training loop (mnist_vae.core.training): a diverging run stops before it writes, naming
the model, the epoch and the param to lower; a finite run is not stopped."""

import math

import numpy as np
import pytest
import torch
from conftest import params_with

from mnist_vae.io import params


def test_training_stops_at_the_first_non_finite_loss_naming_model_epoch_and_param():
    from mnist_vae.core.training import Diverged, fit

    p = params_with({"train.lr": 10.0, "train.epochs": 3, "train.device": "cpu", "tracking.enabled": False})
    x = (np.random.default_rng(0).random((512, 784)) < 0.2).astype(np.uint8)
    with pytest.raises(Diverged) as err:
        fit(p.models["vae2d"], p, x, x[:128], progress=False, name="vae2d")
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
        fit(own.models["vae2d"], own, x, x[:128], progress=False, name="vae2d")


def test_a_finite_run_is_not_stopped():
    from mnist_vae.core.training import fit

    p = params_with({"train.epochs": 1, "train.device": "cpu", "tracking.enabled": False})
    x = (np.random.default_rng(0).random((256, 784)) < 0.2).astype(np.uint8)
    out = fit(p.models["vae2d"], p, x, x[:64], progress=False, name="vae2d")
    assert math.isfinite(out["metrics"]["test_loss"])
    assert not any("seconds" in key for key in out["metrics"])  # timings are not metrics
    assert set(out["timings"]) == {"train_seconds", "tracking_seconds", "epoch_seconds", "machine"}
    assert out["timings"]["machine"]["threads"] == torch.get_num_threads() and out["timings"]["machine"]["device"] == "cpu"


def test_universal_training_gives_the_same_bits_at_one_thread_and_at_two(monkeypatch):
    """Why the spread study has no thread-count variant in universal mode: every sum has a fixed
    order and every product is exact, so the thread count cannot change a bit."""
    from mnist_vae.core import numerics
    from mnist_vae.core.training import fit

    monkeypatch.setitem(numerics._state, "mode", "universal")
    p = params_with({"train.epochs": 1, "train.batch_size": 64, "train.device": "cpu", "tracking.enabled": False})
    x = (np.random.default_rng(1).random((384, 784)) < 0.2).astype(np.uint8)
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out = fit(p.models["vae20d"], p, x, x[:128], progress=False, name="vae20d")
            runs.append((out["metrics"]["test_loss"], out["model"].state_dict()))
    finally:
        torch.set_num_threads(before)
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
