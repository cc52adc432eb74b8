"""The spread study's arithmetic: how far each metric moves between runs that differ only in
their seeds, or only in their floating-point order, and the gate tolerances derived from it.

Inputs are flat metric mappings, ``{"<metrics file>:<dotted key>": value}``, the names
`dvc metrics diff` uses. Nothing here runs DVC; tools/spread.py does.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any, Iterable

import numpy as np

# Values that describe the run rather than measure it: compared exactly, never from spread.
EXACT = ("*:epochs", "*:iwae_k", "*:iwae_images", "*:latent_dim", "*:parameters", "*:model", "*.k")
# The device name differs by machine by design: never compared (timings are not metrics).
IGNORED = ("*:device",)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: dotted keys, as `dvc metrics diff` names them."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def flat_metrics(files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{metrics file: parsed JSON} -> {"file:dotted.key": value}."""
    return {f"{path}:{key}": value for path, tree in files.items() for key, value in flatten(tree).items()}


def kind(metric: str) -> str:
    """'ignored', 'exact' or 'measured'."""
    if any(fnmatch.fnmatchcase(metric, p) for p in IGNORED):
        return "ignored"
    if any(fnmatch.fnmatchcase(metric, p) for p in EXACT):
        return "exact"
    return "measured"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarize(seed_runs: dict[str, dict[str, Any]], default: dict[str, Any],
              variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per measured metric: n, mean, std (ddof 1), min, max over the seed runs; the default run's
    value and its z against the seed runs; and for each variant (the default seed with another
    floating-point order) its difference from the default run, also in units of the spread of a
    difference of two runs (std * sqrt 2)."""
    names = sorted({m for run in seed_runs.values() for m in run} | set(default))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if kind(name) != "measured":
            continue
        values = np.array([run[name] for run in seed_runs.values() if _number(run.get(name))], dtype=np.float64)
        if len(values) < 2:
            continue
        std = float(values.std(ddof=1))
        row: dict[str, Any] = {"n": int(len(values)), "mean": float(values.mean()), "std": std,
                               "min": float(values.min()), "max": float(values.max())}
        base = default.get(name)
        if _number(base):
            row["default"] = float(base)
            row["z"] = (base - row["mean"]) / std if std > 0 else 0.0
        deltas = {}
        for vname, run in variants.items():
            if _number(run.get(name)) and _number(base):
                d = float(run[name] - base)
                deltas[vname] = {"delta": d, "in_diff_spread": abs(d) / (std * math.sqrt(2)) if std > 0 else
                                 (0.0 if d == 0 else math.inf)}
        row["variants"] = deltas
        out[name] = row
    return out


def sigma_diff(std: float, variant_deltas: Iterable[float] = ()) -> float:
    """The spread of a difference of two runs: max(std x sqrt 2, the largest same-seed delta)."""
    return max(std * math.sqrt(2), max((abs(d) for d in variant_deltas), default=0.0))


def t_ppf(q: float, df: float) -> float:
    """Student's t quantile: scipy.stats.t.ppf's own kernel for 0 < q < 1 (the same bits,
    tests/study/test_spread.py), without the import of scipy.stats, which is slow and would be
    paid by the report stage on every run."""
    from scipy.special import stdtrit

    return stdtrit(df, q)


def t_sf(x: float, df: float) -> float:
    """Student's t upper tail P(T > x): scipy.stats.t.sf's kernel (scipy.special.stdtr), as t_ppf."""
    from scipy.special import stdtr

    return 1.0 - stdtr(df, x) if x < 0 else stdtr(df, -x)


def chi2_ppf(q: float, df: float) -> float:
    """The chi-squared quantile: scipy.stats.chi2.ppf's own kernel for 0 < q < 1 (as t_ppf)."""
    from scipy.special import gammaincinv

    return 2 * gammaincinv(df / 2, q)


def saturated_rate_tolerance(runs: int, trials: int, k: float, confidence: float = 0.95) -> tuple[float, float]:
    """(tolerance, sigma) for a rate that sat at its bound (0 or 1) in every one of `runs` runs of
    `trials` images each: the per-image chance of the other outcome is at most
    p = 1 - (1 - confidence)^(1 / (runs x trials)) (the rule of three), and a rerun's rate then
    moves by a binomial p + k sqrt(p (1 - p) / trials) at most."""
    p = 1 - (1 - confidence) ** (1 / (runs * trials))
    sigma = math.sqrt(p * (1 - p) / trials)
    return p + k * sigma, sigma


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def markdown(doc: dict[str, Any]) -> str:
    """The summary as a markdown table, one row per measured metric."""
    study = doc["study"]
    variant_names = list(study["variants"])
    lines = [
        "# Spread study",
        "",
        f"{study['what']}. Seeds: {', '.join(map(str, study['seeds']))} (n = {study['n_seeds']}). "
        "Regenerate with `make spread` on one machine, or the fan-out of docs/reproducibility.md on many "
        "(then `make tolerances`).",
        "",
        "Machines (each run's own record, reports/models/<model>/timings-train.json):",
        "",
        "| run | machine |",
        "|---|---|",
        *[f"| {run} | {machine} |" for run, machine in study["machines"].items()],
        "",
        "Columns: mean, std (ddof 1), min and max over the seed runs; `default`: the default params and seed on this "
        "machine, and its z against the seed runs; for each same-seed variant, its difference from `default` "
        "and that difference in units of the spread of a difference of two seed runs (std x sqrt 2).",
        "",
        "Variants: " + "; ".join(f"`{k}`: {v}" for k, v in study["variants"].items()) + ".",
        "",
        "| metric | n | mean | std | min | max | default | z | "
        + " | ".join(f"{v}: delta (in spread)" for v in variant_names) + " |",
        "|---|" + "---:|" * (7 + len(variant_names)),
    ]
    for name, row in sorted(doc["metrics"].items()):
        cells = [f"`{name}`", str(row["n"]), _fmt(row["mean"]), _fmt(row["std"]), _fmt(row["min"]),
                 _fmt(row["max"]), _fmt(row.get("default", float("nan"))), f"{row.get('z', float('nan')):+.2f}"]
        for v in variant_names:
            d = row.get("variants", {}).get(v)
            cells.append("-" if d is None else f"{d['delta']:+.4g} ({d['in_diff_spread']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def prediction_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, std, half-width, n): where one more run lands with probability `confidence`, from
    n runs: mean +/- t_{n-1}(1 - (1 - confidence) / 2) x std x sqrt(1 + 1/n)."""
    x = np.asarray(list(values), dtype=np.float64)
    n = len(x)
    std = float(x.std(ddof=1))
    return float(x.mean()), std, float(t_ppf(1 - (1 - confidence) / 2, n - 1) * std * math.sqrt(1 + 1 / n)), n


def reference_rows(reference: list[dict[str, Any]], runs: dict[str, dict[str, Any]],
                   ours: dict[str, Any], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Each reference number beside our run's value and where one more run of ours would land.

    `runs` are the study's runs at the default params (every seed and the default seed, which
    ran the same params): their mean, std and the `confidence` prediction interval for one new
    run. The reference is `within` when it lies inside that interval. A reference entry with
    `judged_by` is judged by that metric (the mean KL of 10,000 noise images for the one-image
    KL): `ours` and the spread are that metric's, `shown` the entry's own metric's value; its
    `image_spread` (the set's image-to-image std, averaged in square over the runs) widens the
    spread and the interval to one image of one more run.
    Rows carry label, reference, metric, ours, shown, mean, std, n, half (the interval's half
    width), z ((reference - mean) / std) and within; the spread fields are None for a metric the
    study did not measure."""
    rows = []
    for ref in reference:
        judged = ref.get("judged_by") or ref["metric"]
        row = {"label": ref["label"], "metric": judged, "reference": ref["value"], "ours": ours.get(judged),
               "shown": ours.get(ref["metric"]) if judged != ref["metric"] else None,
               "mean": None, "std": None, "n": None, "half": None, "z": None, "within": None}
        values = [r[judged] for r in runs.values() if _number(r.get(judged))]
        image_std = [r[ref["image_spread"]] for r in runs.values() if _number(r.get(ref.get("image_spread")))]
        if "image_spread" in ref and len(image_std) != len(values):
            values = []  # a study from before the set's image-to-image std was recorded
        if len(values) >= 2:
            mean, std, half, n = prediction_interval(values, confidence)
            if image_std:  # one image of one more run: its run's mean moves, and the image within the set
                image_var = float(np.mean(np.square(image_std)))
                t = float(t_ppf(1 - (1 - confidence) / 2, n - 1))
                std, half = math.sqrt(std ** 2 + image_var), t * math.sqrt(std ** 2 * (1 + 1 / n) + image_var)
            z = (ref["value"] - mean) / std if std > 0 else math.inf
            row.update(mean=mean, std=std, n=n, half=half, z=z, within=abs(ref["value"] - mean) <= half)
        rows.append(row)
    return rows


def results_table(reference: list[dict[str, Any]], runs: dict[str, dict[str, Any]],
                  committed: dict[str, Any], confidence: float = 0.95) -> str:
    """Markdown of :func:`reference_rows`: whether each reference number lies within the
    prediction interval of one more run of ours."""
    lines = ["| reference number | reference | committed run | runs: mean ± std (n) | "
             f"{confidence:.0%} prediction interval | reference inside it |",
             "|---|---:|---:|---:|---:|---|"]
    for row in reference_rows(reference, runs, committed, confidence):
        ours_cell = "-" if row["ours"] is None else f"{row['ours']:.2f}"
        if row["shown"] is not None:
            ours_cell += f" (one image: {row['shown']:.2f})"
        if row["n"] is None:
            spread_cell, interval, verdict = "not in the study", "-", "-"
        else:
            spread_cell = f"{row['mean']:.2f} ± {row['std']:.2f} ({row['n']})"
            interval = f"{row['mean'] - row['half']:.2f} to {row['mean'] + row['half']:.2f}"
            z = round(row["z"], 1) + 0.0  # + 0.0: a z of -0.04 reads +0.0, not -0.0
            verdict = f"yes (z = {z:+.1f})" if row["within"] else f"**no** (z = {z:+.1f})"
        lines.append(f"| {row['label']} | {row['reference']:.2f} | {ours_cell} | {spread_cell} | {interval} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def default_params_runs(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The study's runs at the default params (every seed and the default seed), from summary.json."""
    return {name: run for name, run in doc.get("runs", {}).items() if not name.startswith("variant:")}


def check_summary(doc: Any, path: str = "reports/spread/summary.json") -> dict[str, Any]:
    """The study's summary as the report reads it: `study` with n_seeds and machines, and
    `metrics`; DataError naming the file and the missing key otherwise."""
    from ..io.errors import DataError

    study = doc.get("study") if isinstance(doc, dict) else None
    missing = ("study" if not isinstance(study, dict) else
               next((f"study.{k}" for k in ("n_seeds", "machines") if k not in study), None)
               or ("metrics" if not isinstance(doc.get("metrics"), dict) else None))
    if missing:
        raise DataError(f"{path}: no `{missing}`; regenerate it with `python tools/study.py spread collect` (or restore it "
                        f"with `git checkout -- {path}`)")
    return doc


# --- same-seed spreads -------------------------------------------------------------------------


def sigma_upper_bound(sigma: float, n: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on a spread estimated with n degrees of freedom
    (sigma^2 n / chi^2_{1-confidence, n}): with a few machines the estimate itself is uncertain."""
    return sigma * math.sqrt(n / chi2_ppf(1 - confidence, n)) if n > 0 else math.inf
