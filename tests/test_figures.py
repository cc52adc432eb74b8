import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from types import SimpleNamespace

from conftest import params_with
from mnist_vae import artifacts, figures, frames, gifs
from mnist_vae.tracking import Tracker, frame_count
from mnist_vae.training import train


def test_manifold_coordinates_are_normal_quantiles():
    g = frames.manifold_coordinates(20, 0.05, 0.95)
    assert g[0] == pytest.approx(-1.6448536, abs=1e-6)  # Phi^-1(0.05)
    assert g[-1] == pytest.approx(1.6448536, abs=1e-6)
    # an independent inverse normal CDF (the standard library's) at the evenly spaced quantiles
    from statistics import NormalDist

    qs = [0.05 + i * 0.9 / 19 for i in range(20)]
    assert g == pytest.approx([NormalDist().inv_cdf(q) for q in qs], abs=1e-9)
    assert g[10] == pytest.approx(0.0594024, abs=1e-6)  # Phi^-1(0.05 + 10 * 0.9 / 19) = Phi^-1(0.5237)
    assert np.allclose(g, -g[::-1])


def test_manifold_tile_is_decoder_output_at_grid_point(small_model):
    n = 5
    z = frames.manifold_latents(n, 0.05, 0.95)
    frame = frames.manifold_frame(small_model, z, n)
    assert frame.shape == (n * 28, n * 28) and frame.dtype == torch.uint8
    g = frames.manifold_coordinates(n, 0.05, 0.95)
    for i, j in ((0, 0), (1, 3), (4, 2)):
        expected = small_model.decode(torch.tensor([[g[j], g[i]]], dtype=torch.float32)).reshape(28, 28)
        tile = frame[i * 28:(i + 1) * 28, j * 28:(j + 1) * 28]
        assert np.array_equal(tile.numpy(), np.rint(expected.detach().numpy() * 255).astype(np.uint8))  # by hand


def test_recon_frame_top_row_is_the_originals(small_model):
    x = (torch.rand(5, 784, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    frame = frames.recon_frame(small_model, x, torch.zeros(5, 2))
    assert frame.shape == (56, 140)
    for k in range(5):
        assert torch.equal(frame[:28, 28 * k:28 * (k + 1)], (x[k] * 255).to(torch.uint8).reshape(28, 28))
    probs = small_model.decode(small_model.encode(x)[0])[2].reshape(28, 28)  # eps = 0: z is the mean
    assert np.array_equal(frame[28:, 56:84].numpy(), np.rint(probs.detach().numpy() * 255).astype(np.uint8))


def test_to_uint8_rounds_half_to_even_and_spans_0_to_255():
    probs = torch.tensor([0.0, 0.5, 1.0, 0.1, 1 / 255, 0.998])  # 127.5 -> 128 (even); 254.49 -> 254
    assert frames.to_uint8(probs).tolist() == [0, 128, 255, 26, 1, 254]


@pytest.mark.parametrize("n_images, batch_size, epochs, every", [(300, 128, 2, 4), (256, 128, 3, 10), (100, 10, 1, 5)])
def test_frame_count_is_one_plus_ceil_batches_over_every(small_model, n_images, batch_size, epochs, every):
    x = (torch.rand(n_images, 784, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    total = math.ceil(n_images / batch_size) * epochs
    z = frames.manifold_latents(3, 0.05, 0.95)
    tracker = Tracker(x[:5].clone(), every, total, z, 3)
    cfg = params_with({"train.batch_size": batch_size, "train.epochs": epochs, "train.seed": 0,
                       "train.eval_batch_size": 100}).train
    train(small_model, x, x[:50], cfg, tracker, progress=False)
    arrays = tracker.arrays()
    assert len(arrays["recon"]) == len(arrays["manifold"]) == frame_count(total, every) == 1 + math.ceil(total / every)
    assert arrays["batch"][0] == 0 and arrays["batch"][-1] == total
    assert arrays["manifold"].shape[1:] == (84, 84)
    # the last frame shows the final model
    assert np.array_equal(arrays["manifold"][-1], frames.manifold_frame(small_model, z, 3).numpy())


def test_tracking_does_not_change_training():
    from mnist_vae.model import VAE

    x = (torch.rand(200, 784, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    cfg = params_with({"train.batch_size": 50, "train.epochs": 1, "train.seed": 0, "train.eval_batch_size": 100}).train
    results = []
    for tracked in (False, True):
        torch.manual_seed(5)
        model = VAE(2, [16])
        tracker = Tracker(x[:3].clone(), 1, 4, frames.manifold_latents(2, 0.1, 0.9), 2) if tracked else None
        results.append(train(model, x, x, cfg, tracker, progress=False)["final"]["test_loss"])
        results.append(model.head.weight.detach().clone())
    assert results[0] == results[2] and torch.equal(results[1], results[3])


def test_gif_frame_count_duration_and_loop(tmp_path):
    stack = np.random.default_rng(0).integers(0, 256, size=(23, 10, 12), dtype=np.uint8)
    spec = SimpleNamespace(start=0, stop=None, step=5)
    gif = gifs.encode_within(frames.upscale(frames.select_frames(stack, spec), 2), 0.05, 10**6, 35)
    artifacts.write_bytes(tmp_path / "a.gif", gif.data)
    back = iio.imread(tmp_path / "a.gif", index=None)
    assert back.shape[0] == 5 and back.shape[1:3] == (20, 24)
    with Image.open(tmp_path / "a.gif") as im:
        assert im.n_frames == 5 and im.info["loop"] == 0
        durations = []
        for k in range(im.n_frames):
            im.seek(k)
            durations.append(im.info["duration"])
    assert durations == [50] * 5
    assert iio.immeta(tmp_path / "a.gif")["duration"] == 50


def test_reference_gif_frame_counts():
    stack = np.zeros((470, 1, 1), dtype=np.uint8)  # 1 + ceil(4690 / 10) frames of a 10-epoch run
    spans = params_with().gifs
    assert len(frames.select_frames(stack, spans.manifold_all)) == 94
    assert len(frames.select_frames(stack, spans.manifold_early)) == 100
    assert len(frames.select_frames(stack, spans.recon_all)) == 94
    assert len(frames.select_frames(stack, spans.recon_early)) == 150


def test_upscale_is_nearest_neighbour():
    a = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    assert frames.upscale(a, 2).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_latent_scatter_has_one_point_per_image():
    rng = np.random.default_rng(0)
    mu, labels = rng.normal(size=(1000, 2)), rng.integers(0, 10, size=1000)
    fig = figures.latent_scatter(mu, labels, "t")
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 1000
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(d) for d in range(10)]


@pytest.mark.parametrize("k, nrow", [(400, 20), (64, 8), (5, 5), (7, 3)])
def test_tile_matches_torchvision_make_grid(k, nrow):
    from torchvision.utils import make_grid

    images = torch.rand(k, 784)
    expected = make_grid(images.reshape(-1, 1, 28, 28), nrow=nrow, padding=0)[0]
    assert torch.equal(frames.tile(images, nrow), expected)


def test_tracked_index_beyond_the_test_set_is_a_params_error(small_model):
    from mnist_vae.params import ParamsError
    from mnist_vae.tracking import make_tracker

    tracking = params_with({"tracking.recon_indices": [1, 40]}).tracking
    with pytest.raises(ParamsError, match="tracking.recon_indices"):
        make_tracker(small_model, torch.zeros(30, 784), tracking, 100, 0)


@pytest.mark.parametrize("latent_dim", [2, 3, 20])
def test_manifold_latents_for_any_latent_size(latent_dim):
    z = frames.manifold_latents(4, 0.05, 0.95, latent_dim)
    g = torch.as_tensor(frames.manifold_coordinates(4, 0.05, 0.95), dtype=torch.float32)
    assert z.shape == (16, latent_dim)
    assert torch.equal(z[1 * 4 + 3, 0], g[3])  # tile (row 1, column 3): z0 = g[column]
    assert torch.equal(z[1 * 4 + 3, 1], g[1])  # z1 = g[row]
    assert not z[:, 2:].any()  # the other dimensions at the prior's mean


def test_a_1d_manifold_is_one_row_of_decoded_images_along_its_axis(small_model):
    """A 1-d latent has no plane to grid: n latents, one row of n decoded images."""
    from mnist_vae.model import VAE

    z = frames.manifold_latents(5, 0.05, 0.95, 1)
    g = torch.as_tensor(frames.manifold_coordinates(5, 0.05, 0.95), dtype=torch.float32)
    assert z.shape == (5, 1) and torch.equal(z[:, 0], g)
    torch.manual_seed(0)
    model = VAE(latent_dim=1, encoder_hidden=[16]).eval()
    image = frames.manifold_frame(model, z, 5)
    assert image.shape == (28, 5 * 28)
    assert len({bytes(image[:, 28 * j:28 * (j + 1)].numpy()) for j in range(5)}) == 5  # five different images


def test_latent_scatter_of_a_1d_latent_is_one_row_per_digit():
    fig = figures.latent_scatter(np.arange(20.0).reshape(20, 1), np.arange(20) % 10, "1-d")
    ax = fig.axes[0]
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert sorted(offsets[:, 0].tolist()) == list(range(20))  # every mean along x
    rows = np.round(offsets[:, 1]).astype(int)
    assert sorted(rows.tolist()) == sorted((np.arange(20) % 10).tolist())  # each in its digit's row
    assert ax.get_ylabel() == "digit" and ax.get_xlabel() == "z[0] (encoder mean)"


@pytest.mark.parametrize("latent_dim, manifold, scatter", [
    (1, "along the one latent dimension", "along the one latent dimension"),
    (2, "over the two latent dimensions", "test-set encoder means by digit"),
    (3, "first two of 3 latent dimensions", "first two of 3 dimensions"),
])
def test_page_captions_follow_the_latent_size(latent_dim, manifold, scatter):
    from mnist_vae import report

    captions = {path.rsplit("/", 1)[-1]: caption for path, caption, _ in report.model_figures("m", latent_dim)}
    assert manifold in captions["manifold.png"] and scatter in captions["latent-scatter.png"]
