"""Studies as data: each entry of studies.yaml names the params to vary (in DVC's own `-S` sweep
syntax), the seeds, the stages each run needs, the metrics to collect, and how to summarise and
draw them. This plans an entry's DVC experiments, runs them (DVC's queue on one machine, or one
per clone, pushed with `dvc exp push`), collects them (`dvc exp show`, after `dvc exp pull`) and
writes its summary. tools/study.py is its command line; docs/studies.md shows how to add a study.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..io import artifacts, layout, params
from ..io.errors import MnistVaeError
from . import calibration, spread
from .workspace import dvc_exe, git_show, tool_env

STUDIES = "studies.yaml"
NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")  # a study's name starts every experiment's git ref


class StudyError(MnistVaeError, ValueError):
    """A study entry that cannot be run, or a DVC command of a study that failed: one line."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Seeds(_Entry):
    keys: list[str] = Field(min_length=1)  # each seed value sets every one of these params
    values: list[int] | str  # a list, or DVC's "range(1, 4)"


class Draw(_Entry):
    x: str  # a swept param
    y: list[str] = Field(min_length=1)  # metrics of the study, one panel each
    log_x: bool = False


class Study(_Entry):
    about: str
    sweep: list[str] = []  # `-S` strings; choice(...) and range(...) give one run per combination
    set: list[str] = []  # `-S` strings every run of the study gets
    seeds: Seeds | None = None
    baseline: bool = False  # also the default params and seed: <study>-default
    variants: dict[str, list[str]] = {}  # <study>-<label>: the default seed with these `-S`
    stages: list[str] = []  # dvc targets each run needs; none: the whole pipeline
    model: str | None = None  # the model of metrics named by file alone, and of the machine record
    metrics: list[str] | Literal["all"] = "all"  # "<metrics file>:<dotted key>"
    summary: Literal["seed-spread", "by-setting", "same-seed"] = "by-setting"
    draw: Draw | None = None
    out: str | None = None  # default reports/studies/<name>


@dataclass(frozen=True)
class Experiment:
    """One run of a study: its name, its `dvc exp run -S` settings, and what it is."""

    name: str
    sets: tuple[str, ...] = ()
    what: str = ""
    kind: Literal["baseline", "variant", "run"] = "run"
    setting: tuple[tuple[str, Any], ...] = ()  # the swept params' values
    seed: int | None = None


# --- the entries ---------------------------------------------------------------------------------


def load(path: str | Path = STUDIES) -> dict[str, Study]:
    """Every entry of the file, validated (schema only: :func:`check` needs params.yaml)."""
    raw = yaml.safe_load(Path(path).read_text()) if Path(path).exists() else None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: expected a mapping of study names to entries")
    return {name: entry(name, body, path) for name, body in raw.items()}


def entry(name: Any, body: Any, path: str | Path = STUDIES) -> Study:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise StudyError(f"{path}: study {name!r}: a name is 1 to 40 lowercase letters, digits or '-' (it starts "
                         "every experiment's git ref)")
    try:
        return Study.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]
                      if not str(p).startswith(("list[", "literal[", "function-"))).lstrip(".")
        raise StudyError(f"{path}: study {name!r}: `{key}`: {err['msg']}" +
                         (f", got {err['input']!r}" if err["type"] != "missing" else "")) from None


def find(name: str, path: str | Path = STUDIES, p: dict | None = None, seeds: list[int] | None = None) -> Study:
    """The entry `name`, checked against params.yaml and dvc.yaml with `seeds` (--seeds) in
    place of its own: every command of the tool plans and checks the same experiments."""
    studies = load(path)
    if name not in studies:
        raise StudyError(f"no study {name!r} in {path}; known: {', '.join(studies)}")
    check(name, studies[name], p, seeds=seeds)
    return studies[name]


def out_dir(name: str, study: Study) -> Path:
    return Path(study.out or f"reports/studies/{name}")


def _parse(line: str, name: str) -> tuple[str, list]:
    """(key, values) of one `-S` string, by the parser DVC's own sweeps use (hydra's)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_overrides([line])[0]
    except HydraException as exc:
        why = "has no values" if re.search(r"choice\(\s*\)", line) else \
            f"is not DVC's -S syntax ({str(exc).splitlines()[0]})"
        raise StudyError(f"study {name!r}: `{line}` {why}") from None
    values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
    if not values:
        raise StudyError(f"study {name!r}: `{line}` has no values (an empty sweep)")
    return override.key_or_group, values


def seed_values(name: str, study: Study) -> list[int]:
    if study.seeds is None:
        return []
    seeds = study.seeds.values
    return _parse(f"seed={seeds}", name)[1] if isinstance(seeds, str) else list(seeds)


def plan(name: str, study: Study, seeds: list[int] | None = None) -> list[Experiment]:
    """The study's experiments, the same for one machine and for many: the baseline, the
    variants, then every combination of the swept values under every seed (`seeds` overrides
    the entry's)."""
    fixed = tuple(study.set)
    exps = [Experiment(f"{name}-default", fixed, "the default params and seed", "baseline")] if study.baseline else []
    exps += [Experiment(f"{name}-{label}", fixed + tuple(sets), f"the default seed with {', '.join(sets)}", "variant")
             for label, sets in study.variants.items()]
    axes = [[(key, v) for v in values] for key, values in (_parse(s, name) for s in study.sweep)]
    seeds = seeds if seeds is not None else seed_values(name, study)
    if not axes and not seeds and exps:  # variants (and the baseline) only: the default params are not run again
        return exps
    for setting in itertools.product(*axes):
        for seed in seeds or [None]:
            parts = [_ref_part(v) for _, v in setting] + ([f"seed-{seed}"] if seed is not None else [])
            sets = fixed + tuple(f"{k}={v}" for k, v in setting)
            sets += tuple(f"{k}={seed}" for k in study.seeds.keys) if seed is not None else ()
            what = ", ".join([f"{k}={v}" for k, v in setting] + ([f"seed {seed}"] if seed is not None else []))
            exps.append(Experiment("-".join([name, *parts]), sets, what, "run", setting, seed))
    return exps


def _ref_part(value: Any) -> str:
    """A swept value as part of a git ref name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip(".") or "_"


def check(name: str, study: Study, p: dict | None = None, dvc_yaml: str | Path = "dvc.yaml",
          seeds: list[int] | None = None) -> None:
    """What the schema cannot see: every param exists in params.yaml and takes its value (with
    `seeds` in place of the entry's, as planned), the sweep is not empty, the stages and metrics
    are ones the pipeline has."""
    p = p if p is not None else yaml.safe_load(Path("params.yaml").read_text())
    exps = plan(name, study, seeds)  # parses every -S string: an empty or unreadable sweep ends here
    twice = sorted({e.name for e in exps if [x.name for x in exps].count(e.name) > 1})
    if twice:
        raise StudyError(f"study {name!r}: experiments planned twice (a seed or a value repeated): {', '.join(twice)}")
    for line in {s for e in exps for s in e.sets}:
        _param_path(name, p, line.split("=", 1)[0])
    with tempfile.TemporaryDirectory() as tmp:
        for exp in exps:  # the params as each run would have them: wrong types and impossible values
            try:
                params.validate(_with(p, exp.sets, Path(tmp)))
            except (params.ParamsError, StudyError) as exc:
                raise StudyError(f"study {name!r}, experiment {exp.name}: {exc}") from None
    if study.model is not None and study.model not in (p.get("models") or {}):
        raise StudyError(f"study {name!r}: `model`: params.yaml has no model {study.model!r}")
    metric_paths(name, study, p)
    if study.summary == "seed-spread" and not (study.baseline and study.seeds):
        raise StudyError(f"study {name!r}: a seed-spread summary needs `baseline: true` and `seeds`")
    swept = {_parse(s, name)[0] for s in study.sweep}
    if study.draw and study.draw.x not in swept:
        raise StudyError(f"study {name!r}: draw.x {study.draw.x!r} is not a swept param ({', '.join(swept) or 'none'})")
    if study.draw and set(study.draw.y) - set(study.metrics):
        raise StudyError(f"study {name!r}: draw.y names metrics the study does not collect: "
                         f"{sorted(set(study.draw.y) - set(study.metrics))}")
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    for target in study.stages:
        stage, _, item = target.partition("@")
        each = stages.get(stage, {}).get("foreach")
        items = _lookup(p, each[2:-1]) if isinstance(each, str) and each.startswith("${") else each
        if stage not in stages or bool(item) != bool(each) or (item and item not in (items or [])):
            raise StudyError(f"study {name!r}: stage {target!r} is not a stage of {dvc_yaml}")
    if study.summary == "by-setting" and study.metrics == "all":
        raise StudyError(f"study {name!r}: a by-setting summary names its `metrics`")


def _lookup(tree: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def _param_path(name: str, p: dict, key: str) -> None:
    """DVC's -S sets a key params.yaml has; a model's key needs the model first."""
    parts = key.split(".")
    if parts[0] == "models" and len(parts) > 1 and parts[1] not in (p.get("models") or {}):
        raise StudyError(f"study {name!r}: `{key}`: params.yaml has no model {parts[1]!r} "
                         f"(models: {', '.join(p.get('models') or {})})")
    node = p
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            raise StudyError(f"study {name!r}: `{key}` is not a param of params.yaml")
        node = node[part]


def _with(p: dict, sets: tuple[str, ...], tmp: Path) -> dict:
    """params.yaml as `dvc exp run -S` leaves it for a run: DVC's own function on a copy in `tmp`,
    so each value is typed as the run will see it (`1e-3` is a float to DVC, a string to YAML)."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides

    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        apply_overrides(path, list(sets))
    except DvcException as exc:
        why = str(exc.__cause__ or exc).splitlines()[0]
        raise StudyError(f"`dvc exp run -S` refuses {' '.join(sets)}: {why}") from None
    return yaml.safe_load(path.read_text())


def metric_paths(name: str, study: Study, p: dict) -> dict[str, str]:
    """{metric as the entry names it: its flat name, "<file>:<dotted key>"}. A file is a metrics
    file of layout.METRICS_FILES: alone (of the entry's `model`), as <model>/<file>, or as its
    path (`{model}` allowed); a model's committed file, where there is one, must have the key."""
    models = list(p.get("models") or {})
    out = {}
    for metric in [] if study.metrics == "all" else study.metrics:
        file, sep, key = metric.rpartition(":")
        path = file.format(model=study.model) if "{model}" not in file or study.model else file
        if "/" not in path and study.model:
            path = f"{study.model}/{path}"
        if path.count("/") == 1:
            path = f"{layout.MODELS_REPORTS}/{path}"
        folder, _, base = path.rpartition("/")
        model = folder.removeprefix(layout.MODELS_REPORTS + "/")
        if not sep or folder != f"{layout.MODELS_REPORTS}/{model}" or base not in layout.METRICS_FILES:
            raise StudyError(f"study {name!r}: metric {metric!r}: no stage writes it (a metric is "
                             f"\"<{' | '.join(layout.METRICS_FILES)}>:<key>\" with `model:`, or <model>/<file>:<key>)")
        if model not in models or (base == "anomaly.json" and model not in p["anomaly"]["models"]):
            raise StudyError(f"study {name!r}: metric {metric!r}: no stage writes {path} (models: {', '.join(models)}; "
                             f"anomaly.models: {', '.join(p['anomaly']['models'])})")
        committed = Path(path)
        if committed.is_file() and key not in spread.flatten(json.loads(committed.read_text())):
            raise StudyError(f"study {name!r}: metric {metric!r}: {path} has no key {key!r}")
        out[metric] = f"{path}:{key}"
    return out


# --- running: DVC's queue on one machine, or one experiment per clone ------------------------------


def dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([dvc_exe(), *args], capture_output=True, text=True, env=tool_env())
    if check and proc.returncode != 0:
        raise StudyError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}): "
                         + (proc.stderr.strip() or proc.stdout.strip())[-2000:].replace("\n", " | "))
    return proc


def existing_names() -> set[str]:
    """Names of this repository's experiments (any commit, any state)."""
    doc = json.loads(dvc("exp", "show", "--json", "--all-commits").stdout or "[]")
    return {e.get("name") or r.get("name") for b in doc for e in b.get("experiments") or [] for r in e.get("revs") or []}


def run_args(study: Study, exp: Experiment) -> list[str]:
    """`dvc exp run`'s settings and targets. A whole-pipeline run is forced from the training on:
    a runner measures its own machine even where the baseline's outputs would let DVC skip it."""
    targets = list(study.stages) or ["--force", "--downstream", "train"]
    return [*(a for kv in exp.sets for a in ("-S", kv)), *targets]


def queue(exps: list[Experiment], study: Study) -> None:
    old = sorted(existing_names() & {e.name for e in exps})
    if old:  # a rerun of the study replaces its experiments
        dvc("exp", "remove", *old)
    for exp in exps:  # the queue runs only what changed: no --force (the workspace's outputs are the baseline)
        dvc("exp", "run", "--queue", "-n", exp.name, *[a for a in run_args(study, exp) if a != "--force"])
    print(f"queued {len(exps)} experiments: {', '.join(e.name for e in exps)}")


def start(jobs: int, poll: float = 15.0) -> None:
    """dvc queue start, then wait for the queue to empty; one line per failed task's log."""
    t0 = time.perf_counter()
    dvc("queue", "start", "--jobs", str(jobs))
    while True:
        status = dvc("queue", "status").stdout
        if not [line for line in status.splitlines() if " Queued " in f" {line} " or " Running " in f" {line} "]:
            break
        time.sleep(poll)
    print(status)
    print(f"queue finished in {time.perf_counter() - t0:.0f} s")
    failed = [line.split()[0] for line in status.splitlines() if " Failed " in f" {line} "]
    for task in failed:
        print(dvc("queue", "logs", task, check=False).stdout[-3000:])
    if failed:
        raise StudyError(f"{len(failed)} queued experiment(s) failed (logs above; `dvc queue logs <task>`)")


def run_one(prefix: str, study: Study, exp: Experiment, as_name: str | None, push: str | None, outputs: bool,
            label: Callable[[dict | None], str]) -> None:
    """A runner: one experiment of the plan in this clone (in a temporary workspace, so the
    clone's own stays as it was), then published whole (:func:`publish`). With `push`, an
    experiment this clone already ran from HEAD is published as it is, not run again: a rerun
    after a push cut short completes that push. `label` names a machine record
    (core.machine.label: the tool passes it, as study/ does not import core/)."""
    final = as_name or exp.name
    if as_name and not as_name.startswith(f"{prefix}-machine-"):
        raise StudyError(f"--as names a rerun on another machine: {prefix}-machine-<label>, got {as_name!r}")
    if push and outputs and not dvc("remote", "default", check=False).stdout.strip():
        raise StudyError("--push sends the outputs to the DVC remote, and this clone has no default remote: "
                         "add one (`dvc remote add -d ...`) or pass --no-outputs to push only the git ref")
    done = head_exp(final) if push else None
    if done:
        print(f"{final}: already ran in this clone ({done[0][:7]}): publishing it as it is "
              f"(`dvc exp remove {final}` first to run it again)")
    else:
        if final in existing_names():
            dvc("exp", "remove", final)
        t0 = time.perf_counter()
        dvc("exp", "run", "--temp", "-n", final, *run_args(study, exp))
        print(f"{final}: ran in {time.perf_counter() - t0:.0f} s on {label(run_machine(exp_ref(final), study.model))}")
    if push:
        publish(final, push, outputs)
        print(f"{final}: pushed to {push}" + (" and the DVC remote" if outputs else " (git ref only)"))


def head_exp(name: str) -> tuple[str, str] | None:
    """(commit, ref) of this clone's experiment `name` made from HEAD (refs/exps/<HEAD>/<name>)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    want = f"refs/exps/{head[:2]}/{head[2:]}/{name}"
    return next(((sha, ref) for sha, ref in (line.split() for line in refs) if ref == want), None)


def publish(name: str, git_remote: str, outputs: bool = True) -> None:
    """This clone's experiment `name` (made from HEAD) published whole: its outputs pushed to the
    DVC remote and found there, and only then its git ref, which is what a collector finds.
    `dvc exp push` pushes the ref first, so a push cut short there leaves a ref whose outputs are
    missing; here a push cut short leaves no ref, and running it again completes it. The ref is
    forced: a runner owns its experiment's name, and an earlier half-published one is replaced."""
    found = head_exp(name)
    if found is None:
        raise StudyError(f"no experiment {name!r} of HEAD in this clone to push; `dvc exp show` lists them")
    sha, ref = found
    if outputs:
        t0 = time.perf_counter()
        try:
            push_outputs(sha)
            missing = missing_outputs([sha])[sha]
        except StudyError as exc:
            raise StudyError(f"{name}: {exc}; its git ref was not pushed: run the same command again") from None
        if missing:
            raise StudyError(f"{name}: pushed its outputs, yet the DVC remote lacks {', '.join(missing)}; "
                             "its git ref was not pushed: run the same command again")
        print(f"{name}: every output on the DVC remote ({time.perf_counter() - t0:.0f} s)")
    dvc("exp", "push", "--force", "--no-cache", git_remote, ref)
    there = remote_refs(git_remote, ref)
    if sha not in there:  # `dvc exp push` says a rejected ref in a warning and exits 0
        raise StudyError(f"{name}: `dvc exp push` left {ref} at {', '.join(x[:7] for x in there) or 'nothing'} on "
                         f"{_shown(git_remote)}, not {sha[:7]}; check that the git remote takes pushes, then run the "
                         "same command again")


def remote_refs(git_remote: str, pattern: str) -> set[str]:
    """The commits of the git remote's refs matching `pattern` (`git ls-remote`)."""
    proc = subprocess.run(["git", "ls-remote", git_remote, pattern], capture_output=True, text=True, env=tool_env())
    if proc.returncode != 0:
        raise StudyError(f"`git ls-remote {_shown(git_remote)}` failed (exit {proc.returncode}): "
                         + proc.stderr.strip().replace("\n", " | "))
    return {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}


def _shown(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)  # a git remote's URL without the credentials it may carry


def _dvc_repo():
    """This clone as DVC's Python API opens it (for what the CLI cannot do: push or check one
    commit's outputs)."""
    from dvc.repo import Repo

    return Repo()


def push_outputs(rev: str) -> int:
    """The outputs of commit `rev` to the default DVC remote: what `dvc exp push` sends after the
    ref, sent before it (DVC's CLI pushes one commit's outputs only through `dvc exp push`)."""
    try:
        with _dvc_repo() as repo:
            return repo.push(revs=[rev], workspace=False)
    except Exception as exc:  # DVC's, the remote's (no credentials, unreachable): one line
        raise StudyError(f"pushing the outputs of {rev[:7]} to the DVC remote failed ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def missing_outputs(revs: list[str]) -> dict[str, list[str]]:
    """{rev: the outputs DVC caches at that commit (its dvc.yaml and dvc.lock) that the default
    DVC remote lacks, as "path (stage)"}: what `dvc exp pull` of it could not bring. Asked of the
    remote itself, nothing downloaded but directory listings; a directory is missing where its
    listing or any file in it is."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    try:
        with _dvc_repo() as repo:
            outs = {}
            for rev in revs:
                for _ in repo.brancher(revs=[rev], workspace=False):
                    outs[rev] = [o for o in repo.index.outs if o.use_cache and o.can_push and o.hash_info]
            found: dict[str, set[str]] = {}  # hash name -> oids on the remote
            for hash_name in {o.hash_name for group in outs.values() for o in group}:
                odb = repo.cloud.get_remote_odb(None, "push", hash_name=hash_name)
                oids = {o.hash_info.value for group in outs.values() for o in group if o.hash_name == hash_name}
                present = set(odb.oids_exist(oids))
                for oid in sorted(o for o in present if o.endswith(".dir")):  # a listing: its files too
                    files = {hi.value for _, _, hi in Tree.load(odb, HashInfo(hash_name, oid))}
                    if not files <= set(odb.oids_exist(files)):
                        present.discard(oid)
                found[hash_name] = present
    except Exception as exc:  # DVC's, the remote's (no credentials, unreachable): one line
        raise StudyError(f"could not ask the DVC remote for the outputs of {len(revs)} commit(s) "
                         f"({_why(exc)})") from None
    return {rev: [f"{o.def_path} ({o.stage.name})" for o in outs.get(rev, [])
                  if o.hash_info.value not in found[o.hash_name]] for rev in revs}


def exp_ref(name: str) -> str:
    """The commit of this clone's experiment `name` (its ref under refs/exps/)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    found = [line.split()[0] for line in refs if line.endswith(f"/{name}")]
    if not found:
        raise StudyError(f"the experiment {name!r} ran but no ref refs/exps/.../{name} exists")
    return found[0]


def run_machine(rev: str, model: str | None = None) -> dict | None:
    """The machine a commit ran on: its model's timings-train.json (`model`, or the first model of
    that commit's params.yaml: every run trains its models on one machine)."""
    if model is None:
        text = git_show(rev, "params.yaml")
        model = next(iter((yaml.safe_load(text) or {}).get("models") or {}), None) if text else None
    text = git_show(rev, layout.timings(model, "train")) if model else None
    return json.loads(text).get("machine") if text else None


def pull(git_remote: str) -> None:
    """The experiments of this commit from the git remote: refs only (metrics live in git)."""
    t0 = time.perf_counter()
    dvc("exp", "pull", "--force", "--no-cache", git_remote)
    print(f"pulled the experiments of HEAD from {git_remote} in {time.perf_counter() - t0:.0f} s")


def experiments() -> list[dict]:
    """[{name, params, metrics (flat), rev}] of every finished experiment of this repository."""
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
                prms = {path: (p or {}).get("data", {}) for path, p in (data.get("params") or {}).items()}
                out.append({"name": rev.get("name") or exp.get("name"), "metrics": spread.flat_metrics(metrics),
                            "params": prms, "rev": rev.get("rev")})
    return out


def committed_metrics(rev: str) -> dict:
    """The metrics committed at `rev` (every model's metrics files)."""
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, layout.MODELS_REPORTS],
                             capture_output=True, text=True, check=True).stdout.split()
    return spread.flat_metrics({path: json.loads(git_show(rev, path)) for path in listing
                                if path.rsplit("/", 1)[-1] in layout.METRICS_FILES})


def require_whole(study: str, exps: list[tuple[str, str]], git_remote: str) -> None:
    """Refuse, in one line, experiments (name, commit) that came from `git_remote` whose outputs
    the default DVC remote lacks: a ref published by a push cut short (`dvc exp push` sends the
    ref first, and `dvc exp pull` only warns of what it cannot fetch). The remote is asked, nothing
    is downloaded. A clone without a DVC remote collects refs only, and says so."""
    if not dvc("remote", "default", check=False).stdout.strip():
        print("outputs not checked: this clone has no default DVC remote (runners without one push git refs only)")
        return
    shown = _shown(git_remote)
    there = remote_refs(git_remote, "refs/exps/*")
    pulled = [(n, rev) for n, rev in exps if rev in there]
    if not pulled:
        return
    t0 = time.perf_counter()
    try:
        missing = missing_outputs([rev for _, rev in pulled])
    except StudyError as exc:
        raise StudyError(f"{exc}: fix the remote's access, or pass --no-outputs to collect the metrics alone "
                         "(runners that pushed git refs only)") from None
    bad = [(n, missing[rev]) for n, rev in pulled if missing[rev]]
    if bad:
        again = "; ".join(f"`python tools/study.py {study} run "
                          + (f"{study}-default --as {n}" if n.startswith(f"{study}-machine-") else n)
                          + f" --push {shown}`" for n, _ in bad)
        raise StudyError(f"{len(bad)} experiment(s) pulled from {shown} are not whole on the DVC remote (a push cut "
                         f"short): " + "; ".join(f"{n} lacks {', '.join(m)}" for n, m in bad)
                         + f"; rerun each one's runner in the clone that ran it ({again}): it completes the push, "
                         "then collect again")
    print(f"every output of the {len(pulled)} experiments pulled from {shown} is on the DVC remote "
          f"(checked in {time.perf_counter() - t0:.0f} s)")


# --- summaries -------------------------------------------------------------------------------------


@dataclass
class Run:
    """A finished experiment of the study as the summaries read it."""

    name: str
    metrics: dict[str, Any]
    machine: str = "not recorded"
    exp: Experiment | None = None  # None: not in the plan (a rerun on another machine, --as)
    extra: dict = field(default_factory=dict)


def collect(name: str, study: Study, label: Callable[[dict | None], str], seeds: list[int] | None = None,
            other: list[str] = (), pulled_from: str | None = None, outputs: bool = True) -> dict:
    """The study's summary from this repository's experiments, written to its folder; `label`
    names a machine record (as in :func:`run_one`). Experiments pulled from `pulled_from` must be
    whole on the DVC remote (:func:`require_whole`) unless `outputs` is false (refs only)."""
    exps = {e.name: e for e in plan(name, study, seeds)}
    p = yaml.safe_load(Path("params.yaml").read_text())
    model = study.model or next(iter(p["models"]))
    found = [e for e in experiments() if e["name"] in exps or (e["name"] or "").startswith(f"{name}-machine-")]
    if pulled_from and outputs:
        require_whole(name, [(e["name"], e["rev"]) for e in found], pulled_from)
    runs = [Run(e["name"], e["metrics"], label(run_machine(e["rev"], model)), exps.get(e["name"])) for e in found]
    for item in other:  # committed metrics of the default run made on another CPU
        tag, rev = item.split("=", 1)
        metrics = committed_metrics(rev)
        if not metrics:
            raise StudyError(f"--other-machine {item}: {rev} has no metrics under {layout.MODELS_REPORTS}/")
        runs.append(Run(f"{name}-{tag}", metrics, label(run_machine(rev)),
                        extra={"what": f"committed metrics of {rev}: same seed, another CPU"}))
    summarize = {"seed-spread": seed_spread, "same-seed": same_seed}.get(study.summary, by_setting)
    doc = summarize(name, study, runs, metric_paths(name, study, p))
    write(name, study, doc)
    return doc


def seed_spread(name: str, study: Study, runs: list[Run], paths: dict[str, str]) -> dict:
    """The spread study's summary (study.spread.summarize): the seed runs' spread of every metric,
    the baseline's z, and each same-seed variant's difference from the baseline."""
    def label(run: Run) -> str:
        return run.name.removeprefix(f"{name}-")

    def kept(run: Run) -> dict:
        return {k: v for k, v in run.metrics.items() if k in paths.values()} if paths else run.metrics

    base = [r for r in runs if r.exp and r.exp.kind == "baseline"]
    seeded = sorted((r for r in runs if r.exp and r.exp.kind == "run"), key=lambda r: r.exp.seed)
    if not base or len(seeded) < 2:
        raise StudyError(f"need {name}-default and at least 2 seed experiments, found {sorted(r.name for r in runs)}")
    others = sorted((r for r in runs if r not in base and r not in seeded), key=label)
    seeds, default = {label(r): kept(r) for r in seeded}, kept(base[0])
    variants = {label(r): kept(r) for r in others}
    return {
        "study": {"what": study.about, "seeds": [r.exp.seed for r in seeded], "n_seeds": len(seeded),
                  "machines": {label(r): r.machine for r in sorted(runs, key=label)},
                  "variants": {label(r): f"{r.extra.get('what') or (r.exp.what if r.exp else 'the default params and seed on another machine')}; {r.machine}"
                               for r in others}},
        "runs": {"default": default, **seeds, **{f"variant:{k}": v for k, v in variants.items()}},
        "metrics": spread.summarize(seeds, default, variants),
    }


def same_seed(name: str, study: Study, runs: list[Run], paths: dict[str, str]) -> dict:
    """The same-seed study's summary: the committed run (HEAD's metrics files: in universal numerics
    any rerun of it gives these bits, so it is not run again) and each variant, the committed seed
    in another rounding, with per metric the variants' differences from it and the spread of a
    rerun's difference from it (calibration.same_seed_sigma), beside the seed study's."""
    def kept(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k in paths.values()} if paths else metrics

    base = kept(committed_metrics("HEAD"))
    if not base:
        raise StudyError(f"{name}: HEAD has no metrics under {layout.MODELS_REPORTS}/ to compare the variants with")
    variants = {r.name.removeprefix(f"{name}-"): r for r in runs if r.exp and r.exp.kind == "variant"}
    if len(variants) < 2:
        raise StudyError(f"need at least 2 variant experiments of {name}, found {sorted(r.name for r in runs)}")
    seed_doc = {}
    seed_path = Path("reports/spread/summary.json")
    if seed_path.exists():
        seed_doc = json.loads(seed_path.read_text()).get("metrics", {})
    first = calibration.distinct_roundings({"committed": base, **{label: kept(r.metrics)
                                                                  for label, r in sorted(variants.items())}})
    same_as = {label: other for label, other in first.items() if label != other}
    metrics = {}
    for metric, value in sorted(base.items()):
        if spread.kind(metric) != "measured" or not spread._number(value):
            continue
        deltas = {label: float(r.metrics[metric] - value) for label, r in sorted(variants.items())
                  if spread._number(r.metrics.get(metric))}
        row = {"committed": float(value), "variants": {k: {"delta": d} for k, d in deltas.items()}}
        if len(deltas) < 2:  # a metric not every variant has: no spread to give
            continue
        sigma, df = calibration.same_seed_sigma([d for k, d in deltas.items() if k not in same_as])
        row.update(sigma_same=sigma, df=df)
        if metric in seed_doc:
            row["seed_sigma_diff"] = seed_doc[metric]["std"] * 2 ** 0.5
            row["seed_n"] = seed_doc[metric]["n"]
        metrics[metric] = row
    return {"study": {"what": study.about, "kind": "same-seed", "base": f"the committed run ({_head()})",
                      "machines": {label: r.machine for label, r in sorted(variants.items())},
                      "variants": {label: f"{r.exp.what}; {r.machine}" for label, r in sorted(variants.items())},
                      "same_as": same_as},
            "runs": {"committed": base, **{f"variant:{k}": kept(r.metrics) for k, r in sorted(variants.items())}},
            "metrics": metrics}


def _head() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def same_seed_markdown(doc: dict) -> str:
    """The same-seed summary as markdown: per metric the committed value, each variant's
    difference, sigma_same (degrees of freedom) and the seed study's spread of a difference."""
    study, labels = doc["study"], list(doc["study"]["variants"])
    lines = ["# Same-seed study", "", study["what"].strip() + ".", "", f"Base: {study['base']}. Variants: "
             + "; ".join(f"`{k}`: {v}" for k, v in study["variants"].items()) + ".", "",
             "sigma_same: the spread of a rerun's difference from the committed run (the variants' differences, "
             "root mean square; degrees of freedom: the distinct roundings, a variant whose models give every metric "
             "of an earlier one counting once" + "".join(
                 f"; {label} trained {other}'s models" for label, other in study.get("same_as", {}).items())
             + "). seed: the seed study's spread of a difference of two runs (std x sqrt 2, reports/spread/). "
             "Regenerate with `python tools/study.py same-seed all`.", "",
             "| metric | committed | " + " | ".join(labels) + " | sigma_same (df) | seed | ratio |",
             "|---|---:|" + "---:|" * (len(labels) + 3)]
    for metric, row in doc["metrics"].items():
        seed = row.get("seed_sigma_diff")
        seed_cells = f"{seed:.3g} | {row['sigma_same'] / seed:.2f}" if seed else "- | -"
        deltas = " | ".join(f"{row['variants'][v]['delta']:+.3g}" if v in row["variants"] else "-" for v in labels)
        lines.append(f"| `{metric.removeprefix(layout.MODELS_REPORTS + '/')}` | {row['committed']:.6g} | {deltas} | "
                     f"{row['sigma_same']:.3g} ({row['df']}) | {seed_cells} |")
    return "\n".join(lines) + "\n"


def by_setting(name: str, study: Study, runs: list[Run], paths: dict[str, str]) -> dict:
    """Per setting of the swept params: each metric's mean, std (ddof 1), n, min and max over the
    seeds, and the runs themselves."""
    import numpy as np

    settings: dict[tuple, list[Run]] = {}
    for run in (r for r in runs if r.exp and r.exp.kind == "run"):
        settings.setdefault(run.exp.setting, []).append(run)
    rows = []
    for setting in (s for s in dict.fromkeys(e.setting for e in plan(name, study)) if s in settings):
        group = sorted(settings[setting], key=lambda r: r.exp.seed or 0)
        stats = {}
        for metric, flat in paths.items():
            x = np.array([r.metrics[flat] for r in group if flat in r.metrics], dtype=np.float64)
            stats[metric] = {"n": len(x), "mean": float(x.mean()) if len(x) else None,
                             "std": float(x.std(ddof=1)) if len(x) > 1 else None,
                             "min": float(x.min()) if len(x) else None, "max": float(x.max()) if len(x) else None}
        rows.append({"params": dict(setting), "metrics": stats,
                     "runs": [{"name": r.name, "seed": r.exp.seed, "machine": r.machine,
                               "metrics": {m: r.metrics.get(f) for m, f in paths.items()}} for r in group]})
    return {"study": {"name": name, "about": study.about, "set": list(study.set), "sweep": list(study.sweep),
                      "seeds": study.seeds.model_dump() if study.seeds else None, "stages": list(study.stages),
                      "metrics": paths, "draw": study.draw.model_dump() if study.draw else None},
            "settings": rows}


def _cell(row: dict) -> str:
    if row["n"] == 0:
        return "-"
    return f"{row['mean']:.4g}" + (f" ± {row['std']:.2g}" if row["std"] is not None else "") + f" ({row['n']})"


def table(doc: dict) -> str:
    """A by-setting summary's markdown table: one row per setting, `mean ± std (n)` per metric."""
    rows, metrics = doc["settings"], list(doc["study"]["metrics"])
    keys = list(rows[0]["params"]) if rows else []
    lines = ["| " + " | ".join([*keys, *metrics]) + " |", "|" + "---:|" * (len(keys) + len(metrics))]
    return "\n".join(lines + ["| " + " | ".join([*(str(r["params"][k]) for k in keys),
                                                 *(_cell(r["metrics"][m]) for m in metrics)]) + " |"
                              for r in rows]) + "\n"


def markdown(doc: dict) -> str:
    """A by-setting summary as markdown: what the study is, then its :func:`table`."""
    study = doc["study"]
    seeds = f"Seeds {study['seeds']['values']} over {', '.join(study['seeds']['keys'])}. " if study["seeds"] else ""
    return "\n".join([f"# Study {study['name']}", "", study["about"].strip(), "",
                      f"Set in every run: {', '.join(f'`{s}`' for s in study['set']) or 'nothing'}. {seeds}"
                      f"Regenerate with `python tools/study.py {study['name']} all`.", "", table(doc)])


def figure(doc: dict):
    """One panel per drawn metric against the swept param, seed standard deviations as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    draw, rows = doc["study"]["draw"], [r for r in doc["settings"]]
    fig, axes = plt.subplots(1, len(draw["y"]), figsize=(4.2 * len(draw["y"]), 3.6), squeeze=False)
    x = [r["params"][draw["x"]] for r in rows]
    for ax, metric in zip(axes[0], draw["y"]):
        stats = [r["metrics"][metric] for r in rows]
        ax.errorbar(x, [s["mean"] for s in stats], yerr=[s["std"] or 0.0 for s in stats], marker="o", capsize=3)
        if draw["log_x"]:
            ax.set_xscale("log")
        ax.set_xticks(x, [str(v) for v in x], minor=False)  # the settings themselves, not powers of ten
        ax.minorticks_off()
        ax.set_xlabel(draw["x"])
        ax.set_ylabel(metric.rpartition(":")[2])
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    n = sorted({s["n"] for r in rows for s in r["metrics"].values()})
    fig.suptitle(f"{doc['study']['name']}: mean ± std over seeds (n = {', '.join(map(str, n))})")
    fig.tight_layout()
    return fig


def write(name: str, study: Study, doc: dict) -> None:
    out = out_dir(name, study)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(out / "summary.json", doc)
    write_md = {"seed-spread": spread.markdown, "same-seed": same_seed_markdown}.get(study.summary, markdown)
    artifacts.write_bytes(out / "summary.md", write_md(doc).encode())
    if study.summary == "seed-spread":
        write_results(doc, out)
    if study.summary == "by-setting" and study.draw and doc["settings"]:
        artifacts.write_figure(out / "figure.png", figure(doc), dpi=110)
    print(f"wrote {out}/summary.json and summary.md" + (" and figure.png" if study.draw else ""))


def write_results(doc: dict, out: Path = Path("reports/spread")) -> None:
    """results.md beside a seed-spread summary: the reference's numbers beside ours (the README's
    results table), the seed runs' spread and the committed run."""
    from . import reference

    committed = {}
    for path in sorted(p for name in layout.METRICS_FILES for p in Path(layout.MODELS_REPORTS).glob(f"*/{name}")):
        committed.update(spread.flat_metrics({path.as_posix(): json.loads(path.read_text())}))
    (out / "results.md").write_text(spread.results_table(reference.load()["numbers"], spread.default_params_runs(doc),
                                                         committed))
