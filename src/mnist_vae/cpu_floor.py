"""The oldest CPU this project runs on, checked before numpy is imported: the pinned numpy and
torch wheels are built for x86-64-v2 (x86) and ARMv8.1 with NEON (aarch64) and die with a bare
"Illegal instruction" below that. Pure Python on purpose (numpy is what dies); `import mnist_vae`
and `make setup` (running this file) stop with one line instead.

The features come from the CPU itself, never from /proc/cpuinfo alone: under qemu-user that file
is the host's, while the process runs on the emulated CPU. On x86-64 Linux glibc's own cpuid
results (`__x86_get_cpuid_feature_leaf`, glibc 2.33+), on aarch64 Linux the kernel's hwcaps
(getauxval, which qemu-user writes for the CPU it emulates); /proc/cpuinfo only where neither
answers, and nothing is refused where nothing can be read.
"""

from __future__ import annotations

import os
import sys

# x86: name (/proc/cpuinfo's) -> (glibc's CPUID_INDEX_*, register eax..edx as 0..3, bit)
X86_BITS = {
    "sse2": (0, 3, 26), "sse3": (0, 2, 0), "ssse3": (0, 2, 9), "fma": (0, 2, 12), "cx16": (0, 2, 13),
    "sse4_1": (0, 2, 19), "sse4_2": (0, 2, 20), "popcnt": (0, 2, 23), "avx": (0, 2, 28),
    "avx2": (1, 1, 5), "avx512f": (1, 1, 16), "amx_tile": (1, 3, 24),
    "lahf_lm": (2, 2, 0), "avx512_bf16": (6, 0, 5), "avx512_vnni": (1, 2, 11), "avx_vnni": (6, 0, 4),
}
# aarch64: name (/proc/cpuinfo's) -> (AT_HWCAP or AT_HWCAP2, bit)
AT_HWCAP, AT_HWCAP2 = 16, 26
ARM_BITS = {"fp": (AT_HWCAP, 0), "asimd": (AT_HWCAP, 1), "atomics": (AT_HWCAP, 8), "asimddp": (AT_HWCAP, 20),
            "sve": (AT_HWCAP, 22),
            "sve2": (AT_HWCAP2, 1)}

# What the pinned wheels need: the level's name and its features, as the line names them.
X86_64_V2 = ("x86-64-v2", {"sse3": "SSE3", "ssse3": "SSSE3", "sse4_1": "SSE4.1", "sse4_2": "SSE4.2",
                           "popcnt": "POPCNT", "cx16": "CX16", "lahf_lm": "LAHF/SAHF"})
# torch's aarch64 wheel stops with an illegal instruction on an ARMv8.0 Cortex-A72 (docs/reproducibility.md)
ARMV8_1 = ("ARMv8.1-A with NEON", {"fp": "FP", "asimd": "ASIMD (NEON)", "atomics": "LSE atomics"})
ADVICE = {"x86-64-v2": "any Intel since Nehalem or AMD since Bulldozer; under qemu, -cpu Nehalem or newer",
          "ARMv8.1-A with NEON": "Neoverse N1 or newer, Graviton 2+, Apple silicon; not a Cortex-A72 (Raspberry Pi 4)"}


def _x86_features() -> set[str] | None:
    try:
        import ctypes

        leaf = ctypes.CDLL(None).__x86_get_cpuid_feature_leaf
    except (OSError, AttributeError):  # not glibc, or older than 2.33
        return None
    leaf.restype = ctypes.POINTER(ctypes.c_uint32 * 8)  # struct cpuid_feature: cpuid[4], active[4]
    leaves = {index: leaf(index).contents for index in {index for index, _, _ in X86_BITS.values()}}
    return {name for name, (index, reg, bit) in X86_BITS.items() if leaves[index][reg] >> bit & 1}


def _arm_features() -> set[str] | None:
    try:
        import ctypes

        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    words = {at: getauxval(at) for at in (AT_HWCAP, AT_HWCAP2)}
    if not words[AT_HWCAP]:
        return None
    return {name for name, (at, bit) in ARM_BITS.items() if words[at] >> bit & 1}


def _cpuinfo_features() -> set[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return None


def arch(machine: str | None = None) -> str | None:
    """"x86_64" or "aarch64" for this machine (or the given name, platform.machine()'s); None for any other."""
    machine = (machine or os.uname().machine).lower()  # os.uname: importing platform costs more than the check
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(machine)


def features() -> set[str] | None:
    """This CPU's features in /proc/cpuinfo's names, from the CPU itself where it can be asked
    (X86_BITS, ARM_BITS), else /proc/cpuinfo's; None where nothing answers (macOS: Apple silicon
    is above the floor)."""
    if sys.platform != "linux":
        return None
    own = {"x86_64": _x86_features, "aarch64": _arm_features}.get(arch() or "")
    found = own() if own else None
    return found if found is not None else _cpuinfo_features()


def problem(machine: str | None = None, flags: set[str] | None = None) -> str | None:
    """The one line saying what this CPU lacks and what to do, or None where the floor holds or
    cannot be judged. `machine` and `flags` default to this machine's."""
    kind = arch(machine)
    if kind is None:
        return None
    flags = features() if flags is None and machine is None else flags
    if flags is None:
        return None
    level, needed = X86_64_V2 if kind == "x86_64" else ARMV8_1
    lacking = [name for flag, name in needed.items() if flag not in flags]
    if not lacking:
        return None
    return (f"error: this CPU lacks {', '.join(lacking)} of {level}, which the pinned numpy and torch need "
            f"(without it they stop with 'Illegal instruction'); run on a CPU with {level} ({ADVICE[level]})")


def check() -> None:
    """Stop with the one line (exit status 2) where this CPU is below the floor."""
    line = problem()
    if line:
        print(line, file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":  # make setup: `python src/mnist_vae/cpu_floor.py`, before anything is installed
    check()
