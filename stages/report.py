"""Stage report: reports/index.html, the reproduction beside the reference, from the pipeline's
own outputs: the reference's numbers with ours and our spread over seeds, per-epoch losses and
learning curves with the reference's points, one section per model in `models` (evaluation,
figures, GIFs, and the anomaly study for the models in `anomaly.models`), the ROC curves and
the latent-size sweep (tools/study.py's summary and figure, where it has been run) and the speed
benchmark. Opens from disk with no network.

Writes reports/index.html, reports/figures/report-learning-curves.png and
reports/figures/report-roc-curves.png; everything else on the page is linked by relative path.
"""

import argparse
import sys
from pathlib import Path

from mnist_vae.io import artifacts, cli, layout, params
from mnist_vae.study import reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--benchmark", nargs="*", default=[], help="benchmark tables (markdown) to show")
    ap.add_argument("--reference", default="reference.yaml", help="the reference's numbers")
    ap.add_argument("--spread", default="reports/spread/summary.json", help="the spread study's summary")
    ap.add_argument("--sweep", default="reports/studies/latent-size",
                    help="the latent-size study's folder (python tools/study.py latent-size collect)")
    ap.add_argument("--out", default="reports/index.html", help="the page; its own figures go to reports/figures/")
    args = ap.parse_args()
    p = params.load_for_stage()
    models, studies = list(p.models), list(p.anomaly.models)
    from mnist_vae.viz import report  # matplotlib, jinja2: only once the params are known good
    from mnist_vae.study import engine, spread

    root = Path(args.out).parent
    # the reference's setups, each bound to the model that is it (by architecture and batch size)
    ref = reference.bind(reference.check(artifacts.read_yaml(args.reference), args.reference),
                         reference.describe(p))
    study = spread.check_summary(artifacts.read_json(args.spread), args.spread)
    metrics_files = ([layout.train_metrics(m) for m in models] + [layout.eval_metrics(m) for m in models]
                     + [layout.anomaly_metrics(m) for m in studies])
    metrics = {path: artifacts.read_json(path) for path in metrics_files}
    histories = {m: artifacts.read_csv(layout.history(m), ["epoch", "train_loss", "test_loss"]) for m in models}
    rocs = {m: {f"{score}-{ood}": artifacts.read_csv(layout.roc_table(m, score, ood), ["fpr", "tpr"])
                for score in layout.SCORES for ood in layout.OUTLIER_SETS} for m in studies}

    artifacts.write_figure(root / "figures/report-learning-curves.png",
                           report.learning_curves(histories, ref["epochs"]), dpi=110)
    # a declared output: with no anomaly study (anomaly.models empty) it says so, and the page omits it
    artifacts.write_figure(root / "figures/report-roc-curves.png", report.roc_curves(rocs), dpi=110)
    sections = [dict(
        name=m,
        description=report.describe_model(p.models[m]),
        timings=report.timing_note(artifacts.read_json(layout.timings(m, "train")),
                                   artifacts.read_json(layout.timings(m, "evaluate")),
                                   metrics[layout.train_metrics(m)].get("device", "")),
        evaluation=metrics[layout.eval_metrics(m)],
        figures=report.model_figures(m, p.models[m].latent_dim),
        gifs=report.gif_rows(m, artifacts.read_json(layout.gifs_summary(m))),
        anomaly_rows=report.anomaly_rows({m: metrics[layout.anomaly_metrics(m)]}) if m in studies else [],
        anomaly_figures=report.anomaly_figures(m) if m in studies else [],
    ) for m in models]
    sweep = Path(args.sweep) / "summary.json"
    doc = artifacts.read_json(sweep) if sweep.is_file() else None  # not run yet: the page says so
    html = report.page(
        sweep=report.sweep_section(doc, report.markdown_html(engine.table(doc)) if doc else "",
                                   f"{args.sweep}/figure.png"),
        sweep_folder=args.sweep,
        sections=sections,
        study=study["study"],
        reference_rows=spread.reference_rows(ref["numbers"], spread.default_params_runs(study),
                                             spread.flat_metrics(metrics)),
        learning_curves="figures/report-learning-curves.png",
        epoch_rows=report.epoch_rows(ref["epochs"], histories),
        roc_curves="figures/report-roc-curves.png" if rocs else None,
        benchmarks=[report.markdown_html(artifacts.read_text(path)) for path in args.benchmark],
    )
    artifacts.write_bytes(args.out, html.encode())
    # The page names the figures and GIFs without reading them (not deps: see mnist_vae.io.layout),
    # so `dvc repro report` alone does not make them; say so rather than leave a silent gap.
    for src in report.linked_files(html):
        if not (root / src).is_file():
            print(f"warning: {root / src}: linked from {args.out} but not there yet; "
                  f"{artifacts.restore_hint(root / src)}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
