"""Experiments side by side in a terminal: the params that differ and each model's headline
metrics (test loss, IWAE bound) where they differ, under short names (mnist_vae.study.compare).

    python tools/compare.py            # workspace, HEAD and its experiments (`make compare`)
    python tools/compare.py -A         # every commit's experiments (dvc exp show's -A)

Anything else `dvc exp show` takes (`-n 3`, `--rev <commit>`) passes through to it.
"""

import argparse
import json
import shutil
import subprocess
import sys

from mnist_vae.study import compare
from mnist_vae.study.workspace import dvc_exe, tool_env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=shutil.get_terminal_size((80, 24)).columns,
                    help="the widest table before it turns over (default: the terminal's width)")
    args, passthrough = ap.parse_known_args()
    proc = subprocess.run([dvc_exe(), "exp", "show", "--json", *passthrough], capture_output=True, text=True,
                          env=tool_env())
    if proc.returncode != 0:
        sys.exit(f"compare: `dvc exp show --json {' '.join(passthrough)}` failed: "
                 f"{(proc.stderr.strip().splitlines() or ['no message'])[-1]}")
    print(compare.table(compare.experiments(json.loads(proc.stdout)), args.width), end="")


if __name__ == "__main__":
    main()
