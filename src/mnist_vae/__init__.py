"""Bernoulli VAEs on binarized MNIST: the package behind the DVC pipeline's stages."""

__version__ = "0.1.0"
