"""The spread study's gate power (make power): deliberate regressions run as queued DVC
experiments, then judged by the gate against the spread study's default run, and the README's
results table. The spread study itself is an entry of studies.yaml, run by tools/study.py
(make spread; docs/reproducibility.md); tools/derive_tolerances.py turns its summary into
tolerances.yaml.

  python tools/spread.py power [--jobs 1]   queue the regressions, run them, judge them
  python tools/spread.py power-queue        queue them only
  python tools/spread.py power-judge        judge them (again: under a new tolerances.yaml too)
  python tools/spread.py results            reports/spread/results.md from the committed study
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from mnist_vae.io import artifacts, cli, layout
from mnist_vae.study import gate
from mnist_vae.study import reference as ref_module
from mnist_vae.study import spread
from mnist_vae.core import machine
from mnist_vae.study.engine import StudyError, dvc, existing_names, experiments, run_machine, start, write_results

OUT = Path("reports/spread")


# Deliberate regressions: (params set, (file, text, replacement) or None). The KL edit goes into
# the workspace only while its experiment is queued (a queued experiment snapshots the
# workspace); autograd, since the fused step would (rightly) refuse the edited objective.
REGRESSIONS = {
    "power-epochs-9": (["train.epochs=9"], None),
    "power-lr-0.0005": (["train.lr=0.0005"], None),
    "power-threshold-0.45": (["data.threshold=0.45"], None),
    "power-kl-0.9": (["train.step=autograd"], ("src/mnist_vae/core/objective.py", "kl = kl_divergence(mu, logvar).sum()",
                                                "kl = 0.9 * kl_divergence(mu, logvar).sum()")),
}
@functools.cache
def headline() -> tuple[str, str]:
    """The test losses of the models bound to the reference's 20-d and 2-d setups (reference.yaml)."""
    return tuple(layout.train_metrics(ref_module.setup_model(s)) + ":test_loss" for s in ("notebook-20d", "notebook-2d"))


def shifts() -> dict[str, float]:
    """Shifts added to the default run's metrics that the gate must catch: 1 nat on the 20-d
    test loss, 3 nats on the 2-d one."""
    t20, t2 = headline()
    return {t20: 1.0, t2: 3.0}


def queue_power() -> None:
    old = sorted(existing_names() & set(REGRESSIONS))
    if old:
        dvc("exp", "remove", *old)
    for name, (sets, patch) in REGRESSIONS.items():
        args = ["exp", "run", "--queue", "-n", name, *[a for kv in sets for a in ("-S", kv)]]
        if patch is None:
            dvc(*args)
            continue
        path, old_text, new_text = patch
        original = Path(path).read_text()
        if original.count(old_text) != 1:
            raise StudyError(f"cannot apply the {name} edit: {old_text!r} is not in {path} exactly once")
        try:
            Path(path).write_text(original.replace(old_text, new_text))
            dvc(*args)
        finally:
            Path(path).write_text(original)
    print(f"queued {', '.join(REGRESSIONS)}")


def judge_power(tolerances: str = "tolerances.yaml") -> None:
    """reports/spread/power.{json,md}: each deliberate regression and shift judged by the gate in
    statistical mode against the study's default run, and the shifts under same-seed noise. Each
    case's metrics are stored, so that a new tolerances.yaml re-judges them without a rerun; a
    case whose metrics an earlier power.json did not store keeps its verdict, marked as made
    under earlier tolerances."""
    from mnist_vae.study import gate

    rules = gate.load_rules(tolerances)
    base = json.loads((OUT / "summary.json").read_text())["runs"]["default"]
    prior = json.loads((OUT / "power.json").read_text()) if (OUT / "power.json").exists() else {}
    runs = {e["name"]: e for e in experiments() if e["name"] in REGRESSIONS}
    summary = json.loads((OUT / "summary.json").read_text())
    results = {}
    for name in REGRESSIONS:
        if name in runs:  # where it ran: its own machine record
            metrics, where = runs[name]["metrics"], machine.label(run_machine(runs[name]["rev"]))
        else:  # judged again from an earlier power.json, on the machine that file recorded
            metrics, where = prior.get(name, {}).get("metrics"), prior.get(name, {}).get("machine", "not recorded (run before power.json kept machine records)")
        if metrics is not None:
            results[name] = {**judge_case(base, metrics, rules), "machine": where}
        elif prior.get(name, {}).get("ran"):
            results[name] = {**prior[name], "earlier_tolerances": True}
        else:
            results[name] = {"ran": False}
    for label, metrics in shifted_cases(base).items():  # the default run itself, shifted
        results[label] = {**judge_case(base, metrics, rules), "machine": summary["study"]["machines"]["default"]}
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["| regression | caught | gated metrics failing | 20-d test loss | 2-d test loss | largest drift (in sigma_diff) |",
             "|---|---|---:|---:|---:|---|"]
    for name, r in results.items():
        if not r["ran"]:
            lines.append(f"| {name} | not run | | | | |")
            continue
        top = r["largest_drifts"][0] if r["largest_drifts"] else None
        caught = ("yes" if r["caught"] else "**no**") + (" (earlier tolerances)" if r.get("earlier_tolerances") else "")
        lines.append(f"| {name} | {caught} | {r['failing_metrics']} | "
                     f"{r['test_loss_20d']:.2f} | {r['test_loss_2d']:.2f} | "
                     + (f"`{top['metric']}` {top['drift_in_sigma']:.1f}" if top else "-") + " |")
    t20, t2 = headline()
    lines.insert(0, f"Default run: 20-d test loss {base[t20]:.2f}, 2-d {base[t2]:.2f}; tolerances from {tolerances} "
                    "(statistical mode; a universal rerun on any CPU is held exactly and fails on any change).\n")
    detectable = detectable_table()
    results["detectable"] = detectable["rows"]
    (OUT / "power.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    text = "\n".join(lines) + "\n\n" + detectable["markdown"]
    (OUT / "power.md").write_text(text)
    print(text)


def shifted_cases(base: dict) -> dict:
    """The default run's metrics with each required shift added, and the regressions the gate must
    catch (:func:`regression_cases`): {label: metrics}."""
    out = {}
    for metric, shift in shifts().items():
        shifted = dict(base)
        shifted[metric] = base[metric] + shift
        out[f"{metric.removeprefix(layout.MODELS_REPORTS + '/')} + {shift:g}"] = shifted
    return {**out, **regression_cases(base)}


LOSSES = ("train.json:train_loss", "train.json:test_loss", "train.json:test_bce", "eval.json:test_neg_elbo",
          "eval.json:test_iwae_nll")
# every KL of an image: the anomaly study's KL statistics, the one noise image's, the epoch's test KL
KL_OF_IMAGES = ("anomaly.json:kl.train.mean", "anomaly.json:kl.train.fit_mean", "anomaly.json:kl.train.p50",
                "anomaly.json:kl.train.p90", "anomaly.json:kl.train.p99", "anomaly.json:kl.train.p99_9",
                "anomaly.json:kl.train.threshold", "anomaly.json:kl.test_mean", "anomaly.json:kl.noise.mean",
                "anomaly.json:kl.fashion.mean", "anomaly.json:noise_image.kl", "train.json:test_kl")


def regression_cases(base: dict) -> dict:
    """Regressions that pass a gate with no teeth (issue 48), made on the default run's metrics:
    the 2-d model's five losses +4 nats; the Fashion-MNIST KL AUROC of both 20-d models at 0.52 with
    their detection rates halved; the 20-d IWAE NLL +1.2 nats with its other losses, and the batch-512
    model's KL +2.2 nats on every image."""
    m20, m2, b512 = (f"{layout.MODELS_REPORTS}/{ref_module.setup_model(s)}/"
                     for s in ("notebook-20d", "notebook-2d", "notebook-20d-b512"))

    def moved(changes: dict[str, Any]) -> dict:
        out = dict(base)
        for key, change in changes.items():
            out[key] = change(out[key])
        return out

    return {
        "2-d losses + 4": moved({m2 + k: (lambda v: v + 4.0) for k in LOSSES}),
        "20-d Fashion KL AUROC 0.52, detection halved": moved(
            {m + k: f for m in (m20, b512) for k, f in (("anomaly.json:kl.fashion.auroc", lambda v: 0.52),
                                                         ("anomaly.json:kl.fashion.detection_rate", lambda v: v / 2))}),
        "20-d losses + 1.2, b512 KL + 2.2": moved({**{m20 + k: (lambda v: v + 1.2) for k in LOSSES},
                                                   **{b512 + k: (lambda v: v + 2.2) for k in KL_OF_IMAGES}}),
    }


# What the detectable-shift table covers: each model's losses, AUROCs and rates, and the goals
DETECTABLE = ("train.json:test_loss", "eval.json:test_iwae_nll", "anomaly.json:kl.fashion.auroc",
              "anomaly.json:kl.noise.auroc", "anomaly.json:neg_elbo.fashion.auroc", "anomaly.json:kl.fashion.detection_rate",
              "anomaly.json:kl.noise.detection_rate", "anomaly.json:kl.test_above_threshold")


def goal(metric: str) -> float | None:
    """The shift the gate should catch in 95 % of reruns (issue 48): 0.5 nat for the 20-d test loss
    and IWAE, 1.5 nats for the 2-d ones, 0.05 for an AUROC."""
    model = metric.removeprefix(layout.MODELS_REPORTS + "/").split("/")[0]
    if metric.endswith("auroc"):
        return 0.05
    if metric.endswith(("test_loss", "test_iwae_nll")):
        return {ref_module.setup_model("notebook-20d"): 0.5, ref_module.setup_model("notebook-2d"): 1.5}.get(model)
    return None


def detectable_table(coverage: float = 0.95) -> dict:
    """The smallest regression of each loss, AUROC and rate that the gate catches in `coverage` of
    the leave-pair-out reruns (tolerances derived without the pair, with the deployed k), by
    calibration.detectable_shift."""
    import derive_tolerances as tol  # tools/: the study's runs and images as make tolerances reads them

    from mnist_vae.study import calibration

    doc = json.loads((OUT / "summary.json").read_text())
    runs, variants = tol.study_runs(doc)
    images = tol.images_behind(doc["metrics"])
    study = artifacts.read_yaml("tolerances.yaml")["study"]
    k, same = study["k"], tol.same_seed_runs()
    if same:  # what the gate judges: same-seed reruns, each pair under tolerances derived without it
        k_same = (study.get("same_seed") or {}).get("k")
        pairs = tol.same_seed_rules(doc, study["family_false_alarm"], k, k_same, same)
        runs, what = same, f"same-seed study (the committed seed in {len(same) - 1} other roundings)"
    else:
        pairs = calibration.pair_rules(runs, lambda rest: calibration.derive(rest, variants, images, k=k)[0])
        what = f"seed study ({len(runs)} runs, each pair both ways)"
    rules = gate.load_rules("tolerances.yaml")
    rows = []
    for metric in sorted(m for m in doc["metrics"] if m.split("/", 3)[-1].split("/", 1)[-1] in DETECTABLE):
        shift, n = calibration.detectable_shift(runs, pairs, metric, coverage)
        rule = gate.rule_for(metric, rules)
        rows.append({"metric": metric, "direction": calibration.direction(metric), "detectable": shift, "reruns": n,
                     "gated": rule.get("gated", True), "tolerance": rule.get("abs"), "goal": goal(metric)})
    lines = [f"The smallest regression each gated loss, AUROC and rate must make for the statistical gate to fail it "
             f"in {coverage:.0%} of the {rows[0]['reruns'] if rows else 0} reruns of the {what}, each judged against "
             f"the committed run under tolerances derived without it, with the deployed k, found on the gate itself (its tolerance, kind bounds and sanity bound). Exact mode, "
             "which a universal rerun on any CPU gets, catches any change.", "",
             "| metric | regression | caught in 95 % from | goal | met | gated (tolerance) |", "|---|---|---:|---:|---|---|"]
    for r in rows:
        met = "-" if r["goal"] is None else ("yes" if r["detectable"] <= r["goal"] else "**no**")
        wanted = "-" if r["goal"] is None else f"{r['goal']:g}"
        lines.append(f"| `{r['metric'].removeprefix(layout.MODELS_REPORTS + '/')}` | {'rise' if r['direction'] > 0 else 'fall'} "
                     f"| {r['detectable']:.3g} | {wanted} | {met} | {'yes' if r['gated'] else 'no'} ({r['tolerance']:.3g}) |")
    return {"rows": rows, "markdown": "\n".join(lines) + "\n"}


def judge_case(base: dict[str, Any], metrics: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """One deliberate regression (its flat metrics) judged by the gate in statistical mode against
    the default run `base`: caught, how many metrics fail, the three largest gated drifts, the two
    test losses, and the metrics themselves (so a later tolerances file can judge them again)."""
    from mnist_vae.study import gate

    rows = gate.compare(gate.diff_of(base, metrics), rules)
    bad = gate.failures(rows)
    worst = sorted((r for r in rows if r.in_spread is not None and r.gated), key=lambda r: -r.in_spread)[:3]
    return {"ran": True, "caught": bool(bad), "failing_metrics": len(bad),
            "largest_drifts": [{"metric": r.metric, "committed": r.committed, "new": r.new,
                                "drift_in_sigma": r.in_spread} for r in worst],
            "test_loss_20d": metrics.get(headline()[0]), "test_loss_2d": metrics.get(headline()[1]), "metrics": metrics}


def parser() -> argparse.ArgumentParser:
    """The command line (tests parse the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["power", "power-queue", "power-judge", "results"])
    ap.add_argument("--jobs", type=int, default=1, help="queue workers; 1 on a 2-core machine")
    return ap


def main() -> None:
    args = parser().parse_args()
    t0 = time.perf_counter()
    if args.what == "results":  # after a new committed run: the README table from the committed study
        write_results(json.loads((OUT / "summary.json").read_text()), OUT)
    if args.what in ("power", "power-queue"):
        queue_power()
    if args.what == "power":
        start(args.jobs)
    if args.what in ("power", "power-judge"):
        judge_power()
    print(f"spread {args.what}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
