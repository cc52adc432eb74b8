"""Training and evaluating a VAE on a dataset held in one tensor, with optional frame tracking."""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .objective import batch_loss
from .params import ParamsError
from .step import check_against_autograd, make_step
from .figures import manifold_latents, manifold_frame, recon_frame

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'auto' means the GPU when CUDA is available, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"params: 'train.device' is {name!r} but CUDA is not available here")
    return torch.device(name)


def make_deterministic(seed: int) -> None:
    """Same seed, same machine: same weights and metrics, byte for byte."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def flush_denormals() -> None:
    """Flush denormal floats to zero (FTZ/DAZ), as TensorFlow does on CPUs by default.

    Adam's first moment of a weight whose gradient stops being nonzero (pixels that are almost
    always 0) decays by 0.9 a step into the denormal range, where every x86 multiply takes a
    microcode assist: without this a 20-d CPU epoch slowed from 1.30 s to 1.63 s over four epochs.
    Values that small (< 1.2e-38) move no float32 weight. Call it before torch's first parallel
    op in the process: worker threads inherit the floating-point mode of the thread that starts
    them, and only the calling thread is switched.
    """
    torch.set_flush_denormal(True)


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 0/1 images (N x 784) as one float32 tensor on the device."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)


@torch.no_grad()
def evaluate(model, x: torch.Tensor, batch_size: int, generator: torch.Generator) -> dict[str, float]:
    """Per-image BCE, KL and loss (negative ELBO, one z sample per image) over a set."""
    bce_sum = torch.zeros((), device=x.device)
    kl_sum = torch.zeros((), device=x.device)
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        eps = torch.randn((len(xb), model.latent_dim), generator=generator, device=x.device)
        logits, mu, logvar = model(xb, eps)
        bce, kl = batch_loss(logits, xb, mu, logvar)
        bce_sum += bce
        kl_sum += kl
    bce, kl = bce_sum.item() / len(x), kl_sum.item() / len(x)
    return {"bce": bce, "kl": kl, "loss": bce + kl}


@dataclass
class Tracker:
    """Records frames while training: one before the first batch, then after every `every`
    batches, and after the last batch (so the last frame is the final model).

    Frames stay on the training device as uint8 until the end (no host sync per frame).
    The reconstruction noise comes from the tracker's own generator, so tracking on or off
    leaves the training itself unchanged.
    """

    recon_x: torch.Tensor  # images whose reconstructions are tracked, k x 784
    every: int
    total_batches: int
    manifold_z: torch.Tensor | None = None  # n*n x 2 latents, row-major; None: no manifold frames
    manifold_n: int = 0
    seed: int = 0
    batches: list[int] = field(default_factory=list)
    recon: list[torch.Tensor] = field(default_factory=list)
    manifold: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.generator = torch.Generator(device=self.recon_x.device).manual_seed(self.seed)

    @torch.no_grad()
    def capture(self, model, batch: int) -> None:
        t0 = time.perf_counter()
        eps = torch.randn((len(self.recon_x), model.latent_dim), generator=self.generator, device=self.recon_x.device)
        self.recon.append(recon_frame(model, self.recon_x, eps))
        if self.manifold_z is not None:
            self.manifold.append(manifold_frame(model, self.manifold_z, self.manifold_n))
        self.batches.append(batch)
        self.seconds += time.perf_counter() - t0

    def after_batch(self, model, batch: int) -> None:
        """`batch` counts completed batches from 1."""
        if batch % self.every == 0 or batch == self.total_batches:
            self.capture(model, batch)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"batch": np.asarray(self.batches, dtype=np.int64),
               "recon": torch.stack(self.recon).cpu().numpy()}
        if self.manifold:
            out["manifold"] = torch.stack(self.manifold).cpu().numpy()
        return out


def frame_count(total_batches: int, every: int) -> int:
    return 1 + math.ceil(total_batches / every)


def make_tracker(model, test_x: torch.Tensor, tracking: dict[str, Any], total_batches: int, seed: int) -> Tracker | None:
    if not tracking["enabled"]:
        return None
    idx = tracking["recon_indices"]
    if max(idx) >= len(test_x):
        raise ParamsError(f"params: 'tracking.recon_indices' has index {max(idx)} but the test set has "
                          f"{len(test_x)} images")
    manifold_z = None
    if model.latent_dim == 2:
        manifold_z = manifold_latents(tracking["manifold_n"], *tracking["manifold_quantiles"]).to(test_x.device)
    return Tracker(test_x[idx].clone(), tracking["every"], total_batches, manifold_z, tracking["manifold_n"], seed)


def train(model, train_x: torch.Tensor, test_x: torch.Tensor, cfg: dict[str, Any],
          tracker: Tracker | None = None, progress: bool = True, step_kind: str = "auto") -> dict[str, Any]:
    """Adam on the summed negative ELBO; the train set is reshuffled each epoch with a seeded
    generator and sliced into batches from one contiguous permuted copy. Each step is
    :mod:`mnist_vae.step`'s hand-derived one, a replayed CUDA graph on a GPU (``step_kind``
    picks another, see :func:`mnist_vae.step.make_step`).

    Returns {"history": [per-epoch dicts], "train_seconds": ..., "final": last test eval}.
    """
    device = train_x.device
    bs, n = cfg["batch_size"], len(train_x)
    n_batches = math.ceil(n / bs)
    gen = torch.Generator(device=device).manual_seed(cfg["seed"])
    eval_gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 1)
    step = make_step(model, cfg["lr"], bs, step_kind)
    check_step = step_kind != "autograd"
    model.train()
    history = []
    if tracker is not None:
        tracker.capture(model, 0)
    t_start = time.perf_counter()
    done = 0
    data = torch.empty_like(train_x)  # reused: a fresh 188 MB copy each epoch cost 0.05 s of page faults
    for epoch in range(1, cfg["epochs"] + 1):
        t0 = time.perf_counter()
        torch.index_select(train_x, 0, torch.randperm(n, generator=gen, device=device), out=data)
        eps_all = torch.randn((n, model.latent_dim), generator=gen, device=device)
        if check_step:  # the fused step must compute objective.py's loss: checked once, on a copy
            check_against_autograd(model, data[:bs], eps_all[:bs])
            check_step = False
        step.total.zero_()
        bar = tqdm(range(n_batches), desc=f"epoch {epoch}/{cfg['epochs']}", unit="batch",
                   leave=False, mininterval=1.0, disable=not progress)
        for b in bar:
            step.step(data[b * bs:(b + 1) * bs], eps_all[b * bs:(b + 1) * bs])
            done += 1
            if tracker is not None:
                tracker.after_batch(model, done)
        train_loss = step.total.item() / n
        test = evaluate(model, test_x, cfg["eval_batch_size"], eval_gen)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch, "train_loss": train_loss, "test_loss": test["loss"],
                        "test_bce": test["bce"], "test_kl": test["kl"], "seconds": seconds})
        log.info("epoch %2d/%d  train_loss %.2f  test_loss %.2f  (bce %.2f, kl %.2f)  %.1fs",
                 epoch, cfg["epochs"], train_loss, test["loss"], test["bce"], test["kl"], seconds)
    model.eval()
    return {"history": history, "train_seconds": time.perf_counter() - t_start, "final": history[-1]}


@torch.no_grad()
def encode_all(model, x: torch.Tensor, batch_size: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder means and log-variances of a whole set, batched."""
    mus, logvars = [], []
    for start in range(0, len(x), batch_size):
        mu, logvar = model.encode(x[start:start + batch_size])
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus), torch.cat(logvars)



def fit(p: dict[str, Any], model_name: str, data_path: str, progress: bool = True,
        step_kind: str | None = None) -> dict[str, Any]:
    """Everything a train stage computes for one model from validated params and the binarized
    data: the trained model, its metrics, its per-epoch history and the tracking frames.
    The step is `train.step` (fused: the hand-written step, checked against autograd on the
    first batch; autograd: objective.py through autograd); ``step_kind`` overrides it for
    benchmarks (see :func:`mnist_vae.step.make_step`)."""
    from . import model as model_lib
    from .data import load_binarized
    from .params import model_params

    flush_denormals()
    cfg = p["train"]
    arch = model_params(p, model_name)
    device = resolve_device(cfg["device"])
    make_deterministic(cfg["seed"])
    ds = load_binarized(data_path)
    train_x = to_tensor(ds["train_x"][:cfg["train_limit"]], device)
    test_x = to_tensor(ds["test_x"][:cfg["test_limit"]], device)
    net = model_lib.build(arch).to(device)
    n_batches = math.ceil(len(train_x) / cfg["batch_size"]) * cfg["epochs"]
    tracker = make_tracker(net, test_x, p["tracking"], n_batches, cfg["seed"] + 2)
    log.info("%s: %d parameters, %d train / %d test images, device %s", model_name,
             sum(t.numel() for t in net.parameters()), len(train_x), len(test_x), device)
    if step_kind is None:
        step_kind = "autograd" if cfg["step"] == "autograd" else "auto"
    result = train(net, train_x, test_x, cfg, tracker, progress, step_kind)
    final = result["final"]
    metrics = {
        "train_loss": final["train_loss"], "test_loss": final["test_loss"],
        "test_bce": final["test_bce"], "test_kl": final["test_kl"],
        "epochs": cfg["epochs"], "train_seconds": result["train_seconds"],
        "tracking_seconds": tracker.seconds if tracker else 0.0,
        "device": str(device), "parameters": sum(t.numel() for t in net.parameters()),
    }
    return {"model": net, "metrics": metrics, "history": result["history"],
            "frames": tracker.arrays() if tracker else None}
