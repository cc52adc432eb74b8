"""The report page's parts (mnist_vae.viz.report) on known values; the page itself is checked in a
browser by tests/e2e/test_browser.py and against the stage's deps by tests/e2e/test_pipeline.py."""

import re

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from mnist_vae.study import spread
from mnist_vae.viz import report

matplotlib.use("Agg")

REFERENCE = yaml.safe_load((REPO / "reference.yaml").read_text())
# the write-up's per-epoch table, copied verbatim into the repository (a clone has nothing beside it)
WRITE_UP_EPOCHS = REPO / "tests" / "data" / "reference-epochs.md"


def test_reference_epochs_are_the_write_ups_table():
    rows = [line.split("|")[1:-1] for line in WRITE_UP_EPOCHS.read_text().splitlines()
            if re.match(r"^\| \d+ \|", line)]
    table = np.array([[float(c) for c in row] for row in rows])
    assert table[:, 0].tolist() == list(range(1, 11))
    d20, d2 = REFERENCE["setups"]["notebook-20d"]["epochs"], REFERENCE["setups"]["notebook-2d"]["epochs"]
    assert d20["train_loss"] == table[:, 1].tolist() and d20["test_loss"] == table[:, 2].tolist()
    assert d2["train_loss"] == table[:, 3].tolist() and d2["test_loss"] == table[:, 4].tolist()


def history(train, test):
    return pd.DataFrame({"epoch": range(1, len(test) + 1), "train_loss": train, "test_loss": test})


def test_epoch_rows_put_ours_beside_the_reference():
    ref = {"m": {"train_loss": [10.0, 8.0, 7.0], "test_loss": [9.0, 7.5, 6.5]}}
    rows = report.epoch_rows(ref, {"m": history([11.0, 8.5], [9.5, 7.5])})
    assert [(r["epoch"], r["ref_test"], r["test"], r["test_diff"]) for r in rows] == [
        (1, 9.0, 9.5, 0.5), (2, 7.5, 7.5, 0.0), (3, 6.5, None, None)]
    assert str(rows[1]["test_diff"]) == "0.0"  # never "-0.0"
    assert report.epoch_rows(ref, {}) == []  # a model the run lacks has no rows


def test_reference_rows_mark_a_reference_outside_our_spread():
    ref = [{"label": "loss", "value": 10.0, "metric": "f.json:loss"},
           {"label": "kl", "value": 5.0, "metric": "f.json:kl"},
           {"label": "new", "value": 1.0, "metric": "g.json:x"}]
    runs = {f"seed-{i}": {"f.json:loss": 10.2 + d, "f.json:kl": 6.0 + d} for i, d in enumerate([-0.2, 0.0, 0.2])}
    rows = spread.reference_rows(ref, runs, {"f.json:loss": 10.1, "f.json:kl": 6.1})
    assert [(r["within"], r["z"]) for r in rows[:2]] == [(True, pytest.approx(-1.0)), (False, pytest.approx(-5.0))]
    assert rows[2]["n"] is None and rows[2]["ours"] is None
    html = report.page(**page_context(reference_rows=rows))
    outside = re.findall(r'<tr class="outside"><td>(.*?)</td>', html)
    assert outside == ["kl"]
    assert "not in the study" in html


def section(name="m", **overrides):
    evaluation = {"latent_dim": 2, "test_neg_elbo": 140.0, "test_iwae_nll": 137.0, "iwae_k": 1000, "iwae_gap": 3.0,
                  "active_units": 2}
    return dict(dict(name=name, description="a 2-d model.", evaluation=evaluation, figures=report.model_figures(name),
                     timings=report.timing_note({"train_seconds": 12.34, "tracking_seconds": 1.5}, {"eval_seconds": 60.0},
                                                "cpu"),
                     gifs=[], anomaly_rows=[], anomaly_figures=[]), **overrides)


def page_context(**overrides):
    context = dict(
        sections=[section()], study={"n_seeds": 8, "machines": {"default": "a CPU", "seed-1": "a CPU", "xeon": "<another> CPU"}}, reference_rows=[],
        learning_curves="figures/report-learning-curves.png", epoch_rows=[],
        roc_curves="figures/report-roc-curves.png", benchmarks=[], sweep=None,
        sweep_folder="reports/studies/latent-size")
    context.update(overrides)
    return context


def test_the_page_names_the_machines_of_the_study_once_each():
    html = report.page(**page_context())
    assert "(8 seeds; machines: a CPU; &lt;another&gt; CPU)" in html


def test_page_links_exactly_its_figures_and_escapes_text():
    rows = [{"label": "<b>loss</b> & co", "reference": 1.0, "ours": 1.0, "shown": None, "mean": None, "std": None,
             "n": None, "half": None, "z": None, "within": None}]
    gif = {"bytes": 4_500_000, "frames": 94,
           "seconds_per_frame": 0.05, "grey_levels": 23, "tolerance": 9, "worst_psnr_db": 37.7}
    studied = section("a", gifs=report.gif_rows("a", {"manifold-all.gif": gif}),
                      anomaly_figures=report.anomaly_figures("a"))
    html = report.page(**page_context(reference_rows=rows, sections=[section("m"), studied]))
    assert "&lt;b&gt;loss&lt;/b&gt; &amp; co" in html and "<b>loss" not in html
    assert report.linked_files(html) == [
        "figures/report-learning-curves.png",
        "images/m/manifold.png", "images/m/latent-scatter.png", "images/m/reconstructions.png",
        "images/m/prior-samples.png",
        "images/a/manifold.png", "images/a/latent-scatter.png", "images/a/reconstructions.png",
        "images/a/prior-samples.png", "images/a/gifs/manifold-all.gif",
        "images/a/anomaly-kl-histogram.png", "images/a/anomaly-noise-image.png",
        "figures/report-roc-curves.png"]
    assert "<td class=\"n\">4.50</td>" in html and "37.7" in html
    assert html.count('<section class="model"') == 2 and 'id="model-a"' in html
    assert "http" not in html.replace("http-equiv", "")  # nothing on the page points at the network


def test_page_without_an_anomaly_study_shows_no_roc_curves():
    html = report.page(**page_context(roc_curves=None))
    assert "report-roc-curves.png" not in html and "No model is listed under" in html


def test_the_page_shows_every_figure_the_stages_declare():
    """The page's figure lists against dvc.yaml's outputs of render-grids and anomaly-kl-stats."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    grids = {o.rsplit("/", 1)[1].removesuffix(".png") for o in stages["render-grids"]["do"]["outs"]}
    anomaly = {o.rsplit("/", 1)[1].removesuffix(".png").removeprefix("anomaly-")
               for o in stages["anomaly-kl-stats"]["do"]["outs"] if isinstance(o, str) and o.endswith(".png")}
    assert {stem for stem, _, _ in report.MODEL_FIGURES} == grids
    assert {stem for stem, _, _ in report.ANOMALY_FIGURES} == anomaly


def test_describe_model_names_its_overrides():
    from conftest import params_with

    p = params_with()
    assert report.describe_model(p.models["vae2d"]) == "2-d latent; encoder hidden layers [400, 150], decoder [150, 400]."
    assert report.describe_model(p.models["vae20d-b512"]).endswith("; trained with batch_size 512.")


def test_markdown_tables_become_html_tables_and_raw_html_is_escaped():
    html = report.markdown_html("| a | b |\n|---|---:|\n| x | **2** |\n\n<script>alert(1)</script>\n")
    assert "<table>" in html and "<strong>2</strong>" in html and "<script>" not in html


def test_learning_curves_overlay_the_reference_points():
    ref = {"m": {"train_loss": [10.0, 8.0], "test_loss": [9.0, 7.5]}}
    fig = report.learning_curves({"m": history([11.0, 8.5], [9.5, 7.5]), "other": history([3.0], [2.0])}, ref)
    first, second = fig.axes
    assert [line.get_label() for line in first.lines] == ["ours, train", "ours, test", "reference, train", "reference, test"]
    assert first.lines[3].get_ydata().tolist() == [9.0, 7.5] and first.lines[3].get_linestyle() == "None"
    assert len(second.lines) == 2  # no reference for that model: our lines only


def test_roc_curves_draw_one_line_per_study_and_outlier_set():
    table = pd.DataFrame({"fpr": [1.0, 0.5, 0.0], "tpr": [1.0, 0.9, 0.0]})
    curves = {s: {f"{score}-{ood}": table for score in ("kl", "neg_elbo") for ood in ("noise", "fashion")}
              for s in ("a", "b")}
    fig = report.roc_curves(curves)
    assert [len(ax.lines) for ax in fig.axes] == [5, 5]  # 2 studies x 2 sets + the diagonal
    assert fig.axes[0].lines[0].get_label() == "a vs noise"


def test_anomaly_rows_read_both_scores():
    side = {"auroc": 0.9, "detection_rate": 0.5, "mean": 1.0}
    score = {"train": {"fit_mean": 30.0, "fit_std": 4.5, "threshold": 43.5}, "test_above_threshold": 0.001,
             "noise": side, "fashion": side}
    rows = report.anomaly_rows({"anomaly": {"model": "m", "kl": score, "neg_elbo": score,
                                            "noise_image": {"kl": 75.9, "neg_elbo": 2500.0}}})
    assert [(r["score"], r["noise_image"], r["fit_mean"]) for r in rows] == [("kl", 75.9, 30.0), ("neg_elbo", 2500.0, 30.0)]


def test_the_page_shows_each_models_timings():
    html = report.page(**page_context())
    assert "trained in 12.3 s on cpu (frame tracking 1.5 s of it), evaluated in 60.0 s." in html


def test_roc_figure_without_an_anomaly_study_says_so():
    fig = report.roc_curves({})
    assert [t.get_text() for t in fig.texts] == ["no anomaly study: anomaly.models in params.yaml is empty"]


def sweep_doc():
    """A by-setting summary as tools/study.py writes it (mnist_vae.study.engine.by_setting)."""
    stats = {"n": 3, "mean": 90.0, "std": 0.5, "min": 89.5, "max": 90.5}
    run = {"name": "latent-size-2-seed-1", "seed": 1, "machine": "a CPU", "metrics": {}}
    return {"study": {"name": "latent-size", "about": "The <20-d> setup against its latent size.",
                      "set": ["evaluate.iwae_images=1000"], "metrics": {"eval.json:test_iwae_nll": "f.json:x"}},
            "settings": [{"params": {"models.vae20d.latent_dim": d}, "metrics": {"eval.json:test_iwae_nll": stats},
                          "runs": [run] * 3} for d in (2, 20)]}


def test_the_page_shows_the_latent_size_sweep_with_where_it_differs_from_the_papers():
    from mnist_vae.study import engine

    doc = sweep_doc()
    sweep = report.sweep_section(doc, report.markdown_html(engine.table(doc)), "reports/studies/latent-size/figure.png")
    html = report.page(**page_context(sweep=sweep))
    assert "studies/latent-size/figure.png" in report.linked_files(html)
    assert "The &lt;20-d&gt; setup" in html and "6 runs over 2 latent sizes" in html
    assert "<td>90 ± 0.5 (3)</td>" in html.replace(' style="text-align:right"', "")
    text = re.sub(r"\s+", " ", html)
    for needed in ("Kingma &amp; Welling (2014) swept 3 to 200 latent dimensions", "Burda et al. (2015)",
                   "exceeds 0.01", "binarized once by rounding (threshold 0.5)", "one hidden layer of 400 units",
                   "after 10 epochs", "on the first 1000 test images"):
        assert needed in text, needed
    # the sentence is true of the study as studies.yaml and params.yaml run it
    params, studies = (yaml.safe_load((REPO / f).read_text()) for f in ("params.yaml", "studies.yaml"))
    assert studies["latent-size"]["set"] == ["evaluate.iwae_images=1000"] and params["evaluate"]["iwae_k"] == 1000
    assert params["train"]["epochs"] == 10 and params["models"]["vae20d"]["encoder_hidden"] == [400]
    assert params["data"]["threshold"] == 0.5 and params["evaluate"]["active_unit_threshold"] == 0.01


def test_the_page_says_the_sweep_has_not_been_run_rather_than_fail():
    html = report.page(**page_context(sweep=report.sweep_section(None, "", "reports/studies/latent-size/figure.png")))
    assert "The latent-size sweep has not been run here" in html and "make study STUDY=latent-size" in html
    assert not [f for f in report.linked_files(html) if "studies" in f]
