import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_MIRROR = os.environ.get("MNIST_MIRROR", str(REPO.parent / "shared" / "mnist"))
FASHION_MIRROR = os.environ.get("FASHION_MNIST_MIRROR", "/usr/share/datasets/fashion-mnist")


@pytest.fixture
def small_model():
    from mnist_vae.model import VAE

    torch.manual_seed(0)
    return VAE(latent_dim=2, encoder_hidden=[16], decoder_hidden=None).eval()


def raw_params() -> dict:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text())


def params_with(overrides: dict | None = None):
    """The repository's params with dotted-key overrides ({"train.epochs": 1}), validated."""
    from mnist_vae import params

    raw = raw_params()
    for key, value in (overrides or {}).items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return params.validate(raw)
