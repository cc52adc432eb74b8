"""The reproduction gate's comparison: reproduced metrics against the committed ones, each
within the tolerance that tolerances.yaml declares for it.

A rule is a mapping with `match` (an fnmatch pattern over "<metrics file>:<dotted key>") and
one of:
  ignore: true            not compared (timings, the device name)
  exact: true             must be equal (run descriptions: epochs, iwae_k, the model name)
  abs: X                  |new - committed| <= X
  rel: X                  |new - committed| <= X * |committed|
  report: true            shown, never failing: a metric the spread study has not measured yet
and optionally `sigma_diff` (the measured spread of the difference of two runs, which the
table uses to show each drift in units of it) and `gated: false` with its `why` (shown, and
failing only beyond the sanity bound), or `why` alone (how a gated tolerance was derived).
The first rule that matches wins; a metric no rule matches must be equal.

Whatever its rule, a metric fails when it vanishes or appears, changes type, is not finite, or
takes a value the metric cannot have (a negative loss or KL, a rate outside [0, 1], a percentile
outside [0, 100]) or a collapse its kind rules out (kind_problem: an AUROC below chance, a rate
that falls to 0 or more than doubles, a loss that moves by more than a tenth); a row that is not
gated still fails beyond its sanity bound.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..io import yamlfile
from ..io.errors import MnistVaeError

KINDS = ("ignore", "exact", "abs", "rel", "report")
OPTIONAL = ("sigma_diff", "gated", "why", "images", "spread", "k", "seed_sigma_diff", "sanity")


# A row the gate does not gate (too noisy, or not measured by the study yet) still fails when it
# moves beyond its sanity bound: half its committed value (a collapse to zero or a doubling always
# fails), capped at 10 sigma_diff where a spread was measured, and never tighter than 3 sigma_diff
# (a move the study's runs make now and then). A diverged run (a loss of 1e11) never reads "ok".
SANITY_SIGMA = 10.0
SANITY_FLOOR_SIGMA = 3.0
SANITY_REL = 0.5

# What a metric can be, by its key (the part after "<file>:"), first match wins: outside it the
# value is impossible whatever the tolerance.
DOMAINS = (
    ("*percentile", 0.0, 100.0),
    ("*auroc", 0.0, 1.0), ("*detection_rate", 0.0, 1.0), ("*above_threshold", 0.0, 1.0),
    ("*z_score", -math.inf, math.inf), ("*iwae_gap", -math.inf, math.inf),
    ("*loss", 0.0, math.inf), ("*bce", 0.0, math.inf), ("*nll", 0.0, math.inf), ("*kl*", 0.0, math.inf),
    ("*neg_elbo*", 0.0, math.inf), ("*std", 0.0, math.inf), ("*active_units", 0.0, math.inf),
)


def domain(metric: str) -> tuple[float, float]:
    """The values a metric ("<file>:<key>") can take: (low, high), unbounded when no entry matches."""
    key = metric.split(":", 1)[-1]
    for pattern, low, high in DOMAINS:
        if fnmatch.fnmatchcase(key, pattern):
            return low, high
    return -math.inf, math.inf


# What a metric's kind says a change cannot be, whatever its tolerance or whether it is gated:
# a detector below chance, a rate that collapses to zero or more than doubles (beyond three
# Poisson standard deviations of its image count, where `images` is known), a loss that moves by
# more than LOSS_REL of itself.
LOSS_REL = 0.1
LOSSES = ("*loss", "*_nll", "*test_neg_elbo", "*_bce")  # over a data set: not one image's score


def kind_problem(metric: str, committed: float, new: float, images: int | None = None) -> str:
    """Why a move of `metric` from `committed` to `new` is a collapse whatever the tolerance, or ""."""
    key = metric.split(":", 1)[-1]
    if fnmatch.fnmatchcase(key, "*auroc"):
        return f"AUROC {new:.4g} is below chance (0.5)" if new < 0.5 <= committed else ""
    if domain(metric) == (0.0, 1.0):
        if committed > 0 and new == 0:
            return f"rate fell to 0 (from {committed:.4g})"
        count, new_count = (committed * images, new * images) if images else (committed, new)
        allowance = 3 * math.sqrt(2 * count) if images else 0.0
        if committed > 0 and new_count > 2 * count + allowance + 1e-9:
            return f"rate more than doubled ({committed:.4g} -> {new:.4g})"
        return ""
    if committed and any(fnmatch.fnmatchcase(key, p) for p in LOSSES) and abs(new - committed) > LOSS_REL * abs(committed):
        return f"loss moved by more than {LOSS_REL:.0%} ({committed:.4g} -> {new:.4g})"
    return ""


def sanity_bound(committed: float, sigma: float | None) -> float:
    """How far a metric that is not gated may move before it fails anyway."""
    half = SANITY_REL * abs(committed)
    if not sigma:
        return half
    return max(SANITY_FLOOR_SIGMA * sigma, min(SANITY_SIGMA * sigma, half))


class RuleError(MnistVaeError, ValueError):
    """A malformed tolerances file; the message names the file, the rule and the bad key."""


@dataclass
class Row:
    metric: str
    committed: Any
    new: Any
    tolerance: str
    ok: bool
    gated: bool = True
    in_spread: float | None = None  # |new - committed| / sigma_diff
    problem: str = ""  # why the row fails whatever its rule: "not finite", "not a number", "beyond sanity"


def check_rule(rule: Any, where: str = "tolerances") -> dict[str, Any]:
    if not isinstance(rule, dict) or not isinstance(rule.get("match"), str):
        raise RuleError(f"{where}: rule {rule!r} needs a string `match`")
    unknown = sorted(set(rule) - {"match", *KINDS, *OPTIONAL})
    if unknown:
        raise RuleError(f"{where}: rule for {rule['match']!r}: unknown key {unknown[0]!r} (a rule has `match`, one "
                        f"of {', '.join(KINDS)}, and optionally {', '.join(OPTIONAL)})")
    kinds = [k for k in KINDS if k in rule]
    if len(kinds) != 1:
        raise RuleError(f"{where}: rule for {rule['match']!r} needs exactly one of {', '.join(KINDS)}, has "
                        f"{', '.join(kinds) or 'none'}")
    for key, ok, want in (("gated", lambda v: isinstance(v, bool), "true or false"),
                          ("why", lambda v: isinstance(v, str) and v.strip(), "a non-empty string"),
                          ("sigma_diff", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) and v >= 0, "a finite number >= 0"),
                          ("images", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
                           "a whole number > 0"),
                          ("spread", lambda v: v in ("seed", "same-seed"), "seed or same-seed"),
                          ("k", lambda v: _is_number(v) and math.isfinite(v) and v > 0, "a finite number > 0"),
                          ("seed_sigma_diff", lambda v: _is_number(v) and math.isfinite(v) and v >= 0,
                           "a finite number >= 0"),
                          ("sanity", lambda v: v is False, "false (no sanity bound), or absent")):
        if key in rule and not ok(rule[key]):
            raise RuleError(f"{where}: rule for {rule['match']!r}: `{key}` must be {want}, got {rule[key]!r}")
    if rule.get("gated") is False and "why" not in rule:
        raise RuleError(f"{where}: rule for {rule['match']!r}: `gated: false` needs its `why`")
    value = rule[kinds[0]]
    if kinds[0] in ("ignore", "exact", "report"):
        if value is not True:
            raise RuleError(f"{where}: rule for {rule['match']!r}: `{kinds[0]}` must be true")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise RuleError(f"{where}: rule for {rule['match']!r}: `{kinds[0]}` must be a finite number >= 0, got {value!r}")
    return rule


def load_rules(path: str | Path = "tolerances.yaml") -> list[dict[str, Any]]:
    try:
        doc = yamlfile.loads(Path(path).read_text())
    except OSError as exc:
        raise RuleError(f"{path}: cannot read the tolerances ({exc.strerror}); restore it with "
                        f"`git checkout -- {path}` or regenerate it with `make tolerances`") from None
    except yaml.YAMLError as exc:
        raise RuleError(f"{path}: not valid YAML ({' '.join(str(exc).split())}); restore it with "
                        f"`git checkout -- {path}` or regenerate it with `make tolerances`") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RuleError(f"{path}: needs a `rules` list")
    rules = [check_rule(rule, f"{path}: rules[{i}]") for i, rule in enumerate(doc["rules"])]
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule["match"] in seen:  # the second could never apply: the first match wins
            raise RuleError(f"{path}: rules[{i}] repeats the match {rule['match']!r} of rules[{seen[rule['match']]}]; "
                            f"keep one (the first match wins)")
        seen[rule["match"]] = i
    return rules


def rule_for(metric: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    for rule in rules:
        if fnmatch.fnmatchcase(metric, rule["match"]):
            return rule
    return {"match": None, "exact": True}  # no rule: must match exactly


def within(committed: Any, new: Any, rule: dict[str, Any]) -> bool:
    if committed is None or new is None:
        return False  # a metric appeared or disappeared
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (committed, new))
    if not numbers:  # strings, booleans: equal values of one type (True == 1 in Python)
        return type(committed) is type(new) and committed == new
    if rule.get("exact"):
        return committed == new
    diff = abs(new - committed)
    if not math.isfinite(diff):
        return False
    if "abs" in rule:
        return diff <= rule["abs"] * (1 + 1e-12)
    return diff <= rule["rel"] * abs(committed) * (1 + 1e-12)


def describe(rule: dict[str, Any]) -> str:
    if rule.get("exact"):
        return "exact"
    if rule.get("report"):
        return "not measured"
    return f"abs {rule['abs']:g}" if "abs" in rule else f"rel {rule['rel']:.0%}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def problem_of(committed: Any, new: Any, rule: dict[str, Any], metric: str = "") -> str:
    """Why a metric fails whatever its rule says (gated or not, measured or not), or "": it
    vanished or appeared, is not finite, changed type, holds a value the metric cannot have, or,
    not gated, moved beyond its sanity bound."""
    if committed is None and new is None:
        return "null in both runs (no number to compare)"
    if committed is None and new is not None:
        return "appeared (not in the committed run)"
    if committed is not None and new is None:
        return "vanished (not in the new run)"
    for value in (committed, new):
        if isinstance(value, float) and not math.isfinite(value):
            return "not finite"
        if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
            return "not finite"
    if type(committed) is not type(new):  # an int that became a float is another writer too
        return f"changed type ({type(committed).__name__} -> {type(new).__name__})"
    if _is_number(new) and metric:
        low, high = domain(metric)
        if not low <= new <= high:
            return f"impossible value (must be in [{low:g}, {high:g}])"
        if _is_number(committed):
            collapse = kind_problem(metric, committed, new, rule.get("images"))
            if collapse:
                return collapse
    if _is_number(committed) and _is_number(new) and (rule.get("report") or rule.get("gated") is False) \
            and rule.get("sanity", True):
        sigma = rule.get("sigma_diff")
        bound = sanity_bound(committed, sigma)
        if abs(new - committed) > bound * (1 + 1e-12):
            return f"beyond sanity (moved {abs(new - committed):.4g}, bound {bound:.4g})"
    return ""


def compare(diff: dict[str, dict[str, dict[str, Any]]], rules: list[dict[str, Any]]) -> list[Row]:
    """Rows for every compared metric of a `dvc metrics diff --all --json` result."""
    rows = []
    for path, metrics in sorted(diff.items()):
        for key, values in sorted(metrics.items()):
            name = f"{path}:{key}"
            rule = rule_for(name, rules)
            old, new = values.get("old"), values.get("new")
            if rule.get("ignore"):  # not compared, but still a value of the committed type
                problem = problem_of(old, new, {}, name)
                if problem:
                    rows.append(Row(name, old, new, "ignored", False, True, None, problem))
                continue
            in_spread = None
            if rule.get("sigma_diff") and _is_number(old) and _is_number(new) and math.isfinite(new - old):
                in_spread = abs(new - old) / rule["sigma_diff"]
            problem = problem_of(old, new, rule, name)
            if rule.get("report"):
                rows.append(Row(name, old, new, describe(rule), not problem, False, in_spread, problem))
                continue
            ok = within(old, new, rule) and not problem
            rows.append(Row(name, old, new, describe(rule), ok, rule.get("gated", True), in_spread, problem))
    return rows


def diff_of(committed: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Flat {"file:key": value} mappings as a `dvc metrics diff --all --json` result."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in sorted(set(committed) | set(new)):
        path, key = name.split(":", 1)
        out.setdefault(path, {})[key] = {"old": committed.get(name), "new": new.get(name)}
    return out


def failures(rows: list[Row]) -> list[Row]:
    """Gated rows out of tolerance, and any row with a problem (non-finite, not a number, beyond
    sanity), gated or not."""
    return [r for r in rows if (r.gated and not r.ok) or r.problem]


def table(rows: list[Row]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))

    def verdict(r: Row) -> str:
        if r.problem:
            return f"FAIL: {r.problem}"
        if r.ok:
            return "ok"
        return "DRIFT" if r.gated else "(not gated)"

    head = ("metric", "committed", "new", "tolerance", "drift/sigma", "")
    body = [(r.metric, fmt(r.committed), fmt(r.new), r.tolerance,
             "-" if r.in_spread is None else f"{r.in_spread:.2f}", verdict(r)) for r in rows]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


# --- exact mode: a universal same-seed rerun on any CPU -----------------------------------------------------------------

# A value that passes through JSON text comes back to the bit (Python writes floats by repr);
# a few ulps leave room for a writer that rounds once, and nothing a real change could hide in.
EXACT_ULPS = 4


def exact_mode(new: dict[str, Any], committed: dict[str, Any]) -> str:
    """Why the rerun must equal the committed run to the bit, or "" when it need not.

    `new` and `committed` map each model to the machine record of its training (timings-train.json's
    `machine`). Exact when every record of both runs says universal numerics with the promise made
    (the CPU as device, x86-64 or aarch64); then another CPU gives the same bytes. Records of the
    retired portable mode promise nothing here: the tolerances judge them.
    """
    if not new or set(new) != set(committed):
        return ""
    for side in (new, committed):
        for record in side.values():
            if not isinstance(record, dict) or record.get("numerics") != "universal" or \
                    record.get("bitwise_promise") is not True:
                return ""
    return (f"both runs used universal numerics on any CPU: every metric must be equal (within "
            f"{EXACT_ULPS} ulps through text) and every output byte for byte, timings and raw downloads aside")


# what must match between the committed run and a rerun for the promised bits to hold
PROMISE_FIELDS = {"universal": ("numerics", "bitwise_promise", "torch")}


def broken_promise(new: dict[str, Any], committed: dict[str, Any]) -> str:
    """Why a rerun that should have kept the committed run's bitwise promise did not, in one
    line naming the model and the field (the numerics mode, the torch version, a missing
    record), or "" when it kept it, or was never expected to (the committed run promised nothing,
    or ran a mode that promises nothing here)."""
    for model, old in sorted(committed.items()):
        if not isinstance(old, dict) or old.get("bitwise_promise") is not True:
            return ""
        mode = old.get("numerics")
        if mode not in PROMISE_FIELDS:
            return ""
        record = new.get(model)
        if not isinstance(record, dict) or not record:
            return f"{model}: the rerun has no machine record (reports/models/{model}/timings-train.json)"
        for field in PROMISE_FIELDS[mode]:
            if record.get(field) != old.get(field):
                return (f"{model}: {field} {_show(record.get(field))} in the rerun against {_show(old.get(field))} in "
                        f"the committed run")
    return ""


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
    return "missing" if value is None else str(value)


def _ulps_apart(a: float, b: float) -> float:
    if a == b:
        return 0.0
    return abs(a - b) / math.ulp(max(abs(a), abs(b)))


def compare_exact(diff: dict[str, dict[str, dict[str, Any]]], rules: list[dict[str, Any]]) -> list[Row]:
    """Rows for every metric, each held to equality (floats within EXACT_ULPS); `ignore` rules
    still drop what is not a result (the device name)."""
    rows = []
    for path, metrics in sorted(diff.items()):
        for key, values in sorted(metrics.items()):
            name = f"{path}:{key}"
            old, new = values.get("old"), values.get("new")
            problem = problem_of(old, new, {}, name)
            if rule_for(name, rules).get("ignore"):  # not compared, but still a value of the committed type
                if problem:
                    rows.append(Row(name, old, new, "ignored", False, True, None, problem))
                continue
            # a vanished, appeared, retyped or non-finite value is already a problem
            if isinstance(old, float) and isinstance(new, float):
                ok = _ulps_apart(old, new) <= EXACT_ULPS
            else:
                ok = within(old, new, {"exact": True})
            rows.append(Row(name, old, new, "exact", ok and not problem, True, None, problem))
    return rows


# exactly these paths: each stage's timings file, the page that shows them, the raw download folders
NOT_COMPARED = re.compile(r"reports/models/[a-z0-9][a-z0-9_-]*/timings-(train|evaluate)\.json|reports/index\.html"
                          r"|data/raw/(mnist|fashion-mnist)")


def _not_compared(path: str) -> bool:
    """Outputs whose bytes may differ while the run does not: those that hold times or show them
    (they differ between any two runs), and the raw downloads, whose gz bytes depend on the
    mirror that served them (Debian's Fashion-MNIST is recompressed); their content is md5-checked
    at download and is what binarize's outputs, compared, are made of."""
    return bool(NOT_COMPARED.fullmatch(path))


def output_hashes(lock_text: str | None) -> dict[str, str]:
    """{output path: md5} of every stage output in a dvc.lock (a folder's md5 covers its files)."""
    from ..io import integrity

    return {path: md5 for path, (_, md5) in integrity.recorded_outputs(lock_text).items()}


def compare_outputs(committed_lock: str | None, new_lock: str | None) -> list[Row]:
    """One row per output of either dvc.lock (but :func:`_not_compared`): the same md5 or a failure."""
    old, new = output_hashes(committed_lock), output_hashes(new_lock)
    rows = []
    for path in sorted(set(old) | set(new)):
        if _not_compared(path):
            continue
        a, b = old.get(path), new.get(path)
        problem = "" if a and b else f"no md5 in the {'committed' if not a else 'new'} dvc.lock"
        rows.append(Row(f"{path} (bytes)", a and a[:12], b and b[:12], "exact", bool(a) and a == b, True, None,
                        problem))
    return rows


def verify_workspace(lock_text: str | None, root: str | Path = ".") -> list[Row]:
    """One failing row per output the gate judges (all but :func:`_not_compared`: timings, the page,
    the raw downloads) that is in the workspace with other bytes than dvc.lock records for it: the
    gate judges files, not the hashes DVC believes (a damaged cache object checked out may look up
    to date to `dvc status`)."""
    from ..io import integrity

    return [Row(f"{path} (workspace bytes)", None, None, "exact", False, True, None,
                f"{why}: damaged, or not what dvc.lock records; `make verify` ({integrity.RECOVERY})")
            for path, why in integrity.bad_outputs(lock_text, root).items() if not _not_compared(path)]


# what sets a metric's scale: tolerances measured at other values do not carry over
SETTINGS = ("train.json:epochs", "train.json:parameters", "eval.json:iwae_k", "eval.json:iwae_images")


def other_settings(diff: dict[str, dict[str, dict[str, Any]]], study_run: dict[str, Any]) -> list[str]:
    """'<file>:<key> <new> (the study's <value>)' for each setting of the rerun (SETTINGS) that
    differs from the spread study's default run behind the tolerances, and each model one of
    them lacks: the statistical verdict does not carry over to such a run."""
    out = []
    new = {f"{path}:{key}": entry.get("new") for path, keys in diff.items() for key, entry in keys.items()}
    models = lambda keys: {k.rsplit("/", 1)[0] for k in keys if k.endswith("train.json:epochs")}  # noqa: E731
    for model in sorted(models(new) ^ models(study_run)):  # first: the line shows the first few
        out.append(f"{model.rsplit('/', 1)[-1]} {'not in the study' if model not in models(study_run) else 'not rerun'}")
    for key in sorted(study_run):
        if key.split("/")[-1] in SETTINGS and key in new and new[key] != study_run[key]:
            out.append(f"{key} {new[key]} (the study's {study_run[key]})")
    return out


def study_default_run(summary: str | Path = "reports/spread/summary.json") -> dict[str, Any]:
    """The spread study's default run (its metrics by '<file>:<key>'), {} where there is none."""
    import json

    try:
        return json.loads(Path(summary).read_text()).get("runs", {}).get("default", {}) or {}
    except (OSError, ValueError, AttributeError):
        return {}
