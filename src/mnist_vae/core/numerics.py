"""How torch computes: `universal` (the same bits on every CPU, x86-64 or ARM, built from
arithmetic whose result IEEE 754 fixes: mnist_vae.core.exact) or `fast` (each CPU's own fastest
kernels, no promise beyond the same machine and thread count).

Why bits differ between CPUs at all: the libraries under torch pick code paths per CPU. MKL picks
its sgemm and vector-math (exp, log) branch by vendor and ISA, ATen its kernels (sigmoid, sums,
Adam, random normals) by CPU capability, oneDNN its products by ISA, and reductions split their
sums by thread. After thousands of Adam steps another rounding is another trajectory. Universal
mode needs no pin against any of it: every product, sum and function goes through
mnist_vae.core.exact, whose float32 results do not depend on which kernel a library picks (its
products are exact integer sums, int8 GEMMs where torch._int_mm passes a check, else float64).
tools/probe_numerics.py shows the promise on emulated Intel, AMD and ARM CPUs (qemu-user).

A third mode, portable (pinned x86-64 library kernels), was retired when universal mode's int8
products brought it within 1.3x of portable's time (`make bench`); params that still name it stop
with one line (mnist_vae.io.params).
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from typing import Any

from ..io.errors import MnistVaeError

log = logging.getLogger(__name__)

MODES = ("universal", "fast")

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# numerics.kernels: which branch of the libraries' kernels torch takes, as environment variables
# ATen and MKL read when they first compute. native: this CPU's own; the others give the roundings
# of other x86 CPUs on this one (the same-seed study's variants): ATen's DEFAULT capability (no
# AVX, as ARM's and old CPUs' builds) and MKL's COMPATIBLE branch (its SSE2 code, which every x86
# CPU runs). Universal mode takes neither library's rounding, so its bits do not change.
KERNELS = {"native": {}, "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
           "mkl-compatible": {"MKL_CBWR": "COMPATIBLE"},
           "generic": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}}
KERNEL_ENV = tuple(sorted({name for env in KERNELS.values() for name in env}))  # every variable they set

_state: dict[str, Any] = {"mode": "fast", "record": None}


class NumericsError(MnistVaeError, RuntimeError):
    """The numerics could not be set up here (a thread count torch did not take, universal mode
    on MPS); the message says what to do."""


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def environment(mode: str, threads: int | None, kernels: str = "native") -> dict[str, str]:
    """The environment variables a mode needs set before torch is imported: the thread count, read
    by the OpenMP and MKL runtimes when they start, and the kernels' branch (KERNELS)."""
    if mode not in MODES:
        raise ValueError(f"numerics mode must be one of {MODES}, got {mode!r}")
    if kernels not in KERNELS:
        raise ValueError(f"numerics kernels must be one of {tuple(KERNELS)}, got {kernels!r}")
    env = dict(KERNELS[kernels])
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_ENV})
    return env


def enter(cfg: Any, device: str = "cpu") -> dict[str, Any]:
    """Set up the `numerics` params (mode, threads, kernels) for this process and check that they took.

    Call it before the process imports torch: the thread counts are environment variables that
    the OpenMP and MKL runtimes read once (torch's own count is set and checked below either way).
    Returns the record kept beside a run's timings. Raises NumericsError (one line) for a thread
    count torch did not take, or universal mode on Apple's MPS.
    """
    mode, threads, kernels = cfg.mode, cfg.threads, cfg.kernels
    os.environ.update(environment(mode, threads, kernels))
    if kernels == "native":  # a branch set by hand outside the params would be a rounding they do not name
        for name in KERNEL_ENV:
            os.environ.pop(name, None)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
        if torch.get_num_threads() != threads:
            raise NumericsError(f"numerics: torch runs {torch.get_num_threads()} threads, not numerics.threads "
                                f"= {threads}")
    if "numba" in sys.modules:  # it read NUMBA_NUM_THREADS at import, and refuses a change once its threads run
        from . import exact_kernels

        exact_kernels.set_threads(threads)
    elif threads is not None:  # the compiled kernels' threads (exact_kernels), read when they import numba
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    record = {"numerics": mode, "threads": torch.get_num_threads(), "kernel_threads": threads,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "kernels": kernels}
    if "ATEN_CPU_CAPABILITY" in KERNELS[kernels] and record["cpu_capability"] != "DEFAULT":
        raise NumericsError(f"numerics: kernels {kernels} asks ATen for its DEFAULT kernels, but torch had already "
                            f"chosen {record['cpu_capability']}; numerics.enter must run before torch computes")
    record["isa"] = platform.machine()
    if device == "auto":
        if mode == "universal" and torch.cuda.is_available():
            log.warning("numerics: universal mode runs on the CPU although torch sees a CUDA GPU: its bytes are shown "
                        "the same on CPUs only (benchmarks/gpu.sh checks a GPU); set train.device: cuda in params.yaml "
                        "to train on the GPU, judged by the gate's tolerances instead of bit for bit")
        device = "cuda" if torch.cuda.is_available() and mode != "universal" else \
            "mps" if torch.backends.mps.is_available() and mode != "universal" else "cpu"
    if mode == "universal":
        if device.split(":")[0] == "mps":
            raise NumericsError("numerics: universal mode takes its products in float64, which Apple's MPS "
                                "does not have; set train.device: cpu (or numerics.mode: fast) in params.yaml")
        # exact on any device in principle (integer products), measured on CPUs only
        record["bitwise_promise"] = device.split(":")[0] == "cpu"
        from . import exact

        record["products"] = exact.engine() if device.split(":")[0] == "cpu" else "float64"
        if exact.kernels_on():
            from . import exact_kernels

            exact_kernels.start()
    _state.update(mode=mode, record=record)
    return record


def record() -> dict[str, Any]:
    """What the machine record says of the numerics: the mode that ran, torch's thread count and
    CPU capability, and whether the bits are promised to match other CPUs."""
    import torch

    if _state["record"] is not None:
        return dict(_state["record"])
    return {"numerics": "fast", "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "bitwise_promise": False}


def drop_promise(reason: str) -> None:
    """This run will not keep the mode's bitwise promise: say why in one line, and record it."""
    if _state["record"] is not None and _state["record"].get("bitwise_promise"):
        log.warning("numerics: %s mode promises the same bytes on every CPU only through its own ops; %s, so "
                    "another machine may give other bits (the gate's statistical tolerances apply)", _state["mode"],
                    reason)
        _state["record"]["bitwise_promise"] = False


def universal() -> bool:
    return _state["mode"] == "universal"


def device_for(name: str) -> str:
    """What `train.device: auto` means under this mode: universal mode runs on the CPU (its bytes
    are shown on CPUs; Apple's MPS has no float64), fast mode on a GPU where there is one."""
    return "cpu" if name == "auto" and universal() else name


def generator(seed: int, device):
    """A seeded torch.Generator for draws used on `device`. Universal mode's lives on the CPU
    (mt19937 on every machine; CUDA's is Philox) and its draws move to the device (:func:`randn`)."""
    import torch

    return torch.Generator(device="cpu" if universal() else device).manual_seed(seed)


def randperm(n: int, generator, device):
    """torch.randperm from `generator`, on `device`."""
    import torch

    return torch.randperm(n, generator=generator, device=generator.device).to(device)


# The ops that differ between modes: universal mode's come from mnist_vae.core.exact (float32;
# other dtypes and tensors that need autograd take torch's own), fast mode's are torch's.

def _exact(*tensors) -> bool:
    import torch

    return _state["mode"] == "universal" and all(t.dtype == torch.float32 for t in tensors) and \
        not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def exp(x):
    import torch

    from . import exact

    return exact.exp(x) if _exact(x) else torch.exp(x)


def sigmoid(x):
    import torch

    from . import exact

    return exact.sigmoid(x) if _exact(x) else torch.sigmoid(x)


def sum(x, dim=None):  # noqa: A001 - the mode's sum
    from . import exact

    if not _exact(x):
        return x.sum() if dim is None else x.sum(dim=dim)
    return exact.tree_sum(x.reshape(-1), 0) if dim is None else exact.tree_sum(x, dim)


def mean(x, dim=None):
    from . import exact

    if not _exact(x):
        return x.mean() if dim is None else x.mean(dim=dim)
    return exact.tree_mean(x.reshape(-1), 0) if dim is None else exact.tree_mean(x, dim)


def logsumexp(x, dim: int):
    import torch

    from . import exact

    return exact.logsumexp(x, dim) if _exact(x) else torch.logsumexp(x, dim=dim)


def logaddexp(a, b):
    import torch

    from . import exact

    return exact.logaddexp(a, b) if _exact(a, b) else torch.logaddexp(a, b)


def log_of(k: int) -> float:
    """ln k as a Python float: libm's log in fast mode, :func:`exact.log64` in universal."""
    import math

    from . import exact

    return exact.log64(k) if universal() else math.log(k)


def randn(shape, generator=None, device=None):
    """Standard normal samples: exact.randn (Box-Muller on torch.rand's bits) in universal mode,
    torch.randn otherwise."""
    import torch

    from . import exact

    if universal():
        return exact.randn(shape, generator=generator, device=device)
    return torch.randn(shape, generator=generator, device=device)


def normal_quantiles(p) -> "np.ndarray":
    """Phi^-1(p), float64: exact.ndtri in universal mode, scipy's ndtri otherwise."""
    import numpy as np

    from . import exact

    if universal():
        return np.asarray(exact.ndtri(p), dtype=np.float64)
    from scipy.special import ndtri

    return ndtri(np.asarray(p, dtype=np.float64))


def linear(h, weight, bias=None):
    """h W^T + b. In universal mode (float32, no autograd) an exact product (exact.linear);
    elsewhere F.linear. Equal within float rounding."""
    import torch.nn.functional as F

    if _exact(h, weight):
        from . import exact

        return exact.linear(h, weight, bias)
    return F.linear(h, weight, bias)


def linear_into(out, h, weight, bias=None):
    """out = h W^T (+ b), the training step's products into its preallocated buffers. Universal
    mode: exact.linear, written into them; fast mode: torch.addmm / torch.mm with out= (MKL's
    sgemm on a CPU)."""
    import torch

    if _exact(h, weight):
        from . import exact

        return exact.linear(h, weight, bias, out=out)
    if bias is None:
        return torch.mm(h, weight.t(), out=out)
    return torch.addmm(bias, h, weight.t(), out=out)
