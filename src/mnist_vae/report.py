"""The reproduction report: its tables (the reference's numbers beside ours, per-epoch losses,
evaluation, anomaly study, GIFs), its two plots (learning curves with the reference's points,
ROC curves) and the static page that shows them with the pipeline's own figures and GIFs.

The page loads nothing from the network: images are relative paths next to it, styles inline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Everything on the page about one model's figures, in order (render-grids' outputs).
# (file stem, caption, CSS class: "pixels" for decoded images, drawn without smoothing)
MODEL_FIGURES = (
    ("manifold", "latent manifold (decoded grid over the first two latent dimensions)", "pixels"),
    ("latent-scatter", "test-set encoder means by digit", "plot"),
    ("reconstructions", "test images (top) and their reconstructions (bottom)", "pixels"),
    ("prior-samples", "samples from the prior, decoded", "pixels"),
)
ANOMALY_FIGURES = (("kl-histogram", "KL scores of the training set", "plot"),
                   ("noise-image", "the uniform noise image", "pixels small"))


def model_figures(model: str) -> list[tuple[str, str, str]]:
    """(path relative to reports/, caption, CSS class) of a model's figures."""
    return [(f"figures/{model}-{stem}.png", caption, css) for stem, caption, css in MODEL_FIGURES]


def anomaly_figures(name: str) -> list[tuple[str, str, str]]:
    return [(f"figures/{name}-{stem}.png", caption, css) for stem, caption, css in ANOMALY_FIGURES]


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
        for score in ("kl", "neg_elbo"):
            s = m[score]
            rows.append({"study": name, "model": m.get("model", ""), "score": score,
                         "fit_mean": s["train"]["fit_mean"], "fit_std": s["train"]["fit_std"],
                         "threshold": s["train"]["threshold"], "test_above": s["test_above_threshold"],
                         "noise_auroc": s["noise"]["auroc"], "noise_rate": s["noise"]["detection_rate"],
                         "fashion_auroc": s["fashion"]["auroc"], "fashion_rate": s["fashion"]["detection_rate"],
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
    for ax, score, title in ((axes[0], "kl", "score: KL(q(z|x) || p(z))"), (axes[1], "neg_elbo", "score: negative ELBO")):
        for study, tables in curves.items():
            for outliers, style in (("noise", ":"), ("fashion", "-")):
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


def num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bernoulli VAE on binarized MNIST: reproduction report</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
 h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
 table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
 th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; } th { background: #f4f4f4; }
 td.n { text-align: right; font-variant-numeric: tabular-nums; }
 tr.outside td { background: #fff1e6; } .outside-mark { color: #b34700; font-weight: bold; }
 .figs { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
 figure { margin: 0.5em 0; }
 figure img { width: 100%; max-width: 560px; border: 1px solid #eee; }
 figure.wide img { max-width: 100%; }
 img.pixels { image-rendering: pixelated; } img.small { max-width: 280px; }
 .figs figure { flex: 0 1 560px; }
 figcaption { font-size: 0.85em; color: #555; }
 .note { color: #555; font-size: 0.9em; }
</style>
</head>
<body>
<h1>Bernoulli VAE on binarized MNIST: reproduction report</h1>
<p class="note">Written by the pipeline's <code>report</code> stage from its own outputs; it reruns
when any of them changes. Models: {{ models | join(", ") }}. The reference is the published
write-up (<code>reference.yaml</code>); the seed spread is the committed study in
<code>reports/spread/</code> ({{ study.n_seeds }} seeds on {{ study.machine }}).</p>

<h2 id="reference">The reference's numbers beside ours</h2>
<p class="note">"within" means the reference lies within {{ within_std }} standard deviations of our
mean over seeds; rows where it does not are marked <span class="outside-mark">outside</span>.
The seeds ran the committed default params: beside a run with other params (an experiment, a
fast profile) the spread columns describe the default run, not this one.</p>
<table id="reference-table">
<tr><th>reference number</th><th>reference</th><th>this run</th><th>our seeds: mean ± std (n)</th><th>reference vs our spread</th></tr>
{% for r in reference_rows %}
<tr{% if r.within == false %} class="outside"{% endif %}><td>{{ r.label }}</td><td class="n">{{ num(r.reference) }}</td>
<td class="n">{{ num(r.ours) }}</td>
<td class="n">{% if r.n is none %}not in the study{% else %}{{ num(r.mean) }} ± {{ num(r.std) }} ({{ r.n }}){% endif %}</td>
<td>{% if r.n is none %}–{% elif r.within %}within (z = {{ "%+.1f" | format(r.z) }}){% else %}<span class="outside-mark">outside</span> (z = {{ "%+.1f" | format(r.z) }}){% endif %}</td></tr>
{% endfor %}
</table>

<h2 id="learning-curves">Learning curves</h2>
<figure class="wide"><img src="{{ learning_curves }}" alt="learning curves with the reference's points">
<figcaption>Loss per image (nats): our runs as lines, the reference's per-epoch numbers as points.</figcaption></figure>
<table id="epoch-table">
<tr><th>model</th><th>epoch</th><th>reference train</th><th>our train</th><th>reference test</th><th>our test</th><th>test: ours − reference</th></tr>
{% for r in epoch_rows %}
<tr><td>{{ r.model }}</td><td class="n">{{ r.epoch }}</td><td class="n">{{ num(r.ref_train) }}</td><td class="n">{{ num(r.train) }}</td>
<td class="n">{{ num(r.ref_test) }}</td><td class="n">{{ num(r.test) }}</td><td class="n">{{ "–" if r.test_diff is none else "%+.2f" | format(r.test_diff) }}</td></tr>
{% endfor %}
</table>

<h2 id="evaluation">Evaluation: IWAE bound and active units</h2>
<table id="evaluation-table">
<tr><th>model</th><th>latent dims</th><th>test −ELBO</th><th>test IWAE NLL</th><th>IWAE samples k</th><th>gap</th><th>active units</th></tr>
{% for m, e in evaluation_by_model %}
<tr><td>{{ m }}</td><td class="n">{{ e.latent_dim }}</td><td class="n">{{ num(e.test_neg_elbo) }}</td><td class="n">{{ num(e.test_iwae_nll) }}</td><td class="n">{{ e.iwae_k }}</td>
<td class="n">{{ num(e.iwae_gap) }}</td><td class="n">{{ e.active_units }} / {{ e.latent_dim }}</td></tr>
{% endfor %}
</table>

<h2 id="figures">Figures</h2>
{% for model, figs in model_figures %}
<h3>{{ model }}</h3>
<div class="figs">
{% for path, caption, css in figs %}<figure><img class="{{ css }}" src="{{ path }}" alt="{{ model }}: {{ caption }}"><figcaption>{{ model }}: {{ caption }}</figcaption></figure>
{% endfor %}
</div>
{% endfor %}

<h2 id="gifs">Training GIFs</h2>
<table id="gif-table">
<tr><th>GIF</th><th>frames</th><th>s / frame</th><th>MB</th><th>grey levels</th><th>hold tolerance</th><th>worst frame PSNR (dB)</th></tr>
{% for g in gifs %}
<tr><td>{{ g.name }}</td><td class="n">{{ g.frames }}</td><td class="n">{{ g.seconds_per_frame }}</td><td class="n">{{ "%.2f" | format(g.bytes / 1e6) }}</td>
<td class="n">{{ g.grey_levels }}</td><td class="n">{{ g.tolerance }}</td><td class="n">{{ "%.1f" | format(g.worst_psnr_db) }}</td></tr>
{% endfor %}
</table>
<div class="figs">
{% for g in gifs %}<figure><img class="pixels" src="{{ g.path }}" alt="{{ g.name }}"><figcaption>{{ g.name }}</figcaption></figure>
{% endfor %}
</div>

<h2 id="anomaly">Anomaly study</h2>
<table id="anomaly-table">
<tr><th>study</th><th>model</th><th>score</th><th>train fit mean ± std</th><th>threshold</th><th>MNIST test above</th>
<th>noise AUROC / detected</th><th>Fashion-MNIST AUROC / detected</th><th>uniform noise image</th></tr>
{% for a in anomaly_rows %}
<tr><td>{{ a.study }}</td><td>{{ a.model }}</td><td>{{ a.score }}</td><td class="n">{{ num(a.fit_mean) }} ± {{ num(a.fit_std) }}</td>
<td class="n">{{ num(a.threshold) }}</td><td class="n">{{ "%.2f %%" | format(100 * a.test_above) }}</td>
<td class="n">{{ "%.3f" | format(a.noise_auroc) }} / {{ "%.1f %%" | format(100 * a.noise_rate) }}</td>
<td class="n">{{ "%.3f" | format(a.fashion_auroc) }} / {{ "%.1f %%" | format(100 * a.fashion_rate) }}</td><td class="n">{{ num(a.noise_image) }}</td></tr>
{% endfor %}
</table>
<figure class="wide"><img src="{{ roc_curves }}" alt="ROC curves"><figcaption>ROC curves: MNIST test images against uniform noise and Fashion-MNIST.</figcaption></figure>
<div class="figs">
{% for name, figs in anomaly_figures %}
{% for path, caption, css in figs %}<figure><img class="{{ css }}" src="{{ path }}" alt="{{ name }}: {{ caption }}"><figcaption>{{ name }}: {{ caption }}</figcaption></figure>
{% endfor %}
{% endfor %}
</div>

<h2 id="speed">Speed benchmark</h2>
<p class="note">From <code>make bench</code> (<code>reports/benchmark*.md</code>, committed; not rerun by the pipeline).</p>
{% for html in benchmarks %}<div class="benchmark">{{ html | safe }}</div>
{% endfor %}
</body>
</html>
"""


def page(**context: Any) -> str:
    """The HTML page; `context` holds what :data:`PAGE` names (see stages/report.py)."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(PAGE).render(num=num, **context)


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
