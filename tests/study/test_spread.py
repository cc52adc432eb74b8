"""The spread study's arithmetic and the tolerances derived from it, on hand-computed values."""

import json
import math

import numpy as np
import pytest
import yaml
from conftest import REPO, load_script

from mnist_vae.io.errors import DataError
from mnist_vae.study import gate, spread


def test_flatten_names_metrics_as_dvc_metrics_diff_does():
    files = {"reports/metrics/a.json": {"kl": {"train": {"mean": 1.5}}, "model": "vae20d", "epochs": 10}}
    assert spread.flat_metrics(files) == {"reports/metrics/a.json:kl.train.mean": 1.5,
                                          "reports/metrics/a.json:model": "vae20d",
                                          "reports/metrics/a.json:epochs": 10}


@pytest.mark.parametrize("metric, kind", [
    ("reports/models/vae20d/train.json:device", "ignored"),
    ("reports/models/vae20d/train.json:epochs", "exact"),
    ("reports/models/vae20d/anomaly.json:kl.train.k", "exact"),
    ("reports/models/vae20d/anomaly.json:model", "exact"),
    ("reports/models/vae2d/eval.json:iwae_images", "exact"),
    ("reports/models/vae20d/train.json:test_loss", "measured"),
    ("reports/models/vae20d/anomaly.json:kl.train.mean", "measured"),
])
def test_metric_kinds(metric, kind):
    assert spread.kind(metric) == kind


def test_summarize_on_known_values():
    m = "f.json:loss"
    seeds = {"s1": {m: 1.0, "f.json:epochs": 10}, "s2": {m: 2.0}, "s3": {m: 3.0}, "s4": {m: 6.0}}
    # mean 3, deviations -2 -1 0 3 -> sum of squares 14, ddof 1: variance 14 / 3
    row = spread.summarize(seeds, {m: 4.0}, {"other": {m: 4.5}})[m]
    std = math.sqrt(14 / 3)
    assert row["n"] == 4 and row["mean"] == 3.0 and row["std"] == pytest.approx(std)
    assert (row["min"], row["max"], row["default"]) == (1.0, 6.0, 4.0)
    assert row["z"] == pytest.approx(1 / std)
    assert row["variants"]["other"]["delta"] == 0.5
    assert row["variants"]["other"]["in_diff_spread"] == pytest.approx(0.5 / (std * math.sqrt(2)))
    assert set(spread.summarize(seeds, {}, {})) == {m}  # exact metrics are not summarized


def test_derive_tolerances_k_sigma_floor_and_ungated():
    summary = {
        "f.json:loss": {"mean": 88.0, "std": 0.1, "variants": {"a": {"delta": 0.05}}},   # seed spread wins
        "f.json:noisy": {"mean": 10.0, "std": 1.0, "variants": {}},                       # 4*1.41 > 20 % of 10
        "f.json:flat": {"mean": 20.0, "std": 0.0, "variants": {"a": {"delta": 0.0}}},     # the floor
        "f.json:machine": {"mean": 5.0, "std": 0.01, "variants": {"a": {"delta": -0.1}}},  # the variant wins
    }
    rules = {r["match"]: r for r in spread.derive_tolerances(summary, ["*:epochs"], k=4, floor=0.001,
                                                             max_useful_rel=0.2)}
    assert rules["f.json:loss"]["abs"] == pytest.approx(4 * 0.1 * math.sqrt(2), rel=1e-3)
    assert rules["f.json:loss"]["sigma_diff"] == pytest.approx(0.1 * math.sqrt(2), rel=1e-3)
    assert "gated" not in rules["f.json:loss"]
    assert rules["f.json:noisy"]["gated"] is False and "20%" in rules["f.json:noisy"]["why"]
    assert rules["f.json:flat"]["abs"] == 0.001
    assert rules["f.json:machine"]["abs"] == pytest.approx(0.4)
    assert rules["*:epochs"] == {"match": "*:epochs", "exact": True}
    assert rules["*:device"] == {"match": "*:device", "ignore": True} and "*seconds*" not in rules
    for rule in rules.values():
        gate.check_rule(rule)  # every derived rule is one the gate accepts


def test_committed_tolerances_come_from_the_committed_study():
    """tolerances.yaml is what `make tolerances` derives from reports/spread/summary.json."""

    doc = yaml.safe_load((REPO / "tolerances.yaml").read_text())
    summary = json.loads((REPO / doc["study"]["summary"]).read_text())
    assert doc["study"]["n_seeds"] == summary["study"]["n_seeds"] >= 8
    from conftest import load_script

    runs = spread.default_params_runs(summary)
    trials = load_script("tools/derive_tolerances.py").rate_trials(summary["metrics"])
    assert doc["study"]["k"] == round(spread.k_for_false_alarm(doc["study"]["false_alarm"], doc["study"]["n_seeds"]), 3)
    derived = spread.derive_tolerances(summary["metrics"], spread.EXACT, doc["study"]["k"], doc["study"]["floor"],
                                       doc["study"]["max_useful_rel"], doc["study"]["unmeasured"], runs, trials)
    assert doc["rules"] == derived


def test_results_table_on_known_values():
    """The verdict is the 95 % prediction interval of one more run, mean +/- t_{n-1} s sqrt(1 + 1/n);
    a `judged_by` row uses that metric and shows its own beside it."""
    reference = [{"label": "loss", "value": 10.0, "metric": "f.json:loss"},
                 {"label": "far", "value": 13.0, "metric": "f.json:loss"},
                 {"label": "new", "value": 1.0, "metric": "g.json:x"},
                 {"label": "one", "value": 9.0, "metric": "f.json:one", "judged_by": "f.json:loss"}]
    runs = {f"seed-{i}": {"f.json:loss": v} for i, v in enumerate([8.0, 9.0, 10.0])}  # mean 9, s 1, n 3
    half = 4.302653 * math.sqrt(1 + 1 / 3)  # t_2(0.975) = 4.3027
    lines = spread.results_table(reference, runs, {"f.json:loss": 9.5, "g.json:x": 1.25, "f.json:one": 7.0}).splitlines()
    assert lines[2] == f"| loss | 10.00 | 9.50 | 9.00 ± 1.00 (3) | {9 - half:.2f} to {9 + half:.2f} | yes (z = +1.0) |"
    assert lines[3] == f"| far | 13.00 | 9.50 | 9.00 ± 1.00 (3) | {9 - half:.2f} to {9 + half:.2f} | yes (z = +4.0) |"
    assert lines[4] == "| new | 1.00 | 1.25 | not in the study | - | - |"
    assert lines[5].startswith("| one | 9.00 | 9.50 (one image: 7.00) | 9.00 ± 1.00 (3) |")
    far = spread.results_table([{"label": "far", "value": 16.0, "metric": "f.json:loss"}], runs, {}).splitlines()
    assert far[2].endswith("| **no** (z = +7.0) |")


def test_readme_results_table_is_the_studys():
    """The README's results table is reports/spread/results.md, as `make spread` wrote it."""
    table = (REPO / "reports/spread/results.md").read_text()
    assert table in (REPO / "README.md").read_text()


def test_leave_one_out_flags_a_run_the_others_do_not_cover():
    steady = np.array([10.0, 10.1, 9.9, 10.05, 9.95, 10.02])
    assert spread.leave_one_out_ok(steady, k=3, floor=0.001)
    with_outlier = np.append(steady, 11.0)  # 1 nat off, where the others spread by ~0.08
    assert not spread.leave_one_out_ok(with_outlier, k=3, floor=0.001)
    saturated = np.array([1.0] * 7 + [0.9998])  # a rate at its bound, one run a notch below
    assert not spread.leave_one_out_ok(saturated, k=3, floor=0.0001)
    rules = {r["match"]: r for r in spread.derive_tolerances(
        {"f.json:rate": {"mean": 0.99998, "std": 0.00007, "variants": {}}}, [], k=3, floor=0.0001,
        max_useful_rel=0.2, runs={f"r{i}": {"f.json:rate": v} for i, v in enumerate(saturated)})}
    # the outlier widens the tolerance to the runs' range; the rate stays gated
    assert rules["f.json:rate"].get("gated", True) and rules["f.json:rate"]["abs"] >= 0.0002
    assert rules["f.json:rate"]["why"].startswith("widened to the runs' range")


def test_catch_probability_of_a_shift_under_noise():
    # noiseless: a shift beyond the tolerance is always caught, within it never
    assert spread.catch_probability(1.0, 0.982, 0.0) == 1.0 and spread.catch_probability(0.9, 0.982, 0.0) == 0.0
    # a shift equal to the tolerance: half the noise pushes it over (the other tail is negligible)
    assert spread.catch_probability(1.0, 1.0, 0.1) == pytest.approx(0.5, abs=1e-12)
    # one sigma beyond: Phi(1) = 0.8413
    assert spread.catch_probability(1.1, 1.0, 0.1) == pytest.approx(0.841345, abs=1e-6)
    # no shift: the two-sided false-alarm rate 2 Phi(-2.9) = 0.00373
    assert spread.catch_probability(0.0, 0.29, 0.1) == pytest.approx(0.0037320, abs=1e-6)


def test_same_seed_sigma_and_its_upper_bound():
    row = {"std": 0.25, "variants": {"a": {"delta": 0.03}, "b": {"delta": -0.14}, "c": {"delta": 0.05},
                                     "same-order": {"delta": 0.0}}}  # equal to the bit: left out
    sigma, n = spread.same_seed_sigma(row)
    assert n == 3 and sigma == pytest.approx(math.sqrt((0.03 ** 2 + 0.14 ** 2 + 0.05 ** 2) / 3))
    # chi^2 with 3 degrees of freedom: 5 % quantile 0.3518
    assert spread.sigma_upper_bound(sigma, n) == pytest.approx(sigma * math.sqrt(3 / 0.351846), rel=1e-5)
    out = spread.power_under_noise("f.json:loss", 1.0, row, tolerance=0.982, k=2.9)
    assert out["p_caught_noiseless"] == 1.0 and 0.5 < out["p_caught"] < 0.6
    assert out["same_seed_tolerance"] == pytest.approx(2.9 * sigma)
    # 3 runs cannot show the machine spread to be much smaller than the seed spread (0.354)
    assert out["same_seed_sigma_upper95"] > 0.5 * 0.25 * math.sqrt(2)
    assert out["same_seed_adopted"] is False
    assert spread.same_seed_sigma({"std": 1.0, "variants": {}})[1] == 0


def test_power_json_is_what_summary_and_tolerances_give():
    """reports/spread/power.json's shift cases and its table under same-seed noise, recomputed from
    reports/spread/summary.json and tolerances.yaml alone; every regression either stores its
    metrics (and is judged again here) or says it was judged under earlier tolerances."""

    from mnist_vae.study import gate

    tool = load_script("tools/spread.py")
    power = json.loads((REPO / "reports/spread/power.json").read_text())
    summary = json.loads((REPO / "reports/spread/summary.json").read_text())
    rules = gate.load_rules(REPO / "tolerances.yaml")
    k = yaml.safe_load((REPO / "tolerances.yaml").read_text())["study"]["k"]
    base = summary["runs"]["default"]
    for label, metrics in tool.shifted_cases(base).items():
        assert power[label] == json.loads(json.dumps(tool.judge_case(base, metrics, rules))), label
    assert power["under_machine_noise"] == json.loads(json.dumps(tool.noise_rows(summary["metrics"], tool.shifts(),
                                                                                   rules, k)))
    for name in tool.REGRESSIONS:
        case = power[name]
        if "metrics" in case:
            assert case == json.loads(json.dumps(tool.judge_case(base, case["metrics"], rules))), name
        else:
            assert case.get("earlier_tolerances") is True, name


def test_power_words_and_intervals():
    low, high = spread.sigma_interval(0.1, 2)
    assert low < 0.1 < high and high == pytest.approx(0.1 * math.sqrt(2 / 0.0506356), rel=1e-4)
    assert spread.in_words(0.57, 0.51, 0.63) == "about a coin flip"
    assert spread.in_words(0.99, 0.96, 1.0) == "almost always" and spread.in_words(0.01, 0.0, 0.04) == "almost never"
    lo, hi = spread.chance_range(1.0, 0.982, 0.054, 0.652)
    assert lo < spread.catch_probability(1.0, 0.982, 0.104) < hi


@pytest.mark.parametrize("doc, missing", [
    ([], "study"),
    ({"study": {"n_seeds": 8}, "metrics": {}}, "study.machines"),  # a summary from before runs named their machines
    ({"study": {"n_seeds": 8, "machines": {}}}, "metrics"),
])
def test_a_summary_the_report_cannot_read_is_named_with_its_missing_key(doc, missing):
    with pytest.raises(DataError, match=f"summary.json: no `{missing}`; regenerate it with `python tools/spread.py"):
        spread.check_summary(doc)
    good = {"study": {"n_seeds": 8, "machines": {}}, "metrics": {}}
    assert spread.check_summary(good) is good


def test_the_quantiles_are_scipy_stats_bit_for_bit():
    """t_ppf and chi2_ppf (scipy.special's kernels, a light import) give scipy.stats' very bits."""
    from scipy import stats

    qs = np.concatenate([np.linspace(1e-4, 1 - 1e-4, 2001), [0.005, 0.025, 0.05, 0.95, 0.975, 0.995]])
    for df in (1, 2, 3, 4, 9, 10, 29, 30, 100):
        assert np.array_equal(spread.t_ppf(qs, df), stats.t.ppf(qs, df)), df
        assert np.array_equal(spread.chi2_ppf(qs, df), stats.chi2.ppf(qs, df)), df
    assert math.isnan(spread.t_ppf(0.975, 0)) and math.isnan(stats.t.ppf(0.975, 0))  # one run: no spread
