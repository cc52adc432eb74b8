"""The spread study (make spread): how far every metric moves between runs of the default
pipeline that differ only in their seeds, or only in their floating-point order (thread count,
training step, machine), run as DVC experiments. Its output is committed; tools/derive_tolerances.py
turns it into tolerances.yaml.

One machine (make spread):
  python tools/spread.py queue  [--seeds 1 2 ...]  queue the study's experiments (`plan`) but any
                                                   that needs its own environment (none today)
  python tools/spread.py start  [--jobs 1]         dvc queue start, wait until the queue is done
  python tools/spread.py variants                  the experiments that need their own environment,
                                                   with `dvc exp run --temp` (none today: the
                                                   thread count is numerics.threads, a param)
  python tools/spread.py collect [--pull GIT_REMOTE] [--other-machine NAME=REV ...]
                                                   the study's experiments (pulled from GIT_REMOTE
                                                   first when given) -> reports/spread/summary.*
  python tools/spread.py all                       queue, start, variants, collect

Many machines (.github/workflows/spread.yml, docs/reproducibility.md for Slurm): each machine is a
clone that runs one experiment and pushes it; one clone collects them all.
  python tools/spread.py plan [--seeds ...] [--names | --runners R ...]
                                                   the study's experiments: JSON, one name per line,
                                                   or a CI matrix over runner kinds
  python tools/spread.py run NAME [--as NEW] [--push GIT_REMOTE] [--no-outputs]
                                                   one experiment of the plan in this clone
                                                   (`dvc exp run`), then `dvc exp push`: the git ref
                                                   to GIT_REMOTE, its outputs to the DVC remote.
                                                   --as spread-machine-<label>: the default run
                                                   again, on another machine
  python tools/spread.py collect --pull GIT_REMOTE

  python tools/spread.py power [--jobs 1]          the gate's power (make power): deliberate
                                                   regressions run as queued experiments, then
                                                   judged by the gate against spread-default

Every run records its machine (CPU, cores, torch threads, torch version, device) in
reports/models/<model>/timings-train.json, beside its metrics; the summary lists the machines.
On 2 cores one job at a time is right (--jobs 1): two trainings with 2 threads each on 2
cores thrash. The experiments stay as local git refs (refs/exps, `dvc exp show` lists them);
`dvc exp remove -A` drops them.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


from mnist_vae.io import artifacts, layout
from mnist_vae.study import spread
from mnist_vae.study import reference as ref_module
from mnist_vae.core import machine
from mnist_vae.study.workspace import dvc_exe, git_show, tool_env

DVC = dvc_exe()
OUT = Path("reports/spread")
PREFIX = "spread-"
SEED_KEYS = ("train.seed", "evaluate.seed", "anomaly.seed")  # every seed a metric depends on
DEFAULT_SEEDS = list(range(1, 9))
# Same-seed runs on other machines come from the study's own runners (spread-machine-<label>);
# --other-machine adds a commit's committed run as one more (its metrics under reports/models/).
DEFAULT_OTHER: list[str] = []


def dvc(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([DVC, *args], capture_output=True, text=True, env=env or tool_env())
    if check and proc.returncode != 0:
        sys.exit(f"spread: `dvc {' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


def existing_names() -> set[str]:
    """Names of this repository's experiments (any commit, any state)."""
    doc = json.loads(dvc("exp", "show", "--json", "--all-commits").stdout or "[]")
    return {e.get("name") or r.get("name") for b in doc for e in b.get("experiments") or [] for r in e.get("revs") or []}


@dataclass(frozen=True)
class Experiment:
    """One run of the study: its name, its `dvc exp run -S` settings and its environment."""

    name: str
    sets: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    what: str = ""


def plan(seeds: list[int]) -> list[Experiment]:
    """The study's experiments, the same for one machine and for many."""
    return [
        Experiment(f"{PREFIX}default", what="the default params and seed"),
        Experiment(f"{PREFIX}autograd", ("train.step=autograd",),
                   what="default seed, train.step: autograd (another summation order)"),
        *[Experiment(f"{PREFIX}seed-{s}", tuple(f"{key}={s}" for key in SEED_KEYS), what=f"seed {s}") for s in seeds],
    ]


def find(name: str, seeds: list[int]) -> Experiment:
    experiments_by_name = {e.name: e for e in plan(seeds)}
    if name not in experiments_by_name:
        sys.exit(f"spread: {name!r} is not an experiment of the study; `python tools/spread.py plan` lists them")
    return experiments_by_name[name]


def matrix(seeds: list[int], runners: list[str]) -> list[dict[str, str]]:
    """The fan-out as a CI matrix's `include` list: {runner, name, as} per job; `as` is empty but
    for the default run repeated on another kind of machine."""
    jobs = [{"runner": runners[0], "name": e.name, "as": ""} for e in plan(seeds)]
    jobs += [{"runner": r, "name": f"{PREFIX}default", "as": f"{PREFIX}machine-{r}"} for r in runners[1:]]
    return jobs


def set_args(exp: Experiment) -> list[str]:
    return [a for kv in exp.sets for a in ("-S", kv)]


def queue(seeds: list[int]) -> None:
    queued = [e for e in plan(seeds) if not e.env]  # a queued task cannot set its own environment
    old = sorted(existing_names() & {e.name for e in queued})
    if old:  # a rerun of the study replaces its experiments
        dvc("exp", "remove", *old)
    for exp in queued:
        dvc("exp", "run", "--queue", "-n", exp.name, *set_args(exp))
    print(f"queued {len(queued)} experiments: {', '.join(e.name for e in queued)}")


def run_one(name: str, seeds: list[int], as_name: str | None, push: str | None, outputs: bool) -> None:
    """A runner: one experiment of the plan in this clone, then its git ref and outputs pushed."""
    exp = find(name, seeds)
    final = as_name or exp.name
    if as_name and not as_name.startswith(f"{PREFIX}machine-"):
        sys.exit(f"spread: --as names a rerun on another machine: spread-machine-<label>, got {as_name!r}")
    if push and outputs and not dvc("remote", "default", check=False).stdout.strip():
        sys.exit("spread: --push sends the outputs to the DVC remote, and this clone has no default remote: "
                 "add one (`dvc remote add -d ...`) or pass --no-outputs to push only the git ref")
    if final in existing_names():
        dvc("exp", "remove", final)
    t0 = time.perf_counter()
    # forced from the training on: a runner measures its own machine, even where the baseline's
    # outputs (pulled, or restored from a cache) would let DVC skip the default run's stages; in a
    # temporary workspace (--temp), so that the user's workspace stays as it was
    dvc("exp", "run", "--temp", "-n", final, "--force", "--downstream", "train", *set_args(exp),
        env=tool_env(**dict(exp.env)))
    record = run_machine(exp_ref(final))
    print(f"{final}: ran in {time.perf_counter() - t0:.0f} s on {machine.label(record)}")
    if push:
        dvc("exp", "push", push, final, *([] if outputs else ["--no-cache"]))
        print(f"{final}: pushed to {push}" + (" and the DVC remote" if outputs else " (git ref only)"))


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


def variants(seeds: list[int]) -> None:
    """The plan's experiments that set their environment (one torch thread), run one by one."""
    for exp in (e for e in plan(seeds) if e.env):
        if exp.name in existing_names():
            dvc("exp", "remove", exp.name)
        t0 = time.perf_counter()
        dvc("exp", "run", "--temp", "--force", "-n", exp.name, *set_args(exp), env=tool_env(**dict(exp.env)))
        print(f"{exp.name}: {time.perf_counter() - t0:.0f} s")


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
                            "params": params, "rev": rev.get("rev")})
    return out


def committed_metrics(rev: str) -> dict:
    """The metrics committed at `rev` (every model's metrics files)."""
    files = {}
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, layout.MODELS_REPORTS],
                             capture_output=True, text=True, check=True).stdout.split()
    for path in listing:
        if path.rsplit("/", 1)[-1] in layout.METRICS_FILES:  # not the tables, summaries and timings
            files[path] = json.loads(git_show(rev, path))
    return spread.flat_metrics(files)


def machine_record(rev: str) -> str | None:
    """The machine record's path at `rev`: the train timings of the first model of that commit's
    params.yaml (every run trains every model on the same machine)."""
    text = git_show(rev, "params.yaml")
    models = list((yaml.safe_load(text) or {}).get("models") or {}) if text else []
    return layout.timings(models[0], "train") if models else None


def exp_ref(name: str) -> str:
    """The commit of this clone's experiment `name` (its ref under refs/exps/)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    found = [line.split()[0] for line in refs if line.endswith(f"/{name}")]
    if not found:
        sys.exit(f"spread: the experiment {name!r} ran but no ref refs/exps/.../{name} exists")
    return found[0]


def run_machine(rev: str) -> dict | None:
    """The machine an experiment's commit ran on, from its timings-train.json."""
    path = machine_record(rev)
    text = git_show(rev, path) if path else None
    return json.loads(text).get("machine") if text else None


def pull(git_remote: str) -> None:
    """The study's experiments of this commit from the git remote: git refs only (the collector
    reads metrics, which live in git; `dvc exp pull` with outputs is one command away)."""
    t0 = time.perf_counter()
    dvc("exp", "pull", "--force", "--no-cache", git_remote)
    print(f"pulled the experiments of HEAD from {git_remote} in {time.perf_counter() - t0:.0f} s")


def collect(other: list[str], seeds: list[int]) -> dict:
    exps = {e["name"]: e for e in experiments() if (e["name"] or "").startswith(PREFIX)}
    doc = study_summary(exps, other, seeds)
    OUT.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(OUT / "summary.json", doc)
    artifacts.write_bytes(OUT / "summary.md", spread.markdown(doc).encode())
    write_results(doc)
    print(f"wrote {OUT}/summary.json and summary.md: {len(doc['metrics'])} metrics over {doc['study']['n_seeds']} "
          f"seeds, {len(doc['study']['variants'])} same-seed variants, machines: "
          + "; ".join(sorted({m for m in doc['study']['machines'].values()})))
    return doc


def study_summary(exps: dict[str, dict], other: list[str], seeds_planned: list[int]) -> dict:
    """The summary document from the study's experiments ({name: {metrics, rev}}), wherever
    they ran: the one-machine path and the collector both end here."""
    seeds = {n: e["metrics"] for n, e in sorted(exps.items()) if n.startswith(f"{PREFIX}seed-")}
    if f"{PREFIX}default" not in exps or len(seeds) < 2:
        sys.exit(f"spread: need {PREFIX}default and at least 2 seed experiments, found {sorted(exps)}")
    default = exps[f"{PREFIX}default"]["metrics"]
    described = {e.name: e.what for e in plan(seeds_planned)}
    variant_runs, variant_text, machines = {}, {}, {}
    for n, e in sorted(exps.items()):
        machines[n[len(PREFIX):]] = machine.label(run_machine(e["rev"]) if e.get("rev") else None)
        if n == f"{PREFIX}default" or n in seeds:
            continue
        label = n[len(PREFIX):]
        variant_runs[label] = e["metrics"]
        variant_text[label] = described.get(n) or "the default params and seed on another machine"
    for item in other:
        label, rev = item.split("=", 1)
        variant_runs[label] = committed_metrics(rev)
        if not variant_runs[label]:
            sys.exit(f"spread: --other-machine {item}: {rev} has no metrics under {layout.MODELS_REPORTS}/ (a commit "
                     "from before the per-model layout); rerun the default there, or leave it out")
        variant_text[label] = f"committed metrics of {rev}: same seed, another CPU"
        machines[label] = machine.label(run_machine(rev))
    return {
        "study": {
            "what": "the default pipeline (params.yaml) under different seeds (train.seed, evaluate.seed and "
                    "anomaly.seed set to the same value), and the default seed with another floating-point order",
            "seeds": sorted(int(n.rsplit("-", 1)[1]) for n in seeds),
            "n_seeds": len(seeds),
            "machines": machines,
            "variants": {name: f"{variant_text[name]}; {machines[name]}" for name in variant_runs},
        },
        "runs": {"default": default, **{n[len(PREFIX):]: m for n, m in seeds.items()},
                 **{f"variant:{k}": v for k, v in variant_runs.items()}},
        "metrics": spread.summarize(seeds, default, variant_runs),
    }


# Deliberate regressions: (params set, (file, text, replacement) or None). The KL edit goes into
# the workspace only while its experiment is queued (a queued experiment snapshots the
# workspace); autograd, since the fused step would (rightly) refuse the edited objective.
REGRESSIONS = {
    "power-epochs-9": (["train.epochs=9"], None),
    "power-lr-0.0005": (["train.lr=0.0005"], None),
    "power-threshold-0.45": (["data.threshold=0.45"], None),
    "power-kl-0.9": (["train.step=autograd"], ("src/mnist_vae/core/objective.py", "kl = kl_divergence(mu, logvar).sum()",
                                                "kl = 0.9 * kl_divergence(mu, logvar).sum()")),
}
@functools.cache
def headline() -> tuple[str, str]:
    """The test losses of the models bound to the reference's 20-d and 2-d setups (reference.yaml)."""
    return tuple(layout.train_metrics(ref_module.setup_model(s)) + ":test_loss" for s in ("notebook-20d", "notebook-2d"))


def shifts() -> dict[str, float]:
    """Shifts added to the default run's metrics that the gate must catch: 1 nat on the 20-d
    test loss, 3 nats on the 2-d one."""
    t20, t2 = headline()
    return {t20: 1.0, t2: 3.0}


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
    """reports/spread/power.{json,md}: each deliberate regression and shift judged by the gate in
    statistical mode against the study's default run, and the shifts under same-seed noise. Each
    case's metrics are stored, so that a new tolerances.yaml re-judges them without a rerun; a
    case whose metrics an earlier power.json did not store keeps its verdict, marked as made
    under earlier tolerances."""
    from mnist_vae.study import gate

    rules = gate.load_rules(tolerances)
    base = json.loads((OUT / "summary.json").read_text())["runs"]["default"]
    prior = json.loads((OUT / "power.json").read_text()) if (OUT / "power.json").exists() else {}
    exps = {e["name"]: e["metrics"] for e in experiments() if e["name"] in REGRESSIONS}
    results = {}
    for name in REGRESSIONS:
        metrics = exps.get(name) or prior.get(name, {}).get("metrics")
        if metrics is not None:
            results[name] = judge_case(base, metrics, rules)
        elif prior.get(name, {}).get("ran"):
            results[name] = {**prior[name], "earlier_tolerances": True}
        else:
            results[name] = {"ran": False}
    for label, metrics in shifted_cases(base).items():
        results[label] = judge_case(base, metrics, rules)
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["| regression | caught | gated metrics failing | 20-d test loss | 2-d test loss | largest drift (in sigma_diff) |",
             "|---|---|---:|---:|---:|---|"]
    for name, r in results.items():
        if not r["ran"]:
            lines.append(f"| {name} | not run | | | | |")
            continue
        top = r["largest_drifts"][0] if r["largest_drifts"] else None
        caught = ("yes" if r["caught"] else "**no**") + (" (earlier tolerances)" if r.get("earlier_tolerances") else "")
        lines.append(f"| {name} | {caught} | {r['failing_metrics']} | "
                     f"{r['test_loss_20d']:.2f} | {r['test_loss_2d']:.2f} | "
                     + (f"`{top['metric']}` {top['drift_in_sigma']:.1f}" if top else "-") + " |")
    t20, t2 = headline()
    lines.insert(0, f"Default run: 20-d test loss {base[t20]:.2f}, 2-d {base[t2]:.2f}; tolerances from {tolerances} "
                    "(statistical mode; a portable rerun on x86-64 is held exactly and fails on any change).\n")
    noise = noise_table(rules)
    results["under_machine_noise"] = noise["rows"]
    (OUT / "power.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    text = "\n".join(lines) + "\n\n" + noise["markdown"]
    (OUT / "power.md").write_text(text)
    print(text)


def shifted_cases(base: dict) -> dict:
    """The default run's metrics with each required shift added: {label: metrics}."""
    out = {}
    for metric, shift in shifts().items():
        shifted = dict(base)
        shifted[metric] = base[metric] + shift
        out[f"{metric.removeprefix(layout.MODELS_REPORTS + '/')} + {shift:g}"] = shifted
    return out


def noise_table(rules: list) -> dict:
    """The deliberate shifts judged under the study's measured same-seed noise (spread.power_under_noise)."""
    doc = json.loads((OUT / "summary.json").read_text())
    k = artifacts.read_yaml("tolerances.yaml")["study"]["k"]
    rows = noise_rows(doc["metrics"], shifts(), rules, k)
    variants = ", ".join(doc["study"]["variants"])
    md = [f"The same shifts when the rerun also carries fast mode's same-seed noise: sigma_same is the root mean "
          f"square of the same-seed variants' differences from the default run ({variants}; a variant equal to it to "
          "the bit is the same summation order and left out), estimated from the few differences counted in its "
          "column, so each chance is given over sigma_same's 95 % confidence interval too. In exact mode (portable "
          "numerics on x86-64) the same-seed noise is zero and any shift fails. The same-seed tolerance "
          "(k x sigma_same) would replace the seed-based one only where the 95 % upper bound of sigma_same is below "
          "half the seed spread of a difference.", "",
          "| shift | tolerance | seed spread of a difference | sigma_same (differences; 95 % interval) | caught "
          "without noise | chance caught under same-seed noise (95 % interval) | false alarms (95 % interval) | "
          "caught in exact mode | same-seed tolerance: caught / false alarms | same-seed tolerance adopted |",
          "|---|---:|---:|---:|---:|---|---|---:|---|---|"]
    for r in rows:
        lo, hi = r["same_seed_sigma_interval95"]
        c_lo, c_hi = r["p_caught_range"]
        f_lo, f_hi = r["p_false_alarm_range"]
        md.append(f"| `{r['metric'].removeprefix(layout.MODELS_REPORTS + '/')}` + {r['shift']:g} | {r['tolerance']:.3g} | "
                  f"{r['seed_sigma_diff']:.3g} | {r['same_seed_sigma']:.3g} ({r['same_seed_runs']}; {lo:.3g} to {hi:.3g}) | "
                  f"{r['p_caught_noiseless']:.0%} | **{r['p_caught']:.0%}**, {r['p_caught_words']} ({c_lo:.0%} to "
                  f"{c_hi:.0%}) | {r['p_false_alarm']:.2%} ({f_lo:.2%} to {f_hi:.2%}) | {r['p_caught_exact_mode']:.0%} | "
                  f"{r['same_seed_tolerance']:.3g}: {r['same_seed_p_caught']:.0%} / {r['same_seed_p_false_alarm']:.2%} | "
                  f"{'yes' if r['same_seed_adopted'] else 'no'} |")
    return {"rows": rows, "markdown": "\n".join(md) + "\n"}


def judge_case(base: dict[str, Any], metrics: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """One deliberate regression (its flat metrics) judged by the gate in statistical mode against
    the default run `base`: caught, how many metrics fail, the three largest gated drifts, the two
    test losses, and the metrics themselves (so a later tolerances file can judge them again)."""
    from mnist_vae.study import gate

    rows = gate.compare(gate.diff_of(base, metrics), rules)
    bad = gate.failures(rows)
    worst = sorted((r for r in rows if r.in_spread is not None and r.gated), key=lambda r: -r.in_spread)[:3]
    return {"ran": True, "caught": bool(bad), "failing_metrics": len(bad),
            "largest_drifts": [{"metric": r.metric, "committed": r.committed, "new": r.new,
                                "drift_in_sigma": r.in_spread} for r in worst],
            "test_loss_20d": metrics.get(headline()[0]), "test_loss_2d": metrics.get(headline()[1]), "metrics": metrics}


def noise_rows(summary: dict[str, dict[str, Any]], shifts: dict[str, float], rules: list[dict[str, Any]],
               k: float) -> list[dict[str, Any]]:
    """:func:`power_under_noise` for each required shift, at its rule's tolerance."""
    from mnist_vae.study import gate

    return [spread.power_under_noise(metric, shift, summary[metric], gate.rule_for(metric, rules)["abs"], k)
            for metric, shift in shifts.items()]


def write_results(doc: dict) -> None:
    """reports/spread/results.md: the reference's numbers beside ours (the README's results table)."""
    reference = ref_module.load()["numbers"]
    committed = {}
    for path in sorted(p for name in layout.METRICS_FILES for p in Path(layout.MODELS_REPORTS).glob(f"*/{name}")):
        committed.update(spread.flat_metrics({path.as_posix(): json.loads(path.read_text())}))
    (OUT / "results.md").write_text(spread.results_table(reference, spread.default_params_runs(doc), committed))


def parser() -> argparse.ArgumentParser:
    """The command line (tests parse the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["queue", "start", "variants", "collect", "all", "plan", "run", "power",
                                     "power-queue", "power-judge", "results"])
    ap.add_argument("name", nargs="?", help="run: the experiment of the plan to run (`plan` lists them)")
    ap.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    ap.add_argument("--jobs", type=int, default=1, help="queue workers; 1 on a 2-core machine")
    ap.add_argument("--as", dest="as_name", metavar="spread-machine-LABEL",
                    help="run: name the run this (the default run again, on another machine)")
    ap.add_argument("--push", metavar="GIT_REMOTE", help="run: push the experiment there (and its outputs to the "
                                                         "DVC remote) when it is done")
    ap.add_argument("--no-outputs", action="store_true", help="run: push only the git ref, not the outputs")
    ap.add_argument("--runners", nargs="+", metavar="RUNNER",
                    help="plan: a CI matrix instead: every experiment on the first runner, and the default "
                         "run again on each other runner (as spread-machine-<runner>)")
    ap.add_argument("--names", action="store_true", help="plan: one experiment name per line (shell arrays)")
    ap.add_argument("--pull", metavar="GIT_REMOTE", help="collect: pull the study's experiments from there first")
    ap.add_argument("--other-machine", nargs="*", default=DEFAULT_OTHER, metavar="NAME=REV",
                    help="committed metrics of the default run made on another machine, as a variant")
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if (args.what == "run") != (args.name is not None):
        ap.error("`run` takes the experiment's name (and only `run` does)")
    t0 = time.perf_counter()
    if args.what == "plan":
        if args.names:
            print("\n".join(e.name for e in plan(args.seeds)))
        else:
            print(json.dumps(matrix(args.seeds, args.runners) if args.runners else
                             [{"name": e.name, "sets": list(e.sets), "env": dict(e.env), "what": e.what}
                              for e in plan(args.seeds)]))
        return
    if args.what == "run":
        run_one(args.name, args.seeds, args.as_name, args.push, not args.no_outputs)
    if args.what in ("queue", "all"):
        queue(args.seeds)
    if args.what in ("start", "all"):
        start(args.jobs)
    if args.what in ("variants", "all"):
        variants(args.seeds)
    if args.what == "collect" and args.pull:
        pull(args.pull)
    if args.what in ("collect", "all"):
        collect(args.other_machine, args.seeds)
    if args.what == "results":  # after a new committed run: the README table from the committed study
        write_results(json.loads((OUT / "summary.json").read_text()))
    if args.what in ("power", "power-queue"):
        queue_power()
    if args.what == "power":
        start(args.jobs)
    if args.what in ("power", "power-judge"):
        judge_power()
    print(f"spread {args.what}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
