"""Remove what models no longer in params.yaml left behind (make prune).

After an entry under `models` is removed or renamed (or a model leaves `anomaly.models`), its
stages are gone from the pipeline, but dvc.lock keeps their entries and the workspace keeps their
outputs: models/<old>.safetensors, data/tracking/<old>.npz, data/evaluation/<old>.npz,
data/anomaly/<old>.npz, reports/images/<old>/ and the git-kept reports/models/<old>/. This
removes the outputs that dvc.lock lists for every stage dvc.yaml no longer has (DVC's own
`dvc remove` works on stages written out in dvc.yaml, not on the items of a foreach), the model's
two folders, and those dvc.lock entries. Then one `dvc repro` reruns the page, and `dvc status`
is clean.

    python tools/prune.py [--dry-run]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

from mnist_vae.io import artifacts, layout, pipeline, yamlfile


def stale_stages(lock: dict, live: set[str]) -> list[str]:
    """dvc.lock's stage entries that dvc.yaml (resolved against params.yaml) no longer has."""
    return [name for name in (lock.get("stages") or {}) if name not in live]


def stale_paths(lock: dict, stages: list[str], live_models: set[str]) -> list[Path]:
    """Every output of the stale stages, and the per-model folders of models no longer in params."""
    paths = {Path(out["path"]) for name in stages for out in lock["stages"][name].get("outs") or []}
    gone = {name.split("@", 1)[1] for name in stages if "@" in name} - live_models
    for model in gone:
        paths |= {Path(layout.model_dir(model)), Path(layout.images_dir(model))}
    return sorted(p for p in paths if p.exists() or p.is_symlink())


def forget(path: Path) -> None:
    """Drop a removed output's line from the .gitignore DVC keeps beside it (and the file, once
    empty), as `dvc remove` does."""
    ignore = path.parent / ".gitignore"
    if not ignore.exists():
        return
    lines = [line for line in ignore.read_text().splitlines() if line.strip() != f"/{path.name}"]
    if any(line.strip() for line in lines):
        artifacts.write_bytes(ignore, ("\n".join(lines) + "\n").encode())
    else:
        ignore.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    args = ap.parse_args()
    lock_path = Path("dvc.lock")
    if not lock_path.exists():
        print("prune: no dvc.lock, nothing to prune")
        return
    lock = yamlfile.loads(lock_path.read_text()) or {}
    live = set(pipeline.stages())
    models = set((yamlfile.loads(Path("params.yaml").read_text()) or {}).get("models") or {})
    stages = stale_stages(lock, live)
    paths = stale_paths(lock, stages, models)
    if not stages:
        print("prune: every stage in dvc.lock is in the pipeline; nothing to prune")
        return
    for path in paths:
        if any(parent in paths for parent in path.parents):
            continue  # inside a folder that goes as a whole
        print(f"{'would remove' if args.dry_run else 'removing'} {path}")
        if not args.dry_run:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            forget(path)
    print(f"{'would drop' if args.dry_run else 'dropping'} from dvc.lock: {', '.join(stages)}")
    if not args.dry_run:
        for name in stages:
            del lock["stages"][name]
        artifacts.write_bytes(lock_path, yaml.safe_dump(lock, sort_keys=False, width=120).encode())
        print("prune: done; `dvc repro` now reruns the page")


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as err:
        sys.exit(f"prune: {err}")
