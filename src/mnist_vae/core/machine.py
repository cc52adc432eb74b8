"""What a run ran on, in one record (:func:`record`, kept beside a run's timings) and one line
(:func:`label`, for the spread study and the benchmark). Imports torch only in :func:`record`,
so tools can read records cheaply."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def record(device) -> dict[str, Any]:
    """The machine a run ran on, recorded beside its timings: another CPU or thread count sums
    in another order (README, reproducibility), so the spread study groups runs by it. Holds the
    numerics mode and which path each private torch op took."""
    import torch

    from . import numerics, torch_private

    info: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                            "torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["ops"] = torch_private.record(device)
    info.update(numerics.record())
    return info


def label(info: dict[str, Any] | None) -> str:
    """One line of a record: CPU, cores, torch and its threads, the device."""
    if not info:
        return "not recorded"
    threads = f"{info['threads']} thread{'' if info['threads'] == 1 else 's'}"
    return f"{info['cpu']}, {info['cores']} cores, torch {info['torch']} on {threads}, {info.get('gpu') or info['device']}"
