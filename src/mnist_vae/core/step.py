"""The training step: the negative ELBO of a batch, its gradients written out by hand into
preallocated buffers, and Adam's fused update applied layer by layer during the backward pass.

Why not autograd: this model is five small matrix products deep, and on a CPU the autograd step
spends much of its time outside the matrix products (graph bookkeeping, dozens of small ops, a
fresh allocation for every intermediate; `make bench` measures how much). The hand-written step computes the
same function and the same gradients with every intermediate in a buffer reused across steps;
benchmarks/train_speed.py measures both side by side (README, performance). Because nothing is
allocated and nothing waits on the host, the same step can be captured once as a CUDA graph and
replayed (:class:`CudaGraphStep`). tests/core/test_step.py checks the loss and every gradient against
autograd on :func:`mnist_vae.core.objective.batch_loss`.

The gradients, for logits l = decoder(z), z = mu + sigma * eps, sigma = exp(logvar / 2):
  d BCE / d l          = sigmoid(l) - x
  d loss / d mu        = dz + mu                                   (KL term: mu)
  d loss / d logvar    = dz * eps * sigma / 2 + (sigma^2 - 1) / 2  (KL term: (exp(logvar) - 1) / 2)
and through each Linear+ReLU the usual dW = g^T h_in, db = sum(g), g_in = (g W) * [h_in > 0].
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import exact, numerics, objective, torch_private
from .numerics import linear_into
from ..io.errors import StepMismatchError
from .model import VAE

log = logging.getLogger(__name__)


@dataclass
class _Buffers:
    """Every intermediate of one step for one batch size."""

    enc: list[torch.Tensor]      # post-ReLU encoder activations
    enc_grad: list[torch.Tensor]
    head: torch.Tensor           # [mu | logvar], n x 2D
    head_grad: torch.Tensor
    std: torch.Tensor
    z: torch.Tensor
    z_grad: torch.Tensor
    dec: list[torch.Tensor]      # post-ReLU decoder activations
    dec_grad: list[torch.Tensor]
    logits: torch.Tensor
    logits_grad: torch.Tensor    # also the loss's scratch before the gradient overwrites it


def _linears(seq: nn.Sequential, last_activated: bool) -> list[nn.Linear]:
    """The Linear layers of a Linear, ReLU, Linear, ReLU, ... stack (checked: the step relies on it)."""
    mods = list(seq)
    lin = mods[0::2]
    act = mods[1::2]
    expected = len(lin) if last_activated else len(lin) - 1
    if not all(isinstance(m, nn.Linear) for m in lin) or len(act) != expected or \
            not all(isinstance(m, nn.ReLU) for m in act):
        raise TypeError(f"expected alternating Linear and ReLU layers, got {seq}")
    return lin


class LayerAdam:
    """Adam (PyTorch's defaults but lr) updating one layer at a time, as soon as its gradients exist.

    The update is torch.optim.Adam(fused=True)'s own kernel, ``torch._fused_adam_``
    (mnist_vae.core.torch_private, with its fallback), on the same
    state (exp_avg, exp_avg_sq, a step count on the parameters' device), so it is bitwise the same
    update (tests/core/test_step.py). It is called per layer from inside the backward pass, while that
    layer's weights and gradients are still in cache, rather than as one optimizer.step() after
    it (the benchmark, `make bench`, measures the epoch).
    """

    def __init__(self, layers: list[nn.Linear], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, betas, eps
        device = layers[0].weight.device
        self.steps = torch.zeros((), dtype=torch.float32, device=device)
        self.universal = numerics.universal() and layers[0].weight.dtype == torch.float32
        self.powers = [1.0, 1.0]  # beta1^t, beta2^t by repeated multiplication (pow() is libm's)
        self.state = {}
        for lin in layers:
            params = [lin.weight, lin.bias]
            self.state[lin] = (params, [p.grad for p in params], [torch.zeros_like(p) for p in params],
                               [torch.zeros_like(p) for p in params], [self.steps] * len(params))

    def begin_step(self) -> None:
        self.steps.add_(1)
        self.powers = [self.powers[0] * self.betas[0], self.powers[1] * self.betas[1]]

    def update(self, lin: nn.Linear) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = self.state[lin]
        if self.universal:
            return self._universal_update(params, grads, exp_avgs, exp_avg_sqs)
        torch_private.fused_adam_(params, grads, exp_avgs, exp_avg_sqs, steps, lr=self.lr, beta1=self.betas[0],
                                  beta2=self.betas[1], eps=self.eps)

    def _universal_update(self, params, grads, exp_avgs, exp_avg_sqs) -> None:
        """Adam's update one IEEE operation at a time (the fused kernel's arithmetic is its
        compiler's: it may fuse multiply-adds on one CPU and not on another); sqrt through float64."""
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - self.powers[0])
        root_correction = math.sqrt(1 - self.powers[1])
        if exact.kernels_on() and params[0].device.type == "cpu":  # the compiled twin, bitwise the same
            from . import exact_kernels

            f32 = np.float32
            for param, grad, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
                exact_kernels.adam_(param.data.view(-1).numpy(), grad.view(-1).numpy(), m.view(-1).numpy(),
                                    v.view(-1).numpy(), f32(beta1), f32(beta2), f32(1 - beta1), f32(1 - beta2),
                                    f32(step_size), f32(root_correction), f32(self.eps))
            return
        for param, grad, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
            m.mul_(beta1).add_(grad * (1 - beta1))
            v.mul_(beta2).add_((grad * grad).mul_(1 - beta2))
            m.masked_fill_(m.abs() < exact.TINY, 0.0)  # no subnormal state, by an exact comparison
            v.masked_fill_(v < exact.TINY, 0.0)
            denom = exact.sqrt(v).div_(root_correction).add_(self.eps)
            param.sub_((m * step_size).div_(denom))


class ElboStep:
    """Adam on the summed negative ELBO of a batch, with hand-derived gradients.

    ``step(x, eps)`` does one update and adds the batch's loss to ``total`` (a device scalar, so
    no host sync per step). The parameters' ``.grad`` tensors are owned by this object and
    overwritten each step; each layer is updated by :class:`LayerAdam` as soon as its gradients
    and its input gradient are computed (the input gradient needs the old weights).
    """

    def __init__(self, model: VAE, lr: float):
        self.model = model
        self.latent_dim = model.latent_dim
        self.encoder = _linears(model.encoder, last_activated=True)
        self.decoder = _linears(model.decoder, last_activated=False)
        self.head = model.head
        params = list(model.parameters())
        for p in params:
            p.grad = torch.zeros_like(p)
        self.adam = LayerAdam([*self.encoder, self.head, *self.decoder], lr)
        self.total = torch.zeros((), device=params[0].device, dtype=params[0].dtype)
        self._buffers: dict[int, _Buffers] = {}

    def buffers(self, n: int) -> _Buffers:
        if n not in self._buffers:
            p = self.head.weight
            new = lambda width: torch.empty((n, width), device=p.device, dtype=p.dtype)  # noqa: E731
            enc = [new(m.out_features) for m in self.encoder]
            dec = [new(m.out_features) for m in self.decoder[:-1]]
            self._buffers[n] = _Buffers(
                enc=enc, enc_grad=[torch.empty_like(t) for t in enc],
                head=new(2 * self.latent_dim), head_grad=new(2 * self.latent_dim),
                std=new(self.latent_dim), z=new(self.latent_dim), z_grad=new(self.latent_dim),
                dec=dec, dec_grad=[torch.empty_like(t) for t in dec],
                logits=new(self.decoder[-1].out_features), logits_grad=new(self.decoder[-1].out_features))
        return self._buffers[n]

    @torch.no_grad()
    def forward_backward(self, x: torch.Tensor, eps: torch.Tensor, update: bool = False) -> None:
        """Fill every parameter's .grad with the gradient of the batch's summed negative ELBO
        and add that loss to ``total``; with ``update``, also apply Adam layer by layer."""
        if update:
            self.adam.begin_step()
        b = self.buffers(x.shape[0])
        d = self.latent_dim
        # forward
        h = x
        for lin, out in zip(self.encoder, b.enc):
            linear_into(out, h, lin.weight, lin.bias).relu_()
            h = out
        linear_into(b.head, h, self.head.weight, self.head.bias)
        mu, logvar = b.head[:, :d], b.head[:, d:]
        exact_ops = numerics.universal() and x.dtype == torch.float32
        if exact_ops:  # universal numerics: exact.* and single IEEE operations (no addcmul's fused multiply-add)
            b.std.copy_(exact.exp(logvar * 0.5))
            torch.mul(b.std, eps, out=b.z).add_(mu)
        else:
            torch.mul(logvar, 0.5, out=b.std).exp_()
            torch.addcmul(mu, b.std, eps, out=b.z)
        h = b.z
        for lin, out in zip(self.decoder[:-1], b.dec):
            linear_into(out, h, lin.weight, lin.bias).relu_()
            h = out
        last = self.decoder[-1]
        linear_into(b.logits, h, last.weight, last.bias)
        # loss: BCE = sum(softplus(l) - x * l), KL = sum(mu^2 + sigma^2 - 1 - logvar) / 2
        if exact_ops:
            softplus = exact.tree_sum(objective.softplus_row_sums(b.logits, b.logits_grad), 0)
            self.total.add_(softplus).sub_(exact.tree_sum((x * b.logits).view(-1), 0))
            kl = exact.tree_sum((mu * mu).view(-1), 0) + exact.tree_sum((b.std * b.std).view(-1), 0) \
                - exact.tree_sum(logvar.reshape(-1), 0) - mu.numel()
            self.total.add_(kl * 0.5)
            g = b.logits_grad.copy_(exact.sigmoid(b.logits)).sub_(x)
        else:
            softplus = objective.softplus_row_sums(b.logits, b.logits_grad).sum()  # logits_grad as scratch
            self.total.add_(softplus).sub_(torch.dot(x.reshape(-1), b.logits.view(-1)))
            kl = mu.square().sum() + b.std.square().sum() - logvar.sum() - mu.numel()
            self.total.add_(kl, alpha=0.5)
            g = torch.sigmoid(b.logits, out=b.logits_grad).sub_(x)
        # backward through the decoder
        inputs = [b.z, *b.dec]
        grads = [b.z_grad, *b.dec_grad]
        for k in reversed(range(len(self.decoder))):
            g = self._linear_backward(self.decoder[k], g, inputs[k], grads[k], k > 0, update)
        # through the reparameterisation and the KL term, into [d mu | d logvar]
        dmu, dlogvar = b.head_grad[:, :d], b.head_grad[:, d:]
        torch.add(b.z_grad, mu, out=dmu)
        if exact_ops:
            torch.mul(b.z_grad, eps, out=dlogvar).mul_(b.std).add_(b.std * b.std).sub_(1).mul_(0.5)
        else:
            torch.mul(b.z_grad, eps, out=dlogvar).mul_(b.std).addcmul_(b.std, b.std).sub_(1).mul_(0.5)
        g = self._linear_backward(self.head, b.head_grad, b.enc[-1], b.enc_grad[-1], True, update)
        inputs = [x, *b.enc]
        grads = [None, *b.enc_grad]
        for k in reversed(range(len(self.encoder))):
            g = self._linear_backward(self.encoder[k], g, inputs[k], grads[k], True, update)

    def _linear_backward(self, lin: nn.Linear, g: torch.Tensor, h_in: torch.Tensor, g_in: torch.Tensor | None,
                         relu: bool, update: bool) -> torch.Tensor | None:
        """Weight and bias gradients of ``lin`` from its output gradient g; returns the gradient
        with respect to its input (through the ReLU that produced h_in when ``relu``). With
        ``update``, Adam then updates ``lin`` (after g_in, which needs the old weights)."""
        linear_into(lin.weight.grad, g.t(), h_in.t())  # g^T h_in
        if numerics.universal() and g.dtype == torch.float32:
            lin.bias.grad.copy_(exact.tree_sum(g, 0))
        else:
            torch.sum(g, dim=0, out=lin.bias.grad)
        if g_in is not None:
            linear_into(g_in, g, lin.weight.t())  # g W
            if relu:  # ReLU's backward, in place: zero where the ReLU's output is 0
                torch_private.relu_backward_(g_in, h_in)
        if update:
            self.adam.update(lin)
        return g_in

    def step(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        self.forward_backward(x, eps, update=True)


class CudaGraphStep:
    """An :class:`ElboStep` on CUDA, captured once as a CUDA graph and replayed for every full batch.

    The first full batch runs eagerly (a real training step, on a side stream as PyTorch's graph
    capture wants, so that lazily created library state exists before capture), and the step is
    captured right after it; from then on a step is two copies into the graph's input buffers
    and one replay, instead of some fifty kernel launches from Python. Other batch sizes (the last, partial batch of an epoch)
    run eagerly: same kernels, same buffers for the parameters, gradients and Adam state
    (whose step count lives on the GPU, so the captured update reads the current one).
    """

    def __init__(self, inner: ElboStep, batch_size: int):
        self.inner = inner
        self.batch_size = batch_size
        self.total = inner.total
        self.graph: torch.cuda.CUDAGraph | None | bool = None  # None: not captured yet; False: failed
        self._x: torch.Tensor | None = None
        self._eps: torch.Tensor | None = None

    def step(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        if x.shape[0] != self.batch_size or self.graph is False:
            self.inner.step(x, eps)
        elif self.graph is None:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.inner.step(x, eps)
            torch.cuda.current_stream().wait_stream(side)
            self._capture(x, eps)
        else:
            self._x.copy_(x)
            self._eps.copy_(eps)
            self.graph.replay()

    def _capture(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        self._x, self._eps = torch.empty_like(x), torch.empty_like(eps)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.inner.step(self._x, self._eps)
        except RuntimeError as e:  # capture does not run the step, so the training is unharmed
            log.warning("CUDA graph capture failed (%s); training with the eager step", e)
            self.graph = False
        else:
            self.graph = graph


class AutogradStep:
    """The same step through autograd: forward with the model, :func:`batch_loss`, backward,
    fused Adam. The plain version, kept as the oracle for tests and the benchmark's baseline."""

    def __init__(self, model: VAE, lr: float):
        self.model = model
        p = next(model.parameters())
        # the fused kernel where torch has it for the device (CPU, CUDA), else torch's default
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=p.device.type in ("cpu", "cuda") or None)
        self.total = torch.zeros((), device=p.device, dtype=p.dtype)

    def step(self, x: torch.Tensor, eps: torch.Tensor) -> None:
        logits, mu, logvar = self.model(x, eps)
        bce, kl = objective.batch_loss(logits, x, mu, logvar)
        loss = bce + kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.total += loss.detach()


def check_against_autograd(model: VAE, x: torch.Tensor, eps: torch.Tensor, rtol: float = 1e-6) -> None:
    """Raise StepMismatchError unless the hand-written step's loss and every gradient equal
    autograd's on :func:`mnist_vae.core.objective.batch_loss` for this batch.

    Both run in float64 on a copy of the model (the model, its optimizer state and the random
    streams are untouched), where the two agree to rounding far below `rtol`; float32 rounding
    would need a loose tolerance that could hide a small change to the objective. One batch,
    once per fit, is cheap. This is what keeps one objective: an edit to objective.py that step.py
    does not follow stops the fit instead of training on the old objective unnoticed.
    """
    # on the model's device where it has float64; Apple's MPS has none, so there on the CPU
    device = x.device if x.device.type != "mps" else torch.device("cpu")
    ref = copy.deepcopy(model).to(device=device, dtype=torch.float64)
    mine = copy.deepcopy(ref)
    x64, eps64 = x.to(device=device, dtype=torch.float64), eps.to(device=device, dtype=torch.float64)
    with torch.enable_grad():
        logits, mu, logvar = ref(x64, eps64)
        bce, kl = objective.batch_loss(logits, x64, mu, logvar)
        (bce + kl).backward()
    fused = ElboStep(mine, lr=0.0)
    fused.forward_backward(x64, eps64)
    want, got = (bce + kl).item(), fused.total.item()
    problems = []
    if abs(got - want) > rtol * abs(want):
        problems.append(f"loss {got:.8g} against objective.py's {want:.8g}")
    for (name, p_ref), p_mine in zip(ref.named_parameters(), mine.parameters()):
        scale = p_ref.grad.abs().max().item()
        err = (p_mine.grad - p_ref.grad).abs().max().item()
        if err > rtol * max(scale, 1e-12):
            problems.append(f"gradient of {name} off by {err:.3g} (largest {scale:.3g})")
    if problems:
        raise StepMismatchError(
            "the fused training step (src/mnist_vae/core/step.py) disagrees with the objective "
            f"(src/mnist_vae/core/objective.py) on the first batch: {'; '.join(problems[:3])}. "
            "Set `train.step: autograd` in params.yaml to train on objective.py through autograd, "
            "or make step.py compute the same objective.")


STEP_KINDS = ("fused", "autograd")  # params.yaml's train.step


def make_step(model: VAE, lr: float, batch_size: int, kind: str = "fused", cuda_graph: bool | None = None):
    """A training step for the model's device: 'fused', the hand-written step, or 'autograd'.
    The fused step is replayed as a CUDA graph on a GPU unless ``cuda_graph`` is False
    (benchmarks, tests); True asks for one and needs a GPU."""
    if kind not in STEP_KINDS:
        raise ValueError(f"step kind must be one of {STEP_KINDS}, got {kind!r}")
    if kind == "autograd":
        if numerics.universal():
            numerics.drop_promise("train.step is autograd, which differentiates torch's own ops (train.step: fused "
                                  "keeps it)")
        return AutogradStep(model, lr)
    on_cuda = next(model.parameters()).device.type == "cuda"
    if on_cuda and numerics.universal():
        cuda_graph = False  # Adam's bias corrections are host floats each step, which a graph would freeze
    if cuda_graph and not on_cuda:
        raise ValueError("a CUDA-graph step needs the model on a CUDA device")
    inner = ElboStep(model, lr)
    return CudaGraphStep(inner, batch_size) if on_cuda and cuda_graph is not False else inner
