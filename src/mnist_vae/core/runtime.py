"""Where and how torch runs: device choice, determinism, denormal flushing, arrays to tensors."""

from __future__ import annotations

import os

import numpy as np
import torch

from . import torch_private
from ..io.errors import ParamsError


def resolve_device(name: str) -> torch.device:
    """'auto' means CUDA's GPU where torch has one, else Apple's GPU (MPS) where torch reports it,
    else the CPU."""
    from . import numerics

    name = numerics.device_for(name)  # universal mode: no MPS (it has no float64)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"params: 'train.device' is {name!r} but CUDA is not available here (use auto or cpu)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ParamsError("params: 'train.device' is 'mps' but torch reports no MPS device here (use auto or cpu)")
    return torch.device(name)


def make_deterministic(seed: int) -> None:
    """Same seed, same machine and thread count: same weights and metrics, byte for byte.
    (Another thread count sums in another order: README, reproducibility.)"""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.manual_seed(seed)
    torch_private.set_deterministic()
    torch.backends.cudnn.benchmark = False


def flush_denormals() -> None:
    """Flush denormal floats to zero (FTZ/DAZ), as TensorFlow does on CPUs by default; not in
    universal mode, whose bits must not depend on the hardware's flushing (x86 decides that a result
    is tiny after rounding, ARM before): there Adam flushes its moments itself by an exact
    comparison (exact.TINY), which is where the denormals came from.

    Adam's first moment of a weight whose gradient stops being nonzero (pixels that are almost
    always 0) decays by 0.9 a step into the denormal range, where every x86 multiply takes a
    microcode assist (README, performance). Values that small (< 1.2e-38) move no float32
    weight. Call it before torch's first parallel op in the process: worker threads inherit
    the floating-point mode of the thread that starts them, and only the calling thread is
    switched.
    """
    from . import numerics

    torch.set_flush_denormal(not numerics.universal())


def keep_freed_memory() -> None:
    """Keep freed memory in the process's heap instead of handing it back to the OS (glibc's
    mallopt; elsewhere a no-op). The evaluation allocates a fresh tensor of logits, megabytes, for
    every pass; glibc maps each one anew and every page faults on first touch, which cost more
    than the matrix product itself (`make bench`). Results do not change."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(-3, 512 << 20)  # M_MMAP_THRESHOLD: blocks below 512 MB come from the heap
    mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD: keep up to 1 GB of free heap


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 0/1 images (N x 784) as one float32 tensor on the device."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)

