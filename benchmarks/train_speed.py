"""Training-speed benchmark (make bench): the reference-style loop against the project's, in one
run on the same machine and the same real data, plus a full and a no-op `dvc repro`.

(a) reference style: torchvision's MNIST dataset with per-sample ToTensor + round through a
    DataLoader (batch 128, shuffled), two Linear heads, a sigmoid decoder, summed BCE + KL, Adam 1e-3;
(b) the project: mnist_vae.core.training.fit, as the train stage runs it (the whole binarized set in
    one tensor, the hand-written step of mnist_vae.core.step; a replayed CUDA graph on a GPU), and the
    same loop with the plain autograd step, the previous version, to show what the step buys.
Both evaluate the test loss after every epoch (the reference notebook did), inside the timing.
Every measured loop runs in a fresh process, so none inherits another's threads, allocator or
floating-point mode (the project flushes denormals to zero; the reference does not).

Prints seconds per epoch, their ratio, the test loss each reached and the project's achieved
GFLOP/s against a measured matrix-product throughput; each epoch against its own matrix products
timed alone (the floor); the IWAE evaluation, fused and plain, against its decoder's products
alone; writes reports/benchmark.json and .md.

    python benchmarks/train_speed.py [--epochs 2] [--skip-dvc] [--device auto]
    python benchmarks/train_speed.py --epochs 10 --skip-dvc --device cuda     # the GPU check
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing
import os
import platform
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import sys
import torch
import yaml
import torch.nn.functional as F
from torch import nn

from mnist_vae.io import artifacts, data, params
from mnist_vae.core import numerics
from mnist_vae.core.runtime import flush_denormals, keep_freed_memory, resolve_device
from mnist_vae.core.training import fit
from mnist_vae.core import machine
from mnist_vae.study.reference import setup_model
from mnist_vae.study.workspace import copy_worktree, dvc_exe, tool_env

REPO = Path(__file__).resolve().parents[1]
# the models measured: those params.yaml has for the reference's 20-d and 2-d setups
M20, M2 = setup_model("notebook-20d", REPO), setup_model("notebook-2d", REPO)


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


def run_reference(root: Path, epochs: int, device: str, seed: int) -> dict:
    from torchvision import datasets, transforms

    device = torch.device(device)
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


def enter_numerics(mode: str) -> None:
    """This process's numerics as a stage sets them up, in `mode` at params.yaml's thread count;
    the pins come from the environment the process was started with (:func:`isolated`)."""
    numerics.enter(params.load(REPO / "params.yaml").numerics.model_copy(update={"mode": mode}))


def run_project(binarized: Path, epochs: int, device: str, seed: int, tracking: bool,
                model_name: str | None = None, step: str = "fused", cuda_graph: bool | None = None,
                mode: str = "fast") -> dict:
    """The train stage's own code path (fit) on the given data, params.yaml but these settings."""
    enter_numerics(mode)
    p = params.load(REPO / "params.yaml")
    settings = p.model_copy(update={
        "train": p.train.model_copy(update=dict(epochs=epochs, seed=seed, device=device, step=step)),
        "tracking": p.tracking.model_copy(update={"enabled": tracking})})
    mnist = artifacts.read_npz(binarized, ["train_x", "test_x"])
    out = fit(p.model(model_name or M20), settings, mnist["train_x"], mnist["test_x"], progress=False,
              cuda_graph=cuda_graph)
    history = out["history"]
    return {"epoch_seconds": [h["seconds"] for h in history], "test_loss": history[-1]["test_loss"],
            "train_seconds": out["timings"]["train_seconds"], "device": out["metrics"]["device"]}


def isolated(fn, *args, **kwargs):
    """fn(*args, **kwargs) in a fresh Python process (spawned, so nothing is shared with this one),
    started with the pins of its numerics mode (kwargs' `mode`, else fast: the loops compared with
    the reference are the fast paths) in its environment, as a stage sets them before it imports
    torch."""
    mode = kwargs.get("mode", "fast")
    p = params.load(REPO / "params.yaml").numerics
    saved = dict(os.environ)
    os.environ.update(numerics.environment(mode, p.threads, p.kernels))
    try:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(fn, *args, **kwargs).result()
    finally:
        os.environ.clear()
        os.environ.update(saved)


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


def _linear_layers(net) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def _time_products(products, repeats: int, device: torch.device) -> float:
    """Seconds for `repeats` rounds of the given (a, b, out) matrix products, each into its
    preallocated output (after a warm-up round)."""
    def one_round():
        for a, b, out in products:
            torch.mm(a, b, out=out)
    one_round()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        one_round()
    _sync(device)
    return time.perf_counter() - t0


def training_floor(model_name: str, device: str, n_train: int = 60000, n_test: int = 10000,
                   ) -> float:
    """Seconds of one epoch's matrix products alone, for the fused step at the params' batch
    size: forward through every Linear, each layer's weight gradient, the input gradient of every
    layer but the first, for every batch; plus the per-epoch test loss's forward products."""
    p = params.load(REPO / "params.yaml")
    arch, dev = p.model(model_name), torch.device(device)
    cfg = arch.training(p.train)
    from mnist_vae.core.model import build

    layers = [(m.in_features, m.out_features) for m in _linear_layers(build(arch))]
    # the encoder's head outputs [mu | logvar]; the decoder's first layer takes z
    def step_products(n: int, backward: bool):
        new = lambda *shape: torch.randn(*shape, device=dev)  # noqa: E731
        out = []
        for i, (fan_in, fan_out) in enumerate(layers):
            out.append((new(n, fan_in), new(fan_in, fan_out), new(n, fan_out)))
            if backward:
                out.append((new(fan_out, n), new(n, fan_in), new(fan_out, fan_in)))
                if i > 0:
                    out.append((new(n, fan_out), new(fan_out, fan_in), new(n, fan_in)))
        return out
    full, last = divmod(n_train, cfg.batch_size)
    seconds = _time_products(step_products(cfg.batch_size, True), full, dev)
    if last:
        seconds += _time_products(step_products(last, True), 1, dev)
    return seconds + _time_products(step_products(p.evaluate.batch_size, False), n_test // p.evaluate.batch_size, dev)


def iwae_side_by_side(model_name: str, device: str, images: int, mode: str = "fast") -> dict:
    """The evaluate stage's IWAE (mnist_vae.core.evaluation.iwae_nll, K and chunk from params.yaml) on
    `images` real test images with a freshly initialised model of this architecture (the time
    does not depend on the weights), the same with objective.py's plain log weights (the code
    before the fused log-likelihood), and the floor: the decoder's matrix products alone for the
    same samples, in passes of the same size, each into a preallocated output."""
    from mnist_vae.core import objective
    from mnist_vae.core.evaluation import default_images_per_pass, iwae_nll
    from mnist_vae.core.model import build

    enter_numerics(mode)
    flush_denormals()
    keep_freed_memory()  # as the evaluate stage does
    torch.manual_seed(0)
    p = params.load(REPO / "params.yaml")
    dev = torch.device(device)
    net = build(p.model(model_name)).to(dev).eval()
    k, chunk = p.evaluate.iwae_k, p.evaluate.iwae_chunk
    x = (torch.rand(images, 784, device=dev) < 0.13).float()
    per_pass = default_images_per_pass(dev, k, chunk)
    iwae_nll(net, x[:per_pass], k, 0, chunk, progress=False)  # warm-up

    def timed(fn):
        _sync(dev)
        t0 = time.perf_counter()
        result = fn()
        _sync(dev)
        return time.perf_counter() - t0, result

    fused_s, fused = timed(lambda: iwae_nll(net, x, k, 0, chunk, progress=False))
    plain_s, plain = timed(lambda: iwae_nll(net, x, k, 0, chunk, progress=False, fused=False))
    rows = per_pass * min(k, chunk)
    decoder = _linear_layers(net.decoder)
    inputs = [torch.relu(torch.randn(rows, m.in_features, device=dev)) for m in decoder]
    passes = images * k // rows

    def as_evaluated():  # the hidden layers through addmm, the 784-wide one through objective.linear
        for h, m in zip(inputs[:-1], decoder[:-1]):
            torch.addmm(m.bias, h, m.weight.t())
        objective.linear(inputs[-1], decoder[-1])

    as_evaluated()
    floor_s, _ = timed(lambda: [as_evaluated() for _ in range(passes)])
    products = [(h, m.weight.detach().t().contiguous(), torch.empty(rows, m.out_features, device=dev))
                for h, m in zip(inputs, decoder)]
    mm_s = _time_products(products, passes, dev)
    return {"images": images, "k": k, "rows_per_pass": rows, "fused_seconds": fused_s, "plain_seconds": plain_s,
            "floor_seconds": floor_s, "mm_floor_seconds": mm_s, "max_abs_difference": float((fused - plain).abs().max())}


def flops_per_epoch(n_images: int = 60000) -> float:
    """Training FLOPs of one 20-d epoch: forward 2 MACs, weight gradients 2 MACs, input gradients
    2 MACs for every layer but the first (no gradient w.r.t. the data)."""
    layers = [(784, 400), (400, 40), (20, 400), (400, 784)]
    macs = sum(a * b for a, b in layers)
    return n_images * (6 * macs - 2 * layers[0][0] * layers[0][1])


def time_dvc(work: Path, mode: str | None = None) -> dict:
    """Full `dvc repro --force` from a clean copy (no data, no cache; forced so that the stages whose
    committed metrics DVC would accept, the evaluation, are recomputed too), then a no-op `dvc repro`;
    with `mode`, numerics.mode set to it in the copy's params.yaml first."""
    repo = copy_worktree(REPO, work / f"repo-{mode or 'params'}")
    if mode is not None:
        raw = yaml.safe_load((repo / "params.yaml").read_text())
        if raw["numerics"]["mode"] != mode:
            subprocess.run([sys.executable, "-c", (
                "import sys, yaml; path = 'params.yaml'; text = open(path).read()\n"
                f"text = text.replace('mode: {raw['numerics']['mode']}', 'mode: {mode}', 1)\n"
                "open(path, 'w').write(text)")], cwd=repo, check=True)
    env = tool_env()
    t0 = time.perf_counter()
    subprocess.run([dvc_exe(), "repro", "--force"], cwd=repo, env=env, check=True, capture_output=True)
    full = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = subprocess.run([dvc_exe(), "repro"], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout
    noop = time.perf_counter() - t0
    assert "Running stage" not in out, out
    return {"full_repro_seconds": full, "noop_repro_seconds": noop}


def machine_line() -> str:
    return f"{machine.label(machine.record(torch.device('cpu')))}, Python {platform.python_version()}"


def gpu_name(device: torch.device) -> str:
    return f"; GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""


def mean(xs) -> float:
    return float(np.mean(xs))


def universal_parts(repeats: int = 5, mode: str = "universal") -> dict:
    """What universal numerics' parts cost against torch's own op, on the IWAE's pass (2,000
    decoded samples: 2000 x 400 by 400 x 784) and on a training batch (128 x 784 by 784 x 400):
    the quantization, the float64 product, the whole exact product; exp, the softplus sums and the
    sigmoid as torch ops and compiled; normal samples; Adam's update of the 20-d model's weights."""
    from mnist_vae.core import exact
    from mnist_vae.core.model import build
    from mnist_vae.core.step import LayerAdam

    enter_numerics(mode)

    def best(fn):
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times) * 1e3

    g = torch.Generator().manual_seed(0)
    out = {}
    for name, (m, k, n) in {"IWAE pass": (2000, 400, 784), "training batch": (128, 784, 400)}.items():
        a, b = torch.rand(m, k, generator=g), torch.randn(k, n, generator=g) * 0.05
        from mnist_vae.core import exact_kernels, torch_private

        a8, na = exact._slices(a, True, "a")
        b8, nb = exact._slices(b, False, "b")
        blocks, result, none = torch_private.int_mm(a8, b8), torch.empty(m, n), torch.empty(0)
        qa, qb = exact.quantized64(a, -1), exact.quantized64(b, -2)

        def engine(name):
            exact.use_engine(name)
            return best(lambda: exact.mm(a, b))

        out[f"{name} product"] = {
            "sgemm": best(lambda: a @ b),
            "int8 engine: slices": best(lambda: (exact._slices(a, True, "a"), exact._slices(b, False, "b"))),
            "int8 engine: int8 GEMM of the four slice products": best(lambda: torch_private.int_mm(a8, b8)),
            "int8 engine: recombination": best(lambda: exact_kernels.recombine_into(
                blocks.numpy(), na.numpy(), nb.numpy(), exact.SLICE, none.numpy(), result.numpy())),
            "float64 engine: quantization": best(lambda: (exact.quantized64(a, -1), exact.quantized64(b, -2))),
            "float64 engine: float64 product": best(lambda: qa @ qb),
            "exact product, float64 engine": engine("float64"),
            "exact product, int8 engine": engine("int8")}
    logits = torch.randn(2000, 784, generator=g) * 5
    out["IWAE pass functions"] = {"torch.exp": best(lambda: torch.exp(logits))}
    exact.use_kernels(False)
    out["IWAE pass functions"].update({"exact.exp (torch ops)": best(lambda: exact.exp(logits)),
                                       "softplus sums (torch ops)": best(lambda: exact.softplus_row_sums(logits, 98)),
                                       "sigmoid (torch ops)": best(lambda: exact.sigmoid(logits))})
    exact.use_kernels(True)
    out["IWAE pass functions"].update({"softplus sums (compiled)": best(lambda: exact.softplus_row_sums(logits, 98)),
                                       "sigmoid (compiled)": best(lambda: exact.sigmoid(logits)),
                                       "torch softplus sums": best(lambda: F.softplus(logits).sum(-1))})
    out["normal samples, 40,000"] = {"torch.randn": best(lambda: torch.randn(2000, 20, generator=g)),
                                     "exact.randn": best(lambda: exact.randn((2000, 20), generator=g))}
    net = build(params.load(REPO / "params.yaml").model(M20))
    layers = _linear_layers(net)
    for lin in layers:
        lin.weight.grad, lin.bias.grad = torch.randn_like(lin.weight), torch.randn_like(lin.bias)
    saved = dict(numerics._state)
    try:
        for mode in ("fast", "universal"):
            numerics._state["mode"] = mode
            adam = LayerAdam(layers, 1e-3)
            adam.begin_step()
            out.setdefault("Adam, 20-d model", {})[f"{mode} (all layers)"] = \
                best(lambda: [adam.update(lin) for lin in layers])
    finally:
        numerics._state.clear()
        numerics._state.update(saved)
    return out


def numerics_side_by_side(npz: Path, tmp: Path, epochs: int, device: str, seed: int, images: int,
                          skip_dvc: bool) -> tuple[dict, str]:
    """Fast and universal numerics (mnist_vae.core.numerics), each measure in both modes,
    the modes alternating: seconds per 20-d training epoch (best of two runs each), one IWAE pass
    over `images` images (the evaluate stage's code), and the full `dvc repro --force` from clean;
    then what universal mode's parts cost (:func:`universal_parts`)."""
    modes = ("fast", "universal")
    epoch = {m: [] for m in modes}
    loss = {}
    for _ in range(2):
        for m in modes:
            run = isolated(run_project, npz, epochs, device, seed, False, mode=m)
            epoch[m].append(mean(run["epoch_seconds"]))
            loss[m] = run["test_loss"]
            print(f"{m}: seconds per epoch {[round(t, 3) for t in run['epoch_seconds']]}", flush=True)
    iwae = {m: isolated(iwae_side_by_side, M20, device, images, mode=m) for m in modes}
    parts = isolated(universal_parts, mode="universal")
    # the floors: the same products in float32 alone (torch.mm, sgemm), whatever the mode
    floor = {"epoch": isolated(training_floor, M20, device), "iwae": iwae["fast"]["mm_floor_seconds"]}
    repro = {} if skip_dvc else {m: time_dvc(tmp, mode=m)["full_repro_seconds"] for m in modes}
    result = {"epoch_seconds": {m: min(v) for m, v in epoch.items()}, "epoch_runs": epoch, "test_loss": loss,
              "iwae_seconds": {m: r["fused_seconds"] for m, r in iwae.items()}, "iwae_images": images,
              "full_repro_seconds": repro, "universal_parts_ms": parts, "floor_seconds": floor}
    rows = [("seconds per 20-d training epoch (best of 2 runs)", result["epoch_seconds"]),
            (f"seconds for the IWAE of the 20-d model, {images} images, K = {iwae['fast']['k']}",
             result["iwae_seconds"])]
    rows += [("20-d training epoch / its float32 products alone (%.2f s)" % floor["epoch"],
              {m: v / floor["epoch"] for m, v in result["epoch_seconds"].items()}),
             ("IWAE / the decoder's float32 products alone (%.2f s)" % floor["iwae"],
              {m: v / floor["iwae"] for m, v in result["iwae_seconds"].items()})]
    if repro:
        rows.append(("full dvc repro --force from clean (s)", repro))
    md = [f"Fast and universal numerics (params.yaml `numerics.mode`), {epochs} epochs a training run, "
          f"on {machine_line()}: fast takes each CPU's own kernels; universal computes every result IEEE 754 "
          "fixes (exact integer products of 13-bit factors by int8 GEMMs, fixed-order sums, its own exp and log).", "",
          "| measure | fast | universal | universal / fast |", "|---|---:|---:|---:|"]
    md += [f"| {name} | {v['fast']:.2f} | {v['universal']:.2f} | **{v['universal'] / v['fast']:.2f}x** |"
           for name, v in rows]
    md += ["", f"Test loss after {epochs} epochs: fast {loss['fast']:.4f}, universal {loss['universal']:.4f} "
           "(another rounding: another trajectory, within the seed spread).", "",
           "What universal mode's parts cost, milliseconds (best of 5):", "", "| part | variant | ms |", "|---|---|---:|"]
    md += [f"| {part} | {variant} | {ms:.2f} |" for part, variants in parts.items() for variant, ms in variants.items()]
    return result, "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=199)
    ap.add_argument("--skip-dvc", action="store_true", help="do not time the full and no-op dvc repro")
    ap.add_argument("--iwae-images", type=int, default=500, help="test images in the IWAE timing")
    ap.add_argument("--out", default=str(REPO / "reports" / "benchmark"))
    ap.add_argument("--numerics-only", action="store_true",
                    help="only the comparison of the numerics modes (reports/benchmark-numerics.*)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    dev, n = str(device), args.epochs
    describe = f"{machine_line()}{gpu_name(device)}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data.download("mnist", tmp / "raw")
        data.binarize_dataset(tmp / "raw", tmp / "mnist.npz", 0.5)
        num_result, num_md = numerics_side_by_side(tmp / "mnist.npz", tmp, args.epochs, dev, args.seed,
                                                   args.iwae_images, args.skip_dvc)
        print(num_md, flush=True)
        artifacts.write_json(args.out + "-numerics.json", num_result)
        artifacts.write_bytes(args.out + "-numerics.md", (num_md + "\n").encode())
        if args.numerics_only:
            return
        root = torchvision_root(tmp / "raw", tmp / "tv")
        npz = tmp / "mnist.npz"
        print(f"machine: {describe}; device {device}", flush=True)
        gflops_peak = matmul_gflops(device)
        runs = {}
        plan = [("reference", run_reference, (root, n, dev, args.seed), {}),
                ("project", run_project, (npz, n, dev, args.seed, False), {}),
                ("autograd step", run_project, (npz, n, dev, args.seed, False), {"step": "autograd"})]
        if device.type == "cuda":
            plan.append(("eager step, no CUDA graph", run_project, (npz, n, dev, args.seed, False), {"cuda_graph": False}))
        plan += [("project, tracking on", run_project, (npz, n, dev, args.seed, True), {}),
                 ("2-d, tracking off", run_project, (npz, n, dev, args.seed, False), {"model_name": M2}),
                 ("2-d, tracking on", run_project, (npz, n, dev, args.seed, True), {"model_name": M2})]
        for name, fn, a, kw in plan:
            runs[name] = isolated(fn, *a, **kw)
            print(f"{name}: seconds per epoch {[round(t, 3) for t in runs[name]['epoch_seconds']]}, "
                  f"test loss {runs[name]['test_loss']:.2f}", flush=True)
        floors = {m: isolated(training_floor, m, dev) for m in (M20, M2)}
        print(f"matrix products of one epoch alone: {floors}", flush=True)
        iwae = {m: isolated(iwae_side_by_side, m, dev, args.iwae_images) for m in (M20, M2)}
        for m, r in iwae.items():
            print(f"IWAE {m}: fused {r['fused_seconds']:.2f} s, plain {r['plain_seconds']:.2f} s, "
                  f"products alone {r['floor_seconds']:.2f} s (torch.mm {r['mm_floor_seconds']:.2f} s)", flush=True)
        dvc_times = {} if args.skip_dvc else time_dvc(tmp)

    ref, proj, auto = runs["reference"], runs["project"], runs["autograd step"]
    ref_s, proj_s, auto_s = (mean(r["epoch_seconds"]) for r in (ref, proj, auto))
    tr_s = mean(runs["project, tracking on"]["epoch_seconds"])
    two_off, two_on = (mean(runs[f"2-d, tracking {k}"]["epoch_seconds"]) for k in ("off", "on"))
    achieved = flops_per_epoch() / proj_s / 1e9
    result = {
        "machine": describe, "device": dev, "epochs": n,
        "reference_seconds_per_epoch": ref_s, "project_seconds_per_epoch": proj_s,
        "autograd_step_seconds_per_epoch": auto_s, "project_tracking_seconds_per_epoch": tr_s,
        "reference_seconds_total": float(sum(ref["epoch_seconds"])), "project_seconds_total": proj["train_seconds"],
        "speedup": ref_s / proj_s, "autograd_step_speedup": ref_s / auto_s,
        "reference_test_loss": ref["test_loss"], "project_test_loss": proj["test_loss"],
        "autograd_step_test_loss": auto["test_loss"],
        "matmul_gflops": gflops_peak, "project_gflops": achieved,
        "gflop_per_epoch": flops_per_epoch() / 1e9, "vae2d_seconds_per_epoch": two_off,
        "vae2d_tracking_seconds_per_epoch": two_on, "vae2d_tracking_overhead": two_on / two_off - 1,
        "training_floor_seconds": floors, "epoch_floor_ratio": {M20: proj_s / floors[M20], M2: two_off / floors[M2]},
        "iwae": iwae, "runs": runs, **dvc_times,
    }
    rows = [
        ("seconds per 20-d epoch", f"{ref_s:.2f}", f"{proj_s:.2f}", f"{auto_s:.2f}"),
        (f"seconds for all {n} epochs", f"{sum(ref['epoch_seconds']):.1f}", f"{proj['train_seconds']:.1f}",
         f"{auto['train_seconds']:.1f}"),
        (f"test loss after {n} epochs", f"{ref['test_loss']:.2f}", f"{proj['test_loss']:.2f}",
         f"{auto['test_loss']:.2f}"),
        ("speed-up against the reference-style loop", "1.00x", f"**{ref_s / proj_s:.2f}x**", f"{ref_s / auto_s:.2f}x"),
        ("GFLOP/s achieved (matmul throughput measured)", "", f"{achieved:.0f} ({gflops_peak:.0f})", ""),
        ("seconds per 20-d epoch with tracking on", "", f"{tr_s:.2f}", ""),
        ("seconds per 2-d epoch, tracking off / on", "", f"{two_off:.2f} / {two_on:.2f} ({two_on / two_off - 1:+.0%})", ""),
        ("an epoch's matrix products alone, 20-d / 2-d (s)", "", f"{floors[M20]:.2f} / {floors[M2]:.2f}", ""),
        ("epoch / its products alone, 20-d / 2-d", "",
         f"{proj_s / floors[M20]:.2f}x / {two_off / floors[M2]:.2f}x", ""),
    ]
    if "eager step, no CUDA graph" in runs:
        eager = runs["eager step, no CUDA graph"]
        rows.insert(2, ("seconds for all epochs, eager step (no CUDA graph)", "", f"{eager['train_seconds']:.1f}", ""))
    if dvc_times:
        rows += [("full dvc repro from clean (s)", "", f"{dvc_times['full_repro_seconds']:.0f}", ""),
                 ("no-op dvc repro (s)", "", f"{dvc_times['noop_repro_seconds']:.1f}", "")]
    md = [f"Machine: {describe}; device {device}; {n} epochs of the 20-d model, batch 128, "
          "test loss evaluated after every epoch in every loop.", "",
          "| measure | reference-style loop | project | project, autograd step |", "|---|---|---|---|"]
    md += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    md += ["", f"IWAE bound, K = {iwae[M20]['k']}, on {args.iwae_images} test images, in passes of "
           f"{iwae[M20]['rows_per_pass']} samples: the evaluate stage's code (fused log-likelihood), the same "
           "with objective.py's plain log weights, and the decoder's matrix products alone for the same samples, "
           "as the evaluation runs them (the 784-wide one through objective.linear: oneDNN on a CPU) and "
           "through torch.mm (MKL's sgemm on a CPU).", "",
           "| model | IWAE, fused (s) | IWAE, plain (s) | products alone (s) | fused / products | plain / products "
           "| products through torch.mm (s) | largest per-image difference (nats) |",
           "|---|---|---|---|---|---|---|---|"]
    md += [f"| {m} | {r['fused_seconds']:.2f} | {r['plain_seconds']:.2f} | {r['floor_seconds']:.2f} | "
           f"**{r['fused_seconds'] / r['floor_seconds']:.2f}x** | {r['plain_seconds'] / r['floor_seconds']:.2f}x | "
           f"{r['mm_floor_seconds']:.2f} | {r['max_abs_difference']:.1e} |" for m, r in iwae.items()]
    text = "\n".join(md)
    print(text)
    artifacts.write_json(args.out + ".json", result)
    artifacts.write_bytes(args.out + ".md", (text + "\n").encode())


if __name__ == "__main__":
    main()
