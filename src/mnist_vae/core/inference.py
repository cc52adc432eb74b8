"""A trained model applied to a whole set: encoder means and log-variances, and the per-image
ELBO terms. Used after training (evaluation, figures, anomaly scores) and by the training
loop's per-epoch test loss."""

from __future__ import annotations

import torch

from . import numerics
from .objective import bernoulli_nll_fast, kl_divergence


@torch.no_grad()
def encode_all(model, x: torch.Tensor, batch_size: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder means and log-variances of a whole set, batched."""
    mus, logvars = [], []
    for start in range(0, len(x), batch_size):
        mu, logvar = model.encode(x[start:start + batch_size])
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def evaluate_elbo(model, x: torch.Tensor, batch_size: int, generator: torch.Generator) -> dict[str, float]:
    """Per-image BCE, KL and loss (negative ELBO, one z sample per image) over a set."""
    bce_sum = torch.zeros((), device=x.device)
    kl_sum = torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        eps = numerics.randn((len(xb), model.latent_dim), generator=generator, device=x.device)
        logits, mu, logvar = model(xb, eps)
        bce_sum += numerics.sum(bernoulli_nll_fast(logits, xb))
        kl_sum += numerics.sum(kl_divergence(mu, logvar))
    bce, kl = bce_sum.item() / len(x), kl_sum.item() / len(x)
    return {"bce": bce, "kl": kl, "loss": bce + kl}
