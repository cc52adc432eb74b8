"""The reproduction gate's comparison: reproduced metrics against the committed ones, each
within the tolerance that tolerances.yaml declares for it."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Row:
    metric: str
    committed: Any
    new: Any
    tolerance: str
    ok: bool


def load_rules(path: str | Path = "tolerances.yaml") -> list[dict[str, Any]]:
    rules = yaml.safe_load(Path(path).read_text())["rules"]
    for rule in rules:
        if not ({"abs", "rel", "ignore"} & set(rule)) or "match" not in rule:
            raise ValueError(f"{path}: rule {rule} needs `match` and one of abs, rel, ignore")
    return rules


def rule_for(metric: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    for rule in rules:
        if fnmatch.fnmatchcase(metric, rule["match"]):
            return rule
    return {"abs": 0}  # no rule: must match exactly


def within(committed: Any, new: Any, rule: dict[str, Any]) -> bool:
    if committed is None or new is None:
        return False  # a metric appeared or disappeared
    if isinstance(committed, str) or isinstance(new, str):
        return committed == new
    diff = abs(new - committed)
    if not math.isfinite(diff):
        return False
    if "abs" in rule:
        return diff <= rule["abs"] + 1e-12
    return diff <= rule["rel"] * abs(committed) + 1e-12


def compare(diff: dict[str, dict[str, dict[str, Any]]], rules: list[dict[str, Any]]) -> list[Row]:
    """Rows for every compared metric of a `dvc metrics diff --all --json` result."""
    rows = []
    for path, metrics in sorted(diff.items()):
        for key, values in sorted(metrics.items()):
            name = f"{path}:{key}"
            rule = rule_for(name, rules)
            if rule.get("ignore"):
                continue
            tol = f"abs {rule['abs']}" if "abs" in rule else f"rel {rule['rel']:.0%}"
            rows.append(Row(name, values.get("old"), values.get("new"), tol,
                            within(values.get("old"), values.get("new"), rule)))
    return rows


def table(rows: list[Row]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))

    head = ("metric", "committed", "new", "tolerance", "")
    body = [(r.metric, fmt(r.committed), fmt(r.new), r.tolerance, "ok" if r.ok else "DRIFT") for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(5)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])
