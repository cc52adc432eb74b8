import math

import pytest
import torch

from mnist_vae.core.objective import (
    batch_loss,
    bernoulli_nll,
    bernoulli_nll_fast,
    iwae_bound,
    kl_divergence,
    log_importance_weights,
    log_normal,
    softplus_row_sums,
)


def test_loss_on_hand_computed_two_image_example():
    # image 1: x = [1, 0], logits [0, ln 3] -> p = [1/2, 3/4]: BCE = ln 2 + ln 4
    # image 2: x = [0, 1], same logits       -> BCE = ln 2 + ln(4/3)
    # KL image 1: mu = [1, 0], logvar = [0, 0]   -> -0.5 * ((1 + 0 - 1 - 1) + (1 + 0 - 0 - 1)) = 0.5
    # KL image 2: mu = [0, 0], logvar = [ln 2, 0] -> -0.5 * ((1 + ln 2 - 0 - 2) + 0) = 0.5 - 0.5 ln 2
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = torch.tensor([[0.0, math.log(3)], [0.0, math.log(3)]])
    mu = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(2), 0.0]])
    bce, kl = batch_loss(logits, x, mu, logvar)
    assert bce.item() == pytest.approx(3 * math.log(2) + math.log(2) + math.log(4 / 3), rel=1e-6)
    assert kl.item() == pytest.approx(1.0 - 0.5 * math.log(2), rel=1e-6)
    per_image = (bce + kl).item() / 2
    assert per_image == pytest.approx((3.5 * math.log(2) + math.log(4 / 3) + 1.0) / 2, rel=1e-6)
    assert bernoulli_nll(logits, x).tolist() == pytest.approx([3 * math.log(2), math.log(2) + math.log(4 / 3)])


def test_logits_loss_equals_probability_bce():
    torch.manual_seed(1)
    logits = torch.randn(4, 784)
    x = (torch.rand(4, 784) > 0.5).float()
    ref = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
    assert bernoulli_nll(logits, x).sum().item() == pytest.approx(ref.item(), rel=1e-5)


def test_kl_closed_form_matches_monte_carlo():
    gen = torch.Generator().manual_seed(3)
    mu = torch.tensor([0.7, -1.2, 0.1])
    logvar = torch.tensor([-0.5, 0.4, -2.0])
    z = mu + torch.exp(0.5 * logvar) * torch.randn(400_000, 3, generator=gen, dtype=torch.float64)
    zero = torch.zeros(3, dtype=torch.float64)
    mc = (log_normal(z, mu.double(), logvar.double()) - log_normal(z, zero, zero)).mean().item()
    exact = kl_divergence(mu, logvar).item()
    assert mc == pytest.approx(exact, abs=0.01)
    assert exact == pytest.approx(-0.5 * sum(1 + lv - m * m - math.exp(lv) for m, lv in zip(mu.tolist(), logvar.tolist())))


def test_iwae_with_one_sample_equals_single_sample_elbo(small_model):
    x = (torch.rand(6, 784, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    bound = iwae_bound(small_model, x, k=1, generator=torch.Generator().manual_seed(9))
    eps = torch.randn((1, 6, 2), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        mu, logvar = small_model.encode(x)
        z = mu + torch.exp(0.5 * logvar) * eps[0]
        elbo = (-bernoulli_nll(small_model.decode_logits(z), x) + log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
                - log_normal(z, mu, logvar))
    assert torch.allclose(bound, elbo, atol=1e-4)
    assert torch.allclose(bound, log_importance_weights(small_model, x, eps)[0], atol=1e-4)


def test_iwae_bound_tightens_with_more_samples(small_model):
    x = (torch.rand(32, 784, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    k1 = iwae_bound(small_model, x, k=1, generator=torch.Generator().manual_seed(2))
    k100 = iwae_bound(small_model, x, k=100, generator=torch.Generator().manual_seed(3), chunk=30)
    assert k100.mean() >= k1.mean()


@pytest.mark.parametrize("chunk", [1, 7, 25, 60, 100])
def test_chunked_iwae_equals_one_logsumexp_over_the_same_samples(small_model, chunk):
    """Any chunk size gives log (1/K) sum_k w_k over the same K samples, computed in one go."""
    x = (torch.rand(5, 784, generator=torch.Generator().manual_seed(1)) > 0.7).float()
    eps = torch.randn((60, 5, 2), generator=torch.Generator().manual_seed(4))
    one_shot = torch.logsumexp(log_importance_weights(small_model, x, eps), dim=0) - math.log(60)
    served = []

    def draw(n, shape):
        start = sum(served)
        served.append(n)
        return eps[start:start + n]

    bound = iwae_bound(small_model, x, k=60, generator=None, chunk=chunk, draw=draw)
    assert served == [min(chunk, 60 - i) for i in range(0, 60, chunk)]
    torch.testing.assert_close(bound, one_shot, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("width", [784, 97, 101, 1])
def test_softplus_row_sums_equal_softplus_within_rounding(width):
    """The fast path against float64 softplus: logits from -100 to 100, zeros and the exact
    group boundaries; 784 pixels split into groups of 98, a prime width into one group (97) or
    into single pixels (101 > 100)."""
    gen = torch.Generator().manual_seed(5)
    logits = torch.cat([torch.randn(200, width, generator=gen) * 15 - 5,
                        torch.linspace(-100, 100, 50 * width).reshape(50, width),
                        torch.zeros(1, width), torch.full((1, width), -30.0), torch.full((1, width), 30.0)])
    want = torch.nn.functional.softplus(logits.double()).sum(-1)
    got = softplus_row_sums(logits, torch.empty_like(logits))
    assert (got.double() - want).abs().max().item() < 1e-4 + 2e-7 * want.abs().max().item()
    assert got[-3].item() == pytest.approx(width * math.log(2), rel=1e-6)


def test_bernoulli_nll_fast_equals_the_plain_one():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 40, 784, generator=gen) * 8 - 4
    x = (torch.rand(40, 784, generator=gen) > 0.8).float()
    torch.testing.assert_close(bernoulli_nll_fast(logits, x), bernoulli_nll(logits, x.expand_as(logits)),
                               rtol=0, atol=2e-3)


def test_fused_iwae_equals_the_plain_log_weights_per_image():
    """The evaluation's fused log-likelihood (x.l through the last hidden layer, softplus sums by
    product) against objective.py's plain log weights on the same images and draws, for a 20-d
    decoder whose logits span a trained one's range. An untrained encoder makes log w about
    -2000 here, so the bound is relative (float32 rounding of sums that large); the 1e-3-nat
    bound on a trained model's real values is in tests/e2e/test_pipeline.py."""
    from mnist_vae.core.model import VAE

    torch.manual_seed(11)
    model = VAE(latent_dim=20, encoder_hidden=[64]).eval()
    with torch.no_grad():
        model.decoder[-1].weight.mul_(150)
        model.decoder[-1].bias.sub_(6)
    x = (torch.rand(20, 784, generator=torch.Generator().manual_seed(2)) > 0.85).float()
    eps = torch.randn((500, 20, 20), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        log_w = log_importance_weights(model, x, eps)
        logits = model.decode_logits(model.encode(x)[0])
    assert logits.min() < -30 and logits.max() > 10  # a trained 20-d decoder's range: -36 to 11
    plain = torch.logsumexp(log_w, dim=0) - math.log(500)
    served = []

    def draw(n, shape):
        served.append(n)
        return eps[sum(served) - n:sum(served)]

    fused = iwae_bound(model, x, k=500, generator=None, chunk=100, draw=draw)
    assert ((fused - plain).abs() / plain.abs()).max().item() < 2e-6


def test_active_units_counts_dimensions_whose_mean_varies():
    from mnist_vae.core.evaluation import active_units

    class Fixed:
        """An encoder whose means vary a lot in dim 0, a little in dim 1, not at all in dim 2."""

        def encode(self, x):
            t = x[:, :1]
            return torch.cat([3 * t, 0.05 * t, torch.zeros_like(t)], dim=1), torch.zeros(len(x), 3)

    x = torch.linspace(-1, 1, 101).reshape(-1, 1)
    n, variance = active_units(Fixed(), x, threshold=0.01)
    assert n == 1
    assert variance.tolist() == pytest.approx([9 * x.var().item(), 0.0025 * x.var().item(), 0.0], rel=1e-5)
