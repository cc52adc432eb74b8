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
