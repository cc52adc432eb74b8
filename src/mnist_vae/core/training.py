"""The training loop: Adam on the summed negative ELBO over a dataset held in one tensor, with
optional frame tracking. Library code: it takes arrays and settings and returns results; the
train stage reads and writes the files."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import model as model_lib
from ..io.errors import MnistVaeError
from .inference import evaluate_elbo
from . import machine, numerics
from .runtime import flush_denormals, keep_freed_memory, make_deterministic, resolve_device, to_tensor
from .step import check_against_autograd, make_step
from .tracking import Tracker, make_tracker

log = logging.getLogger(__name__)


class Diverged(MnistVaeError, RuntimeError):
    """Training produced a non-finite loss; raised at the end of that epoch, before anything is
    returned (so a stage writes nothing)."""

    def __init__(self, epoch: int, train_loss: float, test_loss: float):
        self.epoch, self.train_loss, self.test_loss = epoch, train_loss, test_loss
        super().__init__(f"training diverged at epoch {epoch}: train loss {train_loss}, test loss {test_loss}")

    def with_message(self, message: str) -> "Diverged":
        self.args = (message,)
        return self


def train(model, train_x: torch.Tensor, test_x: torch.Tensor, cfg: Any, eval_batch_size: int,
          tracker: Tracker | None = None, progress: bool = True, cuda_graph: bool | None = None) -> dict[str, Any]:
    """Adam on the summed negative ELBO; the train set is reshuffled each epoch with a seeded
    generator and sliced into batches from one contiguous permuted copy. `cfg` holds epochs,
    batch_size, lr, seed and step (the `train` params); each epoch's test loss is evaluated in
    batches of `eval_batch_size` images. A fused step is
    :mod:`mnist_vae.core.step`'s hand-derived one (a replayed CUDA graph on a GPU unless
    ``cuda_graph`` is False), checked against autograd on objective.py's loss on the first batch;
    an autograd step is objective.py's loss through autograd.

    Returns {"history": [per-epoch dicts], "train_seconds": ..., "final": last test eval}.
    Raises :class:`Diverged` at the end of the first epoch whose train or test loss is not
    finite (a NaN in any batch makes the epoch's summed loss NaN).
    """
    device = train_x.device
    bs, n = cfg.batch_size, len(train_x)
    n_batches = math.ceil(n / bs)
    gen = numerics.generator(cfg.seed, device)
    eval_gen = numerics.generator(cfg.seed + 1, device)
    step = make_step(model, cfg.lr, bs, cfg.step, cuda_graph)
    check_step = cfg.step == "fused"
    model.train()
    history = []
    if tracker is not None:
        tracker.capture(model, 0)
    t_start = time.perf_counter()
    done = 0
    data = torch.empty_like(train_x)  # reused: a fresh copy each epoch cost measurable page faults
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        torch.index_select(train_x, 0, numerics.randperm(n, gen, device), out=data)
        eps_all = numerics.randn((n, model.latent_dim), generator=gen, device=device)
        if check_step:  # the fused step must compute objective.py's loss: checked once, on a copy
            check_against_autograd(model, data[:bs], eps_all[:bs])
            check_step = False
        step.total.zero_()
        bar = tqdm(range(n_batches), desc=f"epoch {epoch}/{cfg.epochs}", unit="batch",
                   leave=False, mininterval=1.0, disable=not progress)
        try:
            for b in bar:
                step.step(data[b * bs:(b + 1) * bs], eps_all[b * bs:(b + 1) * bs])
                done += 1
                if tracker is not None:
                    tracker.after_batch(model, done)
        finally:
            bar.close()  # an interrupted bar must not print its own traceback at exit
        train_loss = step.total.item() / n
        test = evaluate_elbo(model, test_x, eval_batch_size, eval_gen)
        seconds = time.perf_counter() - t0
        if not (math.isfinite(train_loss) and math.isfinite(test["loss"])):
            raise Diverged(epoch, train_loss, test["loss"])
        history.append({"epoch": epoch, "train_loss": train_loss, "test_loss": test["loss"],
                        "test_bce": test["bce"], "test_kl": test["kl"], "seconds": seconds})
        log.info("epoch %2d/%d  train_loss %.2f  test_loss %.2f  (bce %.2f, kl %.2f)  %.1fs",
                 epoch, cfg.epochs, train_loss, test["loss"], test["bce"], test["kl"], seconds)
    model.eval()
    return {"history": history, "train_seconds": time.perf_counter() - t_start, "final": history[-1]}


def fit(arch: Any, settings: Any, train_images: np.ndarray, test_images: np.ndarray,
        progress: bool = True, cuda_graph: bool | None = None, name: str = "model") -> dict[str, Any]:
    """Everything a train stage computes for one model: `arch` (a models entry), `settings` (the
    params, of which it reads train, tracking, manifold and evaluate.batch_size), the binarized
    train and test images (N x 784 uint8, as many as the stage passes). Returns the trained model,
    its metrics, its per-epoch history and the tracking frames (None when tracking is off).

    The step is `train.step` (fused: the hand-written step, checked against autograd on the first
    batch; autograd: objective.py through autograd); ``cuda_graph=False`` keeps a GPU's fused step
    eager (benchmarks).
    """
    flush_denormals()
    keep_freed_memory()
    cfg = arch.training(settings.train)  # this model's overrides of the shared train params, if any
    device = resolve_device(cfg.device)
    make_deterministic(cfg.seed)
    train_x = to_tensor(train_images, device)
    test_x = to_tensor(test_images, device)
    net = model_lib.build(arch).to(device)
    n_batches = math.ceil(len(train_x) / cfg.batch_size) * cfg.epochs
    tracker = make_tracker(net, test_x, settings.tracking, settings.manifold, n_batches, cfg.seed + 2)
    parameters = sum(t.numel() for t in net.parameters())
    log.info("%s: %d parameters, %d train / %d test images, batch %d, device %s", name, parameters, len(train_x),
             len(test_x), cfg.batch_size, device)
    try:
        result = train(net, train_x, test_x, cfg, settings.evaluate.batch_size, tracker, progress, cuda_graph)
    except Diverged as err:
        own = arch.train is not None and arch.train.lr is not None
        raise Diverged(err.epoch, err.train_loss, err.test_loss).with_message(
            f"train: model '{name}' diverged at epoch {err.epoch} (train loss {err.train_loss:g}, test loss "
            f"{err.test_loss:g}); the likeliest cause is the learning rate: lower "
            f"{f'models.{name}.train.lr' if own else 'train.lr'} (now {cfg.lr:g}); nothing was written") from None
    final = result["final"]
    # results only: timings differ between any two runs, so they are not metrics (see `timings`)
    metrics = {
        "train_loss": final["train_loss"], "test_loss": final["test_loss"],
        "test_bce": final["test_bce"], "test_kl": final["test_kl"],
        "epochs": cfg.epochs, "device": str(device), "parameters": parameters,
    }
    timings = {"train_seconds": result["train_seconds"], "tracking_seconds": tracker.seconds if tracker else 0.0,
               "epoch_seconds": [h["seconds"] for h in result["history"]], "machine": machine.record(device)}
    return {"model": net, "metrics": metrics, "timings": timings, "history": result["history"],
            "frames": tracker.arrays() if tracker else None}
