"""Float32 arithmetic whose every bit IEEE 754 fixes: universal numerics' ops.

Which bits a torch op returns depends on the machine where a library picks its code path per
CPU (MKL by vendor and ISA, ATen by CPU capability, oneDNN by ISA, other kernels altogether on
ARM): sgemm, exp, log, tanh, float32 sums, randn and even sqrt differ between x86-64 and aarch64.
What does not depend on it is one IEEE operation at a time: +, -, *, / and sqrt of the given
operands are correctly rounded, so an elementwise torch op of one such operation gives the same
bits on every CPU (and GPU) whatever its vector width. Everything here is built from those
alone, each step its own torch op (no fused multiply-add that a compiler may or may not form):

- products (:func:`mm`): each row of A and each column of B rounded to 13-bit integers times a
  power of two, their exact integer sum (int8 GEMMs of slices on a CPU, float64 elsewhere: both
  exact in any order, in any BLAS, on any device, so the same bits), rounded once to float32;
- sums (:func:`tree_sum`): pairwise, in a fixed order of elementwise adds;
- exp and log (:func:`exp`, :func:`log`): range reduction by powers of two built from their
  bits (never pow()), then polynomials in Horner form;
- sqrt through float64 (:func:`sqrt`): double rounding of a square root to float32 is exact;
- normal samples from torch.rand's bits (the same on every CPU) by Box-Muller, with :func:`log`,
  :func:`sqrt` and a polynomial cos/sin of 2 pi u (:func:`randn`);
- comparisons, max, min, abs, round, frexp and where are exact by definition.

Float32 in, float32 out; tensors of another dtype take torch's own ops (the float64 check of the
training step runs there). Results differ from torch's own ops by float rounding only
(tests/core/test_exact.py bounds each against float64).
"""

from __future__ import annotations

import math
import os
import threading

import torch

from . import torch_private  # torch._int_mm, the one private op here (it imports nothing of ours)

# ln 2 in two parts: the high part has 8 trailing zero bits, so n * LN2_HI is exact for |n| < 256
LN2_HI = 0.693145751953125
LN2_LO = 1.4286068203094172e-06
INV_LN2 = 1.4426950408889634
TWO_PI = 6.283185307179586
LN2 = 0.6931471805599453
SQRT_HALF = 0.7071067811865476
EXP_MIN, EXP_MAX = -87.0, 88.0  # exp stays a normal float32 (> 2^-126) and finite
_EXP_TERMS = [1 / math.factorial(i) for i in range(8)]      # |r| <= ln2 / 2: r^8 / 8! < 6e-9
_LOG_TERMS = [1 / (2 * i + 1) for i in range(6)]            # |s| <= 0.1716: s^12 / 13 < 1e-10


# The compiled twin of softplus_row_sums (mnist_vae.core.exact_kernels): the same operations in the
# same order, so the same bits; MNIST_VAE_EXACT_PLAIN=1 (or use_kernels(False)) keeps the torch ops.
_kernels = {"on": os.environ.get("MNIST_VAE_EXACT_PLAIN", "") in ("", "0")}


TINY = 2.0 ** -126  # float32's smallest normal number: Adam's moments below it are set to 0


def use_kernels(on: bool = True) -> None:
    _kernels["on"] = on


def kernels_on() -> bool:
    return _kernels["on"]


def _f32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32


def pow2(n: torch.Tensor) -> torch.Tensor:
    """2^n as float32 for integer n in [-126, 127], written from its bits (no pow())."""
    return ((n.to(torch.int32) + 127) << 23).view(torch.float32)


# ----------------------------------------------------------------------------- sums

def tree_sum(x: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """Sum over `dim` by pairwise halving: the first half plus the second, until one is left
    (an odd one out joins the first element). The same adds in the same order on every machine."""
    if not _f32(x):
        return x.sum(dim=dim, keepdim=keepdim)
    dim = dim % x.dim()
    if x.shape[dim] == 0:
        return x.sum(dim=dim, keepdim=keepdim)
    if _kernels["on"] and dim == 0 and x.dim() in (1, 2) and x.device.type == "cpu" and x.shape[0] > 1:
        # the compiled twin (the same adds in the same order): the training step's bias gradients
        # and loss sums are a dozen small ops each as torch ops, most of a step's time beside its products
        from . import exact_kernels

        if x.dim() == 1:
            out = torch.tensor(exact_kernels.tree_sum_flat(x.contiguous().numpy()), dtype=torch.float32)
        else:
            out = torch.empty(x.shape[1], dtype=torch.float32)
            exact_kernels.tree_sum_rows(x.contiguous().numpy(), out.numpy())
        return out.unsqueeze(0) if keepdim else out
    while x.shape[dim] > 1:
        width = x.shape[dim]
        half = width // 2
        y = x.narrow(dim, 0, half) + x.narrow(dim, half, half)
        if width % 2:
            first = y.narrow(dim, 0, 1)
            first.add_(x.narrow(dim, width - 1, 1))
        x = y
    return x if keepdim else x.squeeze(dim)


def tree_mean(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return tree_sum(x, dim) / x.shape[dim]


def variance(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Unbiased variance over `dim` (torch.var's default), from fixed-order sums."""
    if not _f32(x):
        return x.var(dim=dim)
    d = x - tree_mean(x, dim).unsqueeze(dim)
    return tree_sum(d * d, dim) / (x.shape[dim] - 1)


def _reciprocal(x: torch.Tensor) -> torch.Tensor:
    """1 / x as a true division (Python's `1 / t` calls torch.reciprocal, whose vector kernel
    is not promised to divide)."""
    return torch.ones_like(x).div_(x)


# ----------------------------------------------------------------------------- products

# The precision of a product's factors and why no engine can get a bit wrong (issue 46).
# A factor is a row of a (a column of b) rounded to integers q times one power of two, its largest
# |q| in [2^12, 2^13]: 13 significant bits (TF32 keeps 10). The product is the exact sum of those
# integer products, rounded once to float32. Two engines compute that same exact sum:
#
# - int8 (CPU, the default where torch._int_mm passes its check): q = 2^7 hi + lo with
#   hi = round(q / 2^7) and lo = q - 2^7 hi, so |hi|, |lo| <= 64; the four slice products in one
#   int8 x int8 -> int32 GEMM of the stacked slices, recombined in int64 as
#   2^14 hi.hi + 2^7 (hi.lo + lo.hi) + lo.lo. Bounds, for any implementation of the int8 GEMM:
#   * x86 without VNNI (vpmaddubsw) multiplies an unsigned byte by a signed one and adds pairs into
#     int16 with saturation; an int8 operand is turned unsigned by +128 (a compensation term
#     undoes it). A pair of an unsigned byte (<= 255) and a slice (<= 64) is at most
#     2 * 255 * 64 = 32,640 <= 32,767: no saturation, whichever operand is the unsigned one.
#   * the int32 sums: at most K terms of 255 * 64 = 16,320, so K <= 2^17 keeps them below
#     2^31 - 1 (16,320 * 2^17 = 2,139,095,040); VNNI's vpdpbusd, ARM's sdot and AMX hold the same.
#   * the recombination: |sum of q_a q_b| <= K * 2^26, in int64, and exact in float64 for
#     K <= 2^27.
# - float64 (any device, and the CPU for K > 2^17): the quantized factors as float64; every
#   partial sum is an integer multiple of the two scales below K * 2^26 <= 2^53, so exact in any
#   order, in any BLAS.
# The engines can therefore not differ: tests/core/test_exact.py holds them equal on every shape
# the model uses and at the extremes, and the int8 engine checks itself once a process
# (_int8_checked) against integer arithmetic before it is trusted.
BITS = 13
SLICE = 7
INT8_MAX_K = 2 ** 17
FLOAT64_MAX_K = 2 ** 27
ENGINES = ("int8", "float64")
_engine = {"name": os.environ.get("MNIST_VAE_PRODUCTS", "int8"), "checked": None}


def use_engine(name: str) -> None:
    """Take the products by `name` ('int8' or 'float64') where it applies; the same bits either way."""
    if name not in ENGINES:
        raise ValueError(f"products engine must be one of {ENGINES}, got {name!r}")
    _engine["name"] = name


def engine() -> str:
    """The engine the CPU's products take here: 'int8' where it is asked for, compiled kernels are
    on, the private ops are not forced off (torch_private.force_public) and torch._int_mm passed its
    check, else 'float64'."""
    if _engine["name"] == "int8" and _kernels["on"] and not torch_private.forced_public() and _int8_checked():
        return "int8"
    return "float64"


def _int8_checked() -> bool:
    """torch._int_mm against integer arithmetic (int64, exact), once a process: slices at +-64 of
    one sign and of mixed signs over K = 2^17, the bound above, a sum float32 would round, and
    random slices. False (and a
    line on stderr) where it is missing or wrong: the float64 engine then gives the same bits."""
    if _engine["checked"] is None:
        ok, reason = True, ""
        try:
            g = torch.Generator().manual_seed(46)
            k = INT8_MAX_K
            signs = torch.where(torch.arange(k) % 3 == 0, -1, 1)
            odd = torch.full((k,), 64)
            odd[0] = 1  # 64 * 64 (k - 1) + 1: float32 sums would round it
            a = torch.stack([torch.full((k,), 64), torch.full((k,), -64), signs * 64, odd,
                             torch.randint(-64, 65, (k,), generator=g)]).to(torch.int8)
            b = torch.stack([torch.full((k,), 64), signs * -64, torch.full((k,), -64), odd,
                             torch.randint(-64, 65, (k,), generator=g)]).to(torch.int8).t()
            ok = torch.equal(torch_private.int_mm(a, b).long(), a.long() @ b.long())
            reason = "its result differs from integer arithmetic"
        except (RuntimeError, AttributeError) as exc:  # no _int_mm in this torch, or not on this CPU
            ok, reason = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not ok:
            import logging

            logging.getLogger(__name__).warning("exact products: torch._int_mm is not exact here (%s); the float64 "
                                                "engine takes them, with the same bits, more slowly", reason)
        _engine["checked"] = ok
    return _engine["checked"]


def _check_k(k: int) -> None:
    if k > FLOAT64_MAX_K:
        raise ValueError(f"exact products: an inner dimension of {k} exceeds {FLOAT64_MAX_K}, where the float64 "
                         "sums of 13-bit factors would round")


def quantize(t: torch.Tensor, dim: int, bits: int = BITS) -> torch.Tensor:
    """t with each slice along `dim` rounded to a multiple of one power of two, its largest entry
    to at most 2^bits of those steps: round(t 2^n) 2^-n, exactly (scaling by 2^n is exact)."""
    amax = t.abs().amax(dim=dim, keepdim=True)
    n = (bits - torch.frexp(amax).exponent).clamp_(-126, 126)
    return torch.round(t * pow2(n)).mul_(pow2(-n))


def quantized64(t: torch.Tensor, dim: int, bits: int = BITS) -> torch.Tensor:
    """:func:`quantize` as float64, by the compiled twins (exact_kernels.quantize_rows and
    quantize_cols, the same exact steps, so the same values) where a 2-d CPU tensor or its
    transpose is contiguous, as the products' operands are."""
    if _kernels["on"] and t.device.type == "cpu" and t.dim() == 2:
        from . import exact_kernels

        along_rows = dim in (-1, 1)
        if t.is_contiguous():
            view, transposed = t, False
        elif t.t().is_contiguous():
            view, transposed, along_rows = t.t(), True, not along_rows
        else:
            return quantize(t, dim, bits).double()
        out = torch.empty(view.shape, dtype=torch.float64)
        (exact_kernels.quantize_rows if along_rows else exact_kernels.quantize_cols)(view.numpy(), bits, out.numpy())
        return out.t() if transposed else out
    return quantize(t, dim, bits).double()


_scratch = threading.local()


def _buffer(role: str, shape: tuple[int, ...], dtype: torch.dtype):
    """A CPU tensor of this shape and dtype, and its numpy view, reused by every product of the
    thread that asks for the same role: the int8 engine's operands, scales and integer blocks
    are consumed within one product, and a fresh allocation for each was measurable beside the
    int8 GEMM itself (a training step takes some 60)."""
    cache = getattr(_scratch, "buffers", None)
    if cache is None or len(cache) > 64:  # evaluation's odd batch sizes: keep it bounded
        cache = _scratch.buffers = {}
    key = (role, shape, dtype)
    if key not in cache:
        t = torch.empty(shape, dtype=dtype)
        cache[key] = (t, t.numpy())
    return cache[key]


def _slices(t: torch.Tensor, along_rows: bool, role: str):
    """The int8 operand of the stacked slices of t (2-d float32 on the CPU) and each row's
    (column's) power of two n: for rows, a (2 rows x cols) operand [hi; lo]; for columns, a
    (rows x 2 cols) operand [hi, lo]. None where a row (column) holds NaN or an infinity (the
    float64 engine then gives the torch ops' NaN). Both live in the role's reused buffers."""
    from . import exact_kernels

    if not t.is_contiguous() and t.t().is_contiguous():
        out, n = _slices(t.t(), not along_rows, role)
        return (None, None) if out is None else (out.t(), n)
    t = t.contiguous()
    rows, cols = t.shape
    out, out_np = _buffer(role, (2 * rows, cols) if along_rows else (rows, 2 * cols), torch.int8)
    n, n_np = _buffer(role, (rows if along_rows else cols,), torch.int32)
    finite = (exact_kernels.slices_rows if along_rows else exact_kernels.slices_cols)(t.numpy(), BITS, SLICE,
                                                                                     out_np, n_np)
    return (out, n) if finite else (None, None)


_NO_BIAS = torch.empty(0, dtype=torch.float32)


def _product_int8(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor) -> bool:
    """out = a @ b (+ bias) by the int8 engine, float32; False (out untouched) where a factor is
    not finite."""
    from . import exact_kernels

    a8, na = _slices(a, True, "a")
    if a8 is None:
        return False
    b8, nb = _slices(b, False, "b")
    if b8 is None:
        return False
    blocks, blocks_np = _buffer("blocks", (a8.shape[0], b8.shape[1]), torch.int32)
    torch_private.int_mm(a8, b8, out=blocks)
    added = _NO_BIAS if bias is None else bias.detach().contiguous()
    exact_kernels.recombine_into(blocks_np, na.numpy(), nb.numpy(), SLICE, added.numpy(), out.numpy())
    return True


def _product(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """The exact product of a's quantized rows and b's quantized columns rounded once to float32,
    plus bias (float32 add), by the engine that applies (the same bits from either); into `out`
    where given (a float32 buffer of the product's shape)."""
    k = a.shape[-1]
    _check_k(k)
    shape = (a.shape[0], b.shape[1])
    cpu = a.device.type == "cpu" and b.device.type == "cpu"
    direct = out is not None and out.is_contiguous() and out.dtype == torch.float32 and tuple(out.shape) == shape \
        and out.device.type == "cpu"
    target = out if direct else torch.empty(shape, dtype=torch.float32) if cpu else None

    def done(result: torch.Tensor) -> torch.Tensor:
        return result if out is None or result is out else out.copy_(result)

    if cpu and k <= INT8_MAX_K and (bias is None or bias.device.type == "cpu") and engine() == "int8":
        if _product_int8(a, b, bias, target):
            return done(target)
    product = quantized64(a, -1) @ quantized64(b, -2)
    if _kernels["on"] and cpu and (bias is None or bias.is_contiguous()):
        from . import exact_kernels

        added = _NO_BIAS if bias is None else bias.detach()
        exact_kernels.round_add_into(product.numpy(), added.numpy(), target.numpy())
        return done(target)
    return done(product.float() if bias is None else product.float() + bias)


def mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b (m x k times k x n). Float32: a's rows and b's columns quantized to 13 significant
    bits (:func:`quantize`), their exact product (see BITS above for the engines) rounded once to
    float32, whatever order or device computes it."""
    if not (_f32(a) and _f32(b)):
        return a @ b
    return _product(a, b)


def linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """h W^T + b, the product by :func:`mm` (leading dimensions of h flattened and restored), the
    bias added in float32 after the product's one rounding; written into `out` where given (2-d h)."""
    if out is not None and h.dim() == 2 and _f32(h) and _f32(weight):  # the training step's buffers
        return _product(h, weight.t(), bias, out)
    lead = h.shape[:-1]
    flat = h.reshape(-1, h.shape[-1])
    if _f32(h) and _f32(weight):
        result = _product(flat, weight.t(), bias)
    else:
        result = flat @ weight.t()
        if bias is not None:
            result = result + bias
    result = result.reshape(*lead, weight.shape[0])
    return result if out is None or result is out else out.copy_(result)


# ----------------------------------------------------------------------------- functions

def _horner(r: torch.Tensor, coefficients: list[float]) -> torch.Tensor:
    """sum_i c_i r^i, highest first, one multiply and one add at a time."""
    p = torch.full_like(r, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        p.mul_(r).add_(c)
    return p


def exp(x: torch.Tensor) -> torch.Tensor:
    """e^x for x clamped to [-87, 88] (so the result is a normal float32): x = n ln2 + r with
    |r| <= ln2 / 2, e^r by its Taylor polynomial, times 2^n."""
    if not _f32(x):
        return torch.exp(x)
    x = x.clamp(EXP_MIN, EXP_MAX)
    n = torch.round(x * INV_LN2)
    r = (x - n * LN2_HI) - n * LN2_LO
    return _horner(r, _EXP_TERMS).mul_(pow2(n))


def log(x: torch.Tensor) -> torch.Tensor:
    """ln x for positive normal x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s),
    s = (m - 1) / (m + 1), by its series; plus e ln 2."""
    if not _f32(x):
        return torch.log(x)
    m, e = torch.frexp(x)
    low = m < SQRT_HALF
    m = torch.where(low, m * 2, m)
    e = (e - low.to(e.dtype)).to(torch.float32)
    s = (m - 1) / (m + 1)
    series = _horner(s * s, _LOG_TERMS).mul_(s).mul_(2)
    return (e * LN2_HI) + ((e * LN2_LO) + series)


def sqrt(x: torch.Tensor) -> torch.Tensor:
    """Square root through float64 (correctly rounded there, and rounding that to float32 again is
    exact for a square root)."""
    if not _f32(x):
        return torch.sqrt(x)
    return x.double().sqrt().float()


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """1 / (1 + e^-x), as e^x / (1 + e^x) for negative x; |x| clamped to 80, far past where it
    saturates, so every intermediate stays a normal float32 (no flush-to-zero to differ on)."""
    if not _f32(x):
        return torch.sigmoid(x)
    if _kernels["on"] and x.device.type == "cpu":
        from . import exact_kernels

        out = torch.empty(x.shape, dtype=torch.float32)
        exact_kernels.sigmoid(x.contiguous().view(-1).numpy(), out.view(-1).numpy())
        return out
    t = exp(-x.abs().clamp(max=80.0))
    positive = _reciprocal(t + 1)
    return torch.where(x >= 0, positive, t * positive)


def softplus_row_sums(logits: torch.Tensor, group: int) -> torch.Tensor:
    """sum_j softplus(l_j) over the last dimension of a 2-d tensor: sum_j max(l_j, 0) plus the log
    of the product of (1 + e^-|l_j|) over groups of `group` pixels (each factor in (1, 2], so a
    group's product stays below 2^group), products and sums in fixed trees."""
    rows, width = logits.shape
    if _kernels["on"] and logits.device.type == "cpu":
        from . import exact_kernels

        out = torch.empty(rows, dtype=torch.float32)
        exact_kernels.softplus_row_sums(logits.contiguous().numpy(), group, out.numpy())
        return out
    factors = exp(-logits.abs().clamp(max=80.0)).add_(1).view(rows, width // group, group)
    while factors.shape[-1] > 1:
        w = factors.shape[-1]
        half = w // 2
        y = factors[..., :half] * factors[..., half:2 * half]
        if w % 2:
            y[..., :1].mul_(factors[..., w - 1:])
        factors = y
    return tree_sum(logits.clamp(min=0), -1) + tree_sum(log(factors[..., 0]), -1)


def logsumexp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log sum_i e^(x_i) over `dim`: the maximum plus the log of the fixed-order sum of e^(x_i - max)."""
    if not _f32(x):
        return torch.logsumexp(x, dim=dim)
    top = x.amax(dim=dim, keepdim=True)
    return top.squeeze(dim) + log(tree_sum(exp(x - top), dim))


def logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(e^a + e^b) elementwise; -inf in a is the empty sum."""
    if not _f32(a):
        return torch.logaddexp(a, b)
    top = torch.maximum(a, b)
    low = torch.minimum(a, b)
    out = top + log(1 + exp(low - top))
    return torch.where(torch.isinf(low) & (low < 0), top, out)


# ----------------------------------------------------------------------------- random numbers

def cos_sin_2pi(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos 2 pi u, sin 2 pi u) for u in [0, 1): the nearest quarter turn q/4 taken out exactly,
    Taylor polynomials on the rest (|2 pi f| <= pi / 4), then rotated by q quarter turns."""
    q = torch.round(u * 4)
    f = (u - q * 0.25) * TWO_PI
    f2 = f * f
    cos = _horner(f2, [1.0, -1 / 2, 1 / 24, -1 / 720, 1 / 40320, -1 / 3628800])
    sin = _horner(f2, [1.0, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800]).mul_(f)
    quarter = torch.remainder(q, 4)
    c = torch.where(quarter == 0, cos, torch.where(quarter == 1, -sin, torch.where(quarter == 2, -cos, sin)))
    s = torch.where(quarter == 0, sin, torch.where(quarter == 1, cos, torch.where(quarter == 2, -sin, -cos)))
    return c, s


def randn(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Standard normal float32 samples by Box-Muller from torch.rand (whose bits are the same on
    every CPU): r = sqrt(-2 ln(1 - u1)), the first half r cos(2 pi u2), the second r sin(2 pi u2)."""
    shape = tuple(shape)
    count = math.prod(shape)
    pairs = (count + 1) // 2
    u = torch.rand((2, pairs), generator=generator, device=_source(generator)).to(device)
    radius = sqrt(log(1 - u[0]) * -2)
    c, s = cos_sin_2pi(u[1])
    return torch.cat([radius * c, radius * s])[:count].reshape(shape)


def uniform(shape, low: float, high: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Uniform float32 samples in [low, high): torch.rand scaled and shifted in two operations
    (torch's uniform_ does it in one C++ expression, which a compiler may fuse on one CPU and
    not on another)."""
    return torch.rand(tuple(shape), generator=generator, device=_source(generator)).to(device).mul_(high - low).add_(low)


def _source(generator: torch.Generator | None) -> torch.device:
    """Where the draws come from: the generator's device (the CPU for torch's default one); the
    bits then move to the device that uses them, so a GPU gets the CPU's numbers."""
    return generator.device if generator is not None else torch.device("cpu")


# ----------------------------------------------------------------------------- float64 helpers

def ndtri(p) -> list[float]:
    """Standard normal quantiles of p in (0, 1), float64, by Acklam's rational approximation
    (relative error below 1.2e-9) with its tails through a series log; +, -, *, /, sqrt only, in
    Python floats, so they are the same everywhere (scipy's ndtri calls the platform's libm)."""
    a = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02,
         -3.066479806614716e+01, 2.506628277459239e+00)
    b = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01,
         -1.328068155288572e+01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00,
         4.374664141464968e+00, 2.938163982698783e+00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00)
    out = []
    for x in p:
        x = float(x)
        if not 0.0 < x < 1.0:
            raise ValueError(f"ndtri: {x} is not in (0, 1)")
        if 0.02425 <= x <= 1 - 0.02425:
            q = x - 0.5
            r = q * q
            num = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q
            den = ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1
            out.append(num / den)
            continue
        tail = x if x < 0.5 else 1 - x
        q = math.sqrt(-2 * log64(tail))
        value = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
        out.append(value if x < 0.5 else -value)
    return out


def log64(x: float) -> float:
    """ln x of a positive Python float from +, -, *, / (math.frexp is exact): 2 atanh series."""
    m, e = math.frexp(x)
    if m < SQRT_HALF:
        m, e = m * 2, e - 1
    s = (m - 1) / (m + 1)
    s2 = s * s
    series = 0.0
    for i in reversed(range(14)):  # |s| <= 0.1716: s^28 / 29 < 1e-23
        series = series * s2 + 1 / (2 * i + 1)
    return e * LN2 + 2 * s * series
