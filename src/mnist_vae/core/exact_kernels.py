"""Compiled twins of mnist_vae.core.exact's hottest op, the IWAE's softplus row sums: the same
float32 operations in the same order, fused into one loop by numba, so the bits are the same as
the torch version's (tests/core/test_exact.py holds them equal bit for bit, and the numerics
probe on every emulated CPU).

Why compiled: as torch ops, exact.exp is some twenty passes over memory where torch.exp is one;
on the IWAE's 7.8 billion terms a model that costs minutes (`make bench` shows both). Why numba
and not fastmath: without fastmath LLVM neither reassociates nor contracts a multiply and an add
into one fused multiply-add, so each operation rounds as IEEE 754 says on every CPU
(tests/core/test_exact.py reads the machine code for fused multiply-adds). Constants are float32
(np.float32), else numba would compute in float64.

NaN stays NaN, as in the torch ops: every clamp, maximum and sign test is written so that a
comparison with NaN keeps the NaN (Python's min/max, and numba's, keep whichever argument the
comparison picks, which drops a NaN in one order), so a diverged model reports NaN, not a finite
number; +-inf gives what the torch ops give.

Threads: the kernels run on numba's threads, :func:`set_threads` (numerics.threads) or numba's
default (one per CPU); :func:`_start_threads` starts them when this module is imported.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .exact import _EXP_TERMS, _LOG_TERMS, EXP_MAX, EXP_MIN, INV_LN2, LN2_HI, LN2_LO, SQRT_HALF

F = np.float32
E0, E1, E2, E3, E4, E5, E6, E7 = (F(c) for c in _EXP_TERMS)
L0, L1, L2, L3, L4, L5 = (F(c) for c in _LOG_TERMS)
INV_LN2_F, LN2_HI_F, LN2_LO_F, SQRT_HALF_F = F(INV_LN2), F(LN2_HI), F(LN2_LO), F(SQRT_HALF)
EXP_MIN_F, EXP_MAX_F, ONE, TWO, ZERO, CAP = F(EXP_MIN), F(EXP_MAX), F(1.0), F(2.0), F(0.0), F(80.0)
TINY = F(2.0 ** -126)  # float32's smallest normal number


@njit(cache=True, nogil=True)
def _clamp(v, low, high):
    """torch.clamp(v, low, high): NaN stays NaN (no comparison with it is true)."""
    return low if v < low else (high if v > high else v)


@njit(cache=True, nogil=True)
def _exp_into(x, out, bits):
    """out[j] = exact.exp(x[j]): the polynomial in one loop, 2^n written into `bits` (an int32 view
    of `out`) in another, then their product; no call in the loops, so LLVM vectorizes them. A NaN
    gives NaN (its polynomial is NaN) with n = 0: converting NaN to an integer is undefined."""
    n = np.empty_like(x)
    for j in range(len(x)):
        v = _clamp(x[j], EXP_MIN_F, EXP_MAX_F)
        k = np.rint(v * INV_LN2_F)
        k = k if k == k else ZERO
        r = (v - k * LN2_HI_F) - k * LN2_LO_F
        p = E7
        p = p * r + E6
        p = p * r + E5
        p = p * r + E4
        p = p * r + E3
        p = p * r + E2
        p = p * r + E1
        p = p * r + E0
        x[j] = p
        n[j] = k
    for j in range(len(x)):
        bits[j] = (np.int32(n[j]) + np.int32(127)) << np.int32(23)
    for j in range(len(x)):
        out[j] = x[j] * out[j]


@njit(cache=True, nogil=True)
def _log(x):
    m, e = math.frexp(x)
    m = F(m)
    if m < SQRT_HALF_F:
        m = m * TWO
        e -= 1
    ef = F(e)
    s = (m - ONE) / (m + ONE)
    s2 = s * s
    p = L5
    p = p * s2 + L4
    p = p * s2 + L3
    p = p * s2 + L2
    p = p * s2 + L1
    p = p * s2 + L0
    series = (p * s) * TWO
    return ef * LN2_HI_F + (ef * LN2_LO_F + series)


@njit(cache=True, nogil=True)
def _tree(buf, n, product):
    """buf[0] after halving pairwise (buf[k] op buf[k + half], an odd one out into buf[0])."""
    while n > 1:
        half = n // 2
        for k in range(half):
            buf[k] = buf[k] * buf[k + half] if product else buf[k] + buf[k + half]
        if n % 2:
            buf[0] = buf[0] * buf[n - 1] if product else buf[0] + buf[n - 1]
        n = half
    return buf[0]


@njit(cache=True, nogil=True, parallel=True)
def softplus_row_sums(logits, group, out):
    """out[i] = exact.softplus_row_sums(logits, group)[i] for a C-contiguous float32 2-d array;
    rows in parallel (each row's arithmetic is its own, so threads change no bit)."""
    rows, width = logits.shape
    groups = width // group
    for i in prange(rows):
        args = np.empty(width, np.float32)
        factors = np.empty(width, np.float32)
        positive = np.empty(width, np.float32)
        logs = np.empty(groups, np.float32)
        for j in range(width):
            v = logits[i, j]
            positive[j] = ZERO if v <= ZERO else v  # clamp(min=0): NaN stays NaN
            args[j] = -_clamp(abs(v), ZERO, CAP)
        _exp_into(args, factors, factors.view(np.int32))
        for j in range(width):
            factors[j] = factors[j] + ONE
        for g in range(groups):
            logs[g] = _log(_tree(factors[g * group:(g + 1) * group], group, True))
        out[i] = _tree(positive, width, False) + _tree(logs, groups, False)


@njit(cache=True, nogil=True)
def tree_sum_rows(x, out):
    """out[j] = exact.tree_sum(x, 0)[j] of a C-contiguous float32 2-d array: the rows halved
    pairwise (row k plus row k + half, an odd last row into row 0), as the torch ops order the
    adds, on a copy; every column's adds are its own, so vectorizing across columns keeps them."""
    buf = x.copy()
    n, width = buf.shape
    while n > 1:
        half = n // 2
        for k in range(half):
            for j in range(width):
                buf[k, j] = buf[k, j] + buf[k + half, j]
        if n % 2:
            for j in range(width):
                buf[0, j] = buf[0, j] + buf[n - 1, j]
        n = half
    for j in range(width):
        out[j] = buf[0, j]


@njit(cache=True, nogil=True)
def tree_sum_flat(x):
    """exact.tree_sum(x, 0) of a 1-d float32 array (the same halving as tree_sum_rows, on a copy)."""
    buf = x.copy()
    return _tree(buf, len(buf), False)


@njit(cache=True, nogil=True, parallel=True)
def adam_(param, grad, m, v, beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, root_correction, eps):
    """In place, flat float32 arrays: step.LayerAdam's universal update (the same operations in the
    same order: m = m b1 + g (1 - b1), v = v b2 + (g g)(1 - b2), p = p - (m s) / (sqrt(v) / c + eps),
    the square root in float64, each moment below 2^-126 set to 0), in one pass instead of a dozen."""
    for j in prange(len(param)):
        g = grad[j]
        mj = m[j] * beta1 + g * one_minus_beta1
        vj = v[j] * beta2 + (g * g) * one_minus_beta2
        if abs(mj) < TINY:  # the moments flushed by an exact comparison, never by the CPU's rule
            mj = ZERO
        if vj < TINY:
            vj = ZERO
        m[j] = mj
        v[j] = vj
        denom = np.float32(np.sqrt(np.float64(vj))) / root_correction + eps
        param[j] = param[j] - (mj * step_size) / denom


@njit(cache=True, nogil=True, parallel=True)
def sigmoid(x, out):
    """out = exact.sigmoid(x) for flat float32 arrays, in blocks: e^-|x| (|x| capped at 80), then
    1 / (1 + e^-|x|) for x >= 0 and e^-|x| / (1 + e^-|x|) below, as exact.py orders them."""
    n = len(x)
    block = 4096
    for b in prange((n + block - 1) // block):
        lo, hi = b * block, min(n, (b + 1) * block)
        args = np.empty(hi - lo, np.float32)
        t = np.empty(hi - lo, np.float32)
        for j in range(lo, hi):
            args[j - lo] = -_clamp(abs(x[j]), ZERO, CAP)
        _exp_into(args, t, t.view(np.int32))
        for j in range(lo, hi):
            tj = t[j - lo]
            positive = ONE / (tj + ONE)
            out[j] = positive if x[j] >= ZERO else tj * positive


@njit(cache=True, nogil=True)
def _row_amax_bits(bits, i):
    """Row i's largest magnitude as the int32 bits of a float32 (bits: the row's int32 view):
    magnitudes order as their bit patterns do, +inf is 0x7F800000 and every NaN above it, so an
    integer max (which LLVM vectorizes, unlike a float max that must keep a NaN) finds the
    largest magnitude, an infinity or a NaN at once."""
    m = np.int32(0)
    for j in range(bits.shape[1]):
        b = bits[i, j] & np.int32(0x7FFFFFFF)
        m = b if b > m else m
    return m


@njit(cache=True, nogil=True)
def _frexp_exponent(m):
    """math.frexp(x)[1] of the float32 x >= 0 whose bits are m (e with x = f 2^e, 0.5 <= f < 1),
    0 for zero, an infinity or NaN (as frexp gives them); from the bits, no float arithmetic."""
    if m >= 0x7F800000 or m == 0:
        return 0
    if m >= 0x00800000:  # normal: the biased exponent less 126
        return (m >> 23) - 126
    e = -149  # subnormal: m 2^-149, one more per bit of m
    while m > 0:
        m >>= 1
        e += 1
    return e


@njit(cache=True, nogil=True)
def _col_amax(t):
    """Each column's largest magnitude, NaN where the column holds one. Across columns each lane
    is its own column, so this float max vectorizes as it is (the bits' integer max, as rows take
    it, measured slower here)."""
    amax = np.zeros(t.shape[1], np.float32)
    for i in range(t.shape[0]):
        for j in range(t.shape[1]):
            a = abs(t[i, j])
            if a > amax[j] or a != a:
                amax[j] = a
    return amax


@njit(cache=True, nogil=True)
def _scale_exponent(m, bits):
    """n of exact.quantize for a row whose largest magnitude has the float32 bits m:
    bits less frexp's exponent, within float32's normal powers of two."""
    return min(max(bits - _frexp_exponent(m), -126), 126)


@njit(cache=True, nogil=True, parallel=True)
def quantize_rows(t, bits, out):
    """out (float64) = exact.quantize(t, -1, bits) of a C-contiguous float32 2-d array: per row the
    power of two n from frexp of its largest magnitude, then round(t 2^n) 2^-n (each step exact).
    A row's largest magnitude is NaN where the row holds one, as torch's amax says."""
    rows, width = t.shape
    view = t.view(np.int32)
    for i in prange(rows):
        n = _scale_exponent(_row_amax_bits(view, i), bits)
        up, down = F(math.ldexp(1.0, n)), F(math.ldexp(1.0, -n))
        for j in range(width):
            out[i, j] = np.float64(np.rint(t[i, j] * up) * down)


@njit(cache=True, nogil=True, parallel=True)
def quantize_cols(t, bits, out):
    """out (float64) = exact.quantize(t, -2, bits) of a C-contiguous float32 2-d array: the same
    steps as quantize_rows, per column (the rows of the transposed views the products take)."""
    rows, width = t.shape
    amax = _col_amax(t)
    up = np.empty(width, np.float32)
    down = np.empty(width, np.float32)
    for j in range(width):
        _, e = math.frexp(amax[j])
        n = min(max(bits - e, -126), 126)
        up[j], down[j] = F(math.ldexp(1.0, n)), F(math.ldexp(1.0, -n))
    for i in prange(rows):
        for j in range(width):
            out[i, j] = np.float64(np.rint(t[i, j] * up[j]) * down[j])


@njit(cache=True, nogil=True)
def _slice_pair(v, up, inv_base, base):
    """(hi, lo) of q = round(v 2^n), as exact.py writes them: hi = round(q / 2^7), lo = q - 2^7 hi."""
    q = np.rint(v * up)
    hi = np.rint(q * inv_base)
    return np.int8(hi), np.int8(q - hi * base)


@njit(cache=True, nogil=True, parallel=True)
def slices_rows(t, bits, slice_bits, out, n_out):
    """exact._slices along rows of a C-contiguous float32 2-d array: out (int8, 2 rows x cols)
    holds hi in its first half of rows and lo in its second, n_out (int32) each row's n. False
    where a row's largest magnitude is NaN or infinite (no integer slices exist)."""
    rows, width = t.shape
    view = t.view(np.int32)
    finite = np.ones(rows, np.bool_)
    base, inv_base = F(2.0 ** slice_bits), F(2.0 ** -slice_bits)
    for i in prange(rows):
        m = _row_amax_bits(view, i)
        if m >= 0x7F800000:  # an infinity or NaN
            finite[i] = False
            continue
        n = _scale_exponent(m, bits)
        up = F(math.ldexp(1.0, n))
        n_out[i] = n
        for j in range(width):
            out[i, j], out[rows + i, j] = _slice_pair(t[i, j], up, inv_base, base)
    return finite.all()


@njit(cache=True, nogil=True, parallel=True)
def slices_cols(t, bits, slice_bits, out, n_out):
    """exact._slices along columns of a C-contiguous float32 2-d array: out (int8, rows x 2 cols)
    holds hi in its first half of columns and lo in its second, n_out (int32) each column's n."""
    rows, width = t.shape
    base, inv_base = F(2.0 ** slice_bits), F(2.0 ** -slice_bits)
    amax = _col_amax(t)
    up = np.empty(width, np.float32)
    for j in range(width):
        if amax[j] != amax[j] or amax[j] == np.inf:
            return False
        _, e = math.frexp(amax[j])
        n = min(max(bits - e, -126), 126)
        up[j] = F(math.ldexp(1.0, n))
        n_out[j] = n
    for i in prange(rows):
        for j in range(width):
            out[i, j], out[i, width + j] = _slice_pair(t[i, j], up[j], inv_base, base)
    return True


@njit(cache=True, nogil=True, parallel=True)
def recombine_into(blocks, n_rows, n_cols, slice_bits, bias, out):
    """out = float32(sum) + bias from the int32 blocks of the stacked slices' product
    ([hi; lo] x [hi, lo]): sum = (2^14 hh + 2^7 (hl + lh) + ll) 2^-(n_row + n_col). In float64
    every term and partial sum is an integer below 2^53 (exact.py's bounds) and the scale a power
    of two (at least 2^-252, a normal float64), so each step is exact; one rounding, to float32."""
    rows, width = out.shape
    wide, half = np.float64(2.0 ** (2 * slice_bits)), np.float64(2.0 ** slice_bits)
    col_scale = np.empty(width, np.float64)
    for j in range(width):
        col_scale[j] = math.ldexp(1.0, -n_cols[j])
    with_bias = len(bias) > 0
    for i in prange(rows):
        row_scale = math.ldexp(1.0, -n_rows[i])
        for j in range(width):
            s = (np.float64(blocks[i, j]) * wide + (np.float64(blocks[i, width + j]) + np.float64(blocks[rows + i, j])) * half) \
                + np.float64(blocks[rows + i, width + j])
            c = np.float32(s * (row_scale * col_scale[j]))
            out[i, j] = c + bias[j] if with_bias else c


@njit(cache=True, nogil=True, parallel=True)
def round_add_into(c, bias, out):
    """out = float32(c) + bias (c a float64 product, bias per column, or empty for none): the
    rounding to float32 and the float32 add of exact.linear, in one pass instead of three."""
    rows, width = c.shape
    for i in prange(rows):
        if len(bias):
            for j in range(width):
                out[i, j] = np.float32(c[i, j]) + bias[j]
        else:
            for j in range(width):
                out[i, j] = np.float32(c[i, j])


def start() -> None:
    """Load one kernel now: the first call of any cached kernel in a process starts numba's
    compiler runtime (`make bench` prints its cost), which the process then pays at its start,
    with the imports, rather than inside the first training step or evaluation it times."""
    t = np.zeros((1, 1), np.float32)
    slices_rows(t, 13, 7, np.empty((2, 1), np.int8), np.empty(1, np.int32))


def set_threads(count: int | None) -> None:
    """Run the kernels on `count` threads (numerics.threads), or on numba's default for None (one
    per CPU, or NUMBA_NUM_THREADS), at most as many as numba started. numba's count is its calling
    thread's: numerics.enter also sets NUMBA_NUM_THREADS, which numba reads once, for every thread."""
    started = numba.config.NUMBA_NUM_THREADS
    numba.set_num_threads(started if count is None else min(count, started))


def threads() -> int:
    """How many threads the kernels run on (this thread's count)."""
    return numba.get_num_threads()


def _start_threads() -> None:
    """Start numba's threads now and leave torch's thread count as it was: numba's OpenMP layer
    shares torch's OpenMP runtime, and starting its threads within a kernel's first call can set
    the runtime's count, torch's too, to numba's (numerics.threads: 1 then ran torch on every CPU)."""
    import sys

    torch = sys.modules.get("torch")
    count = torch.get_num_threads() if torch is not None else None
    numba.get_num_threads()  # starts the threads
    if count is not None and torch.get_num_threads() != count:
        torch.set_num_threads(count)


_start_threads()
