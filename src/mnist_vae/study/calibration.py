"""The statistical gate calibrated as a family: tolerances from the spread study's runs such that
an unchanged rerun fails *anywhere* at most FAMILY_FALSE_ALARM of the time, and the measurement
of that rate (and of what the gate catches) by resampling the study's own runs.

Every gated metric gets k * sigma_diff with one k for the family: Sidak's per-metric rate
1 - (1 - family)^(1 / m) over the m distinct measured metrics (a metric whose values equal
another's in every run, or that is constant, adds no test), as a two-sided Student t quantile
with n - 1 degrees of freedom (sigma estimated from n runs). Correlated metrics make that
conservative; heavy tails make it optimistic, so a metric on which one of the study's runs lies
beyond the tolerance derived from the others (leave-one-out) is not gated: it is shown, and held
by the sanity bounds of its kind only (mnist_vae.study.gate). A rate or a percentile is never held
below one image's step, a count (active units) below one unit; a value that is the same in every
run gives no spread to derive a tolerance from, and is shown, not gated. Whether the whole holds is not assumed: :func:`judge_resampled` re-derives
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


def leave_pair_out_rate(metrics: int, n_runs: int, k: float) -> float:
    """The family-wise false-alarm rate that leaving one pair of `n_runs` runs out measures with a
    given k, were the metrics independent and normal: each pair's difference against k sigma_diff
    from the other n - 2 runs, a Student t with n - 3 degrees of freedom. With the deployed k (from
    n runs) it exceeds the deployed gate's rate: the resampling judges a gate built from fewer runs."""
    per_metric = 2 * float(spread.t_sf(k, n_runs - 3))
    return 1 - (1 - per_metric) ** max(metrics, 1)


COUNTS = ("*:active_units",)  # integers: never held below one unit


def distinct_metrics(runs: dict[str, dict[str, Any]], names: Iterable[str]) -> int:
    """How many tests the family holds: the metrics that vary over the runs, a metric whose values
    equal another's in every run counted once."""
    vectors = set()
    for name in names:
        values = tuple(r.get(name) for r in runs.values())
        if len(set(values)) > 1:
            vectors.add(values)
    return len(vectors)


def step_of(metric: str, images: dict[str, int]) -> float:
    """One image's step of a rate (1 / images) or of a percentile (100 / images), one unit of a
    count, else 0."""
    if any(fnmatch.fnmatchcase(metric, p) for p in COUNTS):
        return 1.0
    n = images.get(metric)
    if not n:
        return 0.0
    return (100.0 if metric.endswith("percentile") else 1.0) / n


def per_metric_rate(metrics: int, family: float = FAMILY_FALSE_ALARM) -> float:
    return 1 - (1 - family) ** (1 / max(metrics, 1))


def same_seed_k(metrics: int, n_same: int, family: float = FAMILY_FALSE_ALARM) -> float:
    """The family's per-metric rate as a t quantile with the same-seed runs' degrees of freedom."""
    return round(float(spread.t_ppf(1 - per_metric_rate(metrics, family) / 2, n_same - 1)), 3)


def distinct_roundings(runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """label -> the label of the first run (in the given order) whose trained models give every
    measured metric it gives: a run that repeats an earlier one's models is the same trajectory,
    not another sample of the noise, and counts once (fast mode at 1 and at 2 threads here: only
    the train loss, the epoch's batch losses summed in an order that follows the threads, differs)."""
    def of_the_model(run: dict) -> dict:
        return {k: v for k, v in run.items() if spread.kind(k) == "measured" and not k.endswith("train.json:train_loss")}

    first: dict[str, str] = {}
    for label, run in runs.items():
        first[label] = next((kept for kept in dict.fromkeys(first.values())
                             if of_the_model(runs[kept]) == of_the_model(run)), label)
    return first


def same_seed_sigma(deltas: list[float]) -> tuple[float, int]:
    """(the spread of a rerun's difference from the committed run, its degrees of freedom) from the
    same-seed variants' differences from it: their root mean square, one degree of freedom each.
    The gate compares a rerun with that one committed run, so this is the spread it faces, a
    systematic offset of the other roundings from it included (the variants' other roundings land
    together, apart from universal mode's committed run)."""
    d = np.asarray(deltas, dtype=np.float64)
    return (math.sqrt(float(np.mean(d * d))), len(d)) if len(d) >= 2 else (math.nan, 0)


def derive(runs: dict[str, dict[str, Any]], same_seed: dict[str, dict[str, Any]], images: dict[str, int],
           family: float = FAMILY_FALSE_ALARM, max_useful_rel: float = MAX_USEFUL_REL,
           k: float | None = None, same_seed_runs: dict[str, dict[str, Any]] | None = None,
           k_same: float | None = None) -> tuple[list[dict], float]:
    """(rules, k) from the study's runs at the default params (`runs`: seeds and the default seed,
    flat metrics) and its same-seed variants (`same_seed`: label -> flat metrics of the default
    seed in another floating-point order, compared with runs["default"] only: without it they
    are left out, never compared with another seed's run). `images`: rate or percentile metric ->
    the images behind one step of it. `k`: the family's k as given (the deployed one, when the
    tolerances are derived again without some runs), else derived from these runs.

    `same_seed_runs` (the same-seed study: the committed run and the committed seed in other
    roundings): a rerun the gate judges statistically is such a run, so a metric whose same-seed
    spread is smaller than the seed spread of a difference beyond doubt (its 95 % upper bound below
    it) is held to k_same x sigma_same instead, k_same the family's per-metric rate as a t quantile
    with the same-seed runs' degrees of freedom (`spread: same-seed` in its rule, with its k)."""
    if "default" not in runs:
        same_seed = {}
    default = runs.get("default") or next(iter(runs.values()))
    rows = spread.summarize(runs, default, same_seed)
    m = distinct_metrics(runs, rows)
    if k is None:
        k = round(family_k(m, len(runs), family), 3)
    base = (same_seed_runs or {}).get("committed")
    n_same = len(same_seed_runs or {}) - 1 if base else 0  # the variants
    if n_same >= 2 and k_same is None:
        k_same = same_seed_k(m, n_same + 1, family)
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
        constant = not why and not step and bool(np.all(values == values[0]))
        tol = max(k * sigma, step) if not why else max(tol, step)
        rule = {"match": name, "abs": float(f"{tol:.4g}"), "sigma_diff": float(f"{sigma:.4g}")}
        if images.get(name):
            rule["images"] = images[name]  # the kind's bounds count images (gate.kind_problem)
        outlier = _leave_one_out_outlier(values, row["variants"], k, step)
        deltas = [r[name] - base[name] for n, r in (same_seed_runs or {}).items() if n != "committed"
                  and spread._number(r.get(name))] if base and spread._number(base.get(name)) else []
        sigma_same, df_same = same_seed_sigma(deltas) if n_same and len(deltas) == n_same else (math.nan, 0)
        if df_same and not why and sigma_same > 0 and spread.sigma_upper_bound(sigma_same, df_same) < sigma:
            # a same-seed spread of 0 from a few runs supports no zero tolerance
            tol = max(k_same * sigma_same, step)
            rule.update({"abs": float(f"{tol:.4g}"), "sigma_diff": float(f"{sigma_same:.4g}"), "spread": "same-seed",
                         "k": k_same, "seed_sigma_diff": float(f"{sigma:.4g}")})
            constant = outlier = None  # the seed runs' shape no longer sets the tolerance
        if any(fnmatch.fnmatchcase(name, p) for p in ONE_IMAGE):
            # another rounding of the committed seed moved the 20-d model's noise image KL from 55 to
            # 77 nats and its z-score from 5.9 to 10.4: held by half its value (a collapse), not by
            # the seed spread; the z-score, a ratio of rows judged elsewhere, by nothing
            rule["gated"] = False
            rule.pop("sigma_diff")
            if name.endswith("kl_z_score"):
                rule["sanity"] = False
            why = "one image's score: the 10,000-image rows judge it"
        elif constant:
            rule["gated"] = False
            why = f"{values[0]:g} in all {len(values)} runs: no spread to derive a tolerance from"
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
        out.append({"committed": a, "rerun": b, "failing": sorted(r.metric for r in bad),
                    "beyond_tolerance": sorted(r.metric for r in bad if r.gated and not r.ok),
                    "floors": sorted(r.metric for r in bad if not (r.gated and not r.ok))})
    return out


def rate_interval(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of a rate of x in n (beta quantiles: scipy.special's kernel)."""
    from scipy.special import betaincinv

    tail = (1 - confidence) / 2
    low = float(betaincinv(x, n - x + 1, tail)) if x > 0 else 0.0
    high = float(betaincinv(x + 1, n - x, 1 - tail)) if x < n else 1.0
    return low, high


def _rate(x: int, n: int) -> dict[str, Any]:
    low, high = rate_interval(x, n)
    return {"count": x, "of": n, "rate": x / n if n else math.nan, "interval95": [low, high]}


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
    # gated metrics beyond their tolerance, apart from the bounds every row has (kind, sanity)
    out["any"] = _rate(out["false_alarms"], len(null))
    out["gated"] = _rate(sum(bool(j["beyond_tolerance"]) for j in null), len(null))
    out["floors"] = _rate(sum(bool(j["floors"]) for j in null), len(null))
    for metric in losses:
        for shift in shifts:
            judged = judge_resampled(runs, derive_rules, (metric, shift), rules)
            out["catch"][f"{metric} + {shift:g}"] = {
                "metric": metric, "shift": shift,
                "caught": sum(bool(j["failing"]) for j in judged) / len(judged),
                "metric_fails": sum(metric in j["failing"] for j in judged) / len(judged)}
    return out


def direction(metric: str) -> int:
    """The way a regression moves a metric: +1 for a loss or a false-positive rate, -1 for an
    AUROC or a detection rate."""
    key = metric.split(":", 1)[-1]
    return -1 if key.endswith(("auroc", "detection_rate")) else 1


def _fails(metric: str, committed: float, new: float, rules: list[dict]) -> bool:
    return bool(gate.failures(gate.compare(gate.diff_of({metric: committed}, {metric: new}), rules)))


def threshold(metric: str, committed: float, rerun: float, rules: list[dict], sign: int) -> float:
    """The smallest shift (in the direction `sign`) of the rerun's `metric` that the gate fails,
    by bisection on the gate itself (its tolerance, kind bounds and sanity bound); inf where none
    up to a shift the size of the value does."""
    if _fails(metric, committed, rerun, rules):
        return 0.0
    top = max(abs(committed), abs(rerun), 1.0)
    if sign < 0:  # an AUROC or a rate cannot fall below 0
        top = min(top, max(rerun, 0.0))
    if not _fails(metric, committed, rerun + sign * top, rules):
        return math.inf
    low, high = 0.0, top
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (low, mid) if _fails(metric, committed, rerun + sign * mid, rules) else (mid, high)
    return high


def detectable_shift(runs: dict[str, dict[str, Any]], rules_by_pair: dict[tuple[str, str], list[dict]],
                     metric: str, coverage: float = 0.95) -> tuple[float, int]:
    """(the smallest regression of `metric` the gate catches in `coverage` of the leave-pair-out
    reruns, the number of reruns): each pair's own threshold, then their `coverage` quantile
    (the smallest shift at least that share of the reruns fail)."""
    sign = direction(metric)
    found = sorted(threshold(metric, runs[a][metric], runs[b][metric], [gate.rule_for(metric, rules)], sign)
                   for (a, b), rules in rules_by_pair.items()
                   if spread._number(runs[a].get(metric)) and spread._number(runs[b].get(metric)))
    if not found:
        return math.nan, 0
    return found[min(len(found) - 1, math.ceil(coverage * len(found)) - 1)], len(found)


def same_seed_pairs(seed_runs: dict[str, dict[str, Any]], same_runs: dict[str, dict[str, Any]],
                    derive_rules: Callable[[dict, dict], list[dict]], base: str = "committed"
                    ) -> dict[tuple[str, str], list[dict]]:
    """What the gate does, without each variant in turn: (committed, variant) -> the tolerances
    derived with that variant left out of the same-seed study (the seed spread from the seed runs)."""
    return {(base, b): derive_rules(seed_runs, {n: r for n, r in same_runs.items() if n != b})
            for b in sorted(same_runs) if b != base}


def calibrate_same_seed(same_runs: dict[str, dict[str, Any]], rules_by_pair: dict[tuple[str, str], list[dict]],
                        ) -> dict[str, Any]:
    """Each same-seed variant, an unchanged rerun in another rounding, judged against the committed
    run under the tolerances derived without it: how often the gate fails one (a gated metric
    beyond its tolerance; a kind or sanity bound), with intervals."""
    null = []
    for (a, b), rules in rules_by_pair.items():
        bad = gate.failures(gate.compare(gate.diff_of(same_runs[a], same_runs[b]), rules))
        null.append({"committed": a, "rerun": b, "failing": sorted(r.metric for r in bad),
                     "beyond_tolerance": sorted(r.metric for r in bad if r.gated and not r.ok),
                     "floors": sorted(r.metric for r in bad if not (r.gated and not r.ok))})
    failing = collections.Counter(m for j in null for m in j["failing"])
    return {"judgments": len(null), "runs": len(same_runs), "failing_metrics": dict(failing.most_common()),
            "any": _rate(sum(bool(j["failing"]) for j in null), len(null)),
            "gated": _rate(sum(bool(j["beyond_tolerance"]) for j in null), len(null)),
            "floors": _rate(sum(bool(j["floors"]) for j in null), len(null))}
