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
    near = spread.results_table([{"label": "near", "value": 8.96, "metric": "f.json:loss"}], runs, {}).splitlines()
    assert near[2].endswith("| yes (z = +0.0) |")  # z = -0.04 rounds to zero, shown without a sign of its own


def test_results_md_is_regenerated_from_the_committed_study_and_run_and_the_readme_shows_it():
    """reports/spread/results.md is what `python tools/spread.py results` writes from the committed
    study and the committed run's metrics today (a stale file, or a README table that is not
    the file, fails), and the README shows it."""
    from mnist_vae.io import layout
    from mnist_vae.study import reference

    summary = json.loads((REPO / "reports/spread/summary.json").read_text())
    files = {p.relative_to(REPO).as_posix(): json.loads(p.read_text())
             for name in layout.METRICS_FILES for p in (REPO / layout.MODELS_REPORTS).glob(f"*/{name}")}
    regenerated = spread.results_table(reference.load(str(REPO))["numbers"], spread.default_params_runs(summary),
                                       spread.flat_metrics(files))
    table = (REPO / "reports/spread/results.md").read_text()
    assert table == regenerated
    assert table in (REPO / "README.md").read_text()


def test_same_seed_sigma_and_its_upper_bound():
    from mnist_vae.study import calibration

    # a rerun's difference from the committed run: the variants' root mean square, a df each
    sigma, n = calibration.same_seed_sigma([0.03, -0.14, 0.05])
    assert n == 3 and sigma == pytest.approx(math.sqrt((0.03 ** 2 + 0.14 ** 2 + 0.05 ** 2) / 3))
    assert math.isnan(calibration.same_seed_sigma([0.1])[0])  # one variant shows no spread
    # chi^2 with 3 degrees of freedom: 5 % quantile 0.351846 (tables)
    assert spread.sigma_upper_bound(sigma, n) == pytest.approx(sigma * math.sqrt(3 / 0.351846), rel=1e-5)
    assert spread.sigma_upper_bound(sigma, 0) == math.inf


def test_power_json_catches_every_regression_and_records_where_each_ran():
    """reports/spread/power.json under the committed tolerances: every deliberate regression that ran
    is caught; each shift case fails its own metric exactly when the shift exceeds that metric's
    tolerance in tolerances.yaml; every case names the machine its runs ran on."""
    power = json.loads((REPO / "reports/spread/power.json").read_text())
    rules = gate.load_rules(REPO / "tolerances.yaml")
    tool = load_script("tools/spread.py")
    for name in tool.REGRESSIONS:
        assert power[name]["ran"] and power[name]["caught"], name
        assert power[name]["machine"], name  # its record, or why there is none
    summary = json.loads((REPO / "reports/spread/summary.json").read_text())
    for metric, shift in tool.shifts().items():
        case = power[f"{metric.removeprefix('reports/models/')} + {shift:g}"]
        rule = gate.rule_for(metric, rules)
        own = [d for d in case["largest_drifts"] if d["metric"] == metric]
        assert own and own[0]["new"] == pytest.approx(summary["runs"]["default"][metric] + shift)
        fails_own = abs(shift) > rule["abs"] or bool(gate.problem_of(own[0]["committed"], own[0]["new"], rule, metric))
        assert case["caught"] == fails_own, (metric, shift, rule)
    # the three regressions an earlier gate let through (issue 48) fail, each on a metric it moved
    for label, metrics in tool.regression_cases(summary["runs"]["default"]).items():
        rows = gate.failures(gate.compare(gate.diff_of(summary["runs"]["default"], metrics), rules))
        moved = {m for m, v in metrics.items() if v != summary["runs"]["default"].get(m)}
        assert power[label]["caught"] and rows and {r.metric for r in rows} <= moved, label


@pytest.mark.parametrize("doc, missing", [
    ([], "study"),
    ({"study": {"n_seeds": 8}, "metrics": {}}, "study.machines"),  # a summary from before runs named their machines
    ({"study": {"n_seeds": 8, "machines": {}}}, "metrics"),
])
def test_a_summary_the_report_cannot_read_is_named_with_its_missing_key(doc, missing):
    with pytest.raises(DataError, match=f"summary.json: no `{missing}`; regenerate it with `python tools/study.py spread"):
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
