"""Pixel frames: the latent manifold grid, reconstruction strips and tiled samples as uint8
images, decoded in one batched pass."""

from __future__ import annotations

import numpy as np
import torch

SIDE = 28


def manifold_coordinates(n: int, q_low: float, q_high: float) -> np.ndarray:
    """g = Phi^-1(linspace(q_low, q_high, n)): evenly spaced quantiles of N(0, 1)."""
    # ndtri is scipy.stats.norm.ppf's own kernel (the same bits, tests/core/test_frames.py), without
    # the import of scipy.stats, which is slow and would be paid by every stage that draws a manifold;
    # universal mode's is exact.ndtri (scipy's calls the platform's libm)
    from . import numerics

    return numerics.normal_quantiles(np.linspace(q_low, q_high, n))


def manifold_latents(n: int, q_low: float, q_high: float, latent_dim: int = 2) -> torch.Tensor:
    """n*n x latent_dim latents, row-major: entry i*n + j is z = (g[j], g[i], 0, ...) (tile row
    i, column j): the plane of the first two latent dimensions, the others at the prior's mean.
    A 1-d latent has no plane: its n latents g[j] are one row."""
    g = torch.as_tensor(manifold_coordinates(n, q_low, q_high), dtype=torch.float32)
    if latent_dim == 1:
        return g.reshape(n, 1)
    rows, cols = torch.meshgrid(g, g, indexing="ij")
    plane = torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=1)
    if latent_dim == 2:
        return plane
    z = torch.zeros(n * n, latent_dim)
    z[:, :min(2, latent_dim)] = plane[:, :min(2, latent_dim)]
    return z


def to_uint8(probs: torch.Tensor) -> torch.Tensor:
    return (probs * 255).round_().to(torch.uint8)


def tile(images: torch.Tensor, nrow: int) -> torch.Tensor:
    """k x 784 images as one gray grid, nrow per row, no padding: the pixels of torchvision's
    make_grid(padding=0) (a test checks that). Done with one reshape/permute because make_grid
    copies each tile into a 3-channel canvas, which made frame tracking a fifth of the 2-d
    model's training time (README, performance)."""
    k = len(images)
    rows = -(-k // nrow)
    if rows * nrow != k:  # pad the last row with black tiles, as make_grid does
        images = torch.cat([images, images.new_zeros(rows * nrow - k, images.shape[-1])])
    return images.reshape(rows, nrow, SIDE, SIDE).permute(0, 2, 1, 3).reshape(rows * SIDE, nrow * SIDE)


@torch.no_grad()
def manifold_frame(model, z: torch.Tensor, n: int) -> torch.Tensor:
    """The n x n manifold as a (28 n) x (28 n) uint8 image, decoded in one batched pass."""
    return to_uint8(tile(model.decode(z), nrow=n))


@torch.no_grad()
def recon_frame(model, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Originals (top row) over their reconstructions (decoder probabilities of one forward
    pass), 56 x (28 k) uint8."""
    logits, _, _ = model(x, eps)
    from . import numerics

    return to_uint8(torch.cat([tile(x, nrow=len(x)), tile(numerics.sigmoid(logits), nrow=len(x))], dim=0))

