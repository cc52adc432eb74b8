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
    noise = noise_table(rules)
    results["under_machine_noise"] = noise["rows"]
    (OUT / "power.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    text = "\n".join(lines) + "\n\n" + noise["markdown"]
    (OUT / "power.md").write_text(text)
    print(text)


def shifted_cases(base: dict) -> dict:
    """The default run's metrics with each required shift added: {label: metrics}."""
    out = {}
    for metric, shift in shifts().items():
        shifted = dict(base)
        shifted[metric] = base[metric] + shift
        out[f"{metric.removeprefix(layout.MODELS_REPORTS + '/')} + {shift:g}"] = shifted
    return out


def noise_table(rules: list) -> dict:
    """The deliberate shifts judged under the study's measured same-seed noise (spread.power_under_noise)."""
    doc = json.loads((OUT / "summary.json").read_text())
    k = artifacts.read_yaml("tolerances.yaml")["study"]["k"]
    rows = noise_rows(doc["metrics"], shifts(), rules, k)
    variants = ", ".join(doc["study"]["variants"])
    md = [f"The same shifts when the rerun also carries same-seed noise (another floating-point order: a GPU, fast "
          f"mode): sigma_same is sqrt 2 times the standard deviation of the same-seed runs, the default run and its "
          f"variants ({variants}; a variant equal to it to the bit is the same summation order and left out), with "
          "as many degrees of freedom as variants (their differences from the default run share it, so they are not "
          "counted as independent), so each chance is given over sigma_same's 95 % confidence interval too, and the "
          "same-seed tolerance's false alarms with sigma_same estimated (Student's t). In exact mode (universal "
          "numerics on any CPU) the same-seed noise is zero and any shift fails. The same-seed tolerance "
          "(k x sigma_same) would replace the seed-based one only where the 95 % upper bound of sigma_same is below "
          "half the seed spread of a difference.", "",
          "| shift | tolerance | seed spread of a difference | sigma_same (degrees of freedom; 95 % interval) | caught "
          "without noise | chance caught under same-seed noise (95 % interval) | false alarms (95 % interval) | "
          "caught in exact mode | same-seed tolerance: caught / false alarms | same-seed tolerance adopted |",
          "|---|---:|---:|---:|---:|---|---|---:|---|---|"]
    for r in rows:
        lo, hi = r["same_seed_sigma_interval95"]
        c_lo, c_hi = r["p_caught_range"]
        f_lo, f_hi = r["p_false_alarm_range"]
        md.append(f"| `{r['metric'].removeprefix(layout.MODELS_REPORTS + '/')}` + {r['shift']:g} | {r['tolerance']:.3g} | "
                  f"{r['seed_sigma_diff']:.3g} | {r['same_seed_sigma']:.3g} ({r['same_seed_runs']}; {lo:.3g} to {hi:.3g}) | "
                  f"{r['p_caught_noiseless']:.0%} | **{r['p_caught']:.0%}**, {r['p_caught_words']} ({c_lo:.0%} to "
                  f"{c_hi:.0%}) | {r['p_false_alarm']:.2%} ({f_lo:.2%} to {f_hi:.2%}) | {r['p_caught_exact_mode']:.0%} | "
                  f"{r['same_seed_tolerance']:.3g}: {r['same_seed_p_caught']:.0%} / {r['same_seed_p_false_alarm']:.2%} | "
                  f"{'yes' if r['same_seed_adopted'] else 'no'} |")
    return {"rows": rows, "markdown": "\n".join(md) + "\n"}


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


def noise_rows(summary: dict[str, dict[str, Any]], shifts: dict[str, float], rules: list[dict[str, Any]],
               k: float) -> list[dict[str, Any]]:
    """:func:`power_under_noise` for each required shift, at its rule's tolerance."""
    from mnist_vae.study import gate

    return [spread.power_under_noise(metric, shift, summary[metric], gate.rule_for(metric, rules)["abs"], k)
            for metric, shift in shifts.items()]


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
