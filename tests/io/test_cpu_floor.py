"""The CPU floor (mnist_vae.cpu_floor): below x86-64-v2 (or ARMv8.1 with NEON) every stage and
`make setup` stop with one line instead of numpy's bare 'Illegal instruction'; the features come
from the CPU itself, so an emulated CPU is judged as itself."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from mnist_vae import cpu_floor
from mnist_vae.core import machine

X86_64_V1 = {"fpu", "sse", "sse2", "cx8", "cmov"}
X86_64_V2 = X86_64_V1 | {"sse3", "ssse3", "sse4_1", "sse4_2", "popcnt", "cx16", "lahf_lm"}


def test_below_x86_64_v2_is_refused_in_one_line_naming_what_is_missing_and_what_to_do():
    line = cpu_floor.problem("x86_64", X86_64_V1)
    assert line and "\n" not in line and line.startswith("error: this CPU lacks SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, "
                                                         "CX16, LAHF/SAHF of x86-64-v2")
    assert "Illegal instruction" in line and "Nehalem" in line
    assert "lacks SSE4.2 of x86-64-v2" in cpu_floor.problem("x86_64", X86_64_V2 - {"sse4_2"})


def test_x86_64_v2_and_above_and_aarch64_with_lse_pass():
    assert cpu_floor.problem("x86_64", X86_64_V2) is None
    assert cpu_floor.problem("AMD64", X86_64_V2 | {"avx", "avx2", "fma", "avx512f"}) is None
    neoverse_n1 = {"fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
                   "cpuid", "asimdrdm", "lrcpc", "dcpop", "asimddp"}
    assert cpu_floor.problem("aarch64", neoverse_n1) is None
    assert cpu_floor.problem("arm64", neoverse_n1 | {"sve", "sve2"}) is None


def test_an_armv8_0_cpu_is_refused_and_unknown_cpus_are_let_through():
    cortex_a72 = {"fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "cpuid"}
    line = cpu_floor.problem("aarch64", cortex_a72)
    assert line and "\n" not in line and "lacks LSE atomics of ARMv8.1-A" in line and "Cortex-A72" in line
    assert cpu_floor.problem("aarch64", set()) is not None
    assert cpu_floor.problem("riscv64", set()) is None  # no floor known: nothing refused
    assert cpu_floor.problem("x86_64", None) is None    # nothing could be read: nothing refused


def test_this_machine_is_above_the_floor_and_its_features_come_from_the_cpu():
    if sys.platform == "linux" and cpu_floor.arch():
        features = cpu_floor.features()
        assert features and ("sse4_2" in features or "asimd" in features)
    assert cpu_floor.problem() is None
    assert subprocess.run([sys.executable, str(REPO / "src/mnist_vae/cpu_floor.py")]).returncode == 0  # make setup's


def test_the_check_runs_before_numpy_and_costs_no_numpy_import():
    proc = subprocess.run([sys.executable, "-c", "import sys, mnist_vae; print(sorted({'numpy', 'torch'} & "
                           "set(sys.modules)))"], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_the_machine_record_takes_the_cpus_own_features_over_proc_cpuinfo(monkeypatch):
    """Under qemu-user /proc/cpuinfo lists the host's flags (AVX-512 beside torch's DEFAULT
    kernels); the record names the emulated CPU's."""
    monkeypatch.setattr(cpu_floor, "features", lambda: {"sse2", "sse4_2", "avx", "avx2", "fma"})
    if os.path.exists("/proc/cpuinfo"):
        assert machine.cpu_detail()["cpu_flags"] == ["AVX2", "FMA"]
    assert machine.cpu_detail("flags\t: sse2 avx2 avx512f\n")["cpu_flags"] == ["AVX-512", "AVX2"]  # given text: its own


@pytest.mark.skipif(cpu_floor.arch() != "x86_64" or sys.platform != "linux", reason="qemu-x86_64 emulates x86-64 CPUs")
def test_a_stage_on_an_emulated_cpu_without_sse4_stops_in_one_line():
    """As an Intel Conroe (Core 2: no SSE4.1, SSE4.2, POPCNT) under qemu-user a stage says what
    the CPU lacks, in one line and exit status 2, where numpy's import died with a bare
    'Illegal instruction' (status 132). CI installs qemu-user and sets REQUIRE_QEMU=1."""
    if shutil.which("qemu-x86_64") is None:
        if os.environ.get("REQUIRE_QEMU") == "1":
            pytest.fail("qemu-x86_64 is missing (apt-get install qemu-user); REQUIRE_QEMU=1 says it must run")
        pytest.skip("qemu-x86_64 is missing (apt-get install qemu-user)")
    proc = subprocess.run(["qemu-x86_64", "-cpu", "Conroe", sys.executable, "stages/train.py", "--help"], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")}, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("qemu-x86_64: warning")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error: this CPU lacks SSE4.1, SSE4.2, POPCNT") and "x86-64-v2" in lines[0]
    assert not proc.stdout
