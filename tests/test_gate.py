from mnist_vae import gate

from conftest import REPO


def test_repository_tolerances():
    rules = gate.load_rules(REPO / "tolerances.yaml")
    assert gate.rule_for("reports/metrics/train-vae20d.json:test_loss", rules) == {
        "match": "reports/metrics/train-vae20d.json:*", "abs": 0.75}
    assert gate.rule_for("reports/metrics/train-vae2d.json:test_loss", rules)["abs"] == 1.75
    assert gate.rule_for("reports/metrics/anomaly.json:kl.fashion.auroc", rules)["abs"] == 0.02
    assert gate.rule_for("reports/metrics/anomaly.json:kl.train.mean", rules)["rel"] == 0.05
    assert gate.rule_for("reports/metrics/train-vae2d.json:train_seconds", rules)["ignore"]


def test_compare_flags_drift_and_prints_the_table():
    rules = gate.load_rules(REPO / "tolerances.yaml")
    diff = {
        "reports/metrics/train-vae20d.json": {
            "test_loss": {"old": 87.96, "new": 89.96},   # 2 nats: drift
            "train_loss": {"old": 88.2, "new": 88.5},    # within 0.75
            "train_seconds": {"old": 28.0, "new": 90.0},  # ignored
            "device": {"old": "cpu", "new": "cpu"},
        },
        "reports/metrics/anomaly.json": {
            "kl.train.mean": {"old": 30.0, "new": 31.4},  # 4.7 %: ok
            "kl.train.std": {"old": 4.4, "new": 4.7},     # 6.8 %: drift
            "kl.noise.auroc": {"old": 1.0, "new": None},  # disappeared: drift
        },
    }
    rows = {r.metric: r for r in gate.compare(diff, rules)}
    assert set(rows) == {"reports/metrics/train-vae20d.json:test_loss", "reports/metrics/train-vae20d.json:train_loss",
                         "reports/metrics/anomaly.json:kl.train.mean", "reports/metrics/anomaly.json:kl.train.std",
                         "reports/metrics/anomaly.json:kl.noise.auroc"}
    assert [m for m, r in sorted(rows.items()) if not r.ok] == [
        "reports/metrics/anomaly.json:kl.noise.auroc", "reports/metrics/anomaly.json:kl.train.std",
        "reports/metrics/train-vae20d.json:test_loss"]
    text = gate.table(list(rows.values()))
    assert text.splitlines()[0].split() == ["metric", "committed", "new", "tolerance"]
    row = next(l for l in text.splitlines() if l.startswith("reports/metrics/train-vae20d.json:test_loss "))
    assert row.split() == ["reports/metrics/train-vae20d.json:test_loss", "87.96", "89.96", "abs", "0.75", "DRIFT"]


def test_metric_without_rule_must_match_exactly():
    assert gate.rule_for("x.json:y", []) == {"abs": 0}
    assert not gate.within(1.0, 1.0001, {"abs": 0})
