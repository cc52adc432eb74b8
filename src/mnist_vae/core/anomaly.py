"""Anomaly scores (KL to the prior, negative ELBO), their training-set statistics, thresholds,
AUROC and ROC curves."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import stats

from . import numerics
from .objective import kl_divergence, negative_elbo_samples
from .inference import encode_all



def kl_scores(model, x: torch.Tensor, batch_size: int = 5000) -> np.ndarray:
    """KL(q(z|x) || p(z)) of every image from the encoder mean and log-variance (no sampling)."""
    mu, logvar = encode_all(model, x, batch_size)
    return kl_divergence(mu, logvar).cpu().numpy().astype(np.float64)


def elbo_scores(model, x: torch.Tensor, samples: int, seed: int, batch_size: int = 2000) -> np.ndarray:
    """Per-image negative ELBO: BCE averaged over `samples` seeded z draws plus the exact KL."""
    gen = numerics.generator(seed, x.device)
    parts = [negative_elbo_samples(model, x[s:s + batch_size], samples, gen) for s in range(0, len(x), batch_size)]
    return torch.cat(parts).cpu().numpy().astype(np.float64)


def uniform_noise_images(count: int, seed: int, pixels: int = 784) -> np.ndarray:
    """`count` uniform random binary images (each pixel 1 with probability 1/2), seeded."""
    return np.random.default_rng(seed).integers(0, 2, size=(count, pixels), dtype=np.uint8)


def train_statistics(scores: np.ndarray, k: float) -> dict[str, float]:
    """Mean, std, scipy's normal fit, percentiles and the threshold mean + k * std."""
    fit_mean, fit_std = stats.norm.fit(scores)
    mean, std = float(np.mean(scores)), float(np.std(scores))
    p50, p90, p99, p999 = np.percentile(scores, [50, 90, 99, 99.9])
    return {
        "mean": mean, "std": std, "fit_mean": float(fit_mean), "fit_std": float(fit_std),
        "p50": float(p50), "p90": float(p90), "p99": float(p99), "p99_9": float(p999),
        "k": k, "threshold": threshold(mean, std, k),
    }


def threshold(mean: float, std: float, k: float) -> float:
    return mean + k * std


def fraction_above(scores: np.ndarray, limit: float) -> float:
    """Share of scores strictly above the threshold (flagged as anomalous)."""
    return float(np.mean(np.asarray(scores) > limit))


def z_score(value: float, mean: float, std: float) -> float:
    return (value - mean) / std


def percentile_of(value: float, scores: np.ndarray) -> float:
    """Percentage of training scores at or below `value`."""
    return float(stats.percentileofscore(scores, value, kind="weak"))


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """P(anomalous score > normal score) + 0.5 P(tie): the Mann-Whitney U statistic of the
    anomalous scores divided by n_anomalous * n_normal (scipy counts ties as one half)."""
    u = stats.mannwhitneyu(anomalous, normal, alternative="two-sided").statistic
    return float(u / (len(anomalous) * len(normal)))


def roc_curve(normal: np.ndarray, anomalous: np.ndarray, points: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at `points` thresholds spread over the pooled
    score quantiles, from (1, 1) down to (0, 0); anomalous = score above the threshold."""
    pooled = np.concatenate([normal, anomalous])
    cuts = np.concatenate([[-np.inf], np.quantile(pooled, np.linspace(0, 1, points - 1))])
    normal_sorted, anomalous_sorted = np.sort(normal), np.sort(anomalous)
    fpr = 1 - np.searchsorted(normal_sorted, cuts, side="right") / len(normal)
    tpr = 1 - np.searchsorted(anomalous_sorted, cuts, side="right") / len(anomalous)
    return fpr, tpr


def detection_report(train: np.ndarray, test: np.ndarray, others: dict[str, np.ndarray], k: float) -> dict[str, Any]:
    """For one score: train statistics, the test false-alarm rate at the threshold, and per
    anomaly set its AUROC against the MNIST test set and its detection rate at the threshold."""
    st = train_statistics(train, k)
    report: dict[str, Any] = {"train": st, "test_above_threshold": fraction_above(test, st["threshold"]),
                              "test_mean": float(np.mean(test))}
    for name, scores in others.items():
        report[name] = {"auroc": auroc(test, scores), "detection_rate": fraction_above(scores, st["threshold"]),
                        "mean": float(np.mean(scores)), "std": float(np.std(scores))}
    return report
