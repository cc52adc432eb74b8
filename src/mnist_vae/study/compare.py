"""Experiments side by side at terminal width, from `dvc exp show --json` (tools/compare.py).

`dvc exp show --only-changed` names each column by its full metric path (about 45 characters),
so even two experiments of a latent-size grid need some 200 columns. This table keeps what a
comparison is about: the params that differ between the rows, and each model's headline metrics
(test loss, IWAE bound) where they differ, under short names. When that is still wider than the
terminal it turns over: one row per column, one column per experiment.
"""

from __future__ import annotations

from typing import Any

from ..io import layout
from .spread import flatten

# each model's headline metrics: (file in reports/models/<model>/, key, short name)
HEADLINE = (("train.json", "test_loss", "loss"), ("eval.json", "test_iwae_nll", "iwae"))


def experiments(doc: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `dvc exp show --json`: workspace, each baseline commit and its experiments, in
    DVC's order, each as {name, params (flat params.yaml), metrics (flat, "<file>:<key>")}."""
    rows: list[dict[str, Any]] = []

    def add(state: dict[str, Any]) -> None:
        data = state.get("data") or {}
        params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
        metrics = {f"{path}:{key}": value for path, entry in (data.get("metrics") or {}).items()
                   for key, value in flatten((entry or {}).get("data") or {}).items()}
        rows.append({"name": state.get("name") or (rev if (rev := state["rev"]) == "workspace" else rev[:7]), "params": params, "metrics": metrics})

    for state in doc:
        add(state)
        for group in state.get("experiments") or []:
            revs = group.get("revs") or []
            if revs:
                add({**revs[0], "name": group.get("name") or revs[0].get("name")})
    return rows


def _cell(value: Any, metric: bool = False) -> str:
    """A param as written (0.0005, [400, 150]); a metric in nats to 2 decimals."""
    if value is None:
        return "-"
    if metric and isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list):
        return "[" + ",".join(_cell(v) for v in value) + "]"
    return str(value)


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    """(short name, full name, cells) of each column worth showing: the params whose values
    differ between the rows, then each model's headline metrics that differ (all of them when
    no row differs from another, so a single run still shows its results)."""
    out = []
    keys = sorted({k for r in rows for k in r["params"]})
    for key in keys:
        cells = [_cell(r["params"].get(key)) for r in rows]
        if len(set(cells)) > 1:
            out.append((key.removeprefix("models."), key, cells))  # models.vae2d.latent_dim -> vae2d.latent_dim
    models = sorted({m.split("/")[2] for r in rows for m in r["metrics"] if m.startswith(layout.MODELS_REPORTS + "/")})
    headline = []
    for model in models:
        for file, key, short in HEADLINE:
            full = f"{layout.MODELS_REPORTS}/{model}/{file}:{key}"
            cells = [_cell(r["metrics"].get(full), metric=True) for r in rows]
            if any(c != "-" for c in cells):
                headline.append((f"{model} {short}", full, cells))
    changed = [c for c in headline if len(set(c[2])) > 1]
    return out + (changed if changed or len(rows) > 1 and out else headline)


def table(rows: list[dict[str, Any]], width: int = 80) -> str:
    """The rows as an aligned text table of at most `width` columns where it can be: experiments
    down the side, or, when that is wider, turned over (experiments across)."""
    cols = columns(rows)
    names = [r["name"] if len(r["name"]) <= 14 else r["name"][:13] + "~" for r in rows]  # names DVC makes up are shorter

    def render(header: list[str], body: list[list[str]]) -> list[str]:
        widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(header)]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(line) for line in body]

    wide = render(["experiment"] + [c[0] for c in cols], [[n] + [c[2][i] for c in cols] for i, n in enumerate(names)])
    if max(map(len, wide)) <= width:
        return "\n".join(wide) + "\n"
    return "\n".join(render([""] + names, [[c[0]] + c[2] for c in cols])) + "\n"
