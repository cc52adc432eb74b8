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
