"""Universal mode and devices: `auto` stays on the CPU, whose bytes are the promised ones, and says
so in one line where torch sees a GPU; draws and groupings do not follow the device."""

import subprocess
import sys

import pytest
import torch

from conftest import REPO

CHILD = """
import logging, sys, torch
logging.basicConfig(level=logging.INFO, format="%(message)s")
torch.cuda.is_available = lambda: True   # a GPU box, as torch would see it
from types import SimpleNamespace
from mnist_vae.core import numerics
record = numerics.enter(SimpleNamespace(mode=sys.argv[1], threads=1, kernels="native"), "auto")
from mnist_vae.core.runtime import resolve_device
print("DEVICE", numerics.device_for("auto"), record.get("bitwise_promise"))
"""


def _enter(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})


def test_auto_keeps_universal_mode_on_the_cpu_where_cuda_is_available_and_says_so_once():
    proc = _enter("universal")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == ["DEVICE", "cpu", "True"]  # on the CPU, so the promise holds
    lines = [line for line in proc.stderr.splitlines() if "CUDA" in line]
    assert len(lines) == 1 and "runs on the CPU although torch sees a CUDA GPU" in lines[0]
    assert "set train.device: cuda in params.yaml" in lines[0]


def test_auto_takes_the_gpu_in_fast_mode():
    proc = _enter("fast")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:-1] == ["DEVICE", "auto"] and "CUDA" not in proc.stderr


def test_universal_draws_come_from_the_cpu_generator_whatever_the_device(monkeypatch):
    """The generator lives on the CPU and the draws move: a device gets the CPU's numbers (here
    'meta' stands in for a GPU: a device the draws are moved to, with no generator of its own)."""
    from mnist_vae.core import exact, numerics

    monkeypatch.setitem(numerics._state, "mode", "universal")
    gen = numerics.generator(5, torch.device("meta"))
    assert gen.device.type == "cpu"
    on_cpu = exact.randn((3, 7), generator=numerics.generator(5, "cpu"), device="cpu")
    moved = exact.randn((3, 7), generator=gen, device="meta")
    assert moved.device.type == "meta" and moved.shape == on_cpu.shape
    again = exact.randn((3, 7), generator=numerics.generator(5, "cpu"), device="cpu")
    assert torch.equal(on_cpu, again)
    perm = numerics.randperm(10, numerics.generator(5, "cpu"), "cpu")
    assert torch.equal(perm, torch.randperm(10, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("mode, cuda_images", [("universal", 20), ("fast", 2000)])
def test_the_iwae_grouping_follows_the_device_only_outside_universal_mode(monkeypatch, mode, cuda_images):
    from mnist_vae.core import numerics
    from mnist_vae.core.evaluation import default_images_per_pass

    monkeypatch.setitem(numerics._state, "mode", mode)
    assert default_images_per_pass(torch.device("cpu"), 1000, 100) == 20
    assert default_images_per_pass(torch.device("cuda"), 1000, 100) == cuda_images
