"""docs/studies.md's example study, as a reader would run it: its five lines appended to
studies.yaml, each planned experiment run by tools/study.py on the fast profile, then collected
into its summary."""

import json
import re
import sys

import pytest
import yaml
from conftest import REPO, sh

from mnist_vae.study.workspace import git

pytestmark = pytest.mark.slow


@pytest.mark.long
def test_the_docs_example_study_runs_and_collects_on_the_fast_profile(work):
    block = re.findall(r"```yaml\n(.*?)```", (REPO / "docs/studies.md").read_text(), flags=re.S)[0]
    (name, body), = yaml.safe_load(block).items()
    with (work / "studies.yaml").open("a") as f:
        f.write("\n" + block)
    git(work, "commit", "-qam", f"the {name} study")
    tool = [sys.executable, "tools/study.py", name]
    names = sh([*tool, "plan", "--names"], work).stdout.split()
    assert names == [f"{name}-{e}-seed-{s}" for e in (5, 10) for s in (1, 2)]
    for exp in names:  # a runner's command, one experiment at a time (no queue workers to start)
        assert f"{exp}: ran in" in sh([*tool, "run", exp], work).stdout
    sh([*tool, "collect"], work)
    summary = json.loads((work / f"reports/studies/{name}/summary.json").read_text())
    assert [s["params"] for s in summary["settings"]] == [{"train.epochs": 5}, {"train.epochs": 10}]
    for setting in summary["settings"]:
        assert {m: row["n"] for m, row in setting["metrics"].items()} == {m: 2 for m in body["metrics"]}
        assert [r["seed"] for r in setting["runs"]] == [1, 2]
    metric = body["metrics"][0]
    for setting in summary["settings"]:  # the summary is its runs' mean and std, recomputed here
        values = [r["metrics"][metric] for r in setting["runs"]]
        assert setting["metrics"][metric]["mean"] == pytest.approx(sum(values) / 2, rel=1e-12)
        assert setting["metrics"][metric]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5, rel=1e-9)
        assert values[0] != values[1]  # another seed, another run
    elbo = [s["metrics"][metric]["mean"] for s in summary["settings"]]
    assert elbo[1] < elbo[0]  # ten epochs fit the data better than five
    table = (work / f"reports/studies/{name}/summary.md").read_text()
    assert re.search(r"^\| 5 \| [\d.]+ ± [\d.e-]+ \(2\) \| ", table, flags=re.M), table
    assert git(work, "status", "--porcelain", "--untracked-files=no") == ""  # the runs left the workspace alone
