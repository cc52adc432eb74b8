"""dvc.yaml's stages as DVC resolves them: `foreach` over a params entry expands into one stage
per item (`train@vae20d`, ...), with `${key}` / `${item}` and `${<params key>}` interpolated.

The stage scripts need this without importing DVC (seconds of start-up per stage): to find the
stage a process runs as (params.load_for_stage) and the stage that writes a file
(artifacts.restore_hint). tests/repo/test_dependencies.py checks it against DVC's own resolution.
Only the templating this project's dvc.yaml uses is supported; anything else raises.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import yamlfile

_REF = re.compile(r"\$\{\s*([^}\s]+)\s*\}")


class TemplateError(ValueError):
    """dvc.yaml uses templating this resolver does not implement, or names an unknown key."""


def _lookup(context: dict[str, Any], dotted: str) -> Any:
    node: Any = context
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise TemplateError(f"dvc.yaml: ${{{dotted}}} names nothing in params.yaml")
    return node


def interpolate(value: Any, context: dict[str, Any]) -> Any:
    """`value` with every ${...} replaced; a string that is one ${...} keeps the value's type."""
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole:
            return _lookup(context, whole.group(1))
        return _REF.sub(lambda m: str(_lookup(context, m.group(1))), value)
    if isinstance(value, list):
        return [interpolate(v, context) for v in value]
    if isinstance(value, dict):
        return {interpolate(k, context): interpolate(v, context) for k, v in value.items()}
    return value


def resolve(spec: dict[str, Any], variables: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{stage address: stage definition} with every foreach expanded, in dvc.yaml's order."""
    if spec.get("vars"):
        raise TemplateError("dvc.yaml: `vars` is not supported by mnist_vae.io.pipeline")
    out: dict[str, dict[str, Any]] = {}
    for name, stage in (spec.get("stages") or {}).items():
        if "matrix" in stage:
            raise TemplateError(f"dvc.yaml: stage '{name}' uses `matrix`, not supported by mnist_vae.io.pipeline")
        if "foreach" not in stage:
            out[name] = interpolate(stage, variables)
            continue
        items = interpolate(stage["foreach"], variables)
        pairs = items.items() if isinstance(items, dict) else ((str(v), v) for v in items)
        for key, item in pairs:
            out[f"{name}@{key}"] = interpolate(stage["do"], {**variables, "key": key, "item": item})
    return out


def stages(dvc_yaml: str | Path = "dvc.yaml", params_file: str | Path = "params.yaml") -> dict[str, dict[str, Any]]:
    """The resolved stages of a dvc.yaml, with params.yaml (DVC's default vars) beside it."""
    spec = yamlfile.loads(Path(dvc_yaml).read_text()) or {}
    params_path = Path(params_file)
    variables = (yamlfile.loads(params_path.read_text()) or {}) if params_path.exists() else {}
    return resolve(spec, variables)
