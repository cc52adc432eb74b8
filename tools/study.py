"""Run a study of studies.yaml (docs/studies.md): its DVC experiments, on one machine or many,
then its summary (and figure) in its folder.

One machine (make study STUDY=<study>; make spread is the spread study):
  python tools/study.py STUDY queue                 queue the study's experiments in DVC's queue
  python tools/study.py STUDY start [--jobs 1]      dvc queue start, wait until the queue is done
  python tools/study.py STUDY collect               the study's experiments -> its summary
  python tools/study.py STUDY all [--jobs 1]        queue, start, collect

Many machines (.github/workflows/study.yml, docs/reproducibility.md for Slurm): each machine is a
clone that runs one experiment and pushes it; one clone collects them all.
  python tools/study.py STUDY plan [--names | --runners R ... | --folder]
                                    the experiments: JSON, one name per line, or a CI matrix;
                                    or the folder its summary goes to
  python tools/study.py STUDY run NAME [--as STUDY-machine-LABEL] [--push GIT_REMOTE] [--no-outputs]
                                    one experiment in this clone (`dvc exp run --temp`), then
                                    published whole: its outputs to the DVC remote, checked there,
                                    then its git ref to GIT_REMOTE; --as: the baseline again, on
                                    another machine. Run again after a push cut short, it pushes
                                    the experiment it ran (no rerun)
  python tools/study.py STUDY collect --pull GIT_REMOTE [--no-outputs]
                                    refuses an experiment whose outputs the DVC remote lacks

--seeds S ... replaces the entry's seeds (a smaller study). On 2 cores one job at a time is right
(--jobs 1): two trainings with 2 threads each thrash. The experiments stay as local git refs
(`dvc exp show` lists them; `dvc exp remove -A` drops them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from mnist_vae.core import machine
from mnist_vae.io import cli
from mnist_vae.study import engine
from mnist_vae.study.engine import StudyError


def parser() -> argparse.ArgumentParser:
    """The command line (tests parse the documented commands with it)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", help="an entry of studies.yaml")
    ap.add_argument("what", choices=["plan", "queue", "start", "run", "collect", "all"])
    ap.add_argument("name", nargs="?", help="run: the experiment of the plan to run (`plan --names` lists them)")
    ap.add_argument("--seeds", type=int, nargs="+", help="instead of the entry's seeds")
    ap.add_argument("--jobs", type=int, default=1, help="queue workers; 1 on a 2-core machine")
    ap.add_argument("--as", dest="as_name", metavar="STUDY-machine-LABEL",
                    help="run: name the run this (the experiment again, on another machine)")
    ap.add_argument("--push", metavar="GIT_REMOTE", help="run: push the experiment there (and its outputs to the "
                                                         "DVC remote) when it is done")
    ap.add_argument("--no-outputs", action="store_true", help="run: push only the git ref, not the outputs; "
                                                              "collect --pull: do not require the experiments' "
                                                              "outputs on the DVC remote")
    ap.add_argument("--runners", nargs="+", metavar="RUNNER",
                    help="plan: a CI matrix instead: every experiment on the first runner, and the baseline "
                         "again on each other runner (as STUDY-machine-<runner>)")
    ap.add_argument("--names", action="store_true", help="plan: one experiment name per line (shell arrays)")
    ap.add_argument("--folder", action="store_true", help="plan: the folder the study's summary goes to")
    ap.add_argument("--pull", metavar="GIT_REMOTE", help="collect: pull the experiments from there first")
    ap.add_argument("--other-machine", nargs="*", default=[], metavar="NAME=REV",
                    help="collect: the committed metrics of REV (the default run on another machine), as a variant")
    ap.add_argument("--file", default=engine.STUDIES, help="the studies file")
    return ap


def matrix(name: str, exps: list[engine.Experiment], runners: list[str]) -> list[dict[str, str]]:
    """The fan-out as a CI matrix's `include` list: {runner, name, as} per job; `as` is empty but
    for the baseline repeated on another kind of machine."""
    jobs = [{"runner": runners[0], "name": e.name, "as": ""} for e in exps]
    base = next((e.name for e in exps if e.kind == "baseline"), None)
    if len(runners) > 1 and base is None:
        raise StudyError(f"study {name!r} has no baseline (`baseline: true`) to repeat on other runners")
    return jobs + [{"runner": r, "name": base, "as": f"{name}-machine-{r}"} for r in runners[1:]]


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if (args.what == "run") != (args.name is not None):
        ap.error("`run` takes the experiment's name (and only `run` does)")
    t0 = time.perf_counter()
    study = engine.find(args.study, args.file, seeds=args.seeds)  # plan refuses what run would
    exps = engine.plan(args.study, study, args.seeds)
    if args.what == "plan":
        print(engine.out_dir(args.study, study) if args.folder else "\n".join(e.name for e in exps) if args.names else json.dumps(
            matrix(args.study, exps, args.runners) if args.runners else
            [{"name": e.name, "sets": list(e.sets), "what": e.what} for e in exps]))
        return
    if args.what == "run":
        exp = next((e for e in exps if e.name == args.name), None)
        if exp is None:
            raise StudyError(f"{args.name!r} is not an experiment of {args.study}; "
                             f"`python tools/study.py {args.study} plan --names` lists them")
        engine.run_one(args.study, study, exp, args.as_name, args.push, not args.no_outputs, machine.label)
    if args.what in ("queue", "all"):
        engine.queue(exps, study)
    if args.what in ("start", "all"):
        engine.start(args.jobs)
    if args.what == "collect" and args.pull:
        engine.pull(args.pull)
    if args.what in ("collect", "all"):
        engine.collect(args.study, study, machine.label, args.seeds, args.other_machine, args.pull,
                       not args.no_outputs)
    print(f"{args.study} {args.what}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
