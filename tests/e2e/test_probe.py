"""The numerics probe (tools/probe_numerics.py): universal numerics gives the same bytes on this
CPU and on emulated ones, the x86 vendor this machine is not and two aarch64 CPUs (CI's own step
after `make test`: `pytest -m emulated`); fast mode gives other bytes there, so the probe can
fail."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, load_script, mirror_env

from mnist_vae.core import machine, numerics

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not numerics.is_x86_64(),
                                                   reason="qemu-user emulates the other CPUs from an x86-64 one")]


def probe():
    return load_script("tools/probe_numerics.py")


def other_vendor() -> list[str]:
    """The probe's emulated x86 CPU of the other vendor than this machine's (an AMD emulates an
    Intel and the other way round); both where the vendor is neither. `make probe` runs all."""
    name = machine.cpu_name()
    return [vendor for vendor in probe().VENDORS if vendor not in name]


def need(what: str, present: bool, how: str) -> None:
    """Fail under REQUIRE_QEMU=1 (CI), else skip, when the probe's emulator or sysroot is missing."""
    if present:
        return
    if os.environ.get("REQUIRE_QEMU") == "1":
        pytest.fail(f"{what} is missing ({how}); REQUIRE_QEMU=1 says the probe must run")
    pytest.skip(f"{what} is missing ({how})")


def run_probe(binarized, binarized_fashion, tmp_path, targets: list[str]) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "tools/probe_numerics.py", "--data", str(binarized), "--fashion",
                           str(binarized_fashion), "--targets", *targets, "--json", str(out)], cwd=REPO,
                          env=mirror_env(), capture_output=True, text=True, timeout=1800)
    assert out.exists(), proc.stdout + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc


@pytest.mark.emulated
@pytest.mark.long
def test_universal_bytes_on_an_emulated_x86_cpu_of_the_other_vendor_and_fast_mode_differs(binarized,
                                                                                          binarized_fashion, tmp_path):
    """Train, evaluate, render-grids and anomaly-kl-stats natively and as the other vendor's CPU
    under qemu-x86_64 (a Haswell, Intel with AVX2, on an AMD machine; an EPYC-Rome, AMD, on an
    Intel one): universal numerics gives all 18 outputs the same bytes; fast mode trains other
    bytes there. CI installs qemu-user (.ci/run) and sets REQUIRE_QEMU=1."""
    need("qemu-x86_64", shutil.which("qemu-x86_64") is not None, "apt-get install qemu-user")
    targets = other_vendor()
    verdict, proc = run_probe(binarized, binarized_fashion, tmp_path, targets)
    assert verdict["universal_identical"], proc.stdout
    assert verdict["fast_differs_on_x86"], proc.stdout
    assert verdict["fused_multiply_adds"] == {"native": 0}, proc.stdout
    assert proc.returncode == 0
    runs = [r for r in verdict["runs"] if r["mode"] == "universal"]
    assert {r["cpu"] for r in runs} == {"native", *targets}
    assert all(len(r["md5"]) == len(probe().outputs("vae20d", probe().STAGES)) == 18 for r in runs)


@pytest.mark.emulated
@pytest.mark.aarch64
def test_universal_bytes_on_two_emulated_arm_cpus_and_fast_mode_differs(binarized, binarized_fashion, tmp_path):
    """The same four stages under qemu-aarch64 as an Arm Neoverse N1 (NEON) and as an ARMv9 with
    256-bit SVE (torch's SVE256 kernels), with Debian's arm64 Python and the lock's aarch64 wheels
    (tools/aarch64_sysroot.sh): universal numerics gives every output the bytes it has here;
    fast mode, which promises nothing across CPUs, trains other bytes on aarch64; LLVM contracted
    no multiply-add in the compiled kernels on the Neoverse N1 either. CI's own step."""
    need("qemu-aarch64", shutil.which("qemu-aarch64") is not None, "apt-get install qemu-user")
    root = probe().AARCH64_ROOT
    need(f"an aarch64 Python at {root}", (root / ".complete").exists(), "tools/aarch64_sysroot.sh builds it")
    verdict, proc = run_probe(binarized, binarized_fashion, tmp_path, ["neoverse-n1", "sve256"])
    assert verdict["universal_identical"], proc.stdout
    assert verdict["fast_differs_on_aarch64"], proc.stdout
    assert verdict["fused_multiply_adds"] == {"native": 0, "neoverse-n1": 0}, proc.stdout
    assert proc.returncode == 0
    assert {r["cpu"] for r in verdict["runs"] if r["mode"] == "universal"} == {"native", "neoverse-n1", "sve256"}
