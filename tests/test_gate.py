import math

import pytest

from conftest import REPO
from mnist_vae import gate

T20 = "reports/models/vae20d/train.json:test_loss"
T2 = "reports/models/vae2d/train.json:test_loss"


@pytest.mark.parametrize("committed, new, rule, ok", [
    (10.0, 10.5, {"abs": 0.5}, True),                 # exactly at the tolerance
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
    rows = gate.compare({"a.json": {"noisy": {"old": 0.0, "new": 2.0}, "loss": {"old": 0.0, "new": 0.5}}}, rules)
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


def test_committed_tolerances_catch_the_required_shifts():
    """The gate must fail on a 1-nat shift of the 20-d test loss and a 3-nat shift of the 2-d's."""
    rules = gate.load_rules(REPO / "tolerances.yaml")
    for metric, shift in ((T20, 1.0), (T2, 3.0)):
        rule = gate.rule_for(metric, rules)
        assert rule.get("gated", True) and rule["abs"] < shift, rule
        rows = gate.compare(gate.diff_of({metric: 100.0}, {metric: 100.0 + shift}), rules)
        assert gate.failures(rows) == rows


def test_committed_tolerances_compare_run_descriptions_exactly():
    rules = gate.load_rules(REPO / "tolerances.yaml")
    for metric in ("reports/models/vae20d/train.json:epochs", "reports/models/vae20d/eval.json:iwae_k",
                   "reports/models/vae2d/eval.json:iwae_images", "reports/models/vae2d/eval.json:latent_dim",
                   "reports/models/vae2d/train.json:parameters", "reports/models/vae20d/anomaly.json:model"):
        assert gate.rule_for(metric, rules).get("exact") is True, metric
    assert gate.rule_for("reports/models/vae2d/train.json:device", rules)["ignore"]
    assert not any("seconds" in r["match"] for r in rules)  # timings are no longer metrics


def test_report_rules_show_the_metric_and_never_fail():
    rules = [gate.check_rule({"match": "b.json:*", "report": True})]
    rows = gate.compare({"b.json": {"kl": {"old": 1.0, "new": 1.4}}}, rules)  # within the 50 % sanity bound
    assert [(r.tolerance, r.ok, r.gated) for r in rows] == [("not measured", True, False)]
    assert gate.failures(rows) == []


def test_a_diff_against_a_commit_before_the_move_pairs_old_and_new_paths():
    diff = {"reports/metrics/train-vae20d.json": {"test_loss": {"old": 87.93, "new": None},
                                                  "train_seconds": {"old": 24.9, "new": None}},
            "reports/models/vae20d/train.json": {"test_loss": {"old": None, "new": 87.95}},
            "reports/metrics/anomaly.json": {"model": {"old": "vae20d", "new": None}},
            "reports/models/vae20d/anomaly.json": {"model": {"old": None, "new": "vae20d"}}}
    assert gate.across_the_move(diff) == {
        "reports/models/vae20d/train.json": {"test_loss": {"old": 87.93, "new": 87.95}},
        "reports/models/vae20d/anomaly.json": {"model": {"old": "vae20d", "new": "vae20d"}}}
    rows = gate.compare(gate.across_the_move(diff), gate.load_rules(REPO / "tolerances.yaml"))
    assert [(r.metric, r.ok) for r in rows] == [("reports/models/vae20d/anomaly.json:model", True),
                                              ("reports/models/vae20d/train.json:test_loss", True)]


# --- exact mode (portable numerics on x86-64) ---------------------------------------------------

def _committed_flat() -> dict:
    import json

    from mnist_vae import layout, spread

    files = {}
    for model_dir in sorted((REPO / layout.MODELS_REPORTS).iterdir()):
        for name in layout.METRICS_FILES:
            path = model_dir / name
            if path.exists():
                files[str(path.relative_to(REPO))] = json.loads(path.read_text())
    return spread.flat_metrics(files)


def _committed_machines() -> dict:
    import json

    from mnist_vae import layout

    return {d.name: json.loads((d / "timings-train.json").read_text())["machine"]
            for d in sorted((REPO / layout.MODELS_REPORTS).iterdir())}


PORTABLE = {"numerics": "portable", "bitwise_promise": True, "threads": 2, "cpu_capability": "AVX2"}


def test_the_committed_run_is_portable_so_a_rerun_on_x86_64_is_held_exactly():
    machines = _committed_machines()
    assert gate.exact_mode(machines, machines)
    assert all(m["numerics"] == "portable" and m["bitwise_promise"] for m in machines.values())


@pytest.mark.parametrize("new, committed, exact", [
    ({"a": PORTABLE}, {"a": PORTABLE}, True),
    ({"a": PORTABLE}, {"a": {**PORTABLE, "numerics": "fast", "bitwise_promise": False}}, False),
    ({"a": {**PORTABLE, "bitwise_promise": False}}, {"a": PORTABLE}, False),  # aarch64, CUDA
    ({"a": PORTABLE}, {"a": None}, False),  # a commit without a machine record
    ({"a": PORTABLE}, {"a": PORTABLE, "b": PORTABLE}, False),  # another set of models
    ({}, {}, False),
])
def test_exact_mode_needs_every_run_portable_with_the_promise(new, committed, exact):
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
    - {path: models/m.pt, md5: %s}
    - {path: reports/models/m/timings-train.json, md5: %s}
  report:
    outs:
    - {path: reports/index.html, md5: %s}
"""
    old = lock % ("a" * 32, "b" * 32, "c" * 32)
    assert not gate.failures(gate.compare_outputs(old, lock % ("a" * 32, "d" * 32, "e" * 32)))
    rows = gate.compare_outputs(old, lock % ("f" * 32, "b" * 32, "c" * 32))
    assert [r.metric for r in gate.failures(rows)] == ["models/m.pt (bytes)"]
