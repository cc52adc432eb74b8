"""Probe: does the same seed give the same bytes on other CPUs? (make probe)

Runs the real train, evaluate, render-grids and anomaly-kl-stats stages of one model on a small
profile, natively and as other CPUs under qemu-user, each in its own scratch workspace, with
nothing set by hand: the stages set their numerics up themselves from params.yaml. Then it
compares every output byte for byte (timings aside). The CPUs (TARGETS):

- x86-64, `qemu-x86_64` (Debian's qemu-user): `Haswell-v4`, an Intel with AVX2, `EPYC-Rome`, an
  AMD, and `Nehalem`, an old Intel without AVX at the project's floor (x86-64-v2: torch runs its
  DEFAULT kernels, numba's code is SSE only); qemu has no AVX-512, so AVX-512 and AMX machines are
  covered by the argument, not here;
- aarch64, `qemu-aarch64` with an arm64 Python and this project's aarch64 wheels in a sysroot
  (tools/aarch64_sysroot.sh builds it): `neoverse-n1` (NEON), and `max` with 256-bit SVE, where
  torch reports SVE256 and runs its SVE kernels. (torch's aarch64 wheel stops with an illegal
  instruction on an ARMv8.0 `cortex-a72`.)

What must hold, else exit status 1:
- universal mode: one set of bytes for every output on every CPU probed;
- no fused multiply-add in the machine code numba makes of the compiled kernels, here and on the
  first aarch64 CPU probed;
- the probe has teeth: fast mode trains other bytes on aarch64 than here (when an aarch64 CPU is
  probed), and on an emulated x86 CPU than here (when one is probed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mnist_vae.io import layout  # noqa: E402
from mnist_vae.core import numerics  # noqa: E402

# small enough that the four stages under emulation (20-40x slower) take a few minutes
PROFILE = {
    "data": {"train_limit": 512, "test_limit": 200},
    "train": {"epochs": 1},
    "tracking": {"every": 4},
    "evaluate": {"iwae_k": 20, "iwae_images": 50, "iwae_chunk": 10},
    "anomaly": {"noise_images": 200, "elbo_samples": 2},
}
CPUS = {"Intel": "Haswell-v4", "AMD": "EPYC-Rome", "no-AVX": "Nehalem"}  # qemu x86-64 CPU models
VENDORS = ("Intel", "AMD")  # a CPU of each vendor (tests/e2e/test_probe.py emulates the other one)
TARGETS = {  # name: (qemu binary, -cpu)
    "Intel": ("qemu-x86_64", CPUS["Intel"]),
    "AMD": ("qemu-x86_64", CPUS["AMD"]),
    "no-AVX": ("qemu-x86_64", CPUS["no-AVX"]),
    "neoverse-n1": ("qemu-aarch64", "neoverse-n1"),
    "sve256": ("qemu-aarch64", "max,sve-default-vector-length=32"),
}
STAGES = ["train", "evaluate", "render_grids", "anomaly_kl_stats"]
AARCH64_ROOT = Path(os.environ.get("MNIST_VAE_AARCH64_ROOT", Path.home() / ".cache/mnist-vae/aarch64"))
# what chooses the libraries' kernels by hand (MKL's branch, ATen's and oneDNN's ISA): set by a
# person, it could make fast mode's runs agree across CPUs and blunt the probe's teeth
KERNEL_PINS = (*numerics.KERNEL_ENV, "ONEDNN_MAX_CPU_ISA")


def outputs(model: str, stages: list[str]) -> list[str]:
    """What the stages write, timings aside."""
    out = []
    if "train" in stages:
        out += [layout.checkpoint(model), layout.tracking_frames(model), layout.history(model),
                layout.train_metrics(model)]
    if "evaluate" in stages:
        out += [layout.evaluation_arrays(model), layout.eval_metrics(model)]
    if "render_grids" in stages:
        out += [layout.figure(model, name) for name in ("reconstructions", "prior-samples", "manifold",
                                                        "latent-scatter")]
    if "anomaly_kl_stats" in stages:
        out += [layout.anomaly_arrays(model), layout.anomaly_metrics(model)]
        out += [layout.roc_table(model, score, other) for score in ("kl", "neg_elbo")
                for other in (layout.NOISE, layout.FASHION)]
        out += [layout.anomaly_figure(model, stem) for stem in ("kl-histogram", "noise-image")]
    return [str(p) for p in out]


def workspace(root: Path, name: str, mode: str, data: Path, fashion: Path) -> Path:
    """A scratch copy: params (the profile, the mode), dvc.yaml, stages, and the binarized data."""
    ws = root / name
    (ws / "data/binarized").mkdir(parents=True)
    shutil.copy2(REPO / "dvc.yaml", ws / "dvc.yaml")
    shutil.copytree(REPO / "stages", ws / "stages")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in PROFILE.items():
        raw[section].update(values)
    raw["numerics"]["mode"] = mode
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (ws / "data/binarized/mnist.npz").symlink_to(data.resolve())
    (ws / "data/binarized/fashion-mnist.npz").symlink_to(fashion.resolve())
    return ws


def clean_env(target: str | None) -> dict[str, str]:
    """This environment without any pin or thread count a person might have set: the stages must
    set their own."""
    env = {k: v for k, v in os.environ.items() if k not in {*KERNEL_PINS, *numerics.THREAD_ENV}}
    env["PYTHONPATH"] = str(REPO / "src")
    if target and TARGETS[target][0] == "qemu-aarch64":
        env["PYTHONPATH"] = f"{AARCH64_ROOT / 'site'}:{REPO / 'src'}"
        env["NUMBA_CACHE_DIR"] = str(AARCH64_ROOT / "numba-cache")
    if target and TARGETS[target][1] == "Nehalem":
        # numpy's OpenBLAS takes qemu's Nehalem (cpuid: Intel family 6 model 26, no AVX) for a Haswell
        # and dies in numpy's import on an AVX instruction; a real Nehalem gets its own kernels
        env["OPENBLAS_CORETYPE"] = "Nehalem"
    return env


# One interpreter runs the stages one after another, as DVC would run them one by one: under
# emulation torch's import alone takes half a minute, so a second one is worth saving.
DRIVER = """
import runpy, sys
for stage in sys.argv[2:]:
    sys.argv = [f"stages/{stage}.py", sys.argv[1]]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def command(target: str | None) -> list[str]:
    if target is None:
        return [sys.executable]
    qemu, cpu = TARGETS[target]
    if qemu == "qemu-aarch64":
        sysroot = AARCH64_ROOT / "sysroot"
        return [qemu, "-cpu", cpu, "-L", str(sysroot), str(sysroot / "usr/bin/python3.11")]
    return [qemu, "-cpu", cpu, sys.executable]


def start(ws: Path, target: str | None, model: str, stages: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*command(target), "-c", DRIVER, model, *stages], cwd=ws, env=clean_env(target),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, ws: Path, what: str, model: str, stages: list[str]) -> dict[str, str]:
    """Wait for a run; md5 of each of its outputs."""
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"probe: {what} failed:\n{err[-3000:]}")
    return {name: hashlib.md5((ws / name).read_bytes()).hexdigest() for name in outputs(model, stages)
            if (ws / name).exists()}


# The compiled kernels' machine code, made fresh (an empty numba cache: numba shows no code it
# loaded from its cache), searched for fused multiply-adds: none may be there, on x86 (vfmadd...,
# vfmaddsub..., FMA4's vfmaddps), on ARM's NEON and scalar units (fmla, fmls, fmadd, fnmsub, fmlal)
# or in SVE (fmad, fmsb, fnmla, fnmls, fnmad, fnmsb, and fmla/fmls on z registers), or a compiler
# has contracted what IEEE 754 rounds twice.
ASM_CHECK = """
import numpy as np
from mnist_vae.core import exact_kernels as k
x = np.random.default_rng(0).normal(size=(4, 784)).astype(np.float32)
k.softplus_row_sums(x, 98, np.empty(4, np.float32))
k.sigmoid(x.ravel(), np.empty(x.size, np.float32))
k.quantize_rows(x, 21, np.empty(x.shape, np.float64))
k.quantize_cols(x, 21, np.empty(x.shape, np.float64))
k.round_add_into(x.astype(np.float64), x[0], np.empty(x.shape, np.float32))
f = np.float32
k.adam_(x.ravel().copy(), x.ravel(), x.ravel().copy(), x.ravel() ** 2, *(f(0.5),) * 7)
for fn in (k.softplus_row_sums, k.sigmoid, k.quantize_rows, k.quantize_cols, k.round_add_into, k.adam_):
    print("".join(fn.inspect_asm(s) for s in fn.signatures))
"""
FUSED_MULTIPLY_ADD = re.compile(r"\b(vfn?m(add|sub)(add|sub)?(\d{3})?[ps][sdh]|fn?m(add|sub|ad|sb)|fn?ml[as](l[bt2]?)?)\b")
FLOAT_MULTIPLY = re.compile(r"\b(v?mulps|fmul)\b")


def fused_multiply_adds(target: str | None, tmp: Path) -> int:
    """How many fused multiply-adds the kernels' machine code holds on this CPU or an emulated one
    (-1: no float multiply found at all, so the search read no real code)."""
    env = {**clean_env(target), "NUMBA_CACHE_DIR": str(tmp / f"numba-{target or 'native'}")}
    proc = subprocess.run([*command(target), "-c", ASM_CHECK], env=env, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        sys.exit(f"probe: the machine-code check on {target or 'this CPU'} failed:\n{proc.stderr[-2000:]}")
    if not FLOAT_MULTIPLY.search(proc.stdout):
        return -1
    return len(FUSED_MULTIPLY_ADD.findall(proc.stdout))


def plan(targets: list[str]) -> list[tuple[str, str | None, list[str]]]:
    """(mode, target or None for this CPU, stages) of every run: universal everywhere, and the
    runs that show the probe's teeth (fast mode here, on the first aarch64 CPU and on the first
    emulated x86 one)."""
    runs = [("universal", None, STAGES), *(("universal", t, STAGES) for t in targets)]
    arm = [t for t in targets if TARGETS[t][0] == "qemu-aarch64"]
    x86 = [t for t in targets if TARGETS[t][0] == "qemu-x86_64"]
    if arm or x86:
        runs.append(("fast", None, ["train"]))  # the one native fast run both comparisons share
    runs += [("fast", t, ["train"]) for t in arm[:1] + x86[:1]]
    return runs


TEETH = (("qemu-aarch64", "fast_differs_on_aarch64"), ("qemu-x86_64", "fast_differs_on_x86"))


def verdict(results: list[dict], model: str) -> dict:
    universal = [r["md5"] for r in results if r["mode"] == "universal"]
    full = len(outputs(model, STAGES))
    same = all(h == universal[0] for h in universal) and len(universal[0]) == full
    differing = sorted({name for h in universal for name in h if h[name] != universal[0].get(name)})
    out = {"universal_identical": same, "universal_differing": differing}
    fast = {r["cpu"]: r["md5"] for r in results if r["mode"] == "fast"}
    for qemu, key in TEETH:
        emulated = [h for cpu, h in fast.items() if cpu != "native" and TARGETS[cpu][0] == qemu]
        if "native" in fast and emulated:
            out[key] = emulated[0] != fast["native"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="the model to train (default: the first under `models` in params.yaml)")
    ap.add_argument("--data", default="data/binarized/mnist.npz", type=Path)
    ap.add_argument("--fashion", default="data/binarized/fashion-mnist.npz", type=Path)
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS),
                    help="the emulated CPUs (default: all)")
    ap.add_argument("--json", type=Path, help="also write the hashes and the verdict here")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time")
    args = ap.parse_args()
    args.model = args.model or next(iter(yaml.safe_load((REPO / "params.yaml").read_text())["models"]))
    if not numerics.is_x86_64():
        sys.exit("probe: needs an x86-64 machine (qemu-user emulates the other CPUs from there)")
    for qemu in sorted({TARGETS[t][0] for t in args.targets}):
        if shutil.which(qemu) is None:
            sys.exit(f"probe: needs {qemu} (Debian/Ubuntu: apt-get install qemu-user)")
    if any(TARGETS[t][0] == "qemu-aarch64" for t in args.targets) and not (AARCH64_ROOT / ".complete").exists():
        sys.exit(f"probe: no aarch64 Python at {AARCH64_ROOT}; build it with tools/aarch64_sysroot.sh "
                 f"(or set MNIST_VAE_AARCH64_ROOT)")
    for path in (args.data, args.fashion):
        if not path.exists():
            sys.exit(f"probe: {path} is missing; run `dvc repro binarize` first")
    runs, results = plan(args.targets), []
    with tempfile.TemporaryDirectory(prefix="probe-numerics-") as tmp:
        # two runs at a time: an emulated CPU keeps about one core busy
        for batch in (runs[i:i + args.parallel] for i in range(0, len(runs), args.parallel)):
            t0 = time.perf_counter()
            running = []
            for mode, target, stages in batch:
                ws = workspace(Path(tmp), f"run{len(results) + len(running)}", mode, args.data, args.fashion)
                running.append((mode, target, stages, ws, start(ws, target, args.model, stages)))
            for mode, target, stages, ws, proc in running:
                what = f"{mode} {', '.join(stages)} on {target or 'this CPU'}"
                hashes = finish(proc, ws, what, args.model, stages)
                seconds = time.perf_counter() - t0
                ran = json.loads((ws / layout.timings(args.model, "train")).read_text())["machine"]
                results.append({"mode": mode, "cpu": target or "native", "stages": stages, "md5": hashes,
                                "seconds": round(seconds, 1), "isa": ran.get("isa"),
                                "cpu_capability": ran["cpu_capability"], "products": ran.get("products", "-"),
                                "bitwise_promise": ran.get("bitwise_promise", False)})
                print(f"{mode:9s} {target or 'native':11s} {ran.get('isa', '?'):7s} {ran['cpu_capability']:7s} "
                      f"{ran.get('products', '-'):7s} "
                      f"{seconds:6.1f} s  {len(hashes)} outputs  "
                      + "  ".join(f"{Path(k).name}:{v[:6]}" for k, v in list(hashes.items())[:4]), flush=True)
        arm = [t for t in args.targets if TARGETS[t][0] == "qemu-aarch64"]
        fma = {"native": fused_multiply_adds(None, Path(tmp))}
        if arm:
            fma[arm[0]] = fused_multiply_adds(arm[0], Path(tmp))
    result = verdict(results, args.model)
    result["fused_multiply_adds"] = fma
    if args.json:
        args.json.write_text(json.dumps({**result, "runs": results}, indent=1) + "\n")
    cpus = ", ".join(r["cpu"] for r in results if r["mode"] == "universal")
    print(f"universal: {'the same bytes' if result['universal_identical'] else 'DIFFERENT bytes'} "
          f"({len(outputs(args.model, STAGES))} outputs) on {cpus}"
          + (f"; differing: {', '.join(result['universal_differing'])}" if result["universal_differing"] else ""))
    for key, label in (("fast_differs_on_aarch64", "fast on aarch64"), ("fast_differs_on_x86", "fast on x86")):
        if key in result:
            print(f"{label}: {'other bytes than here (the probe has teeth)' if result[key] else 'the SAME bytes'}")
    print("fused multiply-adds in the compiled kernels: "
          + ", ".join(f"{cpu} {'(no float code found)' if n < 0 else n}" for cpu, n in fma.items()))
    if not (result["universal_identical"] and all(n == 0 for n in fma.values()) and
            all(result.get(key, True) for _, key in TEETH)):
        sys.exit(1)


if __name__ == "__main__":
    main()
