"""Frames recorded while training (mnist_vae.core.tracking): how many, and that tracking leaves
the training unchanged."""

import math

import numpy as np
import pytest
import torch
from conftest import params_with

from mnist_vae.core import frames
from mnist_vae.core.tracking import Tracker
from mnist_vae.core.training import train


@pytest.mark.parametrize("n_images, batch_size, epochs, every", [(300, 128, 2, 4), (256, 128, 3, 10), (100, 10, 1, 5)])
def test_frame_count_is_one_plus_ceil_batches_over_every(small_model, n_images, batch_size, epochs, every):
    x = (torch.rand(n_images, 784, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    total = math.ceil(n_images / batch_size) * epochs
    z = frames.manifold_latents(3, 0.05, 0.95)
    tracker = Tracker(x[:5].clone(), every, total, z, 3)
    cfg = params_with({"train.batch_size": batch_size, "train.epochs": epochs, "train.seed": 0}).train
    train(small_model, x, x[:50], cfg, 100, tracker, progress=False)
    arrays = tracker.arrays()
    assert len(arrays["recon"]) == len(arrays["manifold"]) == 1 + math.ceil(total / every)
    assert arrays["batch"][0] == 0 and arrays["batch"][-1] == total
    assert arrays["manifold"].shape[1:] == (84, 84)
    # the last frame shows the final model
    assert np.array_equal(arrays["manifold"][-1], frames.manifold_frame(small_model, z, 3).numpy())


def test_tracking_does_not_change_training():
    from mnist_vae.core.model import VAE

    x = (torch.rand(200, 784, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    cfg = params_with({"train.batch_size": 50, "train.epochs": 1, "train.seed": 0}).train
    results = []
    for tracked in (False, True):
        torch.manual_seed(5)
        model = VAE(2, [16])
        tracker = Tracker(x[:3].clone(), 1, 4, frames.manifold_latents(2, 0.1, 0.9), 2) if tracked else None
        results.append(train(model, x, x, cfg, 100, tracker, progress=False)["final"]["test_loss"])
        results.append(model.head.weight.detach().clone())
    assert results[0] == results[2] and torch.equal(results[1], results[3])


def test_tracked_index_beyond_the_test_set_is_a_params_error(small_model):
    from mnist_vae.core.tracking import make_tracker
    from mnist_vae.io.params import ParamsError

    p = params_with({"tracking.reconstruction_indices": [1, 40]})
    with pytest.raises(ParamsError, match="tracking.reconstruction_indices"):
        make_tracker(small_model, torch.zeros(30, 784), p.tracking, p.manifold, 100, 0)
