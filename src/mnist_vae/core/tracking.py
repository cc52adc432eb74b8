"""Frames recorded while a model trains: its reconstructions of a few test images and, for a
2-d latent, the latent manifold, before the first batch and every `every` batches."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..io.errors import ParamsError
from .frames import manifold_frame, manifold_latents, recon_frame


@dataclass
class Tracker:
    """Records frames while training: one before the first batch, then after every `every`
    batches, and after the last batch (so the last frame is the final model).

    Frames stay on the training device as uint8 until the end (no host sync per frame).
    The reconstruction noise comes from the tracker's own generator, so tracking on or off
    leaves the training itself unchanged.
    """

    recon_x: torch.Tensor  # images whose reconstructions are tracked, k x 784
    every: int
    total_batches: int
    manifold_z: torch.Tensor | None = None  # n*n x 2 latents, row-major; None: no manifold frames
    manifold_n: int = 0
    seed: int = 0
    batches: list[int] = field(default_factory=list)
    recon: list[torch.Tensor] = field(default_factory=list)
    manifold: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        from . import numerics

        self.generator = numerics.generator(self.seed, self.recon_x.device)

    @torch.no_grad()
    def capture(self, model, batch: int) -> None:
        t0 = time.perf_counter()
        from . import numerics

        eps = numerics.randn((len(self.recon_x), model.latent_dim), generator=self.generator,
                             device=self.recon_x.device)
        self.recon.append(recon_frame(model, self.recon_x, eps))
        if self.manifold_z is not None:
            self.manifold.append(manifold_frame(model, self.manifold_z, self.manifold_n))
        self.batches.append(batch)
        self.seconds += time.perf_counter() - t0

    def after_batch(self, model, batch: int) -> None:
        """`batch` counts completed batches from 1."""
        if batch % self.every == 0 or batch == self.total_batches:
            self.capture(model, batch)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"batch": np.asarray(self.batches, dtype=np.int64),
               "recon": torch.stack(self.recon).cpu().numpy()}
        if self.manifold:
            out["manifold"] = torch.stack(self.manifold).cpu().numpy()
        return out



def make_tracker(model, test_x: torch.Tensor, tracking: Any, manifold: Any, total_batches: int,
                 seed: int) -> Tracker | None:
    """A Tracker for the `tracking` and `manifold` params, or None when tracking is off."""
    if not tracking.enabled:
        return None
    idx = list(tracking.reconstruction_indices)
    if max(idx) >= len(test_x):
        raise ParamsError(f"params: 'tracking.reconstruction_indices' has index {max(idx)} but the test set has "
                          f"{len(test_x)} images (data.test_limit)")
    manifold_z = None
    if model.latent_dim == 2:
        manifold_z = manifold_latents(manifold.n, *manifold.quantiles).to(test_x.device)
    return Tracker(test_x[idx].clone(), tracking.every, total_batches, manifold_z, manifold.n, seed)
