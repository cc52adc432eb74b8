"""Matplotlib figures: the latent scatter of a 2-d model and the KL-score histogram; integer
upscaling of pixel images."""

from __future__ import annotations

import numpy as np


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Integer nearest-neighbour upscale of the last two axes."""
    if factor == 1:
        return image
    return image.repeat(factor, axis=-2).repeat(factor, axis=-1)


def latent_scatter(mu: np.ndarray, labels: np.ndarray, title: str):
    """Encoder means coloured by digit, with a legend: the first two dimensions; a 1-d latent as
    what it is, one row of means per digit (:func:`latent_strip`)."""
    if mu.shape[1] == 1:
        return latent_strip(mu[:, 0], labels, title)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab10")
    for digit in range(10):
        sel = labels == digit
        ax.scatter(mu[sel, 0], mu[sel, 1], s=2, alpha=0.5, color=cmap(digit), label=str(digit), rasterized=True)
    ax.set_xlabel("z[0] (encoder mean)")
    ax.set_ylabel("z[1] (encoder mean)")
    ax.set_title(title)
    ax.legend(title="digit", markerscale=6, loc="upper right", fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return fig


def latent_strip(mu: np.ndarray, labels: np.ndarray, title: str):
    """A 1-d latent's encoder means: one row per digit, each mean a point along z[0] (a fixed
    vertical jitter inside the row shows how many there are)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, len(mu))
    fig, ax = plt.subplots(figsize=(8, 6))
    cmap = plt.get_cmap("tab10")
    for digit in range(10):
        sel = labels == digit
        ax.scatter(mu[sel], digit + jitter[sel], s=2, alpha=0.5, color=cmap(digit), rasterized=True)
    ax.set_yticks(range(10))
    ax.set_ylabel("digit")
    ax.set_xlabel("z[0] (encoder mean)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def kl_histogram(scores: np.ndarray, mean: float, std: float, threshold: float, noise_score: float, k: float):
    """Histogram of training KL scores with the fitted normal, the threshold and a noise image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm as normal

    fig, ax = plt.subplots(figsize=(9, 5))
    ax.hist(scores, bins=100, density=True, color="#7aa6c2", label=f"train images (n={len(scores):,})")
    xs = np.linspace(min(scores.min(), 0), max(scores.max(), noise_score) * 1.05, 400)
    ax.plot(xs, normal.pdf(xs, mean, std), color="black", lw=1.5, label=f"normal fit ({mean:.2f} ± {std:.2f})")
    ax.axvline(threshold, color="#d62728", ls="--", label=f"threshold mean + {k:g} std = {threshold:.2f}")
    ax.axvline(noise_score, color="#9467bd", lw=2, label=f"uniform noise image = {noise_score:.2f}")
    ax.set_title("Distribution of KL Divergences in Training Set")
    ax.set_xlabel("KL(q(z|x) || p(z)) [nats]")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
