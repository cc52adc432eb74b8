"""The gate calibrated as a family (mnist_vae.study.calibration, tools/derive_tolerances.py): one
k for the whole family, heavy-tailed metrics shown but not gated, rates and percentiles never
held below one image, and the family-wise false-alarm rate measured by leaving pairs out."""

import json
import math

import numpy as np
import pytest
import yaml
from conftest import REPO, load_script
from scipy import stats

from mnist_vae.study import calibration, gate, spread


def runs_of(**columns):
    """{run name: {metric: value}} from metric=[value per run] columns."""
    n = len(next(iter(columns.values())))
    return {("default" if i == 0 else f"seed-{i}"): {f"f.json:{m}": v[i] for m, v in columns.items()} for i in range(n)}


def test_family_k_holds_the_family_rate_in_a_simulation_with_known_truth():
    """m independent metrics, sigma estimated from n runs of each, one new difference of two runs
    per metric: the share of families with any metric beyond k sigma_diff is the family's rate."""
    rng = np.random.default_rng(0)
    for m, n in ((1, 9), (20, 9), (5, 30)):
        k = calibration.family_k(m, n)
        trials = 40_000
        runs = rng.normal(size=(trials, m, n))
        sigma_diff = runs.std(axis=2, ddof=1) * math.sqrt(2)
        diff = rng.normal(size=(trials, m)) * math.sqrt(2)
        rate = np.mean(np.any(np.abs(diff) > k * sigma_diff, axis=1))
        assert rate == pytest.approx(calibration.FAMILY_FALSE_ALARM, abs=0.004), (m, n, rate)
    assert calibration.family_k(80, 9) > calibration.family_k(10, 9) > calibration.family_k(10, 30)


def test_the_leave_pair_out_rate_matches_a_simulation_with_known_truth():
    """m independent normal metrics over n runs; one pair left out, sigma_diff from the other
    n - 2, the pair's difference against k sigma_diff: the share of families with any metric
    beyond it is the closed form, and with the deployed k (from n runs) above the family's rate."""
    from scipy import stats

    rng = np.random.default_rng(1)
    for m, n in ((20, 9), (90, 15)):
        k = calibration.family_k(m, n)
        trials = 40_000
        rest = rng.normal(size=(trials, m, n - 2))
        sigma_diff = rest.std(axis=2, ddof=1) * math.sqrt(2)
        diff = rng.normal(size=(trials, m)) - rng.normal(size=(trials, m))
        rate = np.mean(np.any(np.abs(diff) > k * sigma_diff, axis=1))
        want = calibration.leave_pair_out_rate(m, n, k)
        assert rate == pytest.approx(want, abs=0.005), (m, n, rate, want)
        assert want > calibration.FAMILY_FALSE_ALARM + 0.01
        assert want == pytest.approx(1 - (1 - 2 * stats.t.sf(k, n - 3)) ** m, rel=1e-9)
    assert calibration.leave_pair_out_rate(90, 15, calibration.family_k(90, 13)) == pytest.approx(0.05, abs=1e-9)


def test_rate_intervals_are_clopper_pearsons():
    # 3 of 72 (the issue's numbers: 0.9 % to 11.7 %); 0 of n: the closed form 1 - 0.025^(1/n)
    low, high = calibration.rate_interval(3, 72)
    assert (round(low, 4), round(high, 4)) == (0.0087, 0.117)
    assert calibration.rate_interval(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-12))
    assert calibration.rate_interval(10, 10) == (pytest.approx(0.025 ** (1 / 10), rel=1e-12), 1.0)


def test_m_counts_distinct_varying_metrics_only():
    runs = runs_of(a=[1.0, 2.0, 3.0], b=[1.0, 2.0, 3.0], c=[5.0, 5.0, 5.0], d=[3.0, 1.0, 2.0])
    assert calibration.distinct_metrics(runs, [f"f.json:{x}" for x in "abcd"]) == 2  # a = b, c constant


def test_derive_gives_k_sigma_diff_one_image_floors_and_ungates_what_it_cannot_gate():
    runs = runs_of(loss=[88.0, 88.1, 87.9, 88.05, 87.95, 88.0, 88.02],
                   big=[10.0, 12.0, 8.0, 11.0, 9.0, 10.5, 9.5],            # tolerance far over 20 % of 10
                   heavy=[5.0, 5.01, 4.99, 5.0, 5.02, 4.98, 5.6],            # one run far off the others
                   detection_rate=[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],       # no spread: one image's step
                   percentile=[100.0] * 7)                                   # at its bound in every run
    images = {"f.json:detection_rate": 2000, "f.json:percentile": 60000}
    rules, k = calibration.derive(runs, {}, images)
    by = {r["match"]: r for r in rules}
    assert k == round(calibration.family_k(3, 7), 3)  # the two constant metrics add no test
    sigma = np.std([88.0, 88.1, 87.9, 88.05, 87.95, 88.0, 88.02], ddof=1) * math.sqrt(2)
    assert by["f.json:loss"]["abs"] == pytest.approx(k * sigma, rel=1e-3) and "gated" not in by["f.json:loss"]
    assert by["f.json:big"]["gated"] is False and "20%" in by["f.json:big"]["why"]
    assert by["f.json:heavy"]["gated"] is False and by["f.json:heavy"]["why"].startswith("heavy tails")
    assert by["f.json:detection_rate"]["abs"] == pytest.approx(1 / 2000) and by["f.json:detection_rate"]["images"] == 2000
    # the rule of three over 7 x 60,000 images, in percentile points, and at least one image
    assert by["f.json:percentile"]["abs"] >= 100 / 60000 and "binomial over 60000 images" in by["f.json:percentile"]["why"]
    for rule in rules:
        gate.check_rule(rule)  # every derived rule is one the gate accepts
    # one noise image's score is never gated, whatever its spread
    one = runs_of(**{"noise_image.kl": [50.0, 50.1, 49.9, 50.0, 50.05, 49.95, 50.0]})
    (rule,) = [r for r in calibration.derive(one, {}, {})[0] if r["match"].endswith("noise_image.kl")]
    assert rule["gated"] is False and "one image" in rule["why"]


def test_zero_spread_rows_get_a_unit_or_are_shown_not_gated():
    runs = runs_of(loss=[88.0, 88.1, 87.9, 88.05], auroc=[1.0] * 4, active_units=[20] * 4)
    by = {r["match"]: r for r in calibration.derive(runs, {}, {})[0]}
    assert by["f.json:auroc"]["gated"] is False and "no spread to derive a tolerance from" in by["f.json:auroc"]["why"]
    assert by["f.json:active_units"]["abs"] == 1.0 and "gated" not in by["f.json:active_units"]  # one unit


def test_a_same_seed_variant_is_compared_with_its_own_seed_only():
    """Without the default run (a pair that holds it left out), the variant of the default seed
    has nothing of its seed to be compared with: it is left out, not compared with another seed."""
    runs = runs_of(loss=[5.0, 5.001, 4.999, 5.0, 5.001, 4.999, 5.0])
    variant = {"autograd": {"f.json:loss": 5.1}}
    with_default = {r["match"]: r for r in calibration.derive(runs, variant, {})[0]}
    runs.pop("default")
    without = {r["match"]: r for r in calibration.derive(runs, variant, {})[0]}
    assert with_default["f.json:loss"]["sigma_diff"] == pytest.approx(0.1, rel=1e-3)
    assert without["f.json:loss"]["sigma_diff"] == pytest.approx(np.std([5.001, 4.999, 5.0, 5.001, 4.999, 5.0], ddof=1)
                                                                 * math.sqrt(2), rel=1e-3)


def test_a_same_seed_spread_smaller_beyond_doubt_sets_the_tolerance_with_its_own_degrees_of_freedom():
    runs = runs_of(loss=[88.0, 88.3, 87.7, 88.2, 87.8, 88.1, 87.9])
    same = {name: {"f.json:loss": v} for name, v in zip(["committed", "a", "b", "c", "d"], [88.0, 88.01, 87.99, 88.0, 88.02])}
    rules, k = calibration.derive(runs, {}, {}, same_seed_runs=same)
    (rule,) = [r for r in rules if r["match"] == "f.json:loss"]
    # a rerun's difference from the committed run: the variants' root mean square, 4 df
    sigma_same = math.sqrt(np.mean(np.square([0.01, -0.01, 0.0, 0.02])))
    k_same = stats.t.ppf(1 - calibration.per_metric_rate(1) / 2, 4)
    assert rule["spread"] == "same-seed" and rule["k"] == pytest.approx(k_same, abs=1e-3)
    assert rule["abs"] == pytest.approx(k_same * sigma_same, rel=1e-3) and rule["abs"] < k * rule["seed_sigma_diff"]
    # a same-seed spread as large as the seed spread is not adopted
    wide = {name: {"f.json:loss": v} for name, v in zip(same, [88.0, 88.3, 87.7, 88.2, 87.8])}
    (rule,) = [r for r in calibration.derive(runs, {}, {}, same_seed_runs=wide)[0] if r["match"] == "f.json:loss"]
    assert "spread" not in rule


def test_the_detectable_shift_is_the_95th_percentile_of_each_pairs_own_threshold():
    """Brute force on a small case: one gated metric, its tolerance known per pair; a rise s is
    caught in a pair exactly when s > tol - (rerun - committed)."""
    runs = runs_of(loss=[88.0, 88.2, 87.9, 88.1, 88.05])
    derive = lambda rest: calibration.derive(rest, {}, {})[0]  # noqa: E731
    pairs = calibration.pair_rules(runs, derive)
    shift, n = calibration.detectable_shift(runs, pairs, "f.json:loss")
    assert n == 20
    own = sorted(gate.rule_for("f.json:loss", rules)["abs"] - (runs[b]["f.json:loss"] - runs[a]["f.json:loss"])
                 for (a, b), rules in pairs.items())
    assert shift == pytest.approx(own[math.ceil(0.95 * 20) - 1], rel=1e-9)
    assert calibration.direction("x/anomaly.json:kl.fashion.auroc") == -1 and calibration.direction("f.json:loss") == 1


def test_a_same_seed_variant_beyond_the_seed_spread_sets_sigma_diff():
    runs = runs_of(loss=[5.0, 5.001, 4.999, 5.0, 5.001, 4.999, 5.0])
    rules, k = calibration.derive(runs, {"autograd": {"f.json:loss": 5.1}}, {})
    (rule,) = [r for r in rules if r["match"] == "f.json:loss"]
    assert rule["sigma_diff"] == pytest.approx(0.1, rel=1e-3)


def test_leave_pair_out_counts_a_family_false_alarm_and_a_caught_shift():
    # two values taken in turn: every six runs left show both, so no pair lies beyond their spread
    runs = runs_of(loss=[88.0, 88.2] * 4, kl=[30.5, 30.0] * 4)
    derive = lambda rest: calibration.derive(rest, {}, {})[0]  # noqa: E731
    null = calibration.judge_resampled(runs, derive)
    assert len(null) == 8 * 7 and all(j["failing"] == [] for j in null)
    # a 5-nat shift of the loss is caught in every pair, by the loss itself
    out = calibration.calibrate(runs, derive, ["f.json:loss"], shifts=(5.0,))
    assert out["false_alarm_rate"] == 0.0 and out["catch"]["f.json:loss + 5"]["metric_fails"] == 1.0
    # a run far off on one metric fails every pair it is in, once for each direction
    runs["seed-7"]["f.json:kl"] = 40.0
    null = calibration.judge_resampled(runs, derive)
    assert sum(bool(j["failing"]) for j in null) == 2 * 7
    assert all(j["failing"] == ["f.json:kl"] for j in null if j["failing"])


def test_committed_tolerances_are_derive_tolerances_of_the_committed_study():
    """tolerances.yaml is what `make tolerances` derives from reports/spread/summary.json."""
    tool = load_script("tools/derive_tolerances.py")
    doc = yaml.safe_load((REPO / "tolerances.yaml").read_text())
    summary = json.loads((REPO / doc["study"]["summary"]).read_text())
    runs, variants = tool.study_runs(summary)
    same = tool.same_seed_runs(REPO / tool.SAME_SEED)
    rules, k = calibration.derive(runs, variants, tool.images_behind(summary["metrics"]), doc["study"]["family_false_alarm"],
                                  same_seed_runs=same or None)
    assert doc["rules"] == rules and doc["study"]["k"] == k and doc["study"]["n_runs"] == len(runs) >= 15
    # the committed run and eight distinct roundings (ten variants; two trained another's models)
    assert doc["study"]["same_seed"]["n_runs"] == len(same) >= 9


def test_the_measured_false_alarms_recompute_with_the_deployed_k_and_are_reported_with_intervals():
    """The committed calibration (reports/spread/calibration.json) is what leaving each pair of the
    same-seed runs out gives today under the deployed k; gated metrics fail at most 5 % of the
    unchanged reruns, and the report gives each rate with its interval and the runs behind it."""
    tool = load_script("tools/derive_tolerances.py")
    committed = json.loads((REPO / "reports/spread/calibration.json").read_text())
    doc = yaml.safe_load((REPO / "tolerances.yaml").read_text())
    summary = json.loads((REPO / "reports/spread/summary.json").read_text())
    same = tool.same_seed_runs(REPO / tool.SAME_SEED)
    study = doc["study"]
    pairs = tool.same_seed_rules(summary, study["family_false_alarm"], study["k"], study["same_seed"]["k"], same)
    result = calibration.calibrate_same_seed(same, pairs)
    assert committed["same_seed"] == json.loads(json.dumps(result))
    assert result["judgments"] == len(same) - 1  # each variant against the committed run
    assert result["gated"]["rate"] <= calibration.FAMILY_FALSE_ALARM
    assert study["measured"] == round(result["gated"]["rate"], 4)
    text = (REPO / "reports/spread/calibration.md").read_text()
    low, high = result["gated"]["interval95"]
    assert f"{result['gated']['count']} of {result['judgments']} ({result['gated']['rate']:.1%}; 95% interval " \
           f"{low:.1%} to {high:.1%})" in text
    assert text in (REPO / "docs/reproducibility.md").read_text()
    # seed pairs (every metric held to the seed spread): gated false alarms at most 5 % too, printed
    seeds = committed["gated"]
    assert seeds["of"] == committed["judgments"] == summary["study"]["n_seeds"] * (summary["study"]["n_seeds"] + 1)
    assert seeds["rate"] <= calibration.FAMILY_FALSE_ALARM
    assert f"{seeds['count']} of {seeds['of']} ({seeds['rate']:.1%}; 95% interval {seeds['interval95'][0]:.1%} to " \
           f"{seeds['interval95'][1]:.1%})" in text
