"""Pixel frames (mnist_vae.core.frames): manifold latents and tiles, reconstructions, uint8
rounding."""

import numpy as np
import pytest
import torch

from mnist_vae.core import frames


@pytest.mark.parametrize("n, low, high", [(20, 0.05, 0.95), (7, 0.01, 0.99), (400, 0.001, 0.999)])
def test_manifold_coordinates_are_scipy_norm_ppf_bit_for_bit(n, low, high):
    """The light import (scipy.special.ndtri) gives scipy.stats.norm.ppf's very bits."""
    from scipy.stats import norm

    assert np.array_equal(frames.manifold_coordinates(n, low, high), norm.ppf(np.linspace(low, high, n)))


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


@pytest.mark.parametrize("k, nrow", [(400, 20), (64, 8), (5, 5), (7, 3)])
def test_tile_matches_torchvision_make_grid(k, nrow):
    from torchvision.utils import make_grid

    images = torch.rand(k, 784)
    expected = make_grid(images.reshape(-1, 1, 28, 28), nrow=nrow, padding=0)[0]
    assert torch.equal(frames.tile(images, nrow), expected)


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
    from mnist_vae.core.model import VAE

    z = frames.manifold_latents(5, 0.05, 0.95, 1)
    g = torch.as_tensor(frames.manifold_coordinates(5, 0.05, 0.95), dtype=torch.float32)
    assert z.shape == (5, 1) and torch.equal(z[:, 0], g)
    torch.manual_seed(0)
    model = VAE(latent_dim=1, encoder_hidden=[16]).eval()
    image = frames.manifold_frame(model, z, 5)
    assert image.shape == (28, 5 * 28)
    assert len({bytes(image[:, 28 * j:28 * (j + 1)].numpy()) for j in range(5)}) == 5  # five different images
