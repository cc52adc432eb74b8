"""The objective: summed Bernoulli cross-entropy plus the closed-form Gaussian KL (negative ELBO),
and the importance-weighted (IWAE) bound on log p(x)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import numerics, torch_private

LOG_2PI = math.log(2 * math.pi)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image: -0.5 * sum(1 + logvar - mu^2 - exp(logvar))."""
    if numerics.universal():
        return numerics.sum(1 + logvar - mu * mu - numerics.exp(logvar), -1) * -0.5
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image: binary cross-entropy of logits against x, summed over pixels."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


def batch_loss(logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed BCE, summed KL) over a batch; their sum is the batch's negative ELBO."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = kl_divergence(mu, logvar).sum()
    return bce, kl


def _product_group(width: int, largest: int = 100) -> int:
    """The largest divisor of `width` up to `largest`: a product of that many factors in [1/2, 1)
    stays above 2^-100, far from float32's smallest normal number, 2^-126."""
    return max(g for g in range(1, min(width, largest) + 1) if width % g == 0)


def softplus_row_sums(logits: torch.Tensor, work: torch.Tensor) -> torch.Tensor:
    """sum_j softplus(l_j) per row of a 2-d tensor of logits, with `work` (same shape) as scratch.

    softplus(l) = max(l, 0) - log sigmoid(|l|), and the logs are summed as the log of a product
    over groups of pixels. Why not F.softplus: it calls log1p per element, which can cost more
    than the matrix product that made the logits (`make bench` times both); the sigmoid is
    vectorised and cheap, and one log per group replaces one per pixel. The result equals
    F.softplus(l).sum(-1) within float rounding (tests/core/test_objective.py bounds the sum's error).
    """
    rows, width = logits.shape
    if numerics.universal() and logits.dtype == torch.float32:
        from . import exact

        return exact.softplus_row_sums(logits, _product_group(width))
    positive = torch.clamp(logits, min=0, out=work).sum(-1)
    torch.abs(logits, out=work).sigmoid_()
    return positive - work.view(rows, -1, _product_group(width)).prod(-1).log_().sum(-1)


@torch.no_grad()
def bernoulli_nll_fast(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """:func:`bernoulli_nll` without autograd, for evaluation: softplus sums by
    :func:`softplus_row_sums`, equal within float rounding (tests/core/test_objective.py).
    `logits` is ... x 784 and `x` broadcasts to it."""
    flat = logits.reshape(-1, logits.shape[-1])
    softplus = softplus_row_sums(flat, torch.empty_like(flat)).view(logits.shape[:-1])
    return softplus - numerics.sum(logits * x, -1)


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


def linear(h: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    """h W^T + b, the evaluation's large products: universal mode's exact product; in fast mode
    through oneDNN on a CPU, else torch.addmm.
    Why: MKL's sgemm, which addmm calls on a CPU, is slower than oneDNN for these shapes on the
    CPUs measured; `make bench` times both (docs/performance.md).
    Both are float32 products; they differ by rounding only (tests/core/test_objective.py)."""
    if numerics.universal():
        return numerics.linear(h, layer.weight, layer.bias)
    return torch_private.mkldnn_linear(h, layer.weight, layer.bias)


class _FusedLogWeights:
    """log p(x, z_k) - log q(z_k | x) for one batch of images, as `_log_weights` computes it,
    with the Bernoulli log-likelihood fused: log p(x|z) = x.l - sum_j softplus(l_j).

    The decoder's last layer is l = h W^T + b, so x.l = h.(x W) + x.b: a dot product of each
    sample's last hidden layer with its image's x W (H-wide, not 784-wide) replaces a pass over
    the logits, and the softplus sum is :func:`softplus_row_sums`. The 784-wide product is
    :func:`linear`; the scratch lives in a buffer reused for every chunk of samples. The Gaussian
    terms use (z - mu) / sigma = eps. tests/core/test_objective.py holds it to `_log_weights`.
    """

    def __init__(self, model, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
        self.hidden, self.last = model.decoder[:-1], model.decoder[-1]
        self.mu, self.std = mu, numerics.exp(0.5 * logvar)
        self.x_w = numerics.linear(x, self.last.weight.t())              # B x H: x W
        self.x_b = numerics.linear(x, self.last.bias[None, :])[:, 0]     # B: x b
        self.half_logvar_sum = 0.5 * numerics.sum(logvar, -1)
        self._work: dict[int, torch.Tensor] = {}

    def __call__(self, eps: torch.Tensor) -> torch.Tensor:
        n, b, _ = eps.shape
        z = self.mu + self.std * eps if numerics.universal() else torch.addcmul(self.mu, self.std, eps)
        hidden = self.hidden(z)                                          # n x B x H
        h = hidden.reshape(n * b, -1)
        if n * b not in self._work:
            self._work[n * b] = h.new_empty((n * b, self.last.out_features))
        logits = linear(h, self.last)
        softplus = softplus_row_sums(logits, self._work[n * b]).view(n, b)
        x_dot_l = numerics.sum(hidden * self.x_w, -1) + self.x_b
        log_pz_minus_log_q = 0.5 * (numerics.sum(eps * eps, -1) - numerics.sum(z * z, -1)) + self.half_logvar_sum
        return x_dot_l - softplus + log_pz_minus_log_q


@torch.no_grad()
def iwae_bound(model, x: torch.Tensor, k: int, generator: torch.Generator | None, chunk: int = 100,
               draw=None, fused: bool = True) -> torch.Tensor:
    """log (1/K) sum_k w_k per image, the IWAE lower bound on log p(x), batched over samples.

    Samples are drawn `chunk` at a time (all images of the batch at once) and combined with a
    running logsumexp, so memory is chunk x B x 784 whatever K is. ``draw(n, shape)`` gives the
    next n standard-normal samples (default: from `generator`; tests pass fixed ones).
    """
    mu, logvar = model.encode(x)
    if draw is None:
        draw = lambda n, shape: numerics.randn((n, *shape), generator=generator, device=x.device)  # noqa: E731
    if fused:
        log_weights = _FusedLogWeights(model, x, mu, logvar)
    else:  # the plain log weights, the oracle the fused ones are held to (tests, `make bench`)
        log_weights = lambda eps: _log_weights(model, x, mu, logvar, eps)  # noqa: E731
    total = torch.full((x.shape[0],), -math.inf, device=x.device)
    done = 0
    while done < k:
        n = min(chunk, k - done)
        eps = draw(n, mu.shape)
        log_w = log_weights(eps)
        total = numerics.logaddexp(total, numerics.logsumexp(log_w, dim=0))
        done += n
    return total - numerics.log_of(k)


@torch.no_grad()
def negative_elbo_samples(model, x: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """Per-image negative ELBO, BCE averaged over `samples` z draws plus the closed-form KL."""
    mu, logvar = model.encode(x)
    eps = numerics.randn((samples, *mu.shape), generator=generator, device=x.device)
    logits = model.decode_logits(mu + numerics.exp(0.5 * logvar) * eps)
    return numerics.mean(bernoulli_nll_fast(logits, x), 0) + kl_divergence(mu, logvar)
