"""What a run ran on, in one record (:func:`record`, kept beside a run's timings) and one line
(:func:`label`, for the spread study and the benchmark). Imports torch only in :func:`record`,
so tools can read records cheaply."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

from .. import cpu_floor


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


# The instruction-set extensions that choose kernels (x86: MKL, oneDNN and ATen by AVX2, AVX-512,
# AMX; ARM: NEON, SVE), as /proc/cpuinfo or macOS's sysctl names them -> the record's names.
ISA_FLAGS = {"avx2": "AVX2", "fma": "FMA", "avx512f": "AVX-512", "avx512_bf16": "AVX-512-BF16", "amx_tile": "AMX",
             "avx512_vnni": "AVX-512-VNNI", "avx_vnni": "AVX-VNNI", "asimd": "NEON", "asimddp": "DOTPROD", "sve": "SVE",
             "sve2": "SVE2"}
MACOS_FLAGS = {"hw.optional.avx2_0": "AVX2", "hw.optional.avx512f": "AVX-512", "hw.optional.neon": "NEON",
               "hw.optional.arm.FEAT_SVE": "SVE"}


def cpu_detail(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU beyond its name: vendor, family and model (x86), implementer and part (ARM), and
    which of ISA_FLAGS it has: "AMD EPYC" alone cannot tell a Zen 3 from a Zen 5, nor AVX2 from
    AVX-512. `cpuinfo`: /proc/cpuinfo's text (read when None, and then the flags are the CPU's
    own, cpu_floor.features(): under qemu-user /proc/cpuinfo lists the host's); on macOS sysctl
    answers."""
    own = None
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return _macos_detail() if platform.system() == "Darwin" else {}
        own = cpu_floor.features()
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's
            fields[key.strip()] = value.strip()
    flags = own if own is not None else set((fields.get("flags") or fields.get("Features") or "").split())
    detail: dict[str, Any] = {}
    if "vendor_id" in fields:
        detail["cpu_family"] = f"{fields['vendor_id']} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"
    elif "CPU implementer" in fields:
        detail["cpu_family"] = f"implementer {fields['CPU implementer']} part {fields.get('CPU part', '?')}"
    detail["cpu_flags"] = sorted({name for flag, name in ISA_FLAGS.items() if flag in flags})
    return detail


def _macos_detail() -> dict[str, Any]:
    import subprocess

    def sysctl(key: str) -> str:
        try:
            return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"cpu_family": sysctl("machdep.cpu.brand_string") or platform.machine(),
            "cpu_flags": sorted({name for key, name in MACOS_FLAGS.items() if sysctl(key) == "1"})}


def record(device) -> dict[str, Any]:
    """The machine a run ran on, recorded beside its timings: another CPU or thread count sums
    in another order (README, reproducibility), so the spread study groups runs by it. Holds the
    numerics mode, which path each private torch op took, and the thread counts that ran: torch's
    (`threads`) and the compiled kernels' (`kernel_threads`, numba's; None where none ran)."""
    import torch

    from . import numerics, torch_private

    info: dict[str, Any] = {"cpu": cpu_name(), **cpu_detail(), "cores": os.cpu_count(),
                            "threads": torch.get_num_threads(), "torch": torch.__version__,
                            "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["ops"] = torch_private.record(device)
    info.update(numerics.record())
    kernels = sys.modules.get("mnist_vae.core.exact_kernels")
    info.update(threads=torch.get_num_threads(), kernel_threads=kernels.threads() if kernels else None)
    return info


def label(info: dict[str, Any] | None) -> str:
    """One line of a record: CPU, cores, torch and its threads, the device."""
    if not info:
        return "not recorded"
    threads = f"{info['threads']} thread{'' if info['threads'] == 1 else 's'}"
    cpu = info["cpu"]
    if info.get("cpu_family") or info.get("cpu_flags"):  # records before the detail have neither
        cpu += f" ({', '.join(filter(None, [info.get('cpu_family'), ' '.join(info.get('cpu_flags') or [])]))})"
    return f"{cpu}, {info['cores']} cores, torch {info['torch']} on {threads}, {info.get('gpu') or info['device']}"
