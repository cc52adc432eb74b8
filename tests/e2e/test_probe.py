"""The numerics probe (tools/probe_numerics.py): the same bytes on emulated Intel and AMD CPUs in
portable mode, other bytes in fast mode."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, mirror_env

from mnist_vae.core import numerics


@pytest.mark.skipif(not numerics.is_x86_64(), reason="qemu-x86_64 emulates x86-64 CPUs")
def test_probe_same_bytes_on_emulated_intel_and_amd_in_portable_mode_and_not_in_fast(repo, tmp_path):
    """tools/probe_numerics.py: the train and evaluate stages natively, as a Haswell (Intel, AVX2)
    and as an EPYC-Rome (AMD) under qemu-user: portable mode gives one set of bytes, fast mode
    gives the Intel other bytes. CI installs qemu-user (.ci/run) and sets REQUIRE_QEMU=1."""
    if shutil.which("qemu-x86_64") is None:
        if os.environ.get("REQUIRE_QEMU") == "1":
            pytest.fail("qemu-x86_64 is missing (apt-get install qemu-user); REQUIRE_QEMU=1 says it must run")
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "tools/probe_numerics.py", "--data", str(repo / "data/binarized/mnist.npz"),
                           "--json", str(out)], cwd=REPO, env=mirror_env(), capture_output=True, text=True,
                          timeout=900)
    assert out.exists(), proc.stdout + proc.stderr[-3000:]
    verdict = json.loads(out.read_text())
    assert verdict["portable_identical"], proc.stdout
    assert verdict["fast_differs"], proc.stdout
    assert proc.returncode == 0
    assert {r["cpu"] for r in verdict["runs"] if r["mode"] == "portable"} == {"native", "Haswell-v4", "EPYC-Rome"}
