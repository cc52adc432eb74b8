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


def test_family_k_is_sidak_over_the_metrics_as_a_t_quantile():
    # 80 metrics at a 5 % family: each at 1 - 0.95^(1/80); sigma from 9 runs: t with 8 df
    per_metric = 1 - 0.95 ** (1 / 80)
    assert calibration.family_k(80, 9) == pytest.approx(stats.t.ppf(1 - per_metric / 2, 8), rel=1e-9)
    assert calibration.family_k(1, 9) == pytest.approx(stats.t.ppf(0.975, 8), rel=1e-9)  # one metric: 5 %
    assert calibration.family_k(80, 9) > calibration.family_k(10, 9) > calibration.family_k(10, 30)


def test_derive_gives_k_sigma_diff_one_image_floors_and_ungates_what_it_cannot_gate():
    runs = runs_of(loss=[88.0, 88.1, 87.9, 88.05, 87.95, 88.0, 88.02],
                   big=[10.0, 12.0, 8.0, 11.0, 9.0, 10.5, 9.5],            # tolerance far over 20 % of 10
                   heavy=[5.0, 5.01, 4.99, 5.0, 5.02, 4.98, 5.6],            # one run far off the others
                   detection_rate=[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],       # no spread: one image's step
                   percentile=[100.0] * 7)                                   # at its bound in every run
    images = {"f.json:detection_rate": 2000, "f.json:percentile": 60000}
    rules, k = calibration.derive(runs, {}, images)
    by = {r["match"]: r for r in rules}
    assert k == round(calibration.family_k(5, 7), 3)
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
    rules, k = calibration.derive(runs, variants, tool.images_behind(summary["metrics"]), doc["study"]["family_false_alarm"])
    assert doc["rules"] == rules and doc["study"]["k"] == k and doc["study"]["n_runs"] == len(runs) >= 9


def test_the_measured_family_wise_false_alarm_rate_is_at_most_five_percent_and_recomputes():
    """The committed calibration (reports/spread/calibration.json) is what leaving each pair of the
    committed study's runs out gives today, and meets the target."""
    tool = load_script("tools/derive_tolerances.py")
    committed = json.loads((REPO / "reports/spread/calibration.json").read_text())
    summary = json.loads((REPO / "reports/spread/summary.json").read_text())
    runs, variants = tool.study_runs(summary)
    images = tool.images_behind(summary["metrics"])
    null = calibration.judge_resampled(runs, lambda rest: calibration.derive(rest, variants, images)[0])
    assert committed["judgments"] == len(null) == len(runs) * (len(runs) - 1)
    assert committed["false_alarms"] == sum(bool(j["failing"]) for j in null)
    assert committed["false_alarm_rate"] <= calibration.FAMILY_FALSE_ALARM
    text = (REPO / "reports/spread/calibration.md").read_text()
    assert f"{committed['false_alarms']} of {committed['judgments']} unchanged reruns fail" in text
    assert text in (REPO / "docs/reproducibility.md").read_text()
