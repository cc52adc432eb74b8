"""Loading and validating params.yaml.

The whole file is checked once, when a stage loads it: an unknown key, a wrong type or an
impossible value raises :class:`ParamsError` naming the dotted key, before anything is written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import yaml


class ParamsError(ValueError):
    """A params.yaml value that cannot be used; the message names the key."""


# --- value checkers: each takes (key, value) and returns the cleaned value or raises -----------

Check = Callable[[str, Any], Any]


def _fail(key: str, expected: str, value: Any) -> None:
    raise ParamsError(f"params: '{key}' must be {expected}, got {value!r}")


def integer(minimum: int | None = None) -> Check:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, "an integer", value)
        if minimum is not None and value < minimum:
            _fail(key, f"an integer >= {minimum}", value)
        return value

    return check


def number(low: float | None = None, high: float | None = None, open_low=False, open_high=False) -> Check:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(key, "a finite number", value)
        lo_bad = low is not None and (value <= low if open_low else value < low)
        hi_bad = high is not None and (value >= high if open_high else value > high)
        if lo_bad or hi_bad:
            lo = "" if low is None else ("(" if open_low else "[") + str(low)
            hi = "" if high is None else str(high) + (")" if open_high else "]")
            _fail(key, f"a number in {lo or '(-inf'}, {hi or 'inf)'}", value)
        return float(value)

    return check


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(key, "true or false", value)
    return value


def string(*choices: str, pattern: Callable[[str], bool] | None = None) -> Check:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str):
            _fail(key, "a string", value)
        if choices and value not in choices and not (pattern and pattern(value)):
            _fail(key, "one of " + ", ".join(choices), value)
        return value

    return check


def optional(inner: Check) -> Check:
    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)

    return check


def int_list(minimum: int, min_len: int = 0) -> Check:
    item = integer(minimum)

    def check(key: str, value: Any) -> list[int]:
        if not isinstance(value, list) or len(value) < min_len:
            _fail(key, f"a list of at least {min_len} integers", value)
        return [item(f"{key}[{i}]", v) for i, v in enumerate(value)]

    return check


def quantile_range(key: str, value: Any) -> list[float]:
    if not isinstance(value, list) or len(value) != 2:
        _fail(key, "a list [low, high] of two quantiles", value)
    lo, hi = (number(0, 1, open_low=True, open_high=True)(f"{key}[{i}]", v) for i, v in enumerate(value))
    if lo >= hi:
        _fail(key, "[low, high] with 0 < low < high < 1", value)
    return [lo, hi]


def _is_cuda(value: str) -> bool:
    return value.startswith("cuda:") and value[5:].isdigit()


# --- the schema ---------------------------------------------------------------------------------

MODEL = {
    "latent_dim": integer(1),
    "encoder_hidden": int_list(1),
    "decoder_hidden": optional(int_list(1)),
}

GIF = {
    "start": integer(0),
    "stop": optional(integer(1)),
    "step": integer(1),
    "seconds_per_frame": number(0.01, 10),
}

SCHEMA: dict[str, Any] = {
    "data": {"threshold": number(0, 1, open_low=True, open_high=True)},
    "models": ("mapping", MODEL),
    "train": {
        "epochs": integer(1),
        "batch_size": integer(1),
        "lr": number(0, 10, open_low=True),
        "seed": integer(0),
        "device": string("auto", "cpu", "cuda", pattern=_is_cuda),
        "train_limit": optional(integer(1)),
        "test_limit": optional(integer(1)),
        "eval_batch_size": integer(1),
        "step": string("fused", "autograd"),
    },
    "tracking": {
        "enabled": boolean,
        "every": integer(1),
        "recon_indices": int_list(0, min_len=1),
        "manifold_n": integer(2),
        "manifold_quantiles": quantile_range,
    },
    "evaluate": {
        "iwae_k": integer(1),
        "iwae_images": optional(integer(1)),
        "iwae_chunk": integer(1),
        "active_unit_threshold": number(0, open_low=True),
        "seed": integer(0),
    },
    "grids": {
        "manifold_n": integer(2),
        "manifold_quantiles": quantile_range,
        "recon_scale": integer(1),
        "prior_samples": integer(1),
        "prior_nrow": integer(1),
        "seed": integer(0),
    },
    "gifs": {
        "manifold_all": GIF,
        "manifold_early": GIF,
        "recon_all": GIF,
        "recon_early": GIF,
        "recon_scale": integer(1),
        "manifold_scale": integer(1),
    },
    "anomaly": {
        "model": string(),
        "k": number(0, open_low=True),
        "seed": integer(0),
        "noise_images": integer(1),
        "elbo_samples": integer(1),
        "batch_size": integer(1),
    },
}


def _validate(schema: Any, value: Any, key: str) -> Any:
    if callable(schema):
        return schema(key, value)
    if isinstance(schema, tuple):  # ("mapping", item schema): free names, each checked by item
        if not isinstance(value, dict) or not value:
            _fail(key, "a non-empty mapping", value)
        return {name: _validate(schema[1], v, f"{key}.{name}") for name, v in value.items()}
    if not isinstance(value, dict):
        _fail(key or "params", "a mapping", value)
    prefix = f"{key}." if key else ""
    unknown = sorted(set(value) - set(schema))
    if unknown:
        raise ParamsError(f"params: unknown key '{prefix}{unknown[0]}' (allowed: {', '.join(schema)})")
    missing = [k for k in schema if k not in value]
    if missing:
        raise ParamsError(f"params: missing key '{prefix}{missing[0]}'")
    return {k: _validate(s, value[k], prefix + k) for k, s in schema.items()}


def validate(raw: Any) -> dict[str, Any]:
    """Check a parsed params mapping against the schema; return it with defaults resolved."""
    params = _validate(SCHEMA, raw, "")
    for name, model in params["models"].items():
        if model["decoder_hidden"] is None:
            model["decoder_hidden"] = list(reversed(model["encoder_hidden"]))
    if params["anomaly"]["model"] not in params["models"]:
        raise ParamsError(
            f"params: 'anomaly.model' must name one of models ({', '.join(params['models'])}), "
            f"got {params['anomaly']['model']!r}"
        )
    for name in ("manifold_all", "manifold_early", "recon_all", "recon_early"):
        gif = params["gifs"][name]
        if gif["stop"] is not None and gif["stop"] <= gif["start"]:
            _fail(f"gifs.{name}.stop", f"greater than start ({gif['start']})", gif["stop"])
    return params


def load(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Read and validate a params file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"params: file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {exc}") from None
    return validate(raw)


def model_params(params: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        return params["models"][name]
    except KeyError:
        raise ParamsError(f"params: no model 'models.{name}' (known: {', '.join(params['models'])})") from None
