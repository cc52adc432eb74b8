"""Bernoulli VAEs on binarized MNIST: the package behind the DVC pipeline's stages."""

from .cpu_floor import check as _check_cpu

_check_cpu()  # before any stage imports numpy, which dies with a bare 'Illegal instruction' below the floor

__version__ = "0.1.0"
