"""The published reference's numbers (reference.yaml) and which of our models each compares to.

reference.yaml holds the reference's setups (the 20-d model, the 2-d model, the 20-d model at
batch 512). Each setup says what its model is (latent size, hidden sizes, batch size), and binds
to the first model in params.yaml's `models` that is that: so a model keeps its reference rows
when it is renamed, and loses them when it becomes another model (a 10-d latent is not the
reference's 20-d one). A setup's metrics are named relative to the model's reports folder
("train.json:test_loss"); :func:`bind` turns them into the pipeline's metric names
("reports/models/<model>/train.json:test_loss").
"""

from __future__ import annotations

import math
from typing import Any

from ..io import layout
from ..io.errors import DataError

__all__ = ["check", "describe", "bind", "MODEL_KEYS"]

# what a setup's `model` says about the model, in params.yaml's terms (batch_size from `train`,
# after the model's overrides; decoder_hidden as trained, null mirrored)
MODEL_KEYS = ("latent_dim", "encoder_hidden", "decoder_hidden", "batch_size")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_ints(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


def check(doc: Any, path: str = "reference.yaml") -> dict[str, Any]:
    """reference.yaml's content, checked: `setups`, each with `model` (MODEL_KEYS), `numbers`
    (label, finite value, metric "<file in the model's folder>:<dotted key>", optional judged_by)
    and optional `epochs` (equal-length lists of finite train and test losses). A bad entry
    raises DataError with one line naming the file, the entry and the key."""

    def bad(where: str, what: str) -> DataError:
        return DataError(f"{path}: {where}: {what}; fix it, or restore it with `git checkout -- {path}`")

    if not isinstance(doc, dict) or not isinstance(doc.get("setups"), dict) or not doc["setups"]:
        raise bad("setups", "the file must map `setups` to the reference's setups, each with model and numbers")
    unknown = sorted(set(doc) - {"setups"})
    if unknown:
        raise bad(unknown[0], "unknown key (the file has `setups`)")
    seen: dict[tuple, str] = {}
    for name, setup in doc["setups"].items():
        where = f"setups.{name}"
        if not isinstance(setup, dict):
            raise bad(where, "must be a mapping with model, numbers and (optional) epochs")
        extra = sorted(set(setup) - {"about", "model", "numbers", "epochs"})
        missing = [k for k in ("model", "numbers") if k not in setup]
        if extra or missing:
            raise bad(where, f"unknown key {extra[0]!r}" if extra else f"missing key {missing[0]!r}")
        model = setup["model"]
        if not isinstance(model, dict) or sorted(model) != sorted(MODEL_KEYS):
            raise bad(f"{where}.model", f"must have exactly {', '.join(MODEL_KEYS)}")
        for key in MODEL_KEYS:
            value = model[key]
            ok = _positive_ints(value) if key.endswith("hidden") else (
                isinstance(value, int) and not isinstance(value, bool) and value > 0)
            if not ok:
                raise bad(f"{where}.model.{key}", f"must be a positive integer{' list' if key.endswith('hidden') else ''}"
                                                  f", got {value!r}")
        spec = tuple(tuple(v) if isinstance(v, list) else v for v in (model[k] for k in MODEL_KEYS))
        if spec in seen:
            raise bad(f"{where}.model", f"is the same model as setups.{seen[spec]} (each setup binds to one model)")
        seen[spec] = name
        numbers = setup["numbers"]
        if not isinstance(numbers, list):
            raise bad(f"{where}.numbers", "must be a list of {label, value, metric}")
        for i, row in enumerate(numbers):
            at = f"{where}.numbers[{i}]"
            if not isinstance(row, dict):
                raise bad(at, f"must be a mapping with label, value, metric, got {row!r}")
            extra = sorted(set(row) - {"label", "value", "metric", "judged_by", "image_spread"})
            missing = [k for k in ("label", "value", "metric") if k not in row]
            if extra or missing:
                raise bad(at, f"unknown key {extra[0]!r}" if extra else f"missing key {missing[0]!r}")
            if not _finite(row["value"]):
                raise bad(f"{at}.value ({row['label']})", f"must be a finite number, got {row['value']!r}")
            if ("image_spread" in row) != ("judged_by" in row):
                raise bad(f"{at} ({row['label']})", "judged_by (a set's mean) and image_spread (its image-to-image std) "
                                                    "come together: one image is judged by the set it is one of")
            for key in ("metric", "judged_by", "image_spread"):
                if key not in row:
                    continue
                file, _, dotted = row[key].partition(":") if isinstance(row[key], str) else ("", "", "")
                if file not in layout.METRICS_FILES or not dotted:
                    raise bad(f"{at}.{key} ({row['label']})",
                              f"must be '<{' | '.join(layout.METRICS_FILES)}>:<dotted key>', got {row[key]!r}")
        losses = setup.get("epochs")
        if losses is None:
            continue
        if not isinstance(losses, dict) or sorted(losses) != ["test_loss", "train_loss"]:
            raise bad(f"{where}.epochs", "must have exactly train_loss and test_loss")
        for key, values in losses.items():
            if not isinstance(values, list) or not values:
                raise bad(f"{where}.epochs.{key}", "must be a non-empty list of numbers")
            for j, value in enumerate(values):
                if not _finite(value):
                    raise bad(f"{where}.epochs.{key}[{j}]", f"must be a finite number, got {value!r}")
        if len(losses["train_loss"]) != len(losses["test_loss"]):
            raise bad(f"{where}.epochs", "train_loss and test_loss must have one value per epoch each")
    return doc


def describe(p: Any) -> dict[str, dict[str, Any]]:
    """What each model in params.yaml is, in a setup's terms (MODEL_KEYS), in params order.
    Reads `models` and `train.batch_size` only (the report stage declares just those)."""
    out = {}
    for name in p.models:
        model = p.models[name]
        override = model.train.batch_size if model.train is not None else None
        out[name] = {"latent_dim": model.latent_dim, "encoder_hidden": list(model.encoder_hidden),
                     "decoder_hidden": list(model.decoder_sizes),
                     "batch_size": override if override is not None else p.train.batch_size}
    return out


def bind(doc: dict[str, Any], models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The checked reference bound to our models: `models` is :func:`describe` of params.yaml. Returns `bound` (setup -> model), `numbers` (every bound
    setup's rows, metrics named in full) and `epochs` (model -> the setup's per-epoch losses).
    A setup that is none of our models has no rows."""
    bound: dict[str, str] = {}
    for name, setup in doc["setups"].items():
        match = next((m for m, spec in models.items() if spec == setup["model"] and m not in bound.values()), None)
        if match is not None:
            bound[name] = match
    numbers, epochs = [], {}
    for name, model in bound.items():
        setup, folder = doc["setups"][name], layout.model_dir(model)
        for row in setup["numbers"]:
            numbers.append({**row, **{key: f"{folder}/{row[key]}" for key in ("metric", "judged_by", "image_spread") if key in row}})
        if "epochs" in setup:
            epochs[model] = setup["epochs"]
    return {"bound": bound, "numbers": numbers, "epochs": epochs}


def load(root: str = ".") -> dict[str, Any]:
    """:func:`bind` of the repository at `root`: its reference.yaml, checked, and its params.yaml."""
    from pathlib import Path

    from ..io import artifacts, params

    doc = check(artifacts.read_yaml(Path(root) / "reference.yaml"))
    return bind(doc, describe(params.load(Path(root) / "params.yaml")))


def bound_models(root: str = ".") -> dict[str, str]:
    """setup -> model of the repository at `root`: what the study and the benchmark measure as
    "the 20-d model" and "the 2-d model"."""
    return load(root)["bound"]


def setup_model(setup: str, root: str = ".") -> str:
    """The model bound to one setup; DataError naming the setup where no model is it."""
    bound = bound_models(root)
    if setup not in bound:
        raise DataError(f"reference.yaml: no model under `models` in params.yaml is the setup {setup!r} (its "
                        f"latent size, hidden sizes and batch size); add one to measure against it")
    return bound[setup]
