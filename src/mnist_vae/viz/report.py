"""The reproduction report: its tables (the reference's numbers beside ours, per-epoch losses,
evaluation, anomaly study, GIFs), its two plots (learning curves with the reference's points,
ROC curves) and the static page that shows them with the pipeline's own figures and GIFs.

The page (templates/report.html.j2) loads nothing from the network: images are relative paths
next to it, styles inline. It has one section per model in params.yaml's `models`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io import layout

# Everything on the page about one model's figures, in order (render-grids' outputs).
# (file stem, caption, CSS class: "pixels" for decoded images, drawn without smoothing)
MODEL_FIGURES = (
    ("manifold", "latent manifold (decoded grid over the two latent dimensions)", "pixels"),
    ("latent-scatter", "test-set encoder means by digit", "plot"),
    ("reconstructions", "test images (top) and their reconstructions (bottom)", "pixels"),
    ("prior-samples", "samples from the prior, decoded", "pixels"),
)
ANOMALY_FIGURES = (("kl-histogram", "KL scores of the training set", "plot"),
                   ("noise-image", "the uniform noise image", "pixels small"))


def page_path(path: str) -> str:
    """A path under reports/ as the page (reports/index.html) links it."""
    return path.removeprefix("reports/")


def latent_captions(latent_dim: int) -> dict[str, str]:
    """The manifold's and the scatter's captions for a latent of this size."""
    if latent_dim == 1:
        return {"manifold": "latent manifold (decoded images along the one latent dimension)",
                "latent-scatter": "test-set encoder means by digit, along the one latent dimension"}
    if latent_dim == 2:
        return {}
    return {"manifold": f"latent manifold (decoded grid over the first two of {latent_dim} latent dimensions, "
                        "the others at 0)",
            "latent-scatter": f"test-set encoder means by digit (the first two of {latent_dim} dimensions)"}


def model_figures(model: str, latent_dim: int = 2) -> list[tuple[str, str, str]]:
    """(path relative to reports/, caption, CSS class) of a model's figures; the captions follow
    the latent size."""
    captions = latent_captions(latent_dim)
    return [(page_path(layout.figure(model, stem)), captions.get(stem, caption), css)
            for stem, caption, css in MODEL_FIGURES]


def anomaly_figures(model: str) -> list[tuple[str, str, str]]:
    return [(page_path(layout.anomaly_figure(model, stem)), caption, css) for stem, caption, css in ANOMALY_FIGURES]


def describe_model(arch) -> str:
    """One line on a model's settings in params.yaml (its `models` entry)."""
    text = (f"{arch.latent_dim}-d latent; encoder hidden layers {list(arch.encoder_hidden)}, "
            f"decoder {arch.decoder_sizes}")
    overrides = arch.train.model_dump(exclude_none=True) if arch.train is not None else {}
    if overrides:
        text += "; trained with " + ", ".join(f"{k} {v}" for k, v in overrides.items())
    return text + "."


def timing_note(train: dict[str, Any], evaluate: dict[str, Any], device: str) -> str:
    """How long the model's stages took in this run (the timings files, not metrics)."""
    return (f"This run: trained in {train['train_seconds']:.1f} s on {device or 'an unknown device'} "
            f"(frame tracking {train['tracking_seconds']:.1f} s of it), evaluated in "
            f"{evaluate['eval_seconds']:.1f} s.")


def gif_rows(model: str, summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """render-gifs' gifs.json of one model as rows, each with the GIF's path on the page."""
    return [dict(name=name, path=page_path(f"{layout.gifs_dir(model)}/{name}"), **row) for name, row in summary.items()]


def epoch_rows(reference: dict[str, dict[str, list[float]]], histories: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model and epoch: the reference's train and test loss beside ours (None past either
    run's last epoch)."""
    rows = []
    for model, ref in reference.items():
        hist = histories.get(model)
        if hist is None:
            continue
        ours = {int(e): (tr, te) for e, tr, te in zip(hist["epoch"], hist["train_loss"], hist["test_loss"])}
        for epoch in range(1, max(len(ref["test_loss"]), max(ours, default=0)) + 1):
            mine = ours.get(epoch, (None, None))
            theirs = (ref["train_loss"][epoch - 1], ref["test_loss"][epoch - 1]) if epoch <= len(ref["test_loss"]) else (None, None)
            rows.append({"model": model, "epoch": epoch, "ref_train": theirs[0], "train": mine[0],
                         "ref_test": theirs[1], "test": mine[1],
                         "test_diff": None if None in (mine[1], theirs[1]) else round(mine[1] - theirs[1], 2) + 0.0})
    return rows


def anomaly_rows(studies: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per anomaly study and score: the training-set fit, threshold, AUROC and detection rate
    against noise and Fashion-MNIST."""
    rows = []
    for name, m in studies.items():
        for score in layout.SCORES:
            s = m[score]
            rows.append({"study": name, "model": m.get("model", ""), "score": score,
                         "fit_mean": s["train"]["fit_mean"], "fit_std": s["train"]["fit_std"],
                         "threshold": s["train"]["threshold"], "test_above": s["test_above_threshold"],
                         **{f"{o}_{k}": s[o][v] for o in layout.OUTLIER_SETS
                            for k, v in (("auroc", "auroc"), ("rate", "detection_rate"))},
                         "noise_image": m["noise_image"][score]})
    return rows


def learning_curves(histories: dict[str, Any], reference: dict[str, dict[str, list[float]]]):
    """One panel per model: our train and test loss per epoch as lines, the reference's as
    points (hollow: train, filled: test)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(histories)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        hist = histories[model]
        # small markers: a one-epoch run (a fast profile) still shows its point
        ax.plot(hist["epoch"], hist["train_loss"], ".-", color="#1f77b4", lw=1.8, label="ours, train")
        ax.plot(hist["epoch"], hist["test_loss"], ".-", color="#d62728", lw=1.8, label="ours, test")
        ref = reference.get(model)
        if ref is not None:
            epochs = np.arange(1, len(ref["test_loss"]) + 1)
            ax.plot(epochs, ref["train_loss"], "o", mfc="none", color="#1f77b4", label="reference, train")
            ax.plot(epochs, ref["test_loss"], "o", color="#d62728", label="reference, test")
        ax.set_title(model)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss per image (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_curves(curves: dict[str, dict[str, Any]]):
    """Two panels (KL score, negative ELBO): one line per study and outlier set, from the
    anomaly stages' ROC tables ({"<study>": {"kl-noise": frame with fpr, tpr, ...}})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    if not curves:
        fig.text(0.5, 0.5, "no anomaly study: anomaly.models in params.yaml is empty", ha="center", va="center")
        for ax in axes:
            ax.set_axis_off()
        return fig
    titles = {layout.KL: "score: KL(q(z|x) || p(z))", layout.NEG_ELBO: "score: negative ELBO"}
    for ax, score in zip(axes, layout.SCORES):
        title = titles[score]
        for study, tables in curves.items():
            for outliers, style in zip(layout.OUTLIER_SETS, (":", "-")):
                table = tables[f"{score}-{outliers}"]
                ax.plot(table["fpr"], table["tpr"], style, lw=1.6, label=f"{study} vs {outliers}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("false positive rate (MNIST test)")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=8, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def sweep_section(doc: dict[str, Any] | None, table_html: str, figure: str) -> dict[str, Any] | None:
    """The page's view of the latent-size study's summary (tools/study.py collect: summary.json,
    its table as HTML, its figure under reports/); None where it has not been run."""
    if doc is None:
        return None
    return dict(about=doc["study"]["about"], set=doc["study"]["set"], table=table_html, figure=page_path(figure),
                settings=len(doc["settings"]), runs=sum(len(s["runs"]) for s in doc["settings"]))


def num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


# The page's HTML and CSS, shipped with the package (a dep of the report stage in dvc.yaml).
TEMPLATE = "templates/report.html.j2"


def page(**context: Any) -> str:
    """The HTML page; `context` holds what the template names (see stages/report.py)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("mnist_vae.viz", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template(TEMPLATE.split("/", 1)[1]).render(num=num, **context)


def linked_files(html: str) -> list[str]:
    """The src of every <img> and <script> and the href of every <link> on a page, in order."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Links(HTMLParser):
        def handle_starttag(self, tag, attrs):
            key = {"img": "src", "script": "src", "link": "href"}.get(tag)
            value = dict(attrs).get(key) if key else None
            if value:
                found.append(value)

    Links().feed(html)
    return found


def markdown_html(text: str) -> str:
    """Markdown (the benchmark's tables) as HTML, by markdown-it-py; raw HTML is escaped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
