"""The objective: summed Bernoulli cross-entropy plus the closed-form Gaussian KL (negative ELBO),
and the importance-weighted (IWAE) bound on log p(x)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image: -0.5 * sum(1 + logvar - mu^2 - exp(logvar))."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image: binary cross-entropy of logits against x, summed over pixels."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


def batch_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed BCE, summed KL) over a batch; their sum is the batch's negative ELBO."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = kl_divergence(mu, logvar).sum()
    return bce, kl


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
    return -0.5 * torch.sum(LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp(), dim=-1)


def _log_weights(model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    z = mu + torch.exp(0.5 * logvar) * eps
    logits = model.decode_logits(z)
    log_px_z = -bernoulli_nll(logits, x.expand_as(logits))
    log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    return log_px_z + log_pz - log_normal(z, mu, logvar)


def log_importance_weights(model, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """log p(x, z_k) - log q(z_k | x) for z_k = mu + sigma * eps[k]; eps is K x B x D, result K x B."""
    mu, logvar = model.encode(x)
    return _log_weights(model, x, mu, logvar, eps)


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, generator: torch.Generator | None, chunk: int = 100,
               draw=None) -> torch.Tensor:
    """log (1/K) sum_k w_k per image, the IWAE lower bound on log p(x), batched over samples.

    Samples are drawn `chunk` at a time (all images of the batch at once) and combined with a
    running logsumexp, so memory is chunk x B x 784 whatever K is. ``draw(n, shape)`` gives the
    next n standard-normal samples (default: from `generator`; tests pass fixed ones).
    """
    mu, logvar = model.encode(x)
    if draw is None:
        draw = lambda n, shape: torch.randn((n, *shape), generator=generator, device=x.device)  # noqa: E731
    total = torch.full((x.shape[0],), -math.inf, device=x.device)
    done = 0
    while done < k:
        n = min(chunk, k - done)
        eps = draw(n, mu.shape)
        log_w = _log_weights(model, x, mu, logvar, eps)
        total = torch.logaddexp(total, torch.logsumexp(log_w, dim=0))
        done += n
    return total - math.log(k)


@torch.no_grad()
def negative_elbo_samples(model, x: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image negative ELBO, BCE averaged over `samples` z draws plus the closed-form KL."""
    mu, logvar = model.encode(x)
    eps = torch.randn((samples, *mu.shape), generator=generator, device=x.device)
    logits = model.decode_logits(mu + torch.exp(0.5 * logvar) * eps)
    return bernoulli_nll(logits, x.expand_as(logits)).mean(dim=0) + kl_divergence(mu, logvar)
