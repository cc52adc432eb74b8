"""matplotlib figures (mnist_vae.viz.figures) and the page's captions by latent size."""

import numpy as np
import pytest

from mnist_vae.viz import figures


def test_latent_scatter_has_one_point_per_image():
    rng = np.random.default_rng(0)
    mu, labels = rng.normal(size=(1000, 2)), rng.integers(0, 10, size=1000)
    fig = figures.latent_scatter(mu, labels, "t")
    ax = fig.axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 1000
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [str(d) for d in range(10)]


def test_latent_scatter_of_a_1d_latent_is_one_row_per_digit():
    fig = figures.latent_scatter(np.arange(20.0).reshape(20, 1), np.arange(20) % 10, "1-d")
    ax = fig.axes[0]
    offsets = np.concatenate([c.get_offsets() for c in ax.collections])
    assert sorted(offsets[:, 0].tolist()) == list(range(20))  # every mean along x
    rows = np.round(offsets[:, 1]).astype(int)
    assert sorted(rows.tolist()) == sorted((np.arange(20) % 10).tolist())  # each in its digit's row
    assert ax.get_ylabel() == "digit" and ax.get_xlabel() == "z[0] (encoder mean)"


@pytest.mark.parametrize("latent_dim, manifold, scatter", [
    (1, "along the one latent dimension", "along the one latent dimension"),
    (2, "over the two latent dimensions", "test-set encoder means by digit"),
    (3, "first two of 3 latent dimensions", "first two of 3 dimensions"),
])
def test_page_captions_follow_the_latent_size(latent_dim, manifold, scatter):
    from mnist_vae.viz import report

    captions = {path.rsplit("/", 1)[-1]: caption for path, caption, _ in report.model_figures("m", latent_dim)}
    assert manifold in captions["manifold.png"] and scatter in captions["latent-scatter.png"]


def test_upscale_is_nearest_neighbour():
    a = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    assert figures.upscale(a, 2).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
