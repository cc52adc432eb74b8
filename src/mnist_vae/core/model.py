"""The Bernoulli VAE: an MLP encoder to a diagonal Gaussian q(z|x), an MLP decoder to logits."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import numerics
from ..io.artifacts import read_checkpoint, restore_hint, write_checkpoint
from ..io.errors import DataError

IMAGE_PIXELS = 784


class Linear(nn.Linear):
    """nn.Linear whose product is :func:`mnist_vae.core.numerics.linear`: universal mode's exact
    product (the same bits on every CPU) where no autograd needs it, F.linear's otherwise. Same
    parameters and init."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return numerics.linear(x, self.weight, self.bias)

    def reset_parameters(self) -> None:
        """nn.Linear's init (uniform in +-1/sqrt(fan_in), weights and bias); in universal mode
        from torch.rand in two exact steps (exact.uniform), since uniform_ differs by CPU."""
        if not numerics.universal():
            return super().reset_parameters()
        from . import exact

        bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        with torch.no_grad():
            self.weight.copy_(exact.uniform(self.weight.shape, -bound, bound))
            if self.bias is not None:
                self.bias.copy_(exact.uniform(self.bias.shape, -bound, bound))


def _mlp(sizes: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [Linear(fan_in, fan_out), nn.ReLU()]
    return layers


class VAE(nn.Module):
    """Encoder: Linear+ReLU per hidden size, then one fused Linear head giving [mu, logvar].

    The fused head is the reference's two Linear heads side by side (same parameters, same
    initialisation distribution: nn.Linear's init depends only on fan-in) in one matmul.
    The decoder mirrors the hidden sizes and ends in a Linear to 784 logits; apply a sigmoid
    (``decode``) where Bernoulli probabilities are needed.
    """

    def __init__(self, latent_dim: int, encoder_hidden: list[int], decoder_hidden: list[int] | None = None,
                 input_dim: int = IMAGE_PIXELS):
        super().__init__()
        decoder_hidden = list(reversed(encoder_hidden)) if decoder_hidden is None else list(decoder_hidden)
        self.config = {
            "latent_dim": latent_dim,
            "encoder_hidden": list(encoder_hidden),
            "decoder_hidden": decoder_hidden,
            "input_dim": input_dim,
        }
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(*_mlp([input_dim, *encoder_hidden]))
        self.head = Linear(([input_dim, *encoder_hidden])[-1], 2 * latent_dim)
        self.decoder = nn.Sequential(*_mlp([latent_dim, *decoder_hidden]),
                                     Linear(([latent_dim, *decoder_hidden])[-1], input_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.encoder(x)).chunk(2, dim=-1)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Bernoulli probabilities of the 784 pixels."""
        return numerics.sigmoid(self.decoder(z))

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return mu + numerics.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(decoder logits, mu, logvar) for one z sample per image, z = mu + sigma * eps."""
        mu, logvar = self.encode(x)
        return self.decode_logits(self.reparameterize(mu, logvar, eps)), mu, logvar


def build(arch: Any) -> VAE:
    """A VAE from a `models` params entry."""
    return VAE(arch.latent_dim, list(arch.encoder_hidden), arch.decoder_sizes)


def checkpoint(model: VAE, **extra: Any) -> dict[str, Any]:
    """What is saved: the config needed to rebuild the model, its weights, and `extra` (JSON-able)."""
    return {"config": dict(model.config), "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            **extra}


def save_checkpoint(path, ckpt: dict[str, Any]) -> None:
    """A :func:`checkpoint` as safetensors: the weights as tensors, the rest as its description."""
    write_checkpoint(path, ckpt["state_dict"], {k: v for k, v in ckpt.items() if k != "state_dict"})


def read(path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The :func:`checkpoint` dict saved at `path` (weights on `device`)."""
    tensors, meta = read_checkpoint(path, device)
    return {**meta, "state_dict": tensors}


def load_checkpoint(path, device: str | torch.device = "cpu") -> VAE:
    """A model saved by :func:`save_checkpoint`; DataError naming the file when it is missing,
    unreadable, not what dvc.lock records, or not a checkpoint of this model."""
    ckpt = read(path, device)
    try:
        cfg = ckpt["config"]
        model = VAE(cfg["latent_dim"], cfg["encoder_hidden"], cfg["decoder_hidden"], cfg["input_dim"])
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise DataError(f"{path}: not a checkpoint of this project's VAE ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120]}); {restore_hint(path)}") from None
    bad = [name for name, tensor in model.state_dict().items() if not torch.isfinite(tensor).all()]
    if bad:
        raise DataError(f"{path}: weights {', '.join(bad[:3])} hold NaN or infinity (the run diverged); "
                        f"{restore_hint(path)}")
    return model.to(device).eval()
