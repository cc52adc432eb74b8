"""Probe: does the same seed give the same bytes on other x86-64 CPUs? (make probe)

Runs the real train and evaluate stages of one model on a small profile, natively and as other CPU
models under qemu-user (Debian's `qemu-user`: `qemu-x86_64 -cpu Haswell-v4` is an Intel with
AVX2, `-cpu EPYC-Rome` an AMD), each in its own scratch workspace, with nothing set by hand: the
stages set their numerics up themselves from params.yaml. Then it compares every output byte
for byte (timings aside).

Portable mode must give one set of bytes everywhere; fast mode must differ between the Intel
and the AMD (else the probe could not tell the modes apart). Exit status 1 when either fails.
qemu-user shows vendor and ISA differences (the CPU's cpuid, its instruction set); it has no
AVX-512, so AVX-512 and AMX machines are covered by the pins, not by this probe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
from mnist_vae.core import numerics

# small enough that a stage under emulation (20-40x slower) takes seconds beyond torch's import
PROFILE = {
    "data": {"train_limit": 512, "test_limit": 200},
    "train": {"epochs": 1},
    "tracking": {"every": 4},
    "evaluate": {"iwae_k": 20, "iwae_images": 50, "iwae_chunk": 10},
}
CPUS = {"Intel": "Haswell-v4", "AMD": "EPYC-Rome"}  # a qemu CPU model of each vendor


def outputs(model: str) -> list[str]:
    """What the train and evaluate stages write, timings aside."""
    return [str(p) for p in (layout.checkpoint(model), layout.tracking_frames(model), layout.history(model),
                             layout.train_metrics(model), layout.evaluation_arrays(model), layout.eval_metrics(model))]


def workspace(root: Path, name: str, mode: str, data: Path) -> Path:
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
    return ws


def clean_env() -> dict[str, str]:
    """This environment without any pin a person might have set: the stages must set their own."""
    env = {k: v for k, v in os.environ.items() if k not in {*numerics.PORTABLE_ENV, *numerics.THREAD_ENV}}
    env["PYTHONPATH"] = str(REPO / "src")
    return env


# One interpreter runs the stages one after another, as DVC would run them one by one: under
# emulation torch's import alone takes about half a minute, so a second one is worth saving.
DRIVER = """
import runpy, sys
for stage in sys.argv[2:]:
    sys.argv = [f"stages/{stage}.py", sys.argv[1]]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start(ws: Path, cpu: str | None, model: str, stages: list[str]) -> subprocess.Popen:
    """Start the stages in `ws` (under qemu as `cpu`, or natively)."""
    prefix = ["qemu-x86_64", "-cpu", cpu] if cpu else []
    return subprocess.Popen([*prefix, sys.executable, "-c", DRIVER, model, *stages], cwd=ws, env=clean_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, ws: Path, what: str, model: str) -> dict[str, str]:
    """Wait for a run; md5 of each of its outputs."""
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"probe: {what} failed:\n{err[-2000:]}")
    return {name: hashlib.md5((ws / name).read_bytes()).hexdigest() for name in outputs(model)
            if (ws / name).exists()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="the model to train (default: the first under `models` in params.yaml)")
    ap.add_argument("--data", default="data/binarized/mnist.npz", type=Path)
    ap.add_argument("--cpus", nargs="+", default=list(CPUS.values()), help="qemu CPU models (qemu-x86_64 -cpu help)")
    ap.add_argument("--json", type=Path, help="also write the hashes here")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time")
    args = ap.parse_args()
    args.model = args.model or next(iter(yaml.safe_load((REPO / "params.yaml").read_text())["models"]))
    if not numerics.is_x86_64():
        sys.exit("probe: needs an x86-64 machine (qemu-x86_64 emulates x86-64 CPUs)")
    if shutil.which("qemu-x86_64") is None:
        sys.exit("probe: needs qemu-x86_64 (Debian/Ubuntu: apt-get install qemu-user)")
    if not args.data.exists():
        sys.exit(f"probe: {args.data} is missing; run `dvc repro binarize` first")
    both = ["train", "evaluate"]
    plan = [*(("portable", cpu, both) for cpu in args.cpus), ("fast", args.cpus[0], ["train"]),
            ("portable", None, both), ("fast", None, ["train"])]
    results = []
    with tempfile.TemporaryDirectory(prefix="probe-numerics-") as tmp:
        # two runs at a time: an emulated CPU keeps about one core busy
        for batch in (plan[i:i + args.parallel] for i in range(0, len(plan), args.parallel)):
            t0 = time.perf_counter()
            running = []
            for mode, cpu, stages in batch:
                ws = workspace(Path(tmp), f"run{len(results) + len(running)}", mode, args.data)
                running.append((mode, cpu, stages, ws, start(ws, cpu, args.model, stages)))
            for mode, cpu, stages, ws, proc in running:
                what = f"{mode} {' and '.join(stages)} on {cpu or 'this CPU'}"
                hashes = finish(proc, ws, what, args.model)
                seconds = time.perf_counter() - t0
                results.append({"mode": mode, "cpu": cpu or "native", "stages": stages, "md5": hashes,
                                "seconds": round(seconds, 1)})
                print(f"{mode:8s} {cpu or 'native':11s} {seconds:6.1f} s  "
                      + "  ".join(f"{Path(k).name}:{v[:8]}" for k, v in hashes.items()), flush=True)
    portable = [r["md5"] for r in results if r["mode"] == "portable"]
    fast = [r["md5"] for r in results if r["mode"] == "fast"]
    same_portable = all(h == portable[0] for h in portable) and len(portable[0]) == len(outputs(args.model))
    fast_differs = fast[0] != fast[1]
    verdict = {"portable_identical": same_portable, "fast_differs": fast_differs, "runs": results}
    if args.json:
        args.json.write_text(json.dumps(verdict, indent=1) + "\n")
    print(f"portable: {'the same bytes' if same_portable else 'DIFFERENT bytes'} on "
          f"{', '.join(r['cpu'] for r in results if r['mode'] == 'portable')}")
    print(f"fast: {'differs' if fast_differs else 'the SAME bytes'} between native and {args.cpus[0]}")
    if not (same_portable and fast_differs):
        sys.exit(1)


if __name__ == "__main__":
    main()
