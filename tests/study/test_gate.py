"""study/test_gate.py"""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, load_script

from mnist_vae.study import gate, spread

T20 = "reports/models/vae20d/train.json:test_loss"
T2 = "reports/models/vae2d/train.json:test_loss"


@pytest.mark.parametrize("committed, new, rule, ok", [
    (10.0, 10.5, {"abs": 0.5}, True),                 # exactly at the tolerance
    (10.0, math.nextafter(10.5, 11), {"abs": 0.5}, True),   # 1 ulp past it: inside the float slack
    (1e6, 1e6 + 0.5 + 1e-6, {"abs": 0.5}, False),     # beyond the slack (2e-12 relative to 0.5)
    (10.0, 10.5000001, {"abs": 0.5}, False),          # just past it
    (10.0, 9.5, {"abs": 0.5}, True),                  # either direction
    (0.1 + 0.2, 0.3 + 0.5, {"abs": 0.5}, True),       # float rounding at the edge does not fail
    (10.0, 11.0, {"rel": 0.1}, True),                 # rel: 10 % of the committed value
    (10.0, 11.01, {"rel": 0.1}, False),
    (0.0, 0.0, {"rel": 0.1}, True),                   # rel with committed 0: only 0 passes
    (0.0, 1e-9, {"rel": 0.1}, False),
    (1.0, math.nan, {"abs": 10}, False),              # NaN never passes
    (math.nan, math.nan, {"abs": 10}, False),
    (1.0, math.inf, {"abs": 10}, False),              # nor inf
    (math.inf, math.inf, {"abs": 10}, False),
    (None, 1.0, {"abs": 10}, False),                  # a metric that appears
    (1.0, None, {"abs": 10}, False),                  # or disappears
    ("vae20d", "vae20d", {"abs": 10}, True),          # strings compare exactly, whatever the rule
    ("vae20d", "vae2d", {"abs": 10}, False),
    (10, 10, {"exact": True}, True),
    (10, 10.0000001, {"exact": True}, False),
    (True, 1, {"abs": 5}, False),                     # a bool is not a number
])
def test_within_edge_cases(committed, new, rule, ok):
    assert gate.within(committed, new, rule) is ok


def test_first_matching_rule_wins_and_no_rule_means_exact():
    rules = [{"match": "*seconds*", "ignore": True}, {"match": "a.json:x*", "abs": 1}, {"match": "a.json:*", "abs": 5}]
    assert gate.rule_for("a.json:xy", rules)["abs"] == 1
    assert gate.rule_for("a.json:y", rules)["abs"] == 5
    assert gate.rule_for("a.json:x_seconds", rules)["ignore"]
    assert gate.rule_for("b.json:y", rules) == {"match": None, "exact": True}
    rows = gate.compare({"a.json": {"xy": {"old": 0, "new": 2}, "y": {"old": 0, "new": 2}, "t_seconds": {"old": 1, "new": 9}},
                         "b.json": {"y": {"old": 1.0, "new": 1.0000001}}}, rules)
    assert {r.metric: r.ok for r in rows} == {"a.json:xy": False, "a.json:y": True, "b.json:y": False}


@pytest.mark.parametrize("rule, message", [
    ({"abs": 1}, "needs a string `match`"),
    ({"match": "x"}, "needs exactly one of"),
    ({"match": "x", "abs": 1, "rel": 0.1}, "needs exactly one of"),
    ({"match": "x", "abs": -1}, "finite number >= 0"),
    ({"match": "x", "abs": "1"}, "finite number >= 0"),
    ({"match": "x", "rel": math.nan}, "finite number >= 0"),
    ({"match": "x", "exact": "yes"}, "`exact` must be true"),
    ({"match": "x", "abs": 1, "tolerance": 2}, "unknown key"),
    ("abs 1", "needs a string `match`"),
])
def test_malformed_rules_are_rejected_naming_the_rule(rule, message):
    with pytest.raises(gate.RuleError, match=message):
        gate.check_rule(rule)


def test_malformed_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("rules: {match: x}\n")
    with pytest.raises(gate.RuleError, match="needs a `rules` list"):
        gate.load_rules(path)
    with pytest.raises(gate.RuleError, match="cannot read"):
        gate.load_rules(tmp_path / "absent.yaml")


def test_not_gated_rows_show_but_do_not_fail_and_drift_is_in_units_of_spread():
    rules = [{"match": "a.json:noisy", "abs": 1, "sigma_diff": 0.25, "gated": False},
             {"match": "a.json:*", "abs": 1, "sigma_diff": 0.25}]
    rows = gate.compare({"a.json": {"noisy": {"old": 10.0, "new": 12.0}, "loss": {"old": 0.0, "new": 0.5}}}, rules)
    by = {r.metric: r for r in rows}
    assert not by["a.json:noisy"].ok and not by["a.json:noisy"].gated and gate.failures(rows) == []
    assert by["a.json:loss"].in_spread == pytest.approx(2.0) and by["a.json:noisy"].in_spread == pytest.approx(8.0)
    text = gate.table(rows)
    assert text.splitlines()[0].split() == ["metric", "committed", "new", "tolerance", "drift/sigma"]
    assert next(l for l in text.splitlines() if l.startswith("a.json:noisy ")).split()[-3:] == ["8.00", "(not", "gated)"]
    assert next(l for l in text.splitlines() if l.startswith("a.json:loss ")).split() == [
        "a.json:loss", "0", "0.5", "abs", "1", "2.00", "ok"]


def test_diff_of_flat_metrics():
    assert gate.diff_of({"a.json:x": 1, "a.json:y.z": 2}, {"a.json:x": 3, "b.json:w": 4}) == {
        "a.json": {"x": {"old": 1, "new": 3}, "y.z": {"old": 2, "new": None}},
        "b.json": {"w": {"old": None, "new": 4}}}


@pytest.mark.parametrize("metric", [T20, T2])
def test_each_test_loss_fails_beyond_its_committed_tolerance_and_passes_within_it(metric):
    """Statistical mode (fast numerics, a GPU): each test loss is gated, a shift just past its
    tolerance fails and one just inside passes, and a move of more than a tenth fails whatever
    the tolerance (the calibration says how often 0.5 and 1 nat are caught)."""
    rules = gate.load_rules(REPO / "tolerances.yaml")
    rule = gate.rule_for(metric, rules)
    # the committed tolerances of the two test losses, both from their same-seed spread (eight
    # distinct roundings): the 20-d 0.8 nat (0.15 nat a rerun's difference, two fifths of its seed
    # spread), the 2-d 2.7 nats (0.49 nat, half of its seed spread); a derivation gone wide or
    # narrow fails here
    low, high = {T20: (0.5, 1.2), T2: (1.8, 4.0)}[metric]
    assert rule.get("gated", True) and low < rule["abs"] < high, rule
    assert rule.get("spread", "seed") == "same-seed"
    for shift, fails in ((rule["abs"] * 1.01, True), (rule["abs"] * 0.99, False), (-rule["abs"] * 1.01, True)):
        rows = gate.compare(gate.diff_of({metric: 100.0}, {metric: 100.0 + shift}), rules)
        assert bool(gate.failures(rows)) is fails, shift
    rows = gate.compare(gate.diff_of({metric: 100.0}, {metric: 111.0}), [{"match": "*", "report": True}])
    assert gate.failures(rows)[0].problem == "loss moved by more than 10% (100 -> 111)"


def test_the_test_loss_rules_pass_the_studys_own_reruns_and_fail_just_beyond():
    """Against data, not a re-typed formula: every same-seed run of the study (the committed seed
    in another rounding, what the statistical gate judges) passes the committed 20-d and 2-d test
    loss rules against the committed run, and the committed run moved just past a rule fails."""
    tool = load_script("tools/derive_tolerances.py")
    same = tool.same_seed_runs(REPO / tool.SAME_SEED)
    rules = gate.load_rules(REPO / "tolerances.yaml")
    base = same["committed"]
    for metric in (T20, T2):
        rule = gate.rule_for(metric, rules)
        for name, run in same.items():
            assert gate.within(base[metric], run[metric], rule), (metric, name)
        assert not gate.within(base[metric], base[metric] + 1.001 * rule["abs"], rule)
        assert gate.within(base[metric], base[metric] + 0.999 * rule["abs"], rule)


def test_committed_tolerances_compare_run_descriptions_exactly():
    rules = gate.load_rules(REPO / "tolerances.yaml")
    for metric in ("reports/models/vae20d/train.json:epochs", "reports/models/vae20d/eval.json:iwae_k",
                   "reports/models/vae2d/eval.json:iwae_images", "reports/models/vae2d/eval.json:latent_dim",
                   "reports/models/vae2d/train.json:parameters", "reports/models/vae20d/anomaly.json:model"):
        assert gate.rule_for(metric, rules).get("exact") is True, metric
    assert gate.rule_for("reports/models/vae2d/train.json:device", rules)["ignore"]
    assert not any("seconds" in r["match"] for r in rules)  # timings are no longer metrics


def test_report_rules_show_the_metric_and_fail_only_beyond_sanity():
    rules = [gate.check_rule({"match": "b.json:*", "report": True})]
    rows = gate.compare({"b.json": {"kl": {"old": 1.0, "new": 1.4}}}, rules)  # within the 50 % sanity bound
    assert [(r.tolerance, r.ok, r.gated) for r in rows] == [("not measured", True, False)]
    assert gate.failures(rows) == []
    rows = gate.compare({"b.json": {"kl": {"old": 1.0, "new": None}}}, rules)  # a vanished metric fails
    assert [r.problem for r in gate.failures(rows)] == ["vanished (not in the new run)"]


# --- exact mode (universal numerics on any CPU) -------------------------------------------------

def _committed_flat() -> dict:

    from mnist_vae.io import layout
    from mnist_vae.study import spread

    files = {}
    for model_dir in sorted((REPO / layout.MODELS_REPORTS).iterdir()):
        for name in layout.METRICS_FILES:
            path = model_dir / name
            if path.exists():
                files[str(path.relative_to(REPO))] = json.loads(path.read_text())
    return spread.flat_metrics(files)


def _committed_machines() -> dict:

    from mnist_vae.io import layout

    return {d.name: json.loads((d / "timings-train.json").read_text())["machine"]
            for d in sorted((REPO / layout.MODELS_REPORTS).iterdir())}


# a record of the retired portable mode (pinned x86-64 kernels): old runs keep it, and promise nothing now
RETIRED = {"numerics": "portable", "bitwise_promise": True, "threads": 2, "cpu_capability": "AVX2"}
UNIVERSAL = {"numerics": "universal", "bitwise_promise": True, "threads": 2, "cpu_capability": "AVX2",
             "isa": "x86_64"}
UNIVERSAL_ARM = {**UNIVERSAL, "cpu_capability": "SVE256", "isa": "aarch64", "threads": 4}


def test_the_committed_run_is_universal_so_a_rerun_on_any_cpu_is_held_exactly():
    machines = _committed_machines()
    assert all(m["numerics"] == "universal" and m["bitwise_promise"] for m in machines.values())
    arm = {model: UNIVERSAL_ARM for model in machines}  # another ISA, CPU capability and thread count
    assert "any CPU" in gate.exact_mode(arm, machines)
    fast = {model: {**m, "numerics": "fast", "bitwise_promise": False} for model, m in machines.items()}
    assert not gate.exact_mode(fast, machines) and "numerics fast" in gate.broken_promise(fast, machines)


@pytest.mark.parametrize("new, committed, exact", [
    ({"a": UNIVERSAL}, {"a": UNIVERSAL}, True),
    ({"a": UNIVERSAL_ARM}, {"a": UNIVERSAL}, True),  # an aarch64 rerun of an x86-64 run
    ({"a": UNIVERSAL}, {"a": RETIRED}, False),  # another mode: other bits
    ({"a": RETIRED}, {"a": RETIRED}, False),  # the retired mode's promise is not kept for it
    ({"a": UNIVERSAL}, {"a": {**UNIVERSAL, "numerics": "fast", "bitwise_promise": False}}, False),
    ({"a": {**UNIVERSAL, "bitwise_promise": False}}, {"a": UNIVERSAL}, False),  # CUDA
    ({"a": UNIVERSAL}, {"a": None}, False),  # a commit without a machine record
    ({"a": UNIVERSAL}, {"a": UNIVERSAL, "b": UNIVERSAL}, False),  # another set of models
    ({}, {}, False),
])
def test_exact_mode_needs_every_run_in_one_bit_promising_mode(new, committed, exact):
    assert bool(gate.exact_mode(new, committed)) is exact


def test_exact_gate_passes_the_committed_metrics_and_fails_a_005_nat_shift():
    flat = _committed_flat()
    rules = gate.load_rules(REPO / "tolerances.yaml")
    rows = gate.compare_exact(gate.diff_of(flat, dict(flat)), rules)
    assert rows and not gate.failures(rows)
    key = "reports/models/vae20d/train.json:test_loss"
    shifted = {**flat, key: flat[key] + 0.05}
    failing = gate.failures(gate.compare_exact(gate.diff_of(flat, shifted), rules))
    assert [r.metric for r in failing] == [key]


@pytest.mark.parametrize("ulps, ok", [(0, True), (gate.EXACT_ULPS, True), (gate.EXACT_ULPS + 1, False)])
def test_exact_gate_allows_a_few_ulps_and_no_more(ulps, ok):
    value = 88.123456789
    new = value
    for _ in range(ulps):
        new = math.nextafter(new, math.inf)
    rows = gate.compare_exact(gate.diff_of({"m.json:x": value}, {"m.json:x": new}), [])
    assert rows[0].ok is ok


def test_exact_gate_fails_a_vanished_or_appeared_metric_and_a_changed_type():
    rows = gate.compare_exact(gate.diff_of({"m.json:a": 1.0, "m.json:b": 2}, {"m.json:b": 2.0, "m.json:c": 3.0}), [])
    assert {r.metric: r.ok for r in rows} == {"m.json:a": False, "m.json:b": False, "m.json:c": False}


def test_output_bytes_compare_every_output_but_timings():
    lock = """
stages:
  train@m:
    outs:
    - {path: models/m.safetensors, md5: %s}
    - {path: reports/models/m/timings-train.json, md5: %s}
  report:
    outs:
    - {path: reports/index.html, md5: %s}
  download:
    outs:
    - {path: data/raw/fashion-mnist, md5: %s.dir}
"""
    old = lock % ("a" * 32, "b" * 32, "c" * 32, "1" * 32)
    assert not gate.failures(gate.compare_outputs(old, lock % ("a" * 32, "d" * 32, "e" * 32, "2" * 32)))
    rows = gate.compare_outputs(old, lock % ("f" * 32, "b" * 32, "c" * 32, "1" * 32))
    assert [r.metric for r in gate.failures(rows)] == ["models/m.safetensors (bytes)"]


# --- the holes of issue 30: every metric checked by something that can fail --------------------

N20 = "reports/models/vae20d/anomaly.json"


def _committed_gate(edit) -> list:
    """The committed metrics against a copy with `edit(flat)` applied, under the committed
    tolerances (statistical mode): the failing rows."""
    flat = _committed_flat()
    new = dict(flat)
    edit(new)
    return gate.failures(gate.compare(gate.diff_of(flat, new), gate.load_rules(REPO / "tolerances.yaml")))


def _set(key, value):
    return lambda flat: flat.__setitem__(key, value)


@pytest.mark.parametrize("edit, metric, problem", [
    (_set(f"{N20}:noise_image.kl", 0.0), f"{N20}:noise_image.kl", "beyond sanity"),
    (_set(f"{N20}:kl.fashion.detection_rate", 0.0), f"{N20}:kl.fashion.detection_rate", "rate fell to 0"),
    (_set(f"{N20}:kl.fashion.auroc", 0.40), f"{N20}:kl.fashion.auroc", "AUROC 0.4 is below chance (0.5)"),
    (_set(f"{N20}:kl.test_above_threshold", 0.0), f"{N20}:kl.test_above_threshold", "rate fell to 0"),
    (lambda f: f.__setitem__(f"{N20}:kl.test_above_threshold", f[f"{N20}:kl.test_above_threshold"] * 5),
     f"{N20}:kl.test_above_threshold", "rate more than doubled"),
    (_set("reports/models/vae20d-b512/anomaly.json:noise_image.kl", 0.0),
     "reports/models/vae20d-b512/anomaly.json:noise_image.kl", "beyond sanity"),
    (lambda f: f.__setitem__("reports/models/vae2d/train.json:train_loss",
                             f["reports/models/vae2d/train.json:train_loss"] + 8.5),
     "reports/models/vae2d/train.json:train_loss", ""),
    (_set(f"{N20}:noise_image.kl", -5.0), f"{N20}:noise_image.kl", "impossible value"),
    (_set(f"{N20}:kl.noise.auroc", 1.2), f"{N20}:kl.noise.auroc", "impossible value"),
    (_set(f"{N20}:noise_image.kl_percentile", 101.0), f"{N20}:noise_image.kl_percentile", "impossible value"),
    (lambda f: f.pop(f"{N20}:noise_image.kl"), f"{N20}:noise_image.kl", "vanished"),
    (_set(f"{N20}:noise_image.brand_new", 1.0), f"{N20}:noise_image.brand_new", "appeared"),
    (_set(T20, "87.9"), T20, "changed type"),
    (_set("reports/models/vae2d/eval.json:active_units", 2.0), "reports/models/vae2d/eval.json:active_units",
     "changed type"),
])
def test_each_hole_of_the_gate_fails_now(edit, metric, problem):
    failing = _committed_gate(edit)
    assert [r.metric for r in failing] == [metric]
    assert problem in failing[0].problem


B512 = "reports/models/vae20d-b512/anomaly.json"


def test_a_saturated_detection_rate_that_drops_to_093_fails_and_a_percentile_one_image_off_passes():
    """The batch-512 model detects every noise image in every run of the study: 1.0 -> 0.93 is far
    beyond its binomial tolerance. One training image above the noise image moves its percentile
    from 100 by 100 / 60,000: one image's step, which the gate holds it to, not below."""
    failing = _committed_gate(_set(f"{B512}:kl.noise.detection_rate", 0.93))
    assert [r.metric for r in failing] == [f"{B512}:kl.noise.detection_rate"] and failing[0].gated
    for model in (N20, B512):
        flat = _committed_flat()
        assert flat[f"{model}:noise_image.kl_percentile"] == 100.0
        assert _committed_gate(_set(f"{model}:noise_image.kl_percentile", 100 - 100 / 60000)) == []


@pytest.mark.parametrize("rule, message", [
    ({"match": "x", "abs": 1, "gated": "false", "why": "w"}, "`gated` must be true or false"),
    ({"match": "x", "abs": 1, "sigma_diff": "0.3"}, "`sigma_diff` must be a finite number"),
    ({"match": "x", "abs": 1, "sigma_diff": -1}, "`sigma_diff` must be a finite number"),
    ({"match": "x", "abs": 1, "gated": False}, "needs its `why`"),
    ({"match": "x", "abs": 1, "why": ""}, "`why` must be a non-empty string"),
])
def test_every_rule_key_is_validated_in_one_line(rule, message):
    with pytest.raises(gate.RuleError, match=message) as err:
        gate.check_rule(rule, "tolerances.yaml: rules[3]")
    assert "\n" not in str(err.value) and str(err.value).startswith("tolerances.yaml: rules[3]: rule for 'x'")


@pytest.mark.parametrize("committed, sigma, bound", [
    (75.9, 7.4, 37.95),      # half the value, inside [3, 10] sigma_diff: a collapse to zero fails
    (0.0027, 0.00064, 0.00192),  # 3 sigma_diff: never tighter than what the runs showed
    (1500.0, 10.0, 100.0),   # 10 sigma_diff: a large value with a small spread
    (2.0, None, 1.0),        # no measured spread: half the value
])
def test_sanity_bound(committed, sigma, bound):
    assert gate.sanity_bound(committed, sigma) == pytest.approx(bound)


def test_saturated_rate_tolerance_by_the_rule_of_three():
    """A rate at 1 in 9 runs of 10,000 images: the other outcome's chance is at most about
    3 / 90,000 (the rule of three), and a rerun's rate stays within it plus 3.5 binomial sigmas;
    scipy's binomial puts a rerun beyond that tolerance well under 1 % of the time."""
    from scipy.stats import binom

    tol, sigma = spread.saturated_rate_tolerance(9, 10_000, 3.5)
    p = 3 / 90_000
    assert tol == pytest.approx(p + 3.5 * math.sqrt(p / 10_000), rel=0.01)
    assert binom.sf(math.floor(tol * 10_000), 10_000, p) < 0.01


# --- the gate ---------------------------------------------------------------------------------

RULES = [{"match": "*:device", "ignore": True}, {"match": "f.json:loss", "abs": 1.0, "sigma_diff": 0.5},
         {"match": "f.json:noisy", "abs": 9.0, "sigma_diff": 3.0, "gated": False, "why": "noisy"},
         {"match": "new.json:*", "report": True}]


def rows_for(**values):
    diff = {}
    for name, (old, new) in values.items():
        path, key = {"loss": ("f.json", "loss"), "noisy": ("f.json", "noisy"), "b512": ("new.json", "test_loss")}[name]
        diff.setdefault(path, {})[key] = {"old": old, "new": new}
    return {r.metric: r for r in gate.compare(diff, RULES)}


@pytest.mark.parametrize("metric, committed, new, images, problem", [
    ("a.json:kl.fashion.auroc", 0.755, 0.40, None, "AUROC 0.4 is below chance (0.5)"),
    ("a.json:kl.fashion.auroc", 0.755, 0.51, None, ""),
    ("a.json:kl.fashion.auroc", 0.45, 0.40, None, ""),  # already below chance: no collapse to name
    ("a.json:kl.test_above_threshold", 0.0004, 0.0, 10_000, "rate fell to 0 (from 0.0004)"),
    # 4 images -> 19 is beyond twice 4 plus 3 Poisson sigmas (3 sqrt 8 = 8.5); 4 -> 16 is not
    ("a.json:kl.test_above_threshold", 0.0004, 0.0019, 10_000, "rate more than doubled (0.0004 -> 0.0019)"),
    ("a.json:kl.test_above_threshold", 0.0004, 0.0016, 10_000, ""),
    ("a.json:kl.fashion.detection_rate", 0.4, 0.81, None, "rate more than doubled (0.4 -> 0.81)"),
    ("a.json:kl.test_above_threshold", 0.0, 0.0003, 10_000, ""),  # nothing to double
    ("t.json:test_loss", 88.0, 96.9, None, "loss moved by more than 10% (88 -> 96.9)"),
    ("t.json:test_loss", 88.0, 96.7, None, ""),
    ("e.json:test_iwae_nll", 81.0, 70.0, None, "loss moved by more than 10% (81 -> 70)"),
    ("a.json:noise_image.neg_elbo", 2500.0, 3000.0, None, ""),  # one image's score is not a loss
])
def test_a_collapse_its_kind_rules_out_fails_whatever_the_tolerance(metric, committed, new, images, problem):
    assert gate.kind_problem(metric, committed, new, images) == problem
    rule = {"match": metric, "abs": 1e9, "sigma_diff": 1.0, **({"images": images} if images else {})}
    rows = gate.compare(gate.diff_of({metric: committed}, {metric: new}), [gate.check_rule(rule)])
    assert [r.problem for r in gate.failures(rows)] == ([problem] if problem else [])


@pytest.mark.parametrize("name, old, new, problem", [
    ("loss", 88.0, float("nan"), "not finite"),        # gated
    ("noisy", 30.0, float("nan"), "not finite"),       # shown, not gated: fails all the same
    ("b512", 94.0, float("nan"), "not finite"),        # not measured: fails all the same
    ("b512", 94.0, "NaN", "not finite"),               # a bare token read back as text
    ("noisy", 30.0, "high", "changed type (float -> str)"),
    ("b512", 94.07, 1.98e11, "loss moved by more than 10% (94.07 -> 1.98e+11)"),  # a diverged run
    ("noisy", 30.0, 46.0, "beyond sanity (moved 16, bound 15)"),  # half the value, inside [3, 10] sigma_diff
    ("loss", 88.0, -1.0, "impossible value (must be in [0, inf])"),  # a negative loss, gated or not
])
def test_the_gate_fails_on_non_finite_and_absurd_values_whatever_the_rule(name, old, new, problem):
    row = next(iter(rows_for(**{name: (old, new)}).values()))
    assert row.problem == problem and gate.failures([row]) == [row]
    assert f"FAIL: {problem}" in gate.table([row])


def test_ungated_rows_within_the_sanity_bound_still_pass():
    rows = rows_for(noisy=(30.0, 45.0), b512=(94.07, 100.0))  # 5 sigma_diff; 6 %
    assert gate.failures(list(rows.values())) == []
    assert rows["f.json:noisy"].in_spread == pytest.approx(5.0)
    assert "(not gated)" in gate.table(list(rows.values()))


def test_a_misspelled_rule_kind_names_the_file_the_rule_and_the_key(tmp_path):
    path = tmp_path / "tolerances.yaml"
    path.write_text("rules:\n- {match: '*:device', ignore: true}\n- {match: 'f.json:loss', ignroe: true}\n")
    with pytest.raises(gate.RuleError) as err:
        gate.load_rules(path)
    assert str(err.value) == (f"{path}: rules[1]: rule for 'f.json:loss': unknown key 'ignroe' (a rule has `match`, "
                              "one of ignore, exact, abs, rel, report, and optionally sigma_diff, gated, why, images, spread, k, "
                              "seed_sigma_diff, sanity)")


def test_broken_tolerances_stop_the_gate_with_one_line_before_any_work(tmp_path):
    (tmp_path / "tolerances.yaml").write_text("rules: [\n")
    proc = subprocess.run([sys.executable, str(REPO / "tools/repro_check.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith("repro-check: FAILED: tolerances.yaml: not valid YAML")
    assert "git checkout -- tolerances.yaml" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "reproduce" not in proc.stdout  # it stopped before running the pipeline


# --- issue 40's gaps: each a case that passed before ---------------------------------------------

def test_an_output_without_an_md5_fails_and_exclusions_are_exact_paths():
    lock = """
stages:
  train@m:
    outs:
    - {path: models/m.safetensors%s}
    - {path: reports/models/m/timings-train.json, md5: %s}
    - {path: reports/models/m/timings-extra.json, md5: %s}
  download:
    outs:
    - {path: data/raw/mnist, md5: 1.dir}
    - {path: data/raw/mnist-copy, md5: %s}
"""
    both_missing = gate.compare_outputs(lock % ("", "a" * 32, "b" * 32, "c" * 32), lock % ("", "d" * 32, "b" * 32, "c" * 32))
    assert [(r.metric, r.problem) for r in gate.failures(both_missing)] == [
        ("models/m.safetensors (bytes)", "no md5 in the committed dvc.lock")]
    moved = gate.compare_outputs(lock % (", md5: " + "e" * 32, "a" * 32, "b" * 32, "c" * 32),
                                 lock % (", md5: " + "e" * 32, "d" * 32, "f" * 32, "0" * 32))
    assert sorted(r.metric for r in gate.failures(moved)) == ["data/raw/mnist-copy (bytes)",
                                                               "reports/models/m/timings-extra.json (bytes)"]


def test_a_metric_null_in_both_runs_fails_in_either_mode():
    diff = {"reports/models/m/eval.json": {"test_iwae_nll": {"old": None, "new": None}}}
    for rows in (gate.compare(diff, []), gate.compare_exact(diff, [])):
        assert [r.problem for r in gate.failures(rows)] == ["null in both runs (no number to compare)"]


def test_an_ignored_metric_still_fails_when_not_finite_or_retyped():
    rules = [{"match": "*:device", "ignore": True}, {"match": "*:seconds", "ignore": True}]
    diff = {"reports/models/m/train.json": {"device": {"old": "cpu", "new": "cuda"},
                                            "seconds": {"old": 3.0, "new": float("nan")}}}
    for rows in (gate.compare(diff, rules), gate.compare_exact(diff, rules)):
        assert [(r.metric, r.problem) for r in gate.failures(rows)] == [
            ("reports/models/m/train.json:seconds", "not finite")]
    diff["reports/models/m/train.json"]["seconds"]["new"] = "3.0"
    assert gate.failures(gate.compare(diff, rules))[0].problem.startswith("changed type")


def test_a_repeated_match_is_refused_naming_both_rules(tmp_path):
    path = tmp_path / "tolerances.yaml"
    path.write_text("rules:\n- {match: '*:a', abs: 1}\n- {match: '*:b', exact: true}\n- {match: '*:a', rel: 0.1}\n")
    with pytest.raises(gate.RuleError) as err:
        gate.load_rules(path)
    assert str(err.value) == (f"{path}: rules[2] repeats the match '*:a' of rules[0]; keep one (the first match "
                              f"wins)")


@pytest.mark.parametrize("new, committed, reason", [
    ({"a": {**UNIVERSAL, "threads": 1}}, {"a": UNIVERSAL}, ""),  # universal bits do not depend on threads
    ({"a": UNIVERSAL_ARM}, {"a": UNIVERSAL}, ""),
    ({"a": {**UNIVERSAL, "ops": {"adam": "public"}}}, {"a": {**UNIVERSAL, "ops": {"adam": "fused"}}}, ""),  # nor ops
    ({"a": {**UNIVERSAL, "torch": "2.15.0"}}, {"a": {**UNIVERSAL, "torch": "2.14.1"}},
     "a: torch 2.15.0 in the rerun against 2.14.1 in the committed run"),
    ({"a": {**UNIVERSAL, "numerics": "fast", "bitwise_promise": False}}, {"a": UNIVERSAL},
     "a: numerics fast in the rerun against universal in the committed run"),
    ({"a": {**UNIVERSAL, "bitwise_promise": False}}, {"a": UNIVERSAL},
     "a: bitwise_promise False in the rerun against True in the committed run"),
    ({"a": None}, {"a": UNIVERSAL}, "a: the rerun has no machine record (reports/models/a/timings-train.json)"),
    ({"a": {**RETIRED, "threads": 1}}, {"a": RETIRED}, ""),  # the retired mode: the tolerances' case
    ({"a": UNIVERSAL}, {"a": {**UNIVERSAL, "numerics": "fast", "bitwise_promise": False}}, ""),  # nothing promised
])
def test_a_broken_promise_is_named_in_one_line(new, committed, reason):
    assert gate.broken_promise(new, committed) == reason
