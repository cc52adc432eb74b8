"""The statistical gate calibrated as a family: tolerances from the spread study's runs such that
an unchanged rerun fails *anywhere* at most FAMILY_FALSE_ALARM of the time, and the measurement
of that rate (and of what the gate catches) by resampling the study's own runs.

Every gated metric gets k * sigma_diff with one k for the family: Sidak's per-metric rate
1 - (1 - family)^(1 / m) over the m measured metrics, as a two-sided Student t quantile with
n - 1 degrees of freedom (sigma estimated from n runs). Correlated metrics make that
conservative; heavy tails make it optimistic, so a metric on which one of the study's runs lies
beyond the tolerance derived from the others (leave-one-out) is not gated: it is shown, and held
by the sanity bounds of its kind only (mnist_vae.study.gate). A rate or a percentile is never held
below one image's step. Whether the whole holds is not assumed: :func:`judge_resampled` re-derives
the tolerances without one pair of runs and judges the one against the other, for every pair.
"""

from __future__ import annotations

import collections
import fnmatch
import itertools
import math
from typing import Any, Callable, Iterable

import numpy as np

from . import gate, spread

FAMILY_FALSE_ALARM = 0.05
MAX_USEFUL_REL = 0.2  # a tolerance wider than this share of the value catches nothing the gated rows miss
# One image's scores: heavy-tailed by nature (one seed's model puts the noise image 5 training
# images lower, where 8 others agree to the image), and the 10,000-image rows judge the same
# thing; shown and held by their kind's bounds, never gated.
ONE_IMAGE = ("*:noise_image.*",)


def family_k(metrics: int, n_runs: int, family: float = FAMILY_FALSE_ALARM) -> float:
    """k for `metrics` metrics whose sigma comes from `n_runs` runs, so that all of them stay
    inside k sigma_diff with probability 1 - family if they were independent (Sidak)."""
    per_metric = 1 - (1 - family) ** (1 / max(metrics, 1))
    return float(spread.t_ppf(1 - per_metric / 2, n_runs - 1))


def step_of(metric: str, images: dict[str, int]) -> float:
    """One image's step of a rate (1 / images) or of a percentile (100 / images), else 0."""
    n = images.get(metric)
    if not n:
        return 0.0
    return (100.0 if metric.endswith("percentile") else 1.0) / n


def derive(runs: dict[str, dict[str, Any]], same_seed: dict[str, dict[str, Any]], images: dict[str, int],
           family: float = FAMILY_FALSE_ALARM, max_useful_rel: float = MAX_USEFUL_REL) -> tuple[list[dict], float]:
    """(rules, k) from the study's runs at the default params (`runs`: seeds and the default seed,
    flat metrics) and its same-seed variants (`same_seed`: label -> flat metrics of the default
    seed in another floating-point order, compared with runs["default"] when there is one).
    `images`: rate or percentile metric -> the images behind one step of it."""
    default = runs.get("default") or next(iter(runs.values()))
    rows = spread.summarize(runs, default, same_seed)
    k = round(family_k(len(rows), len(runs), family), 3)
    rules: list[dict[str, Any]] = [{"match": p, "ignore": True} for p in spread.IGNORED]
    rules += [{"match": p, "exact": True} for p in spread.EXACT]
    for name, row in sorted(rows.items()):
        values = np.array([r[name] for r in runs.values() if spread._number(r.get(name))], dtype=np.float64)
        sigma = spread.sigma_diff(row["std"], (v["delta"] for v in row["variants"].values()))
        step = step_of(name, images)
        why = ""
        if step and np.all(values == values[0]) and values[0] in (0.0, 1.0, 100.0):
            # at its bound in every run: binomial (rule of three) over the images, not a zero spread
            scale = 100.0 if name.endswith("percentile") else 1.0
            tol, sigma = (scale * v for v in spread.saturated_rate_tolerance(len(values), int(round(scale / step)), k))
            sigma *= math.sqrt(2)
            why = f"at {values[0]:g} in all {len(values)} runs: binomial over {int(round(scale / step))} images"
        tol = max(k * sigma, step) if not why else max(tol, step)
        rule = {"match": name, "abs": float(f"{tol:.4g}"), "sigma_diff": float(f"{sigma:.4g}")}
        if images.get(name):
            rule["images"] = images[name]  # the kind's bounds count images (gate.kind_problem)
        outlier = _leave_one_out_outlier(values, row["variants"], k, step)
        if any(fnmatch.fnmatchcase(name, p) for p in ONE_IMAGE):
            rule["gated"] = False
            why = "one image's score: the 10,000-image rows judge it"
        elif outlier is not None and not why:
            rule["gated"] = False
            why = f"heavy tails: one run lies {outlier:.1f} sigma_diff of the others from another"
        elif tol > max_useful_rel * abs(row["mean"]):
            rule["gated"] = False
            why = f"tolerance over {max_useful_rel:.0%} of the value"
        if why:
            rule["why"] = why
        rules.append(rule)
    return rules, k


def _leave_one_out_outlier(values: np.ndarray, variants: dict, k: float, step: float) -> float | None:
    """The largest distance (in the others' sigma_diff) of a run from another, when some run lies
    beyond k sigma_diff of the runs without it; None when every run is covered."""
    worst = None
    for i in range(len(values)):
        rest = np.delete(values, i)
        if len(rest) < 2:
            return None
        sigma = spread.sigma_diff(float(rest.std(ddof=1)), (v["delta"] for v in variants.values()))
        far = float(np.max(np.abs(rest - values[i])))
        if far > max(k * sigma, step) * (1 + 1e-12):
            worst = max(worst or 0.0, far / sigma if sigma else math.inf)
    return worst


Deriver = Callable[[dict[str, dict[str, Any]]], list[dict[str, Any]]]


def pair_rules(runs: dict[str, dict[str, Any]], derive_rules: Deriver) -> dict[tuple[str, str], list[dict]]:
    """The tolerances without each pair of runs, derived once per pair: every case judged on
    that pair (no change, or a shift) shares them."""
    return {(a, b): derive_rules({n: r for n, r in runs.items() if n not in (a, b)})
            for a, b in itertools.permutations(sorted(runs), 2)}


def judge_resampled(runs: dict[str, dict[str, Any]], derive_rules: Deriver,
                    shift: tuple[str, float] | None = None,
                    rules_by_pair: dict[tuple[str, str], list[dict]] | None = None) -> list[dict[str, Any]]:
    """Leave one pair out: for every ordered pair (committed, rerun) of the study's runs, the
    tolerances from the other runs (`rules_by_pair` when already derived), and the gate's verdict
    on the rerun (its `shift` metric moved by the shift, when given).
    [{committed, rerun, failing: [metrics]}]."""
    out = []
    for (a, b), rules in (rules_by_pair or pair_rules(runs, derive_rules)).items():
        new = dict(runs[b])
        if shift:
            new[shift[0]] = new[shift[0]] + shift[1]
        bad = gate.failures(gate.compare(gate.diff_of(runs[a], new), rules))
        out.append({"committed": a, "rerun": b, "failing": sorted(r.metric for r in bad)})
    return out


def calibrate(runs: dict[str, dict[str, Any]], derive_rules: Deriver, losses: Iterable[str],
              shifts: Iterable[float] = (0.5, 1.0)) -> dict[str, Any]:
    """The family-wise false-alarm rate of unchanged reruns, and per loss and shift how often the
    gate fails the shifted rerun (anywhere) and how often the shifted metric itself fails."""
    rules = pair_rules(runs, derive_rules)
    null = judge_resampled(runs, derive_rules, rules_by_pair=rules)
    failing = collections.Counter(m for j in null for m in j["failing"])
    out: dict[str, Any] = {"judgments": len(null), "false_alarms": sum(bool(j["failing"]) for j in null),
                           "failing_metrics": dict(failing.most_common()), "catch": {}}
    out["false_alarm_rate"] = out["false_alarms"] / len(null)
    for metric in losses:
        for shift in shifts:
            judged = judge_resampled(runs, derive_rules, (metric, shift), rules)
            out["catch"][f"{metric} + {shift:g}"] = {
                "metric": metric, "shift": shift,
                "caught": sum(bool(j["failing"]) for j in judged) / len(judged),
                "metric_fails": sum(metric in j["failing"] for j in judged) / len(judged)}
    return out
