"""Model evaluation beyond the ELBO: the IWAE log-likelihood bound and active latent units."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from tqdm import tqdm

from . import numerics
from .objective import iwae_bound
from .inference import encode_all, evaluate_elbo

log = logging.getLogger(__name__)


@torch.no_grad()
def active_units(model, x: torch.Tensor, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """Number of latent dims whose posterior mean varies over the data: Cov_x(E_q[z_d]) > threshold."""
    mu, _ = encode_all(model, x)
    if numerics.universal():
        from .exact import variance as exact_variance

        variance = exact_variance(mu, 0)
    else:
        variance = mu.var(dim=0)
    return int((variance > threshold).sum()), variance


def default_images_per_pass(device: torch.device, k: int, chunk: int) -> int:
    """Images per IWAE pass: about 2,000 decoded samples on a CPU, 200,000 on a GPU; always the
    CPU's grouping in universal mode, where the grouping (which draw goes to which image) must not
    follow the device."""
    gpu = device.type != "cpu" and not numerics.universal()
    return max(1, (200_000 if gpu else 2_000) // min(k, chunk))


@torch.no_grad()
def iwae_nll(model, x: torch.Tensor, k: int, seed: int, chunk: int = 100, images_per_pass: int | None = None,
             progress: bool = True, fused: bool = True) -> torch.Tensor:
    """-log p(x) estimated with the IWAE bound (K importance samples from q(z|x)) per image.

    Images go through in groups sized so that one pass decodes about 2,000 samples on a CPU
    (`make bench` times the pass against its matrix products alone); on a GPU the passes are
    larger. The grouping fixes which draw goes to which image, so it is part of the result.
    ``fused=False``: objective.py's plain log weights instead (the benchmark's baseline).
    """
    gen = numerics.generator(seed, x.device)
    per_pass = images_per_pass or default_images_per_pass(x.device, k, chunk)
    out = []
    for start in tqdm(range(0, len(x), per_pass), desc=f"IWAE K={k}", unit="batch", mininterval=1.0,
                      leave=False, disable=not progress):
        out.append(-iwae_bound(model, x[start:start + per_pass], k, gen, chunk, fused=fused))
    return torch.cat(out)


def evaluate_model(model, test_x: torch.Tensor, cfg: Any, progress: bool = True) -> dict[str, Any]:
    """Metrics of a trained model on the test set (ELBO, IWAE NLL, active units) and the
    per-image IWAE NLL and per-dimension variance of the encoder means behind them; `cfg` is
    the `evaluate` params."""
    t0 = time.perf_counter()
    elbo = evaluate_elbo(model, test_x, cfg.batch_size, numerics.generator(cfg.seed, test_x.device))
    iwae_x = test_x[:cfg.iwae_images]
    nll = iwae_nll(model, iwae_x, cfg.iwae_k, cfg.seed, cfg.iwae_chunk, progress=progress)
    n_active, variance = active_units(model, test_x, cfg.active_unit_threshold)
    nll_mean = float(numerics.mean(nll))
    metrics = {
        "test_neg_elbo": elbo["loss"],
        "test_iwae_nll": nll_mean,
        "iwae_k": cfg.iwae_k,
        "iwae_images": len(iwae_x),
        "iwae_gap": elbo["loss"] - nll_mean,
        "active_units": n_active,
        "latent_dim": model.latent_dim,
    }
    log.info("neg ELBO %.2f, IWAE NLL (K=%d) %.2f, active units %d/%d", metrics["test_neg_elbo"],
             cfg.iwae_k, metrics["test_iwae_nll"], n_active, model.latent_dim)
    arrays = {"iwae_nll": nll.cpu().numpy(), "latent_mean_variance": variance.cpu().numpy()}
    # timings are not metrics: they differ between any two runs
    return {"metrics": metrics, "arrays": arrays, "timings": {"eval_seconds": time.perf_counter() - t0}}
