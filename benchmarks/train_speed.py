"""Training-speed benchmark (make bench): the reference-style loop against the project's, in one
run on the same machine and the same real data, plus a full and a no-op `dvc repro`.

(a) reference style: torchvision's MNIST dataset with per-sample ToTensor + round through a
    DataLoader (batch 128, shuffled), two Linear heads, a sigmoid decoder, summed BCE + KL, Adam 1e-3;
(b) the project: mnist_vae.training.train on the whole binarized set in one tensor.
Both evaluate the test loss after every epoch (the reference notebook did), inside the timing.

Prints seconds per epoch, their ratio, the test loss each reached and the project's achieved
GFLOP/s against a measured matrix-product throughput; writes reports/benchmark.json and .md.

    python benchmarks/train_speed.py [--epochs 2] [--skip-dvc] [--device auto]
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_vae import artifacts, data, params
from mnist_vae.model import build
from mnist_vae.training import make_deterministic, make_tracker, resolve_device, to_tensor, train
from mnist_vae.workspace import copy_worktree, dvc_exe, tool_env

REPO = Path(__file__).resolve().parents[1]


class ReferenceVAE(nn.Module):
    """The reference notebook's model: separate mu / logvar heads, sigmoid decoder output."""

    def __init__(self, latent=20, hidden=400):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, hidden), nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.fc3, self.fc4 = nn.Linear(latent, hidden), nn.Linear(hidden, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def reference_loss(recon, x, mu, logvar):
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def torchvision_root(raw_dir: Path, root: Path) -> Path:
    """torchvision's MNIST layout (root/MNIST/raw, decompressed files) from the downloaded gz files."""
    target = root / "MNIST" / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for gz in raw_dir.glob("*.gz"):
        with gzip.open(gz) as src, open(target / gz.name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def run_reference(root: Path, epochs: int, device: torch.device, seed: int) -> dict:
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Lambda(torch.round)])
    train_ds = datasets.MNIST(str(root), train=True, download=False, transform=tf)
    test_ds = datasets.MNIST(str(root), train=False, download=False, transform=tf)
    train_dl = torch.utils.data.DataLoader(train_ds, batch_size=128, shuffle=True)
    test_dl = torch.utils.data.DataLoader(test_ds, batch_size=128)
    model = ReferenceVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_epoch, test_loss = [], float("nan")
    for _ in range(epochs):  # like the reference notebook: train, then the test loss, every epoch
        t0 = time.perf_counter()
        model.train()
        for x, _ in train_dl:
            x = x.view(-1, 784).to(device)
            opt.zero_grad()
            loss = reference_loss(*_unpack(model, x))
            loss.backward()
            opt.step()
        model.eval()
        total = 0.0
        with torch.no_grad():
            for x, _ in test_dl:
                x = x.view(-1, 784).to(device)
                total += reference_loss(*_unpack(model, x)).item()
        test_loss = total / len(test_ds)
        per_epoch.append(time.perf_counter() - t0)
    return {"epoch_seconds": per_epoch, "test_loss": test_loss}


def _unpack(model, x):
    recon, mu, logvar = model(x)
    return recon, x, mu, logvar


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_project(binarized: Path, epochs: int, device: torch.device, seed: int, tracking: bool,
                model_name: str = "vae20d") -> dict:
    p = params.load(REPO / "params.yaml")
    make_deterministic(seed)
    ds = data.load_binarized(binarized)
    train_x, test_x = to_tensor(ds["train_x"], device), to_tensor(ds["test_x"], device)
    model = build(p["models"][model_name]).to(device)
    cfg = dict(p["train"], epochs=epochs, seed=seed)
    tracker = make_tracker(model, test_x, p["tracking"], epochs * -(-len(train_x) // cfg["batch_size"]), seed) \
        if tracking else None
    result = train(model, train_x, test_x, cfg, tracker, progress=False)
    return {"epoch_seconds": [h["seconds"] for h in result["history"]], "test_loss": result["final"]["test_loss"],
            "train_seconds": result["train_seconds"]}


def matmul_gflops(device: torch.device, repeats: int = 300) -> float:
    """Throughput of the model's dominant product, a 128 x 784 by 784 x 400 matrix multiply."""
    a, b = torch.randn(128, 784, device=device), torch.randn(784, 400, device=device)
    for _ in range(20):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * 128 * 784 * 400 * repeats / (time.perf_counter() - t0) / 1e9


def flops_per_epoch(n_images: int = 60000) -> float:
    """Training FLOPs of one 20-d epoch: forward 2 MACs, weight gradients 2 MACs, input gradients
    2 MACs for every layer but the first (no gradient w.r.t. the data)."""
    layers = [(784, 400), (400, 40), (20, 400), (400, 784)]
    macs = sum(a * b for a, b in layers)
    return n_images * (6 * macs - 2 * layers[0][0] * layers[0][1])


def time_dvc(work: Path) -> dict:
    """Full `dvc repro --force` from a clean copy (no data, no cache; forced so that the stages whose
    committed metrics DVC would accept, the evaluation, are recomputed too), then a no-op `dvc repro`."""
    repo = copy_worktree(REPO, work / "repo")
    env = tool_env()
    t0 = time.perf_counter()
    subprocess.run([dvc_exe(), "repro", "--force"], cwd=repo, env=env, check=True, capture_output=True)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = subprocess.run([dvc_exe(), "repro"], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout
    noop = time.perf_counter() - t0
    assert "Running stage" not in out, out
    return {"full_repro_seconds": full, "noop_repro_seconds": noop}


def machine() -> str:
    cpu = platform.processor() or "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=199)
    ap.add_argument("--skip-dvc", action="store_true", help="do not time the full and no-op dvc repro")
    ap.add_argument("--out", default=str(REPO / "reports" / "benchmark"))
    args = ap.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data.download("mnist", tmp / "raw")
        data.binarize_dataset(tmp / "raw", tmp / "mnist.npz", 0.5)
        root = torchvision_root(tmp / "raw", tmp / "tv")
        print(f"machine: {machine()}; device {device}", flush=True)
        gflops_peak = matmul_gflops(device)
        ref = run_reference(root, args.epochs, device, args.seed)
        print(f"reference-style loop: {ref['epoch_seconds']}", flush=True)
        proj = run_project(tmp / "mnist.npz", args.epochs, device, args.seed, tracking=False)
        print(f"project loop: {proj['epoch_seconds']}", flush=True)
        proj_tr = run_project(tmp / "mnist.npz", args.epochs, device, args.seed, tracking=True)
        two_d = {on: run_project(tmp / "mnist.npz", args.epochs, device, args.seed, tracking=on, model_name="vae2d")
                 for on in (False, True)}
        dvc_times = {} if args.skip_dvc else time_dvc(tmp)

    ref_s, proj_s = float(np.mean(ref["epoch_seconds"])), float(np.mean(proj["epoch_seconds"]))
    tr_s = float(np.mean(proj_tr["epoch_seconds"]))
    two_off, two_on = (float(np.mean(two_d[on]["epoch_seconds"])) for on in (False, True))
    achieved = flops_per_epoch() / proj_s / 1e9
    result = {
        "machine": machine(), "device": str(device), "epochs": args.epochs,
        "reference_seconds_per_epoch": ref_s, "project_seconds_per_epoch": proj_s,
        "project_tracking_seconds_per_epoch": tr_s, "speedup": ref_s / proj_s,
        "reference_test_loss": ref["test_loss"], "project_test_loss": proj["test_loss"],
        "matmul_gflops": gflops_peak, "project_gflops": achieved,
        "gflop_per_epoch": flops_per_epoch() / 1e9, "vae2d_seconds_per_epoch": two_off,
        "vae2d_tracking_seconds_per_epoch": two_on, "vae2d_tracking_overhead": two_on / two_off - 1, **dvc_times,
    }
    rows = [
        ("seconds per 20-d epoch", f"{ref_s:.2f}", f"{proj_s:.2f} ({tr_s:.2f} with tracking)"),
        (f"test loss after {args.epochs} epochs", f"{ref['test_loss']:.2f}", f"{proj['test_loss']:.2f}"),
        ("speed-up (reference / project)", "1.00", f"{ref_s / proj_s:.2f}x"),
        ("GFLOP/s achieved (matmul peak)", "", f"{achieved:.0f} ({gflops_peak:.0f})"),
        ("2-d epoch s, tracking off / on", "", f"{two_off:.2f} / {two_on:.2f} ({two_on / two_off - 1:+.0%})"),
    ]
    if dvc_times:
        rows += [("full dvc repro from clean (s)", "", f"{dvc_times['full_repro_seconds']:.0f}"),
                 ("no-op dvc repro (s)", "", f"{dvc_times['noop_repro_seconds']:.1f}")]
    md = [f"Machine: {machine()}; device {device}; {args.epochs} epochs of the 20-d model, batch 128.", "",
          "| measure | reference-style loop | project |", "|---|---|---|"]
    md += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(md)
    print(text)
    artifacts.write_json(args.out + ".json", result)
    artifacts.write_bytes(args.out + ".md", (text + "\n").encode())


if __name__ == "__main__":
    main()
