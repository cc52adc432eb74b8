import numpy as np
import pytest
import torch

from mnist_vae.core import anomaly


def test_kl_scores_on_hand_computed_posteriors():
    """KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar), by hand."""
    import math

    class Fixed:
        def encode(self, x):  # each image carries its index in pixel 0
            idx = x[:, 0].long()
            mu = torch.tensor([[1.0, 0.0], [0.0, 0.0], [2.0, -1.0]])[idx]
            logvar = torch.tensor([[0.0, 0.0], [math.log(2), 0.0], [0.0, -1.0]])[idx]
            return mu, logvar

    x = torch.arange(3.0).reshape(3, 1).expand(3, 784)
    scores = anomaly.kl_scores(Fixed(), x, batch_size=2)  # batches of 2 and 1
    # image 1: 0.5 * (1 + 1 - 1 - 0) = 0.5; image 2: 0.5 * (2 - 1 - ln 2) = 0.5 - 0.5 ln 2
    # image 3: 0.5 * ((4 + 1 - 1 - 0) + (1 + e^-1 - 1 + 1)) = 0.5 * (5 + e^-1)
    assert scores.tolist() == pytest.approx([0.5, 0.5 - 0.5 * math.log(2), 0.5 * (5 + math.exp(-1))], rel=1e-6)
    assert scores.dtype == np.float64


def test_auroc_hand_worked_with_ties():
    normal = np.array([1.0, 2.0, 3.0])
    anomalous = np.array([2.0, 4.0])
    # pairs (anomalous > normal): 2 vs {1: win, 2: tie, 3: loss} = 1.5; 4 vs all = 3 -> 4.5 / 6
    assert anomaly.auroc(normal, anomalous) == pytest.approx(0.75)
    assert anomaly.auroc(normal, np.array([10.0])) == 1.0
    assert anomaly.auroc(np.array([5.0, 5.0]), np.array([5.0])) == 0.5
    assert anomaly.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0


def test_roc_curve_end_points_and_area():
    rng = np.random.default_rng(0)
    normal, anomalous = rng.normal(0, 1, 2000), rng.normal(1.5, 1, 2000)
    fpr, tpr = anomaly.roc_curve(normal, anomalous)
    assert (fpr[0], tpr[0]) == (1.0, 1.0) and (fpr[-1], tpr[-1]) == (0.0, 0.0)
    area = -np.trapezoid(tpr, fpr)
    assert area == pytest.approx(anomaly.auroc(normal, anomalous), abs=0.01)


def test_threshold_and_detection_on_known_array():
    train = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # mean 3, population std sqrt(2)
    st = anomaly.train_statistics(train, k=2.0)
    assert st["mean"] == 3.0 and st["std"] == pytest.approx(np.sqrt(2))
    assert st["fit_mean"] == pytest.approx(3.0) and st["fit_std"] == pytest.approx(np.sqrt(2))
    assert st["threshold"] == pytest.approx(3 + 2 * np.sqrt(2))
    assert st["p50"] == 3.0
    assert anomaly.fraction_above(np.array([5.0, 5.82, 5.83, 9.0]), st["threshold"]) == 0.5
    assert anomaly.z_score(3 + 3 * np.sqrt(2), st["fit_mean"], st["fit_std"]) == pytest.approx(3.0)
    assert anomaly.percentile_of(4.0, train) == 80.0
    report = anomaly.detection_report(train, np.array([0.0, 10.0]), {"noise": np.array([10.0, 20.0])}, k=2.0)
    assert report["test_above_threshold"] == 0.5
    assert report["noise"]["detection_rate"] == 1.0 and report["noise"]["auroc"] == pytest.approx(0.875)
    # the image-to-image spread, which judges one image's score against the set's mean
    assert report["noise"]["mean"] == 15.0 and report["noise"]["std"] == 5.0


def test_uniform_noise_is_seeded_binary():
    a, b = anomaly.uniform_noise_images(3, 7), anomaly.uniform_noise_images(3, 7)
    assert np.array_equal(a, b) and set(np.unique(a)) == {0, 1} and a.shape == (3, 784)
    assert abs(a.mean() - 0.5) < 0.05
