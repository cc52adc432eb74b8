"""Each private torch op (mnist_vae.core.torch_private) against its public fallback, and the training
step and the IWAE with every fallback forced against the private paths, on this machine: what
runs on Apple's MPS or on a CPU build of torch without oneDNN or a working torch._int_mm."""

import copy
import math

import pytest
import torch

from mnist_vae.core import exact, numerics, torch_private
from mnist_vae.core.model import VAE
from mnist_vae.core.objective import iwae_bound
from mnist_vae.core.step import ElboStep


@pytest.fixture
def private():
    before = torch_private._forced["public"]
    torch_private.force_public(False)
    yield
    torch_private.force_public(before)


def both(fn):
    """fn() with the private ops, then with the public fallbacks."""
    before = torch_private._forced["public"]
    try:
        torch_private.force_public(False)
        a = fn()
        torch_private.force_public(True)
        b = fn()
    finally:
        torch_private.force_public(before)
    return a, b


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_the_record_names_the_path_each_op_took(private):
    cpu = torch.device("cpu")
    assert torch_private.record(cpu) == {"products": "oneDNN", "int_mm": "torch._int_mm", "adam": "torch._fused_adam_",
                                         "relu_backward": "aten.threshold_backward"}
    torch_private.force_public(True)
    assert torch_private.record(cpu) == {"products": "public (torch.addmm)", "int_mm": "public (the float64 engine)",
                                         "adam": "public (tensor ops)", "relu_backward": "public (masked_fill_)"}


def test_onednn_products_equal_the_public_ones_within_float_rounding():
    h, w, b = rand(256, 784, seed=1), rand(400, 784, seed=2) * 0.05, rand(400, seed=3)
    with torch.no_grad():
        mine, plain = both(lambda: torch_private.mkldnn_linear(h, w, b))
    torch.testing.assert_close(mine, torch.addmm(b, h, w.t()), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, torch.addmm(b, h, w.t()), rtol=0, atol=0)  # the fallback is addmm's bits
    assert not torch.equal(mine, plain)  # another kernel really ran


def test_int_mm_is_integer_arithmetic_and_forced_off_the_float64_engine_keeps_the_products_bits(private):
    """torch._int_mm (int8 x int8, int32 sums) equals int64 arithmetic on 7-bit slices as universal
    mode stacks them; with the private ops forced off the exact products take the float64 engine,
    bit for bit the same (a 64 x 784 by 784 x 400 product, the encoder's first layer)."""
    g = torch.Generator().manual_seed(9)
    a = torch.randint(-64, 65, (256, 784), generator=g).to(torch.int8)  # [hi; lo] of 128 rows
    b = torch.randint(-64, 65, (784, 800), generator=g).to(torch.int8)  # [hi, lo] of 400 columns
    assert torch.equal(torch_private.int_mm(a, b).long(), a.long() @ b.long())
    h, w = rand(64, 784, seed=10), rand(400, 784, seed=11) * 0.05
    by_private_ops = exact.linear(h, w)
    torch_private.force_public(True)
    assert exact.engine() == "float64"
    assert torch.equal(exact.linear(h, w), by_private_ops)


def test_the_adam_fallback_is_bitwise_torch_adam_and_the_fused_kernel_within_rounding():
    shapes = [(40, 784), (40,)]
    start = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    grads_per_step = [[rand(*s, seed=10 * k + i) for i, s in enumerate(shapes)] for k in range(1, 6)]

    def run():
        params = [p.clone() for p in start]
        grads = [torch.zeros_like(p) for p in params]
        m, v = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
        steps = torch.zeros(())
        for g in grads_per_step:
            steps.add_(1)
            for dst, src in zip(grads, g):
                dst.copy_(src)
            torch_private.fused_adam_(params, grads, m, v, [steps] * 2, lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8)
        return params

    fused, fallback = both(run)
    ref = [p.clone().requires_grad_() for p in start]
    opt = torch.optim.Adam(ref, lr=3e-3, foreach=False, fused=False)  # the single-tensor update
    for g in grads_per_step:
        for p, gi in zip(ref, g):
            p.grad = gi.clone()
        opt.step()
    for a, b, r in zip(fused, fallback, ref):
        assert torch.equal(b, r.detach())
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_relu_backward_fallback_is_bitwise_the_private_op():
    relu_out = torch.relu(rand(64, 400, seed=4))
    relu_out[0, :5] = torch.tensor([0.0, -0.0, 1e-30, 0.0, 2.0])
    grad = rand(64, 400, seed=5)
    a, b = both(lambda: torch_private.relu_backward_(grad.clone(), relu_out))
    assert torch.equal(a, b) and (a[relu_out == 0] == 0).all() and torch.equal(a[relu_out > 0], grad[relu_out > 0])


def test_both_ways_to_deterministic_kernels_set_the_flag():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        for forced in (False, True):
            torch.use_deterministic_algorithms(False)
            torch_private.force_public(forced)
            torch_private.set_deterministic()
            assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch_private.force_public(False)
        torch.use_deterministic_algorithms(before)


def test_a_fit_and_an_iwae_with_every_fallback_follow_the_private_paths(monkeypatch):
    """Twelve float32 steps of the fused step in fast mode (universal mode's products keep their
    bits either way: above), then the IWAE bound, with the private ops and with every fallback:
    the documented tolerances (docs/reproducibility.md): losses within 1e-5 relative, the IWAE per
    image within 1e-3 nat."""
    monkeypatch.setitem(numerics._state, "mode", "fast")
    torch.manual_seed(0)
    start = VAE(latent_dim=20, encoder_hidden=[400])
    x = (torch.rand(12 * 32, 784, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    eps = torch.randn(12 * 32, 20, generator=torch.Generator().manual_seed(2))

    def fit():
        model = copy.deepcopy(start)
        step = ElboStep(model, lr=1e-3)
        losses = []
        for s in range(0, len(x), 32):
            before = step.total.item()
            step.step(x[s:s + 32], eps[s:s + 32])
            losses.append(step.total.item() - before)
        with torch.no_grad():
            bound = iwae_bound(model.eval(), x[:50], k=200, generator=torch.Generator().manual_seed(3), chunk=50)
        return losses, model, bound

    (la, ma, ba), (lb, mb, bb) = both(fit)
    assert la == pytest.approx(lb, rel=1e-5)
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5)
    assert (ba - bb).abs().max().item() < 1e-3
    assert all(math.isfinite(v) for v in la)
