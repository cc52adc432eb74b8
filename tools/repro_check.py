"""Reproduction gate (make repro-check; CI runs it after the tests), from a clean clone:

1. `dvc repro --force` of the whole pipeline on the default params succeeds (forced: with a
   deterministic pipeline DVC would otherwise skip stages whose committed metrics are still
   valid, e.g. the evaluation, and the gate would compare them with themselves);
2. `dvc status` then reports nothing to do;
3. a second `dvc repro` runs no stage;
4. every output in the workspace has the bytes dvc.lock records (hashed here: DVC trusts its
   cache, so a damaged cache object checked out would pass `dvc status`), and
5. the metrics agree with the committed ones (`dvc metrics diff --all --json HEAD`):
   - exactly, when both runs used universal numerics on a CPU, any CPU (every run's machine record
     says so): every metric equal (within a few ulps through text) and every output's md5 in
     dvc.lock the same, timings and the raw downloads aside;
   - else within the tolerances in tolerances.yaml, derived from the spread study (make spread,
     make tolerances), with each drift in units of the measured spread.
   On a difference it prints the table and fails.

--compare-only runs steps 4 and 5 alone (on the metrics in the working tree); --statistical uses the
tolerances even where the runs are exact.

Before anything it checks what it compares with what: params.yaml, dvc.yaml, src/ and stages/ must
be as in the commit it compares against (else the rerun would run other code or params and blame
the reproduction), and for --compare-only `dvc status` must be clean (else the metrics are stale);
it stops in one line naming the files or stages. --allow-changes compares anyway.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from mnist_vae.study import gate
from mnist_vae.io import layout, params
from mnist_vae.study.workspace import dvc_exe, git_show

DVC = dvc_exe()


def step(title: str, args: list[str], capture: bool = False) -> tuple[str, float]:
    print(f"== {title}: {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(args, text=True, capture_output=capture)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        if capture:
            print(proc.stdout, proc.stderr, sep="\n")
        sys.exit(f"repro-check: FAILED at '{title}' (exit {proc.returncode})")
    return (proc.stdout if capture else ""), seconds


# what decides the run: an edit here and the rerun is not a reproduction of the commit
INPUTS = ("params.yaml", "dvc.yaml", "src", "stages")


def edited_inputs(rev: str) -> list[str]:
    """The inputs (INPUTS) that differ in the working tree from `rev`, untracked files included."""
    diff = subprocess.run(["git", "diff", "--name-only", rev, "--", *INPUTS], capture_output=True, text=True)
    if diff.returncode != 0:
        sys.exit(f"repro-check: FAILED: cannot compare with {rev!r}: {diff.stderr.strip().splitlines()[-1:]}")
    new = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", *INPUTS], capture_output=True,
                         text=True).stdout
    return sorted({*diff.stdout.split(), *new.split()})


def stale_stages() -> list[str]:
    """The stages `dvc status` says are not up to date."""
    proc = subprocess.run([DVC, "status", "--json"], capture_output=True, text=True)
    try:
        return sorted(json.loads(proc.stdout or "{}"))
    except ValueError:
        sys.exit(f"repro-check: FAILED: `dvc status` did not answer: {(proc.stderr or proc.stdout)[-500:]}")


def machines(rev: str | None) -> dict:
    """Each model's machine record (timings-train.json): the working tree's, or a commit's."""
    out = {}
    for model in params.load().models:
        path = layout.timings(model, "train")
        text = git_show(rev, path) if rev else (Path(path).read_text() if Path(path).exists() else None)
        try:
            out[model] = json.loads(text).get("machine") if text else None
        except (ValueError, AttributeError):
            out[model] = None
    return out


def damaged_line(files: list[str]) -> str:
    return (f"repro-check: FAILED: {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}: not the bytes dvc.lock "
            f"records (a damaged file or DVC cache object); `make verify` names the damaged cache objects, "
            f"docs/dvc.md#a-corrupted-cache says how to rebuild them")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare-only", action="store_true")
    ap.add_argument("--rev", default="HEAD", help="the commit whose metrics are the reference")
    ap.add_argument("--allow-changes", action="store_true",
                    help="compare even where params.yaml, dvc.yaml, src/ or stages/ differ from --rev, or (with "
                         "--compare-only) stages are stale")
    ap.add_argument("--statistical", action="store_true", help="the tolerances of tolerances.yaml even where the "
                                                               "runs are exact (universal numerics on a CPU)")
    ap.add_argument("--other-settings", action="store_true",
                    help="statistical mode: compare even where epochs, model sizes or the IWAE's K and images differ "
                         "from the spread study's behind the tolerances")
    args = ap.parse_args()
    try:  # first: a broken tolerances file must not wait for a full reproduction
        rules = gate.load_rules()
    except gate.RuleError as err:
        sys.exit(f"repro-check: FAILED: {err}")
    edited = edited_inputs(args.rev)
    if edited and not args.allow_changes:
        sys.exit(f"repro-check: FAILED before comparing: {', '.join(edited[:6])}{' ...' if len(edited) > 6 else ''} "
                 f"differ from {args.rev}, whose run this would be compared with (a rerun would run the edit and "
                 f"blame the reproduction); commit or revert them, or pass --allow-changes")
    if args.compare_only:
        damaged = gate.verify_workspace(Path("dvc.lock").read_text())  # first: DVC's status trusts its cache
        if damaged:
            print(gate.table(damaged))
            sys.exit(damaged_line([r.metric for r in damaged]))
        stale = stale_stages()
        if stale and not args.allow_changes:
            sys.exit(f"repro-check: FAILED before comparing: `dvc status` lists stale stages ({', '.join(stale[:6])}"
                     f"{' ...' if len(stale) > 6 else ''}): their metrics are not what the code, params and data give; "
                     f"`dvc repro` first, or pass --allow-changes")
        if stale:
            print(f"note: stale stages compared as they are (--allow-changes): {', '.join(stale)}")
    if edited:
        print(f"note: compared with {args.rev} although these differ (--allow-changes): {', '.join(edited)}")
    timings = {}
    if not args.compare_only:
        _, timings["dvc repro --force (full)"] = step("reproduce", [DVC, "repro", "--force"])
        out, _ = step("status", [DVC, "status"], capture=True)
        if "up to date" not in out:
            sys.exit(f"repro-check: FAILED: `dvc status` after repro is not clean:\n{out}")
        out, timings["dvc repro (no-op)"] = step("second repro", [DVC, "repro"], capture=True)
        if "Running stage" in out:
            sys.exit(f"repro-check: FAILED: the second `dvc repro` ran stages:\n{out}")
    out, _ = step("metrics diff", [DVC, "metrics", "diff", "--all", "--json", args.rev], capture=True)
    diff = json.loads(out or "{}")
    new_machines, committed_machines = machines(None), machines(args.rev)
    exact = "" if args.statistical else gate.exact_mode(new_machines, committed_machines)
    broken = "" if args.statistical or exact else gate.broken_promise(new_machines, committed_machines)
    if broken:  # never a silent fall back to the tolerances
        sys.exit(f"repro-check: FAILED: the committed run promises the same bits on this machine, but {broken}; "
                 f"rerun it as committed, or pass --statistical to judge it by the tolerances on purpose")
    if exact:
        print(f"exact mode: {exact}")
        rows = gate.compare_exact(diff, rules)
        rows += gate.compare_outputs(git_show(args.rev, "dvc.lock"), Path("dvc.lock").read_text())
    else:
        study = gate.study_default_run()
        other = gate.other_settings(diff, study) if study else []
        if other and not args.other_settings:
            sys.exit(f"repro-check: FAILED before comparing: the tolerances were measured by the spread study at other "
                     f"settings than this run's ({'; '.join(other[:6])}{' ...' if len(other) > 6 else ''}), so their "
                     f"verdict does not carry over; judge a run at the study's settings, or pass --other-settings to "
                     f"compare anyway")
        if other:
            print(f"note: judged by tolerances measured at other settings (--other-settings): {'; '.join(other)}")
        print("statistical mode: the tolerances of tolerances.yaml (the runs do not both promise bits: universal "
              "numerics on a CPU)")
        rows = gate.compare(diff, rules)
    if not args.compare_only:  # the files themselves, in either mode (--compare-only checked them first)
        rows += gate.verify_workspace(Path("dvc.lock").read_text())
    print(gate.table(rows))
    for name, seconds in timings.items():
        print(f"{name}: {seconds:.1f} s")
    if not rows:
        sys.exit("repro-check: FAILED: no metrics to compare")
    drift = gate.failures(rows)
    shown = [r for r in rows if not r.gated]
    if shown:
        print(f"{len(shown)} metric(s) shown but not gated (tolerances.yaml: too noisy to gate, or not yet "
              f"measured by the spread study); each still fails beyond its sanity bound")
    if drift:
        named = "; ".join(f"{r.metric}: {r.problem or ('differs' if exact else 'beyond ' + r.tolerance)}"
                          for r in drift[:3]) + (f"; and {len(drift) - 3} more" if len(drift) > 3 else "")
        damaged = [r.metric for r in drift if r.metric.endswith("(workspace bytes)")]
        if damaged:
            sys.exit(damaged_line(damaged))
        if exact:
            sys.exit(f"repro-check: FAILED: {len(drift)} metric(s) or output(s) differ from the committed run, which "
                     f"a bit-promising rerun must equal (the DRIFT rows above): {named}")
        sys.exit(f"repro-check: FAILED: {len(drift)} metric(s) drifted beyond tolerance or are not usable numbers "
                 f"(the DRIFT and FAIL rows above; drift/sigma is the drift in units of the measured spread of a "
                 f"difference of two runs): {named}")
    if exact:
        print(f"repro-check: OK (exact: {len(rows)} metrics and outputs equal to the committed run)")
    else:
        print(f"repro-check: OK ({len(rows) - len(shown)} gated metrics within tolerance)")


if __name__ == "__main__":
    main()
