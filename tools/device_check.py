"""Does universal mode give the CPU's bytes on a GPU? (benchmarks/gpu.sh runs it where one is lent)

1. The probe's small profile (tools/probe_numerics.py: train, evaluate, render-grids and
   anomaly-kl-stats of one model) in universal numerics with `train.device: cpu`, then with
   `train.device: cuda`, each in a scratch workspace: every output's md5 side by side.
2. The committed pipeline's evaluate stage of that model on the GPU, on the committed checkpoint
   (models/<model>.safetensors, carried to the machine): its outputs' md5s against dvc.lock's.

Prints one line per output and a verdict; exit 0 when every md5 is the same. Until this has
passed, `train.device: auto` keeps universal mode on the CPU (docs/reproducibility.md).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe_numerics as probe  # noqa: E402

from mnist_vae.io import integrity, layout  # noqa: E402


def profile_run(root: Path, device: str, model: str, data: Path, fashion: Path) -> dict[str, str]:
    ws = probe.workspace(root, f"universal-{device.replace(':', '-')}", "universal", data, fashion)
    raw = yaml.safe_load((ws / "params.yaml").read_text())
    raw["train"]["device"] = device
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return probe.finish(probe.start(ws, None, model, probe.STAGES), ws, f"the profile on {device}", model, probe.STAGES)


def committed_evaluate(root: Path, device: str, model: str) -> dict[str, tuple[str, str]]:
    """{output: (md5 on the device, md5 in dvc.lock)} of evaluate@<model> on the committed checkpoint."""
    ws = root / "committed"
    (ws / "models").mkdir(parents=True)
    (ws / "data/binarized").mkdir(parents=True)
    for name in ("dvc.yaml", "dvc.lock"):
        shutil.copy2(probe.REPO / name, ws / name)
    shutil.copytree(probe.REPO / "stages", ws / "stages")
    raw = yaml.safe_load((probe.REPO / "params.yaml").read_text())
    raw["train"]["device"] = device
    (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copy2(probe.REPO / layout.checkpoint(model), ws / layout.checkpoint(model))
    (ws / "data/binarized/mnist.npz").symlink_to((probe.REPO / "data/binarized/mnist.npz").resolve())
    proc = subprocess.run([sys.executable, "stages/evaluate.py", model], cwd=ws, env=probe.clean_env(None),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"device-check: evaluate@{model} on {device} failed:\n{proc.stderr[-3000:]}")
    recorded = integrity.recorded_outputs((ws / "dvc.lock").read_text())
    return {p: (hashlib.md5((ws / p).read_bytes()).hexdigest(), recorded[p][1])
            for p in (layout.evaluation_arrays(model), layout.eval_metrics(model))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="the device to hold against the CPU (default cuda)")
    ap.add_argument("--model", default="vae20d")
    ap.add_argument("--skip-committed", action="store_true", help="step 1 only (no committed checkpoint here)")
    args = ap.parse_args()
    data, fashion = probe.REPO / "data/binarized/mnist.npz", probe.REPO / "data/binarized/fashion-mnist.npz"
    for path in (data, fashion):
        if not path.exists():
            sys.exit(f"device-check: {path} not found: run `dvc repro binarize` (or carry data/binarized) first")
    same = True
    with tempfile.TemporaryDirectory(prefix="device-check-") as tmp:
        cpu = profile_run(Path(tmp), "cpu", args.model, data, fashion)
        dev = profile_run(Path(tmp), args.device, args.model, data, fashion)
        for name in sorted(cpu):
            ok = cpu[name] == dev.get(name)
            same &= ok
            print(f"{'same' if ok else 'DIFFERS'}  {name}  cpu {cpu[name][:12]}  {args.device} {str(dev.get(name))[:12]}")
        if not args.skip_committed:
            for name, (have, recorded) in committed_evaluate(Path(tmp), args.device, args.model).items():
                ok = have == recorded
                same &= ok
                print(f"{'same' if ok else 'DIFFERS'}  {name} (committed run)  dvc.lock {recorded[:12]}  "
                      f"{args.device} {have[:12]}")
    print(f"device-check: {'the same bytes on ' + args.device + ' as on the CPU' if same else 'bytes differ'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
