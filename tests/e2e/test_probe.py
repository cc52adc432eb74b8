"""The numerics probe (tools/probe_numerics.py): the same bytes on this CPU and on an emulated CPU
of the other vendor in portable mode, other bytes in fast mode."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, load_script, mirror_env

from mnist_vae.core import machine, numerics

pytestmark = pytest.mark.slow


def other_vendor() -> list[str]:
    """The probe's emulated CPU of the other vendor than this machine's (an AMD emulates an Intel
    and the other way round); both where the vendor is neither. `make probe` runs both always."""
    name = machine.cpu_name()
    return [cpu for vendor, cpu in load_script("tools/probe_numerics.py").CPUS.items() if vendor not in name]


@pytest.mark.long
@pytest.mark.skipif(not numerics.is_x86_64(), reason="qemu-x86_64 emulates x86-64 CPUs")
def test_probe_same_bytes_on_an_emulated_cpu_of_the_other_vendor_in_portable_mode_and_not_in_fast(binarized,
                                                                                                   tmp_path):
    """tools/probe_numerics.py: the train and evaluate stages natively and as an emulated CPU of
    the other vendor under qemu-user (a Haswell, Intel with AVX2, on an AMD machine; an EPYC-Rome,
    AMD, on an Intel one): portable mode gives one set of bytes, fast mode gives the emulated CPU
    other bytes. CI installs qemu-user (.ci/run) and sets REQUIRE_QEMU=1."""
    if shutil.which("qemu-x86_64") is None:
        if os.environ.get("REQUIRE_QEMU") == "1":
            pytest.fail("qemu-x86_64 is missing (apt-get install qemu-user); REQUIRE_QEMU=1 says it must run")
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    out, cpus = tmp_path / "probe.json", other_vendor()
    proc = subprocess.run([sys.executable, "tools/probe_numerics.py", "--data", str(binarized), "--cpus", *cpus,
                           "--json", str(out)], cwd=REPO, env=mirror_env(), capture_output=True, text=True,
                          timeout=900)
    assert out.exists(), proc.stdout + proc.stderr[-3000:]
    verdict = json.loads(out.read_text())
    assert verdict["portable_identical"], proc.stdout
    assert verdict["fast_differs"], proc.stdout
    assert proc.returncode == 0
    assert {r["cpu"] for r in verdict["runs"] if r["mode"] == "portable"} == {"native", *cpus}
