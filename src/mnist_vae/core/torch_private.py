"""Every private torch API this package calls, each beside its public fallback.

Private ops are not covered by torch's compatibility promise and exist only on some devices, so
each one is called from here only, only on the devices that have it, and has a public
fallback that computes the same thing (equal within float rounding, or bitwise where said;
tests/core/test_torch_private.py checks each pair). The fallbacks run wherever the private op does
not: on Apple's MPS, on a CPU build of torch without oneDNN (or whose torch._int_mm fails
mnist_vae.core.exact's check against integer arithmetic), or everywhere when forced
(:func:`force_public`, or MNIST_VAE_PUBLIC_OPS=1 in the environment), which the tests do. The
machine record (:func:`record`) says which ran.

| private op | used for | public fallback |
|---|---|---|
| ``torch._int_mm`` | universal mode's exact products on a CPU (int8 x int8 -> int32 GEMMs of 7-bit slices) | the float64 engine (mnist_vae.core.exact, the same bits) |
| ``torch.ops.aten.mkldnn_linear`` | fast mode's evaluation products on a CPU | ``torch.addmm`` |
| ``torch._fused_adam_`` | the fused step's per-layer Adam update (Adam(fused=True)'s kernel) | Adam's update in tensor ops |
| ``aten.threshold_backward.grad_input`` | ReLU's backward in place, into a preallocated buffer | ``masked_fill_`` (bitwise equal) |
| ``torch._C._set_deterministic_algorithms`` | deterministic kernels without importing torch.compile | ``torch.use_deterministic_algorithms`` |
"""

from __future__ import annotations

import math
import os

import torch

__all__ = ["force_public", "forced_public", "int_mm", "mkldnn_linear", "has_onednn", "fused_adam_", "relu_backward_",
           "set_deterministic", "record"]

_forced = {"public": os.environ.get("MNIST_VAE_PUBLIC_OPS", "") not in ("", "0")}


def force_public(on: bool = True) -> None:
    """Use every public fallback from now on (tests; a user debugging a private op)."""
    _forced["public"] = on


def forced_public() -> bool:
    return _forced["public"]


def _private(device: torch.device, devices: tuple[str, ...] = ("cpu", "cuda")) -> bool:
    return not _forced["public"] and device.type in devices


def has_onednn(t: torch.Tensor) -> bool:
    """Whether oneDNN's products can run on this tensor: a CPU tensor, a build with oneDNN."""
    return _private(t.device, ("cpu",)) and torch.backends.mkldnn.is_available()


def int_mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b of int8 matrices with int32 sums (CPU), into `out` where given. No fallback here:
    mnist_vae.core.exact takes it only where its check against integer arithmetic passed and the
    private ops are not forced off (exact.engine()), and its float64 engine gives the same bits
    elsewhere."""
    # looked up at each call, not bound at import: tests replace or remove torch._int_mm
    return torch._int_mm(a, b) if out is None else torch._int_mm(a, b, out=out)


def mkldnn_linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """h W^T + b through aten's mkldnn_linear (a dense-to-oneDNN round trip) where
    :func:`has_onednn`; else torch.addmm."""
    if has_onednn(h):
        return torch.ops.aten.mkldnn_linear(h.to_mkldnn(), weight, bias).to_dense()
    return torch.addmm(bias, h, weight.t())


def fused_adam_(params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
                exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], lr: float, beta1: float, beta2: float,
                eps: float) -> None:
    """One Adam update (no weight decay, no amsgrad) of params in place, at the step counts
    `steps` (already incremented): torch.optim.Adam(fused=True)'s kernel on a CPU or CUDA; else
    the same update in tensor ops, as torch.optim.Adam(foreach=False) computes it."""
    if params and _private(params[0].device):
        torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=beta1, beta2=beta2,
                           weight_decay=0.0, eps=eps, amsgrad=False, maximize=False)
        return
    # Written out rather than torch.optim's functional adam(), which increments the step counts
    # itself; ours are shared by every layer and incremented once per batch.
    for param, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        n = step.item()
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias_correction1, bias_correction2 = 1 - beta1 ** n, 1 - beta2 ** n
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def relu_backward_(grad: torch.Tensor, relu_out: torch.Tensor) -> torch.Tensor:
    """grad zeroed in place where the ReLU's output is 0 (ReLU's backward): aten's
    threshold_backward into grad on a CPU or CUDA, else masked_fill_; bitwise the same."""
    if _private(grad.device):
        return torch.ops.aten.threshold_backward.grad_input(grad, relu_out, 0, grad_input=grad)
    return grad.masked_fill_(relu_out <= 0, 0.0)


def set_deterministic() -> None:
    """Deterministic kernels. torch.use_deterministic_algorithms(True) sets the same flag and
    also torch.compile's (inductor's) config, whose import slows every stage's start-up
    (python -X importtime shows it); no stage compiles, so the eager flag alone is the effect."""
    if _forced["public"]:
        torch.use_deterministic_algorithms(True)
    else:
        torch._C._set_deterministic_algorithms(True)


def record(device: torch.device) -> dict[str, str]:
    """Which path each op takes on this device, for the machine record."""
    probe = torch.empty(0, device=device)
    return {"products": "oneDNN" if has_onednn(probe) else "public (torch.addmm)",
            "int_mm": "torch._int_mm" if _private(device, ("cpu",)) else "public (the float64 engine)",
            "adam": "torch._fused_adam_" if _private(device) else "public (tensor ops)",
            "relu_backward": "aten.threshold_backward" if _private(device) else "public (masked_fill_)"}
