"""Beyond one machine, for real but on loopback: an S3 remote (moto's S3 server on 127.0.0.1),
the run cache, experiments pushed from one clone and pulled into another through a bare git
origin, and the experiment queue with two workers. Also the CI workflow a user can drop in."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import (
    FAST_MODELS,
    assert_clean_failure,
    changed_stages,
    dvc,
    mirror_env,
    ran_stages,
    set_params,
    sh,
)

from mnist_vae.study.workspace import dvc_exe, git

pytestmark = pytest.mark.slow

BUCKET = "mnist-vae"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hold:
    """Between moto's S3 server and its clients: while armed, every upload of a DVC object
    waits (`reached` says one came) until `released`, then fails (503), as do the retries, so a
    test kills a push in the middle of its upload, every time, and nothing it sent arrives."""

    def __init__(self, app):
        self.app, self.armed = app, False
        self.reached, self.released = threading.Event(), threading.Event()

    def __call__(self, environ, start_response):
        if self.armed and environ["REQUEST_METHOD"] in ("PUT", "POST") and "/files/md5/" in environ["PATH_INFO"]:
            self.reached.set()
            self.released.wait(300)
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"held by the test"]
        return self.app(environ, start_response)

    def arm(self):
        self.reached.clear()
        self.released.clear()
        self.armed = True

    def disarm(self):
        self.armed = False
        self.released.set()


HOLD: Hold | None = None  # the module's S3 server's, set by the s3 fixture


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 (as dvc-s3's own tests run it), with an empty bucket; its
    uploads pass through HOLD."""
    import boto3
    from moto.server import ThreadedMotoServer

    global HOLD
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    server._server.app = HOLD = Hold(server._server.app)  # werkzeug reads its app per request
    url = f"http://127.0.0.1:{port}"
    s3_client(url).create_bucket(Bucket=BUCKET)
    yield url
    HOLD.disarm()
    server.stop()


def s3_client(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                        region_name="us-east-1")


def s3_keys(url: str, prefix: str) -> set[str]:
    pages = s3_client(url).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


@pytest.fixture(autouse=True)
def no_real_aws(monkeypatch, tmp_path):
    """Nothing from this machine's AWS configuration, and no proxy for loopback."""
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def publish(work, tmp_path, message: str):
    """Commit the work tree, push it to a new bare git origin and its outputs to the DVC remote."""
    git(work, "add", "-A")
    git(work, "commit", "-qm", message)
    origin = tmp_path / "origin.git"
    sh(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
    dvc("push", cwd=work)
    return origin


def add_s3_remote(repo: Path, endpoint: str, prefix: str) -> None:
    """What a user types: the remote and its endpoint go into .dvc/config (committed), the
    credentials into .dvc/config.local (never committed)."""
    dvc("remote", "add", "-d", "store", f"s3://{BUCKET}/{prefix}", cwd=repo)
    dvc("remote", "modify", "store", "endpointurl", endpoint, cwd=repo)
    set_credentials(repo)


def set_credentials(repo: Path) -> None:
    dvc("remote", "modify", "--local", "store", "access_key_id", "testing", cwd=repo)
    dvc("remote", "modify", "--local", "store", "secret_access_key", "testing", cwd=repo)


def cache_files(repo: Path) -> int:
    return sum(1 for p in (repo / ".dvc/cache").rglob("*") if p.is_file()) if (repo / ".dvc/cache").exists() else 0


@pytest.mark.long
def test_s3_round_trip_with_the_run_cache(work, s3, tmp_path):
    add_s3_remote(work, s3, "round-trip")
    assert "secret_access_key" not in (work / ".dvc/config").read_text()
    assert "secret_access_key" in (work / ".dvc/config.local").read_text()
    # a run the run cache remembers: render-grids with fewer prior samples, committed and pushed,
    # then back. The run cache shares the records of runs; a run's outputs travel with the commit
    # (or the experiment) that made it (treeverse/dvc#10472: the run-cache transfer moves only the
    # records), so only a stage whose outputs are all cached can be restored in another clone.
    set_params(work, {"grids": {"prior_samples": 16}})
    dvc("repro", cwd=work)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "16 prior samples")
    dvc("push", cwd=work)
    set_params(work, {"grids": {"prior_samples": 64}})
    assert "skipping run" in dvc("repro", cwd=work).stdout  # restored from the local run cache
    t0 = time.perf_counter()
    dvc("push", "--run-cache", cwd=work)
    push_seconds = time.perf_counter() - t0
    git(work, "add", "-A")
    git(work, "commit", "-qm", "S3 remote, back to 64 prior samples")
    assert ".dvc/config.local" not in git(work, "ls-files")

    clone = tmp_path / "b"
    sh(["git", "clone", "-q", str(work), str(clone)], tmp_path)
    set_credentials(clone)
    t0 = time.perf_counter()
    dvc("pull", "--run-cache", cwd=clone)
    pull_seconds = time.perf_counter() - t0
    assert (clone / "models/vae20d.safetensors").read_bytes() == (work / "models/vae20d.safetensors").read_bytes()
    assert changed_stages(clone) == set()
    assert ran_stages(dvc("repro", cwd=clone).stdout) == set()
    # the 16-sample run happened in the other clone: here it is restored from the run cache, not run
    set_params(clone, {"grids": {"prior_samples": 16}})
    out = dvc("repro", "--pull", cwd=clone).stdout
    assert ran_stages(out) == set(), out[-2000:]
    for model in FAST_MODELS:
        assert f"Stage 'render-grids@{model}' is cached - skipping run" in out, out[-2000:]

    # a third clone fetches only what a repro needs: nothing is out of date, so nothing runs
    third = tmp_path / "c"
    sh(["git", "clone", "-q", str(work), str(third)], tmp_path)
    set_credentials(third)
    out = dvc("repro", "--pull", "--allow-missing", cwd=third).stdout
    assert ran_stages(out) == set()
    assert cache_files(third) < cache_files(clone)
    print(f"S3 push {push_seconds:.1f} s, pull {pull_seconds:.1f} s, {cache_files(clone)} cache files pulled, "
          f"{sum(p.stat().st_size for p in (clone / '.dvc/cache').rglob('*') if p.is_file()) / 1e6:.1f} MB; "
          f"repro --pull --allow-missing fetched {cache_files(third)} files")


def test_a_wrong_endpoint_fails_clearly_and_soon(work, s3):
    add_s3_remote(work, f"http://127.0.0.1:{free_port()}", "nowhere")  # nothing listens there
    dvc("remote", "modify", "store", "connect_timeout", "5", cwd=work)
    t0 = time.perf_counter()
    proc = dvc("push", cwd=work, check=False)
    seconds = time.perf_counter() - t0
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert "ERROR" in err and "Traceback" not in err, err[-2000:]
    assert seconds < 120, seconds


def runner_env() -> dict:
    """A runner's environment (its thread count is the params' numerics.threads: the fast
    profile's 1, since the runners share this machine's cores)."""
    return mirror_env()


def clone_of(origin: Path, dest: Path) -> Path:
    sh(["git", "clone", "-q", "-b", "main", str(origin), str(dest)], dest.parent)
    set_credentials(dest)
    git(dest, "config", "user.name", dest.name)  # `dvc exp run` commits the experiment
    git(dest, "config", "user.email", f"{dest.name}@localhost")
    return dest


def experiment_rev(repo: Path, name: str) -> str:
    """The commit of the clone's experiment `name` (refs/exps/.../<name>)."""
    refs = git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/").splitlines()
    return next(line.split()[0] for line in refs if line.endswith(f"/{name}"))


def experiment_metrics(repo: Path, name: str) -> dict:
    """The metrics of a runner's experiment, read straight from its commit's files."""
    from mnist_vae.io import layout
    from mnist_vae.study import spread

    rev = experiment_rev(repo, name)
    params = yaml.safe_load(git(repo, "show", f"{rev}:params.yaml"))
    paths = [f(m) for m in params["models"] for f in (layout.train_metrics, layout.eval_metrics)]
    paths += [layout.anomaly_metrics(m) for m in params["anomaly"]["models"]]
    return spread.flat_metrics({path: json.loads(git(repo, "show", f"{rev}:{path}")) for path in paths})


@pytest.mark.long
def test_the_spread_study_fans_out_to_runners_and_one_collector_gathers_it(work, s3, tmp_path):
    """The fan-out of docs/reproducibility.md on loopback, for studies.yaml's spread entry with
    two seeds: clones of one bare git origin act as runners (as many at a time as there are
    cores), each running one experiment of the study with `tools/study.py spread run ... --push
    origin` (its git ref to the origin, its outputs to the S3 remote); a fresh clone collects them
    with `tools/study.py spread collect --pull origin`. Its summary equals the one the collector's
    code computes from the runs' own metrics files, read from their commits; the same-seed variant
    runner (the autograd step: another summation order, as another machine would give) is the one
    sample behind sigma_same, which the power table reads; and any clone gets a run's outputs from
    S3 by pulling and applying it, without training."""
    from mnist_vae.study import engine

    # a tiny study (the plumbing is under test, the committed study holds the numbers): the fast
    # profile with one model and no anomaly stage, two seeds
    params = yaml.safe_load((work / "params.yaml").read_text())
    # the shared train settings (not the fast profile's own learning rate, at which its 8 steps
    # happen to give the fused and the autograd step the same bits)
    params["models"] = {"vae20d": {k: v for k, v in params["models"]["vae20d"].items() if k != "train"}}
    params["anomaly"]["models"] = []
    assert params["numerics"]["threads"] == 1  # the fast profile's: the runners share this machine's cores
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    add_s3_remote(work, s3, "spread")
    dvc("repro", cwd=work)
    origin = publish(work, tmp_path, "one model; S3 remote")

    runs = ["spread-default", "spread-seed-1", "spread-seed-2", "spread-autograd"]

    def runner(name: str) -> tuple[str, Path, str]:
        clone = clone_of(origin, tmp_path / f"runner-{name}")
        dvc("pull", cwd=clone)  # the baseline's outputs: only what the experiment changes reruns
        before = git(clone, "status", "--porcelain"), (clone / "params.yaml").read_text()
        proc = sh([sys.executable, "tools/study.py", "spread", "run", name, "--seeds", "1", "2", "--push", "origin"],
                  clone, env=runner_env())
        assert (git(clone, "status", "--porcelain"), (clone / "params.yaml").read_text()) == before  # left as found
        return name, clone, proc.stdout

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(len(runs), os.cpu_count() or 1)) as pool:
        done = list(pool.map(runner, runs))
    run_seconds = time.perf_counter() - t0
    for name, clone, out in done:
        assert f"{name}: pushed to origin and the DVC remote" in out, out
    refs = git(work, "ls-remote", str(origin), "refs/exps/*")
    assert sorted(line.rsplit("/", 1)[-1] for line in refs.splitlines()) == sorted(runs)

    collector = clone_of(origin, tmp_path / "collector")
    t0 = time.perf_counter()
    out = sh([sys.executable, "tools/study.py", "spread", "collect", "--seeds", "1", "2", "--other-machine", "--pull",
              "origin"], collector).stdout
    collect_seconds = time.perf_counter() - t0
    assert f"every output of the {len(runs)} experiments pulled from origin is on the DVC remote" in out, out
    summary = json.loads((collector / "reports/spread/summary.json").read_text())
    assert summary["study"]["seeds"] == [1, 2] and list(summary["study"]["variants"]) == ["autograd"]
    assert set(summary["study"]["machines"]) == {"default", "seed-1", "seed-2", "autograd"}
    assert all(" on 1 thread, cpu" in m for m in summary["study"]["machines"].values()), summary["study"]["machines"]
    assert "| seed-1 | " in (collector / "reports/spread/summary.md").read_text()

    # the collector's code on the same runs, read from the runners' own experiment commits
    entry = engine.load(work / "studies.yaml")["spread"]
    planned = {e.name: e for e in engine.plan("spread", entry, [1, 2])}
    local = engine.seed_spread("spread", entry, [engine.Run(name, experiment_metrics(clone, name), exp=planned[name])
                                                 for name, clone, _ in done], {})
    assert summary["runs"] == local["runs"] and summary["metrics"] == local["metrics"]
    assert summary["runs"]["seed-1"] != summary["runs"]["seed-2"]  # the seeds did change the results
    assert {m.split(":")[0] for m in summary["metrics"]} == {"reports/models/vae20d/train.json",
                                                             "reports/models/vae20d/eval.json"}
    # the same-seed variant's difference from the default run, as the summary records it
    loss = summary["metrics"]["reports/models/vae20d/train.json:test_loss"]
    delta = summary["runs"]["variant:autograd"]["reports/models/vae20d/train.json:test_loss"] - \
        summary["runs"]["default"]["reports/models/vae20d/train.json:test_loss"]
    assert delta != 0 and loss["variants"]["autograd"]["delta"] == pytest.approx(delta)

    # a run's outputs come from S3: pull it with its outputs, apply it, nothing to train
    dvc("exp", "pull", "--force", "origin", "spread-seed-2", cwd=collector)
    dvc("exp", "apply", "spread-seed-2", cwd=collector)
    seed2 = next(clone for name, clone, _ in done if name == "spread-seed-2")
    lock = yaml.safe_load(git(seed2, "show", f"{experiment_rev(seed2, 'spread-seed-2')}:dvc.lock"))
    model_md5 = next(o["md5"] for o in lock["stages"]["train@vae20d"]["outs"] if o["path"] == "models/vae20d.safetensors")
    assert hashlib.md5((collector / "models/vae20d.safetensors").read_bytes()).hexdigest() == model_md5
    assert changed_stages(collector) == set()
    assert ran_stages(dvc("repro", cwd=collector).stdout) == set()
    print(f"{len(runs)} runners: {run_seconds:.0f} s ({min(len(runs), os.cpu_count() or 1)} at a time); "
          f"collector: {collect_seconds:.0f} s")


def killed_mid_upload(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, str]:
    """`args` run until its first upload of a DVC object reaches the S3 server, then SIGTERM'd
    (the held uploads fail, so none of them arrives): how it ended, and the experiment refs
    origin had when it was killed."""
    HOLD.arm()
    proc = subprocess.Popen(args, cwd=cwd, env=mirror_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert HOLD.reached.wait(180), "no upload reached the S3 server"
        refs_then = git(cwd, "ls-remote", "origin", "refs/exps/*")
        proc.send_signal(signal.SIGTERM)
        HOLD.released.set()  # the held uploads (and their retries) fail now; the hold stays armed until the end
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        HOLD.disarm()
    return subprocess.CompletedProcess(args, proc.returncode, out, err), refs_then


def test_a_study_experiment_is_published_whole_or_not_at_all(work, s3, tmp_path):
    """A push cut short must not publish an experiment without its outputs. The runner
    (`tools/study.py ... run --push`) pushes the outputs first and the ref last: SIGTERM'd in the
    middle of its upload, it leaves nothing on the git remote. DVC's own `dvc exp push` pushes
    the ref first: SIGTERM'd in the middle of its upload, it leaves the ref on the git remote and
    the outputs missing from S3 (a fresh clone's `dvc exp pull` only warns). The collector
    refuses that experiment in one line naming it and its missing outputs; the runner, run
    again, publishes the experiment it ran (no second training), and the collector takes it."""
    # a one-run study: the 20-d model's training with another seed (seconds on the fast profile)
    with (work / "studies.yaml").open("a") as f:
        f.write('\nhalf:\n  about: the 20-d model with another seed\n  sweep: ["train.seed=choice(7)"]\n'
                "  stages: [train@vae20d]\n  model: vae20d\n  metrics: [train.json:test_loss]\n")
    add_s3_remote(work, s3, "half")
    origin = publish(work, tmp_path, "the half study; S3 remote")  # with the baseline's outputs
    baseline = s3_keys(s3, "half")
    tool = [sys.executable, "tools/study.py", "half"]
    assert "half-7: ran in" in sh([*tool, "run", "half-7"], work).stdout  # ran here, not pushed
    lock = yaml.safe_load(git(work, "show", f"{experiment_rev(work, 'half-7')}:dvc.lock"))
    model = next(o for o in lock["stages"]["train@vae20d"]["outs"] if o["path"].startswith("models/vae20d."))
    model_key = f"half/files/md5/{model['md5'][:2]}/{model['md5'][2:]}"

    # the runner, killed while it uploads: no ref published, nothing of the experiment in S3
    killed, refs = killed_mid_upload([*tool, "run", "half-7", "--push", "origin"], work)
    assert killed.returncode != 0 and refs == "", killed.stdout + killed.stderr
    assert "already ran in this clone" in killed.stdout  # it pushed what it had run, not a new run
    assert git(work, "ls-remote", "origin", "refs/exps/*") == ""
    assert s3_keys(s3, "half") == baseline

    # DVC's `dvc exp push`, killed while it uploads: the ref on origin, its outputs not in S3
    killed, refs = killed_mid_upload([dvc_exe(), "exp", "push", "origin", "half-7"], work)
    assert killed.returncode != 0 and refs.endswith("/half-7\n"), killed.stdout + killed.stderr  # the ref went first
    assert git(work, "ls-remote", "origin", "refs/exps/*") == refs
    assert s3_keys(s3, "half") == baseline and model_key not in baseline

    collector = clone_of(origin, tmp_path / "collector")
    collect = [*tool, "collect", "--pull", "origin"]
    line = assert_clean_failure(sh(collect, collector, check=False), "half-7 lacks", f"{model['path']} (train@vae20d)",
                                "`python tools/study.py half run half-7 --push origin`")
    assert "train@vae2d" not in line  # the baseline's outputs are there
    print(line)
    assert not (collector / "reports/studies/half/summary.json").exists()

    # the runner again: it publishes what it ran, whole
    again = sh([*tool, "run", "half-7", "--push", "origin"], work).stdout
    assert "half-7: already ran in this clone" in again and "ran in " not in again.replace("already ran in", "")
    assert "half-7: pushed to origin and the DVC remote" in again
    assert model_key in s3_keys(s3, "half")
    out = sh(collect, collector).stdout
    assert "every output of the 1 experiments pulled from origin is on the DVC remote" in out
    summary = json.loads((collector / "reports/studies/half/summary.json").read_text())
    assert [r["name"] for s in summary["settings"] for r in s["runs"]] == ["half-7"]


@pytest.mark.long
def test_the_queue_runs_two_experiments_with_two_workers(work):
    for step in (2, 4):
        dvc("exp", "run", "--queue", "-n", f"step{step}", "-S", f"gifs.reconstruction_all.step={step}", cwd=work)
    dvc("queue", "start", "--jobs", "2", cwd=work)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            status = dvc("queue", "status", cwd=work).stdout
            if not any(s in status for s in (" Queued ", " Running ")):
                break
            time.sleep(3)
        else:
            pytest.fail(f"the queue did not finish in 300 s:\n{status}")
    finally:
        dvc("queue", "stop", "--kill", cwd=work, check=False)
    assert status.count("Success") == 2, status
    table = dvc("exp", "show", "--csv", cwd=work).stdout
    assert "step2" in table and "step4" in table
