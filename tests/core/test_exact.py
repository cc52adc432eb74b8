"""Universal numerics' ops (mnist_vae.core.exact): each against float64, the products exact in
any order and in another BLAS, the compiled softplus sums equal to the torch ops bit for bit with
no fused multiply-add in their machine code. Whether the bits hold on other CPUs is the probe's
job (tools/probe_numerics.py, tests/e2e/test_probe.py)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import ndtri
from conftest import load_script

from mnist_vae.core import exact


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("m,k,n", [(128, 784, 400), (2000, 400, 784), (7, 20, 400), (128, 2, 150), (400, 128, 784)])
def test_product_is_within_the_quantization_bound_of_float64(m, k, n):
    a, b = torch.randn(m, k, generator=gen(1)), torch.randn(k, n, generator=gen(2))
    got = exact.mm(a, b).double()
    want = a.double() @ b.double()
    # each factor off by at most half a step of 2^-bits of its row's (column's) largest entry
    # (half a step of 2^(e - 13) for a largest entry below 2^e: at most 2^-13 of that entry)
    step = 2.0 ** -exact.BITS
    bound = (a.abs().amax(1, keepdim=True).double() * b.abs().double().sum(0) +
             a.abs().double().sum(1, keepdim=True) * b.abs().amax(0).double()) * step + got.abs() * 2 ** -24
    assert got.dtype == torch.float64 and (got - want).abs().le(bound).all()
    # and no coarser: a 12-bit rounding's bound is twice as wide, and the errors use a fair share of it
    assert (got - want).abs().max() > (bound - got.abs() * 2 ** -24).max() / 2 ** 6


def test_product_bits_do_not_depend_on_order_or_blas():
    """The quantized float64 product is exact: reversing the inner dimension, numpy's own BLAS
    (OpenBLAS, not torch's MKL) and a plain float64 loop give the same float32 bits."""
    a, b = torch.randn(64, 784, generator=gen(3)), torch.randn(784, 50, generator=gen(4))
    got = exact.mm(a, b)
    qa, qb = exact.quantize(a, -1).double(), exact.quantize(b, -2).double()
    assert torch.equal((qa.flip(1) @ qb.flip(0)).float(), got)
    assert torch.equal(torch.from_numpy(qa.numpy() @ qb.numpy()).float(), got)
    loop = torch.zeros(64, 50, dtype=torch.float64)
    for i in reversed(range(784)):
        loop += qa[:, i:i + 1] * qb[i:i + 1, :]
    assert torch.equal(loop.float(), got)


@pytest.mark.parametrize("k", [1, 2, 20, 128, 400, 512, 784, 2048, exact.INT8_MAX_K, exact.INT8_MAX_K + 1])
@pytest.mark.parametrize("engine", exact.ENGINES)
def test_a_product_of_all_largest_slices_is_exact(k, engine):
    """At the extremes (every factor 8128 steps, whose slices are hi = 64 and lo = -64, the largest
    both at once; of one sign and of mixed signs; over the longest inner dimensions the model has,
    the weight gradients' batch sizes and the int8 engine's bound K = 2^17, past which the float64
    engine takes over) the product equals integer arithmetic rounded once to float32, by either
    engine."""
    top = 8128 / 8192  # q = 8128 = 64 * 2^7 - 64
    a8, n = exact._slices(torch.full((1, 4), top), True, "a")
    assert a8.tolist() == [[64] * 4, [-64] * 4] and n.item() == 13
    for signs in (np.ones(k), np.where(np.arange(k) % 3 == 0, -1.0, 1.0)):
        a = torch.from_numpy((signs * top).astype(np.float32)[None, :])
        for b_sign in (1.0, -1.0):
            b = torch.full((k, 1), b_sign * top, dtype=torch.float32)
            truth = int(signs.sum()) * int(b_sign) * 8128 * 8128 * 2.0 ** -26  # exact: below 2^53
            try:
                exact.use_engine(engine)
                assert exact.mm(a, b).item() == np.float32(truth)
            finally:
                exact.use_engine("int8")


# every product the model takes: (rows, inner, columns), the training step's forward, its weight
# gradients (inner = the batch) and its input gradients, the 2-d and 20-d models, the IWAE's
# decoder over 1,000 samples a pass and a 512-image batch
MODEL_SHAPES = [(128, 784, 400), (128, 400, 40), (128, 400, 4), (128, 20, 400), (128, 2, 400), (128, 400, 784),
                (400, 128, 784), (784, 128, 400), (40, 128, 400), (128, 40, 400), (128, 784, 400), (2000, 400, 784),
                (2000, 20, 400), (2000, 2, 400), (512, 784, 400), (400, 512, 784), (1, 784, 400), (3, 1, 5)]


@pytest.mark.parametrize("m,k,n", MODEL_SHAPES)
def test_the_int8_and_float64_engines_give_identical_tensors(m, k, n):
    """The same quantized inputs through both engines, in every layout a product takes (row-major
    and transposed factors, as the forward pass, g^T h and g W give them), with and without a bias:
    bit for bit the same, and different from float32's own product (the test has teeth)."""
    g = gen(m * 7 + k * 3 + n)
    a, b = torch.randn(m, k, generator=g) * 3, torch.randn(k, n, generator=g) * 0.05
    if m > 2:  # a zero row, and rows and columns whose largest magnitude is subnormal
        a[0] = 0
        a[-1] *= 1e-40
        b[:, -1] *= 1e-39
    bias = torch.randn(n, generator=g)
    layouts = [(a, b), (a.t().contiguous().t(), b), (a, b.t().contiguous().t()),
               (a.t().contiguous().t(), b.t().contiguous().t())]
    results = {}
    try:
        for engine in exact.ENGINES:
            exact.use_engine(engine)
            results[engine] = [exact.mm(x, y) for x, y in layouts] + [exact.linear(a, b.t().contiguous(), bias)]
            assert exact.engine() == engine
    finally:
        exact.use_engine("int8")
    assert all(torch.equal(x, y) for x, y in zip(results["int8"], results["float64"]))
    assert all(torch.equal(results["int8"][0], x) for x in results["int8"][1:4])
    if k > 2:
        assert not torch.equal(results["int8"][0], a @ b)


def test_a_wrong_int8_engine_is_caught_and_the_float64_engine_takes_over(monkeypatch, caplog):
    """An int8 GEMM that is not exact (float32 sums, which round past 2^24 as a fallback might)
    fails the engine's check: one warning line, and the products keep their bits by the float64
    engine."""
    a, w = torch.randn(64, 784, generator=gen(60)), torch.randn(400, 784, generator=gen(61))
    want = exact.linear(a, w)

    monkeypatch.setattr(torch, "_int_mm", lambda x, y: (x.float() @ y.float()).int())
    monkeypatch.setitem(exact._engine, "checked", None)
    with caplog.at_level("WARNING"):
        assert exact.engine() == "float64"
    assert "torch._int_mm is not exact here" in caplog.text
    assert torch.equal(exact.linear(a, w), want)
    monkeypatch.delattr(torch, "_int_mm")  # a torch without it
    monkeypatch.setitem(exact._engine, "checked", None)
    assert exact.engine() == "float64" and "AttributeError" in caplog.text


def test_linear_flattens_leading_dimensions_and_adds_the_bias():
    h, w, bias = torch.randn(3, 5, 20, generator=gen(5)), torch.randn(400, 20, generator=gen(6)), torch.randn(400)
    got = exact.linear(h, w, bias)
    assert got.shape == (3, 5, 400)
    assert torch.equal(got.reshape(15, 400), exact.mm(h.reshape(15, 20), w.t()) + bias)


@pytest.mark.parametrize("compiled", [True, False])
def test_tree_sum_is_pairwise_in_a_fixed_order(compiled):
    """The documented order (a brute-force oracle in numpy float32), by the compiled twin and by
    the torch ops: 1-d, and along the rows of a 2-d tensor (the bias gradients) with NaN and inf."""
    def pairwise(values):  # the documented order, in Python floats rounded to float32 at each add
        values = [np.float32(v) for v in values]
        while len(values) > 1:
            half = len(values) // 2
            nxt = [np.float32(values[i] + values[i + half]) for i in range(half)]
            if len(values) % 2:
                nxt[0] = np.float32(nxt[0] + values[-1])
            values = nxt
        return values[0]

    try:
        exact.use_kernels(compiled)
        for width in (1, 2, 3, 7, 49, 128, 784, 1001, 100352):
            x = torch.randn(width, generator=gen(width)) * 100
            assert exact.tree_sum(x, 0).item() == pairwise(x.tolist())
        rows = torch.randn(129, 6, generator=gen(8)) * 1e3
        rows[5, 1], rows[9, 2], rows[128, 3] = math.nan, math.inf, -math.inf
        got = exact.tree_sum(rows, 0)
        assert got.shape == (6,) and exact.tree_sum(rows, 0, keepdim=True).shape == (1, 6)
        for j in range(6):
            want = pairwise(rows[:, j].tolist())
            assert (math.isnan(want) and got[j].isnan()) or got[j].item() == want
        x = torch.randn(5, 9, 3, generator=gen(7))
        assert torch.allclose(exact.tree_sum(x, 1), x.sum(1), atol=1e-5)
        assert exact.tree_sum(torch.zeros(0), 0).item() == 0.0
    finally:
        exact.use_kernels(True)


@pytest.mark.parametrize("low,high", [(-87.0, 88.0), (-1.0, 1.0), (-1e-6, 1e-6)])
def test_exp_is_within_two_ulp(low, high):
    x = torch.linspace(low, high, 200001)
    want = x.double().exp()
    assert ((exact.exp(x).double() - want).abs() / want).max() < 2.5 * 2 ** -24
    assert exact.exp(torch.zeros(1)).item() == 1.0
    assert exact.exp(torch.tensor([-1000.0, 1000.0])).isfinite().all()


def test_log_is_within_two_ulp_of_its_result_or_a_tiny_absolute_error():
    x = exact.exp(torch.linspace(-87, 88, 200001))
    want = x.double().log()
    err = (exact.log(x).double() - want).abs()
    assert (err <= 2.5 * 2 ** -24 * want.abs() + 1e-7).all()
    assert exact.log(torch.ones(1)).item() == 0.0


def test_sigmoid_softplus_logsumexp_logaddexp_against_float64():
    x = torch.linspace(-100, 100, 100001)
    assert (exact.sigmoid(x).double() - x.double().sigmoid()).abs().max() < 2e-7
    logits = torch.randn(300, 784, generator=gen(8)) * 6
    want = torch.nn.functional.softplus(logits.double()).sum(-1)
    assert ((exact.softplus_row_sums(logits, 98).double() - want).abs() / want).max() < 1e-6
    a = torch.randn(40, 100, generator=gen(9)) * 30
    assert (exact.logsumexp(a, 0).double() - torch.logsumexp(a.double(), 0)).abs().max() < 1e-4
    b = torch.randn(100, generator=gen(10)) * 30
    assert (exact.logaddexp(a[0], b).double() - torch.logaddexp(a[0].double(), b.double())).abs().max() < 1e-4
    assert torch.equal(exact.logaddexp(torch.full((3,), -math.inf), b[:3]), b[:3])


def test_compiled_softplus_sums_equal_the_torch_ops_bit_for_bit():
    """exact_kernels.softplus_row_sums (numba) against exact.py's torch ops: the same float32
    operations in the same order, so the same bits, saturated and tiny logits included."""
    logits = torch.randn(500, 784, generator=gen(11)) * 8
    logits[0, :10] = torch.tensor([0.0, -0.0, 80.0, -80.0, 100.0, -100.0, 1e-30, -1e-30, 88.5, -88.5])
    try:
        exact.use_kernels(True)
        fused = exact.softplus_row_sums(logits, 98)
        exact.use_kernels(False)
        plain = exact.softplus_row_sums(logits, 98)
    finally:
        exact.use_kernels(True)
    assert torch.equal(fused, plain)


def test_compiled_kernels_have_no_fused_multiply_add(tmp_path):
    """Without fastmath LLVM must not contract a multiply and an add: no FMA instruction in the
    machine code numba makes of the kernels for this CPU (x86: vfmadd/vfmsub/vfnmadd/vfmaddsub;
    ARM: fmla/fmls/fmadd, SVE's fmad/fmsb/fnmla/fnmls/fnmad/fnmsb), read in a fresh process with
    an empty cache (the probe's check, which CI also runs under qemu-aarch64)."""
    probe = load_script("tools/probe_numerics.py")
    assert probe.fused_multiply_adds(None, tmp_path) == 0
    fused = ["vfmadd231ps %ymm1, %ymm2, %ymm3", "vfmaddsub132pd %zmm1", "vfnmsub213ss %xmm1", "fmla v0.4s, v1.4s, v2.4s",
             "fnmsub d0, d1, d2, d3", "fmla z0.s, p0/m, z1.s, z2.s", "fmad z0.s, p0/m, z1.s, z2.s", "fmsb z1.d, p0/m",
             "fnmla z2.s, p1/m", "fnmls z3.h, p0/m", "fnmad z4.s, p0/m", "fnmsb z5.d, p0/m"]
    assert all(probe.FUSED_MULTIPLY_ADD.search(line) for line in fused)
    assert not any(probe.FUSED_MULTIPLY_ADD.search(line) for line in ("vmulps %ymm1", "fmul z0.s, p0/m, z0.s, z1.s",
                                                                       "fadd v0.4s", "fmaxnm s0, s1, s2"))


def test_randn_is_standard_normal_and_seeded():
    z = exact.randn((400000,), generator=gen(12))
    assert z.dtype == torch.float32
    # Box-Muller in float64 on the same torch.rand bits, an oracle written apart from exact.py's
    u = torch.rand((2, 200000), generator=gen(12)).double().numpy()
    r = np.sqrt(-2 * np.log(1 - u[0]))
    oracle = np.concatenate([r * np.cos(2 * np.pi * u[1]), r * np.sin(2 * np.pi * u[1])])
    assert np.max(np.abs(z.double().numpy() - oracle) / np.maximum(1, np.abs(oracle))) < 1e-5
    assert abs(z.double().mean().item()) < 0.005 and abs(z.double().std().item() - 1) < 0.005
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    assert exact.randn((3, 5), generator=gen(0)).shape == (3, 5)
    c, s = exact.cos_sin_2pi(torch.rand(100000, generator=gen(13)))
    assert ((c.double() ** 2 + s.double() ** 2) - 1).abs().max() < 1e-6


def test_uniform_bounds_and_sqrt():
    u = exact.uniform((100000,), -0.05, 0.05, generator=gen(14))
    assert u.min() >= -0.05 and u.max() < 0.05
    # numpy's float32 sqrt: IEEE's correctly rounded square root, another implementation
    v = torch.cat([torch.rand(1000, generator=gen(15)) * 100, torch.tensor([0.0, 1e-40, 2.0 ** -126, 3.4e38, 1.0])])
    assert np.array_equal(exact.sqrt(v).numpy(), np.sqrt(v.numpy()))


def test_normal_quantiles_match_scipy_and_refuse_the_bounds():
    p = np.concatenate([np.linspace(0.001, 0.999, 999), [1e-10, 0.02425, 0.97575, 1 - 1e-10]])
    got = np.asarray(exact.ndtri(p))
    assert np.max(np.abs(got - ndtri(p)) / np.maximum(np.abs(ndtri(p)), 1e-3)) < 2e-9
    with pytest.raises(ValueError, match="not in"):
        exact.ndtri([0.0])
    assert abs(exact.log64(10.0) - math.log(10.0)) < 1e-15


def test_other_dtypes_take_torch_own_ops():
    x = torch.randn(10, 10, dtype=torch.float64)
    assert torch.equal(exact.exp(x), x.exp()) and torch.equal(exact.mm(x, x), x @ x)
    assert torch.equal(exact.tree_sum(x, 0), x.sum(0))


def test_compiled_sigmoid_and_adam_equal_the_torch_ops_bit_for_bit(monkeypatch):
    """exact_kernels.sigmoid and .adam_ (numba) against the torch ops they replace, over a few
    universal Adam steps of a real layer."""
    from torch import nn

    from mnist_vae.core import numerics
    from mnist_vae.core.step import LayerAdam

    x = torch.randn(130, 784, generator=gen(16)) * 30
    try:
        exact.use_kernels(False)
        plain = exact.sigmoid(x)
        exact.use_kernels(True)
        assert torch.equal(exact.sigmoid(x), plain)
        monkeypatch.setitem(numerics._state, "mode", "universal")
        weights = []
        for on in (True, False):
            exact.use_kernels(on)
            torch.manual_seed(0)
            layer = nn.Linear(300, 200)
            adam = LayerAdam([layer], lr=0.01)
            for step in range(5):
                layer.weight.grad = torch.randn(200, 300, generator=gen(step)) * 10 ** -step
                layer.bias.grad = torch.randn(200, generator=gen(step + 10))
                adam.state[layer] = (adam.state[layer][0], [layer.weight.grad, layer.bias.grad], *adam.state[layer][2:])
                adam.begin_step()
                with torch.no_grad():  # as inside the training step
                    adam.update(layer)
            weights.append((layer.weight.detach().clone(), layer.bias.detach().clone()))
        assert torch.equal(weights[0][0], weights[1][0]) and torch.equal(weights[0][1], weights[1][1])
    finally:
        exact.use_kernels(True)


def test_compiled_quantization_equals_the_torch_ops():
    """exact_kernels.quantize_rows against exact.quantize, rows and (through a transposed view)
    columns, zero rows and tiny ones included (subnormal largest magnitudes too, whose exponent the
    kernels read from the bits), and the product through either."""
    a = torch.randn(300, 784, generator=gen(20)) * torch.logspace(-30, 3, 300)[:, None]
    a[5] = 0
    a[6] *= 1e-12  # largest magnitude about 1e-41: subnormal
    a[7] = 0
    a[7, 3] = -1.4e-45  # float32's smallest subnormal, alone
    a[8] = torch.tensor(2.0 ** -126)  # the smallest normal
    a[9, ::2] = 1e36  # large, its product still finite
    w = torch.randn(400, 784, generator=gen(21))
    try:
        exact.use_kernels(True)
        cases = [(a, -1), (w.t(), -2), (w, -2), (a.t(), -1)]  # rows and columns, contiguous and transposed
        got = [exact.quantized64(t, dim) for t, dim in cases] + [exact.mm(a, w.t()), exact.mm(w, a.t())]
        exact.use_kernels(False)
        want = [exact.quantize(t, dim).double() for t, dim in cases] + [exact.mm(a, w.t()), exact.mm(w, a.t())]
    finally:
        exact.use_kernels(True)
    assert all(torch.equal(g, w_) for g, w_ in zip(got, want))


def test_compiled_linear_equals_the_torch_ops_with_and_without_a_bias():
    h, w, b = torch.randn(3, 70, 400, generator=gen(22)), torch.randn(784, 400, generator=gen(23)), torch.randn(784)
    try:
        exact.use_kernels(True)
        got = (exact.linear(h, w, b), exact.linear(h, w), exact.linear(h[0], w.t().contiguous().t(), b))
        exact.use_kernels(False)
        want = (exact.linear(h, w, b), exact.linear(h, w), exact.linear(h[0], w.t().contiguous().t(), b))
    finally:
        exact.use_kernels(True)
    assert all(torch.equal(g, w_) for g, w_ in zip(got, want))


def _same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """NaN where the other has NaN (its sign and payload aside), the same bits everywhere else."""
    nan = want.isnan()
    return got.shape == want.shape and torch.equal(got.isnan(), nan) and \
        torch.equal(got.masked_fill(nan, 0).view(-1).view(torch.int32 if got.dtype == torch.float32 else torch.int64),
                    want.masked_fill(nan, 0).view(-1).view(torch.int32 if want.dtype == torch.float32 else torch.int64))


def _twins(fn):
    """fn() with the compiled twins, then with the plain torch ops."""
    try:
        exact.use_kernels(True)
        fused = fn()
        exact.use_kernels(False)
        return fused, fn()
    finally:
        exact.use_kernels(True)


def _non_finite(rows: int, width: int, seed: int) -> torch.Tensor:
    """Random rows with NaN and infinities planted: first, last and inside a row, NaN beside an
    infinity, a row of NaN only, and clean rows between."""
    nan, inf = math.nan, math.inf
    x = torch.randn(rows, width, generator=gen(seed)) * 8
    x[0, 0] = nan
    x[1, width - 1] = nan
    x[2, 7] = inf
    x[3, 9] = -inf
    x[4, 3], x[4, 11] = nan, inf
    x[5] = nan
    x[6, 2], x[6, 5] = inf, -inf
    x[8, 100:] = nan
    return x


def test_compiled_twins_propagate_nan_and_infinities_as_the_torch_ops():
    """A diverged model's NaN must stay NaN in every compiled twin, as in the torch ops it twins
    (clamp, amax and where keep a NaN; a min/max written as a comparison drops it), and +-inf
    must give what the torch ops give: the IWAE's softplus sums, the sigmoid, the quantization of
    rows and columns, the rounding and bias add of the products, Adam's update."""
    x = _non_finite(12, 784, 30)
    w = _non_finite(12, 784, 31)[[9, 10, 11, 0, 2, 3, 6]]  # clean rows and rows with NaN or inf
    bias = torch.randn(7, generator=gen(32))
    bias[1] = math.nan
    cases = {
        "softplus_row_sums": lambda: exact.softplus_row_sums(x, 98),
        "sigmoid": lambda: exact.sigmoid(x),
        "quantize rows": lambda: exact.quantized64(x, -1),
        "quantize columns": lambda: exact.quantized64(x.t().contiguous(), -2),
        "quantize transposed": lambda: exact.quantized64(x.t(), -2),
        "linear": lambda: exact.linear(x, w, bias),
        "linear without bias": lambda: exact.linear(x, w),
    }
    for name, fn in cases.items():
        fused, plain = _twins(fn)
        assert _same(fused, plain), name
    s = exact.softplus_row_sums(x, 98)
    assert s[[0, 1, 4, 5, 8]].isnan().all() and s[2] == math.inf and s[[7, 9, 10, 11]].isfinite().all()
    sig = exact.sigmoid(torch.tensor([math.nan, math.inf, -math.inf]))
    assert sig[0].isnan() and sig[1] == 1.0 and 0 < sig[2] < 1e-30


def test_compiled_adam_propagates_nan_and_infinities_as_the_torch_ops(monkeypatch):
    """A NaN or infinite gradient, moment or weight gives the weights the torch ops give them."""
    from torch import nn

    from mnist_vae.core import numerics
    from mnist_vae.core.step import LayerAdam

    monkeypatch.setitem(numerics._state, "mode", "universal")

    def run():
        torch.manual_seed(0)
        layer = nn.Linear(784, 12)
        with torch.no_grad():
            layer.weight[3, 4] = math.nan
            layer.weight[5, 6] = math.inf
        adam = LayerAdam([layer], lr=0.01)
        for step in range(3):
            layer.weight.grad = _non_finite(12, 784, 40 + step) * 10 ** -step
            layer.bias.grad = torch.randn(12, generator=gen(step))
            layer.bias.grad[step] = (math.nan, math.inf, -math.inf)[step]
            adam.state[layer] = (adam.state[layer][0], [layer.weight.grad, layer.bias.grad], *adam.state[layer][2:])
            adam.begin_step()
            with torch.no_grad():
                adam.update(layer)
        return torch.cat([layer.weight.detach().reshape(-1), layer.bias.detach()])

    fused, plain = _twins(run)
    assert _same(fused, plain) and fused.isnan().any() and fused.isfinite().any()


def test_compiled_kernels_give_the_same_bits_on_any_thread_count():
    """Each kernel splits its work by rows or blocks whose arithmetic is their own: one thread and
    every thread numba started give the same bits (numerics.threads sets the count)."""
    import numba

    from mnist_vae.core import exact_kernels

    x, w = torch.randn(300, 784, generator=gen(50)) * 8, torch.randn(400, 784, generator=gen(51))
    before = exact_kernels.threads()
    results = []
    try:
        for count in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            exact_kernels.set_threads(count)
            assert exact_kernels.threads() == min(count, numba.config.NUMBA_NUM_THREADS)
            results.append([exact.softplus_row_sums(x, 98), exact.sigmoid(x), exact.linear(x, w, w[0, :400]),
                            exact.quantized64(w.t(), -2)])
    finally:
        numba.set_num_threads(before)
    assert all(torch.equal(a, b) for other in results[1:] for a, b in zip(results[0], other))


def test_the_kernels_read_frexp_exponents_and_largest_magnitudes_from_the_bits():
    """exact_kernels' integer reading of float32 bits against Python's math.frexp and a float max,
    over zero, subnormals, the normal range's ends, infinities and NaN."""
    from mnist_vae.core import exact_kernels

    values = np.array([0.0, 1.4e-45, 3e-45, 1e-40, 1.1754942e-38, 2.0 ** -126, 0.75, 1.0, 3.0, 3.4e38,
                       math.inf, math.nan], dtype=np.float32)
    for x in values:
        bits = int(np.array([x], np.float32).view(np.int32)[0])
        assert exact_kernels._frexp_exponent(bits) == math.frexp(float(x))[1], x
    rows = np.array([[0.5, -3.0, 2.0], [1e-40, 0.0, -1e-41], [1.0, -math.inf, 2.0], [1.0, math.nan, math.inf],
                     [0.0, -0.0, 0.0]], dtype=np.float32)
    got = [exact_kernels._row_amax_bits(rows.view(np.int32), i) for i in range(len(rows))]
    as_float = np.array(got, np.int32).view(np.float32)
    assert as_float[:3].tolist() == [3.0, np.float32(1e-40), math.inf] and math.isnan(as_float[3]) and as_float[4] == 0
