"""How torch computes on a CPU: `portable` (the same bits on every x86-64 CPU with AVX2, Intel or
AMD, with or without AVX-512 or AMX) or `fast` (each CPU's own fastest kernels).

Why bits differ between CPUs at all: the libraries under torch pick code paths per CPU. MKL picks
its sgemm and vector-math (exp, log) branch by vendor and ISA, ATen its kernels (sigmoid, sums,
Adam, random normals) by CPU capability, oneDNN its products by ISA. After thousands of Adam steps
another rounding is another trajectory. Portable mode removes every such choice:

- ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2: the same kernels on any CPU with AVX2;
- MKL_CBWR=COMPATIBLE: MKL's vendor-neutral branch (what is left of MKL: exp, log, dot);
- every matrix product through oneDNN (:func:`linear`), because MKL's sgemm under COMPATIBLE
  takes a slow SSE2 branch (`make bench` measures it);
- a fixed thread count (reductions split their sums by thread).

These are read when torch first uses each library, so :func:`enter` sets them before a stage
imports torch; it then checks what it can see and refuses in one line when a pin did not take.
tools/probe_numerics.py shows the promise on emulated Intel and AMD CPUs (qemu-user).

The oneDNN product is a private torch op (``torch.ops.mkldnn._linear_pointwise``, what
torch.compile emits for a CPU Linear), called through mnist_vae.core.torch_private with its public
fallback, F.linear, which would take MKL's sgemm.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from typing import Any

from ..io.errors import MnistVaeError

log = logging.getLogger(__name__)

MODES = ("portable", "fast")

PORTABLE_ENV = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

_state: dict[str, Any] = {"mode": "fast", "record": None}


class NumericsError(MnistVaeError, RuntimeError):
    """Portable numerics could not be set up here; the message says what to do."""


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def environment(mode: str, threads: int | None) -> dict[str, str]:
    """The environment variables a mode needs set before torch is imported."""
    if mode not in MODES:
        raise ValueError(f"numerics mode must be one of {MODES}, got {mode!r}")
    env = dict(PORTABLE_ENV) if mode == "portable" else {}
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_ENV})
    return env


def enter(cfg: Any, device: str = "cpu") -> dict[str, Any]:
    """Set up the `numerics` params (mode, threads) for this process and check that they took.

    Call it before the process imports torch: the pins are environment variables that torch's
    libraries read once. Returns the record kept beside a run's timings. Raises NumericsError
    (one line) when portable mode cannot hold: torch imported already with other settings, a
    CPU without AVX2, or a thread count torch did not take.
    """
    mode, threads = cfg.mode, cfg.threads
    wanted = environment(mode, threads)
    if "torch" in sys.modules:  # the thread count can still be set (and is checked below); the pins cannot
        clash = {k: v for k, v in wanted.items() if k in PORTABLE_ENV and os.environ.get(k) != v}
        if clash:
            raise NumericsError(f"numerics: torch was imported before the {mode} settings were made "
                                f"({', '.join(clash)}); call numerics.enter() first")
    elif mode == "fast":  # fast mode must not inherit a portable parent's pins (a stage started by a test)
        for name in PORTABLE_ENV:
            os.environ.pop(name, None)
    os.environ.update(wanted)
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
        if torch.get_num_threads() != threads:
            raise NumericsError(f"numerics: torch runs {torch.get_num_threads()} threads, not numerics.threads "
                                f"= {threads}")
    record = {"numerics": mode, "threads": torch.get_num_threads(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if mode == "portable":
        reason = _no_promise(device)
        if reason:
            log.warning("numerics: portable mode promises the same bytes only on x86-64 CPUs with AVX2; %s, so "
                        "another machine may give other bits (the gate's statistical tolerances apply)", reason)
            record["bitwise_promise"] = False
        else:
            if record["cpu_capability"] != "AVX2":
                raise NumericsError(
                    f"numerics: portable mode needs ATen's AVX2 kernels but torch runs "
                    f"{record['cpu_capability']} here (a CPU without AVX2, or ATEN_CPU_CAPABILITY set elsewhere); "
                    f"set numerics.mode: fast in params.yaml")
            record["bitwise_promise"] = True
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


def _no_promise(device: str) -> str:
    from .torch_private import forced_public

    if not is_x86_64():
        return f"this is {platform.machine()}"
    if device.split(":")[0] != "cpu":
        return f"the device is {device}"
    if forced_public():
        return "MNIST_VAE_PUBLIC_OPS forces the public fallbacks of the private ops"
    return ""


def portable() -> bool:
    return _state["mode"] == "portable"


def linear(h, weight, bias=None):
    """h W^T + b. In portable mode on a CPU (float32, no autograd) through oneDNN, whose products
    are the same on every CPU at a fixed ISA; elsewhere F.linear. Equal within float rounding."""
    import torch.nn.functional as F

    if _through_onednn(h, weight):
        from .torch_private import onednn_linear

        return onednn_linear(h, weight, bias)
    return F.linear(h, weight, bias)


def _through_onednn(h, weight) -> bool:
    import torch

    from .torch_private import has_onednn

    return _state["mode"] == "portable" and has_onednn(h) and h.dtype == torch.float32 and \
        not (torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad))


def linear_into(out, h, weight, bias=None):
    """out = h W^T (+ b), the training step's products into its preallocated buffers. Fast mode:
    torch.addmm / torch.mm with out= (MKL's sgemm on a CPU); portable mode: oneDNN, copied in."""
    import torch

    if _through_onednn(h, weight):
        from .torch_private import onednn_linear

        return out.copy_(onednn_linear(h, weight, bias))
    if bias is None:
        return torch.mm(h, weight.t(), out=out)
    return torch.addmm(bias, h, weight.t(), out=out)
