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


def mirror_env(**extra: str) -> dict:
    """The environment for DVC and stage subprocesses: the venv's tools first on PATH, the
    mirrors, offline."""
    from mnist_vae.workspace import tool_env

    return tool_env(**{"MNIST_MIRROR": MNIST_MIRROR, "FASHION_MNIST_MIRROR": FASHION_MIRROR, "MNIST_VAE_OFFLINE": "1",
                       **extra})


def run_stage(script: str, *args: str, cwd, env: dict | None = None, timeout: float = 300):
    """A stage script (stages/<script>) run as DVC runs it, from `cwd`, with that copy's src."""
    import subprocess
    import sys

    stage_env = env or mirror_env()
    stage_env["PYTHONPATH"] = str(Path(cwd) / "src") if (Path(cwd) / "src").is_dir() else str(REPO / "src")
    script_path = f"stages/{script}" if (Path(cwd) / "stages" / script).exists() else str(REPO / "stages" / script)
    return subprocess.run([sys.executable, script_path, *args], cwd=cwd, env=stage_env, capture_output=True,
                          text=True, timeout=timeout)


def assert_clean_failure(proc, *needles: str, code: int = 2) -> str:
    """The stage failed with exit `code`, one `error:` line holding every needle, no traceback."""
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, err[-3000:])
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert needle in err, (needle, err[-3000:])
    return lines[0]


def binary_images(n: int, seed: int = 0, density: float = 0.2) -> torch.Tensor:
    """n random binary 784-pixel images as float32, seeded."""
    return (torch.rand((n, 784), generator=torch.Generator().manual_seed(seed)) < density).float()
