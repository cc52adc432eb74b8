"""Universal and fast numerics (mnist_vae.core.numerics): the thread settings, which product each
mode takes, the one-line refusals, and what a fresh process records (the probe on emulated CPUs is
tools/probe_numerics.py)."""

import json
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, params_with

from mnist_vae.core import numerics
from mnist_vae.io.errors import ParamsError
from mnist_vae.study.workspace import tool_env


@pytest.fixture
def universal_state():
    """Universal mode for this process's ops (torch is imported already; only the path is switched)."""
    saved = dict(numerics._state)
    numerics._state.update(mode="universal")
    yield
    numerics._state.clear()
    numerics._state.update(saved)


def test_the_environment_holds_the_thread_count_and_pins_no_library():
    assert numerics.environment("universal", 2) == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert numerics.environment("fast", None) == {}
    with pytest.raises(ValueError, match="must be one of"):
        numerics.environment("portable", 2)


def test_the_kernels_setting_names_the_libraries_branch():
    assert numerics.environment("fast", None, "generic") == {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
    assert numerics.environment("fast", 1, "mkl-compatible") == {"MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "1",
                                                                  "MKL_NUM_THREADS": "1"}
    with pytest.raises(ValueError, match="kernels must be one of"):
        numerics.environment("fast", None, "avx2")
    with pytest.raises(ParamsError, match="numerics.kernels"):
        params_with({"numerics.kernels": "avx2"})
    assert params_with({}).numerics.kernels == "native"


def test_kernels_asked_after_torch_chose_its_own_stop_with_one_line(monkeypatch):
    """This process has computed with torch already: ATen's capability is chosen, so asking for its
    DEFAULT kernels now would run another rounding than the params name."""
    for name in ("ATEN_CPU_CAPABILITY", "MKL_CBWR"):
        monkeypatch.delenv(name, raising=False)  # restored at teardown: enter() sets them
    torch.ones(3).exp()
    with pytest.raises(numerics.NumericsError, match="DEFAULT kernels.*before torch computes") as err:
        numerics.enter(params_with({"numerics.mode": "fast", "numerics.kernels": "aten-default"}).numerics)
    assert "\n" not in str(err.value)


def test_autograd_and_float64_keep_f_linear(universal_state):
    w = torch.randn(4, 3, requires_grad=True)
    h = torch.randn(2, 3)
    y = numerics.linear(h, w)
    y.sum().backward()  # through F.linear: the exact product has no backward
    assert torch.equal(w.grad, h.sum(0).expand(4, 3))
    h64, w64 = h.double(), w.detach().double()
    assert torch.equal(numerics.linear(h64, w64), F.linear(h64, w64))


def test_fast_products_are_torch_own(monkeypatch):
    """Fast mode takes torch's products as they are: F.linear, and addmm / mm into the buffers."""
    monkeypatch.setitem(numerics._state, "mode", "fast")
    g = torch.Generator().manual_seed(1)
    h, w, b = torch.randn(128, 784, generator=g), torch.randn(400, 784, generator=g), torch.randn(400, generator=g)
    assert torch.equal(numerics.linear(h, w, b), F.linear(h, w, b))
    out = torch.empty(128, 400)
    assert torch.equal(numerics.linear_into(out, h, w, b), torch.addmm(b, h, w.t()))
    assert torch.equal(numerics.linear_into(out, h, w), torch.mm(h, w.t()))


def test_an_unknown_mode_is_refused_and_fast_mode_needs_no_thread_count():
    with pytest.raises(ParamsError, match="numerics.mode"):
        params_with({"numerics.mode": "exact"})
    assert params_with({"numerics.mode": "fast", "numerics.threads": None}).numerics.threads is None


def _stage_probe(code: str, **env: str) -> dict:
    """Run `code` in a fresh interpreter (torch not imported yet) from the repository root."""
    run_env = tool_env(PYTHONPATH=str(REPO / "src"))
    for name in numerics.THREAD_ENV:
        run_env.pop(name, None)
    run_env.update(env)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=run_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ENTER = """
import json
from mnist_vae.core import numerics
from mnist_vae.io import params
p = params.load()
cfg = p.numerics.model_copy(update={{"mode": "{mode}", "threads": {threads}, "kernels": "{kernels}"}})
record = numerics.enter(cfg)
import torch
record["torch_threads"] = torch.get_num_threads()
print(json.dumps(record))
"""


def test_a_fresh_process_enters_universal_mode_with_the_promise_on_any_cpu():
    """Universal mode pins no library (its bits do not depend on the kernels); it promises bits on
    a CPU, whatever the ISA and the thread count, and records which engine takes its products."""
    record = _stage_probe(ENTER.format(mode="universal", threads=1, kernels="native"), ATEN_CPU_CAPABILITY="default")
    assert record["numerics"] == "universal" and record["bitwise_promise"] is True and record["threads"] == 1
    assert record["torch_threads"] == 1 and record["kernel_threads"] == 1
    assert record["isa"] == platform.machine() and record["products"] in ("int8", "float64")
    assert record["kernels"] == "native" and record["cpu_capability"] != "DEFAULT" or platform.machine() != "x86_64"


def test_a_fresh_process_enters_fast_mode_without_a_promise():
    record = _stage_probe(ENTER.format(mode="fast", threads=None, kernels="native"))
    assert record["numerics"] == "fast" and record.get("bitwise_promise") is not True
    assert record["kernel_threads"] is None and record["threads"] == record["torch_threads"]


def test_a_fresh_process_takes_the_generic_kernels_it_is_asked_for():
    """numerics.kernels: generic reaches ATen before it picks its kernels (the recorded capability)."""
    record = _stage_probe(ENTER.format(mode="fast", threads=1, kernels="generic"))
    assert record["kernels"] == "generic" and record["cpu_capability"] == "DEFAULT"


KERNEL_THREADS = """
import json
{early}
from mnist_vae.core import numerics
from mnist_vae.io import params
record = numerics.enter(params.load().numerics.model_copy(update={{"mode": "universal", "threads": {threads}}}))
import numba, numpy as np, torch
torch_threads = torch.get_num_threads()
from mnist_vae.core import exact, machine
x = torch.randn(256, 784)
exact.softplus_row_sums(x, 98), exact.sigmoid(x), exact.linear(x, torch.randn(10, 784))

@numba.njit(parallel=True)
def inside(n):
    counts, ids = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for i in numba.prange(n):
        counts[i], ids[i] = numba.get_num_threads(), numba.get_thread_id()
    return counts.max(), ids.max() + 1

m = machine.record(torch.device("cpu"))
print(json.dumps({{"entered": [record["threads"], record["kernel_threads"]], "torch_before": torch_threads,
                  "torch": torch.get_num_threads(), "numba": numba.get_num_threads(), "inside": inside(100000),
                  "machine": [m["threads"], m["kernel_threads"]], "numba_default": numba.config.NUMBA_NUM_THREADS}}))
"""


def test_numerics_threads_sets_torch_and_the_compiled_kernels_alike():
    """numerics.threads is every library's count: torch's and numba's, whose kernels would
    otherwise start one thread per CPU (and, through the OpenMP runtime both share, put torch
    back on as many); null leaves each its own default. The machine record says both counts."""
    for early in ("", "import numba"):  # a stage imports numba after numerics.enter; a test or a tool before it
        one = _stage_probe(KERNEL_THREADS.format(threads=1, early=early), NUMBA_NUM_THREADS="3")  # a stray setting
        assert one["entered"] == [1, 1] and one["torch"] == one["numba"] == 1 and one["machine"] == [1, 1], early
        assert one["inside"] == [1, 1], early  # one thread inside a parallel loop, and only thread 0 ran it
    default = _stage_probe(KERNEL_THREADS.format(threads=None, early=""))
    assert default["entered"] == [default["torch_before"], None]
    assert default["torch"] == default["torch_before"] and default["numba"] == default["numba_default"]
    assert default["machine"] == [default["torch"], default["numba"]]


def test_universal_mode_refuses_mps_and_drops_its_promise_for_the_autograd_step(monkeypatch, caplog):
    from mnist_vae.core import step
    from mnist_vae.core.model import VAE

    monkeypatch.setitem(numerics._state, "mode", "universal")
    with monkeypatch.context() as mps:
        mps.setattr(torch.backends.mps, "is_available", lambda: True)
        assert numerics.device_for("auto") in ("cpu", "cuda")  # auto skips MPS: no float64 there
        with pytest.raises(numerics.NumericsError, match="float64.*train.device: cpu") as err:
            numerics.enter(params_with({"numerics.threads": None}).numerics, device="mps")
    assert "\n" not in str(err.value)
    monkeypatch.setitem(numerics._state, "record", {"numerics": "universal", "bitwise_promise": True})
    assert isinstance(step.make_step(VAE(2, [8]), 1e-3, 4, "autograd"), step.AutogradStep)
    assert numerics.record()["bitwise_promise"] is False
    assert "train.step is autograd" in caplog.text


ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16 avx512_vnni sha_ni
processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: amx_tile
"""
NEOVERSE_N1 = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0c
"""


@pytest.mark.parametrize("text, family, flags", [
    (ZEN4, "AuthenticAMD family 25 model 17", ["AVX-512", "AVX-512-BF16", "AVX-512-VNNI", "AVX2", "FMA"]),
    (NEOVERSE_N1, "implementer 0x41 part 0xd0c", ["DOTPROD", "NEON"]),
    (NEOVERSE_N1.replace("asimddp", "asimddp sve sve2"), "implementer 0x41 part 0xd0c", ["DOTPROD", "NEON", "SVE", "SVE2"]),
])
def test_the_machine_record_names_the_cpu_family_and_the_isa_extensions_that_choose_kernels(text, family, flags):
    from mnist_vae.core import machine

    assert machine.cpu_detail(text) == {"cpu_family": family, "cpu_flags": flags}
    info = {"cpu": "AMD EPYC", "cores": 2, "threads": 2, "torch": "2.14", "device": "cpu",
            **machine.cpu_detail(text)}
    assert machine.label(info).startswith(f"AMD EPYC ({family}, {' '.join(flags)}), 2 cores")
    # a record written before the detail existed still reads
    assert machine.label({k: info[k] for k in ("cpu", "cores", "threads", "torch", "device")}).startswith("AMD EPYC, 2 cores")
