"""make verify: are the workspace's outputs and DVC's cache what dvc.lock records?

DVC trusts its cache: a damaged cache object is checked out as it is and `dvc status` still says
everything is up to date. This hashes every output in the workspace and every cache object that
dvc.lock names (a folder's files through its manifest), lists what differs, and says how to
rebuild it (docs/dvc.md#a-corrupted-cache); --remove deletes the damaged cache objects, so that
the rebuild stores fresh ones (DVC keeps an object whose name is already there).
Exit 0 when everything matches, 1 otherwise.
"""

import argparse
import sys
from pathlib import Path

from mnist_vae.io import integrity


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remove", action="store_true", help="delete the damaged cache objects")
    args = ap.parse_args()
    lock = Path("dvc.lock")
    if not lock.exists():
        sys.exit("verify: no dvc.lock here: run it in the repository's root")
    text = lock.read_text()
    cache = integrity.cache_dir()
    objects = integrity.bad_cache_objects(text, cache)
    files = integrity.bad_outputs(text)
    for obj, what in objects.items():
        print(f"damaged cache object {obj}: holds {what}")
    for path, why in files.items():
        print(f"damaged output {path}: {why}")
    if not objects and not files:
        print(f"verify: OK: every output in the workspace and every cache object in {cache} that dvc.lock names "
              f"has its recorded md5")
        return 0
    stages = sorted({integrity.recorded_outputs(text)[p][0] for p in files} |
                    {what.rsplit("(", 1)[1].rstrip(")") for what in objects.values()})
    if args.remove:
        for obj in objects:
            obj.chmod(0o644)
            obj.unlink()
        print(f"removed {len(objects)} damaged cache object(s)")
    elif objects:
        print(f"remove them: python tools/verify_outputs.py --remove (or rm -f {' '.join(map(str, objects))})")
    print(f"then rebuild: {' && '.join(f'dvc repro -f -s {s}' for s in stages)} (or `dvc pull` from a remote set to "
          f"verify: dvc remote modify <name> verify true), then run this again ({integrity.RECOVERY})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
