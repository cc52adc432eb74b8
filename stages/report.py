"""Stage report: reports/index.html, the reproduction beside the reference, from the pipeline's
own outputs: the reference's numbers with ours and our spread over seeds, per-epoch losses and
learning curves with the reference's points, the evaluation, every figure and GIF, the anomaly
study with its ROC curves, and the speed benchmark. Opens from disk with no network.

Writes reports/index.html, reports/figures/report-learning-curves.png and
reports/figures/report-roc-curves.png; everything else on the page is linked by relative path.
"""

import argparse
from pathlib import Path

from mnist_vae import artifacts, cli, params
from mnist_vae.errors import DataError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--evaluated", nargs="*", default=[], help="models with an evaluate stage (eval-<model>.json)")
    ap.add_argument("--anomaly", nargs="*", default=[], help="anomaly studies by name (reports/metrics/<name>.json)")
    ap.add_argument("--benchmark", nargs="*", default=[], help="benchmark tables (markdown) to show")
    ap.add_argument("--reference", default="reference.yaml", help="the reference's numbers")
    ap.add_argument("--spread", default="reports/spread/summary.json", help="the spread study's summary")
    ap.add_argument("--out", default="reports/index.html", help="the page; its own figures go to reports/figures/")
    args = ap.parse_args()
    p = params.load_for_stage()
    from mnist_vae import report, spread  # matplotlib, jinja2: only once the params are known good

    root = Path(args.out).parent
    reference = artifacts.read_yaml(args.reference)
    study = artifacts.read_json(args.spread)
    metrics_files = ([f"reports/metrics/train-{m}.json" for m in p.models]
                     + [f"reports/metrics/eval-{m}.json" for m in args.evaluated]
                     + [f"reports/metrics/{name}.json" for name in args.anomaly])
    metrics = {path: artifacts.read_json(path) for path in metrics_files}
    histories = {m: artifacts.read_csv(f"reports/plots/history-{m}.csv", ["epoch", "train_loss", "test_loss"])
                 for m in p.models}
    rocs = {name: {f"{score}-{ood}": artifacts.read_csv(f"reports/plots/{name}-roc-{score}-{ood}.csv", ["fpr", "tpr"])
                   for score in ("kl", "neg_elbo") for ood in ("noise", "fashion")} for name in args.anomaly}
    gif_summary = artifacts.read_json("reports/gifs/summary.json")

    artifacts.write_figure(root / "figures/report-learning-curves.png",
                           report.learning_curves(histories, reference["epochs"]), dpi=110)
    artifacts.write_figure(root / "figures/report-roc-curves.png", report.roc_curves(rocs), dpi=110)
    html = report.page(
        models=list(p.models),
        study=study["study"],
        within_std=2,
        reference_rows=spread.reference_rows(reference["numbers"], study["metrics"], spread.flat_metrics(metrics)),
        learning_curves="figures/report-learning-curves.png",
        epoch_rows=report.epoch_rows(reference["epochs"], histories),
        evaluation_by_model=[(m, metrics[f"reports/metrics/eval-{m}.json"]) for m in args.evaluated],
        model_figures=[(m, report.model_figures(m)) for m in p.models],
        gifs=[dict(name=name, path=f"gifs/{name}", **row) for name, row in gif_summary.items()],
        anomaly_rows=report.anomaly_rows({name: metrics[f"reports/metrics/{name}.json"] for name in args.anomaly}),
        roc_curves="figures/report-roc-curves.png",
        anomaly_figures=[(name, report.anomaly_figures(name)) for name in args.anomaly],
        benchmarks=[report.markdown_html(artifacts.read_text(path)) for path in args.benchmark],
    )
    missing = [root / src for src in report.linked_files(html) if not (root / src).is_file()]
    if missing:
        raise DataError(f"{missing[0]}: linked from {args.out} but missing; {artifacts.restore_hint(missing[0])}")
    artifacts.write_bytes(args.out, html.encode())


if __name__ == "__main__":
    cli.run(main)
