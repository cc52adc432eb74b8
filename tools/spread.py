"""The spread study (make spread): how far every metric moves between runs of the default
pipeline that differ only in their seeds, or only in their floating-point order, measured with
DVC's own experiment queue. Its output is committed; tools/derive_tolerances.py turns it into
tolerances.yaml.

  python tools/spread.py queue  [--seeds 1 2 ...]  queue one experiment per seed (train.seed,
                                                   evaluate.seed and anomaly.seed all set to it)
                                                   plus the default params ("spread-default")
  python tools/spread.py start  [--jobs 1]         dvc queue start, wait until the queue is done
  python tools/spread.py variants                  the default seed with 1 torch thread instead of
                                                   the machine's default (another summation order),
                                                   run with `dvc exp run --temp --force`
  python tools/spread.py collect [--other-machine NAME=REV ...]
                                                   dvc exp show --json -> reports/spread/summary.{json,md}
  python tools/spread.py all                       the four in order (make spread)

  python tools/spread.py power [--jobs 1]          the gate's power (make power): deliberate
                                                   regressions run as queued experiments, then
                                                   judged by the gate against spread-default

On 2 cores one job at a time is right (--jobs 1): two trainings with 2 threads each on 2
cores thrash. The experiments stay as local git refs (refs/exps, `dvc exp show` lists them);
they never touch the workspace. `dvc exp remove -A` drops them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


from mnist_vae import artifacts, layout, spread
from mnist_vae.workspace import cpu_name, dvc_exe, tool_env

DVC = dvc_exe()
OUT = Path("reports/spread")
PREFIX = "spread-"
SEED_KEYS = ("train.seed", "evaluate.seed", "anomaly.seed")  # every seed a metric depends on
DEFAULT_SEEDS = list(range(1, 9))
# The committed metrics of commit c157c61 were made on a 2-core Intel Xeon with the same code
# and the default params: the same seed on another CPU.
DEFAULT_OTHER = ["intel-xeon=c157c61"]


def dvc(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([DVC, *args], capture_output=True, text=True, env=env or tool_env())
    if check and proc.returncode != 0:
        sys.exit(f"spread: `dvc {' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def existing_names() -> set[str]:
    """Names of this repository's experiments (any commit, any state)."""
    doc = json.loads(dvc("exp", "show", "--json", "--all-commits").stdout or "[]")
    return {e.get("name") or r.get("name") for b in doc for e in b.get("experiments") or [] for r in e.get("revs") or []}


def queue(seeds: list[int]) -> None:
    names = [f"{PREFIX}default", f"{PREFIX}autograd"] + [f"{PREFIX}seed-{s}" for s in seeds]
    old = sorted(existing_names() & set(names))
    if old:  # a rerun of the study replaces its experiments
        dvc("exp", "remove", *old)
    dvc("exp", "run", "--queue", "-n", f"{PREFIX}default")
    # the default seed through autograd instead of the fused step: another summation order
    dvc("exp", "run", "--queue", "-n", f"{PREFIX}autograd", "-S", "train.step=autograd")
    for s in seeds:
        sets = [a for key in SEED_KEYS for a in ("-S", f"{key}={s}")]
        dvc("exp", "run", "--queue", "-n", f"{PREFIX}seed-{s}", *sets)
    print(f"queued {len(names)} experiments: {', '.join(names)}")


def start(jobs: int, poll: float = 15.0) -> None:
    t0 = time.perf_counter()
    dvc("queue", "start", "--jobs", str(jobs))
    while True:
        status = dvc("queue", "status").stdout
        active = [line for line in status.splitlines() if " Queued " in f" {line} " or " Running " in f" {line} "]
        if not active:
            break
        time.sleep(poll)
    failed = [line.split()[0] for line in status.splitlines() if " Failed " in f" {line} "]
    print(status)
    print(f"queue finished in {time.perf_counter() - t0:.0f} s")
    if failed:
        for task in failed:
            print(dvc("queue", "logs", task, check=False).stdout[-3000:])
        sys.exit(f"spread: {len(failed)} queued experiment(s) failed (logs above; `dvc queue logs <task>`)")


def variants() -> None:
    """Same params and seed as spread-default, another float summation order: 1 torch thread."""
    name = f"{PREFIX}threads-1"
    if name in existing_names():
        dvc("exp", "remove", name)
    t0 = time.perf_counter()
    dvc("exp", "run", "--temp", "--force", "-n", name, env=tool_env(OMP_NUM_THREADS="1"))
    print(f"{name}: {time.perf_counter() - t0:.0f} s")


def experiments() -> list[dict]:
    """[{name, params, metrics (flat)}] of every experiment of the current baseline commit."""
    doc = json.loads(dvc("exp", "show", "--json", "--all-commits").stdout or "[]")
    out = []
    for base in doc:
        for exp in base.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state", "success")
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                if state != "success" or not data:
                    continue  # queued, running or failed
                metrics = {path: (m or {}).get("data", {}) for path, m in (data.get("metrics") or {}).items()}
                params = {path: (p or {}).get("data", {}) for path, p in (data.get("params") or {}).items()}
                out.append({"name": rev.get("name") or exp.get("name"), "metrics": spread.flat_metrics(metrics),
                            "params": params})
    return out


def committed_metrics(rev: str) -> dict:
    """The metrics committed at `rev`, under today's paths: commits from before the move to
    reports/models/<model>/ kept them in reports/metrics/ (layout.legacy_metrics_path)."""
    files = {}
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "reports/metrics/", layout.MODELS_REPORTS],
                             capture_output=True, text=True, check=True).stdout.split()
    for path in listing:
        if not path.startswith("reports/metrics/") and path.rsplit("/", 1)[-1] not in layout.METRICS_FILES:
            continue  # a model folder's tables, summaries and timings are not metrics
        text = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
        files[layout.legacy_metrics_path(path)] = json.loads(text)
    return spread.flat_metrics(files)


def collect(other: list[str]) -> None:
    exps = {e["name"]: e for e in experiments() if (e["name"] or "").startswith(PREFIX)}
    seeds = {n: e["metrics"] for n, e in sorted(exps.items()) if n.startswith(f"{PREFIX}seed-")}
    if f"{PREFIX}default" not in exps or len(seeds) < 2:
        sys.exit(f"spread: need {PREFIX}default and at least 2 seed experiments, found {sorted(exps)}")
    default = exps[f"{PREFIX}default"]["metrics"]
    variant_runs = {n[len(PREFIX):]: e["metrics"] for n, e in exps.items()
                    if n.startswith(PREFIX) and n != f"{PREFIX}default" and n not in seeds}
    for item in other:
        label, rev = item.split("=", 1)
        variant_runs[label] = committed_metrics(rev)
    summary = spread.summarize(seeds, default, variant_runs)
    doc = {
        "study": {
            "what": "the default pipeline (params.yaml) under different seeds (train.seed, evaluate.seed and "
                    "anomaly.seed set to the same value), and the default seed with another floating-point order",
            "seeds": sorted(int(n.rsplit("-", 1)[1]) for n in seeds),
            "n_seeds": len(seeds),
            "machine": f"{cpu_name()}, {os.cpu_count()} cores",
            "variants": {name: text for name, text in {
                "threads-1": "this machine, default seed, OMP_NUM_THREADS=1 (another summation order)",
                "autograd": "this machine, default seed, train.step: autograd (another summation order)",
                **{item.split("=")[0]: f"committed metrics of {item.split('=')[1]}: same seed, another CPU"
                   for item in other},
            }.items() if name in variant_runs},
        },
        "runs": {"default": default, **{n[len(PREFIX):]: m for n, m in seeds.items()},
                 **{f"variant:{k}": v for k, v in variant_runs.items()}},
        "metrics": summary,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "summary.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    (OUT / "summary.md").write_text(spread.markdown(doc))
    write_results(doc)
    print(f"wrote {OUT}/summary.json and summary.md: {len(summary)} metrics over {len(seeds)} seeds")


# Deliberate regressions: (params set, (file, text, replacement) or None). The KL edit goes into
# the workspace only while its experiment is queued (a queued experiment snapshots the
# workspace); autograd, since the fused step would (rightly) refuse the edited objective.
REGRESSIONS = {
    "power-epochs-9": (["train.epochs=9"], None),
    "power-lr-0.0005": (["train.lr=0.0005"], None),
    "power-threshold-0.45": (["data.threshold=0.45"], None),
    "power-kl-0.9": (["train.step=autograd"], ("src/mnist_vae/objective.py", "kl = kl_divergence(mu, logvar).sum()",
                                                "kl = 0.9 * kl_divergence(mu, logvar).sum()")),
}
# Shifts added to the default run's metrics that the gate must catch (issue: 1 nat / 3 nats).
T20, T2 = layout.train_metrics("vae20d") + ":test_loss", layout.train_metrics("vae2d") + ":test_loss"
SHIFTS = {T20: 1.0, T2: 3.0}


def queue_power() -> None:
    old = sorted(existing_names() & set(REGRESSIONS))
    if old:
        dvc("exp", "remove", *old)
    for name, (sets, patch) in REGRESSIONS.items():
        args = ["exp", "run", "--queue", "-n", name, *[a for kv in sets for a in ("-S", kv)]]
        if patch is None:
            dvc(*args)
            continue
        path, old_text, new_text = patch
        original = Path(path).read_text()
        if original.count(old_text) != 1:
            sys.exit(f"spread: cannot apply the {name} edit: {old_text!r} is not in {path} exactly once")
        try:
            Path(path).write_text(original.replace(old_text, new_text))
            dvc(*args)
        finally:
            Path(path).write_text(original)
    print(f"queued {', '.join(REGRESSIONS)}")


def judge_power(tolerances: str = "tolerances.yaml") -> None:
    from mnist_vae import gate

    rules = gate.load_rules(tolerances)
    base = json.loads((OUT / "summary.json").read_text())["runs"]["default"]
    exps = {e["name"]: e["metrics"] for e in experiments() if e["name"] in REGRESSIONS}
    cases = {name: exps.get(name) for name in REGRESSIONS}
    for metric, shift in SHIFTS.items():
        shifted = dict(base)
        shifted[metric] = base[metric] + shift
        cases[f"{metric.removeprefix(layout.MODELS_REPORTS + '/')} + {shift:g}"] = shifted
    results = {}
    for name, metrics in cases.items():
        if metrics is None:
            results[name] = {"ran": False}
            continue
        rows = gate.compare(gate.diff_of(base, metrics), rules)
        bad = gate.failures(rows)
        worst = sorted((r for r in rows if r.in_spread is not None and r.gated), key=lambda r: -r.in_spread)[:3]
        results[name] = {"ran": True, "caught": bool(bad), "failing_metrics": len(bad),
                         "largest_drifts": [{"metric": r.metric, "committed": r.committed, "new": r.new,
                                             "drift_in_sigma": r.in_spread} for r in worst],
                         "test_loss_20d": metrics.get(T20), "test_loss_2d": metrics.get(T2)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "power.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    lines = ["| regression | caught | gated metrics failing | 20-d test loss | 2-d test loss | largest drift (in sigma_diff) |",
             "|---|---|---:|---:|---:|---|"]
    for name, r in results.items():
        if not r["ran"]:
            lines.append(f"| {name} | not run | | | | |")
            continue
        top = r["largest_drifts"][0] if r["largest_drifts"] else None
        lines.append(f"| {name} | {'yes' if r['caught'] else '**no**'} | {r['failing_metrics']} | "
                     f"{r['test_loss_20d']:.2f} | {r['test_loss_2d']:.2f} | "
                     + (f"`{top['metric']}` {top['drift_in_sigma']:.1f}" if top else "-") + " |")
    lines.insert(0, f"Default run: 20-d test loss {base[T20]:.2f}, 2-d {base[T2]:.2f}; tolerances from {tolerances}.\n")
    (OUT / "power.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def write_results(doc: dict) -> None:
    """reports/spread/results.md: the reference's numbers beside ours (the README's results table)."""
    reference = spread.check_reference(artifacts.read_yaml("reference.yaml"))["numbers"]
    committed = {}
    for path in sorted(p for name in layout.METRICS_FILES for p in Path(layout.MODELS_REPORTS).glob(f"*/{name}")):
        committed.update(spread.flat_metrics({path.as_posix(): json.loads(path.read_text())}))
    (OUT / "results.md").write_text(spread.results_table(reference, doc["metrics"], committed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["queue", "start", "variants", "collect", "all", "power", "power-queue",
                                     "power-judge", "results"])
    ap.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    ap.add_argument("--jobs", type=int, default=1, help="queue workers; 1 on a 2-core machine")
    ap.add_argument("--other-machine", nargs="*", default=DEFAULT_OTHER, metavar="NAME=REV",
                    help="committed metrics of the default run made on another machine, as a variant")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.what in ("queue", "all"):
        queue(args.seeds)
    if args.what in ("start", "all"):
        start(args.jobs)
    if args.what in ("variants", "all"):
        variants()
    if args.what in ("collect", "all"):
        collect(args.other_machine)
    if args.what == "results":  # after a new committed run: the README table from the committed study
        write_results(json.loads((OUT / "summary.json").read_text()))
    if args.what in ("power", "power-queue"):
        queue_power()
    if args.what == "power":
        start(args.jobs)
    if args.what in ("power", "power-judge"):
        judge_power()
    print(f"spread {args.what}: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
