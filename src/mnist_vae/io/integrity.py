"""Outputs verified, not trusted: each file's bytes against the md5 that dvc.lock records for it.

DVC trusts its cache: a cache object whose bytes were damaged after it was stored is checked out
as it is, `dvc status` reads its state database (and may say the workspace is up to date), and a stage
that writes the same output again keeps the damaged object (its name, the md5, is already there).
So the gate hashes the files it judges, a stage hashes a checkpoint it loads, and
tools/verify_outputs.py (make verify) finds damaged cache objects and says how to rebuild them
(docs/dvc.md#a-corrupted-cache).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from . import yamlfile
from .errors import DataError

RECOVERY = "docs/dvc.md#a-corrupted-cache"


def file_md5(path: str | Path, data: bytes | None = None) -> str:
    if data is not None:
        return hashlib.md5(data).hexdigest()
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: str | Path) -> list[dict[str, str]]:
    """DVC's manifest of a folder: each file's md5 and path inside it, sorted by path."""
    folder = Path(folder)
    return sorted(({"md5": file_md5(f), "relpath": f.relative_to(folder).as_posix()}
                   for f in folder.rglob("*") if f.is_file()), key=lambda e: e["relpath"])


def workspace_md5(path: str | Path) -> str:
    """The md5 DVC records for a file, or for a folder ``<md5 of its manifest as JSON>.dir``
    (dvc_data's Tree.digest; tests/io/test_integrity.py checks it against DVC's own)."""
    path = Path(path)
    if not path.is_dir():
        return file_md5(path)
    return file_md5(path, json.dumps(manifest(path), sort_keys=True).encode()) + ".dir"


def recorded_outputs(lock_text: str | None) -> dict[str, tuple[str, str]]:
    """{output path: (stage, md5)} of every stage output a dvc.lock records."""
    try:
        doc = yamlfile.loads(lock_text or "") or {}
    except yaml.YAMLError:
        return {}
    return {entry["path"]: (stage, entry.get("md5", ""))
            for stage, body in (doc.get("stages") or {}).items() if isinstance(body, dict)
            for entry in body.get("outs") or [] if isinstance(entry, dict) and "path" in entry}


def _lock_text(root: Path) -> str | None:
    lock = root / "dvc.lock"
    return lock.read_text() if lock.exists() else None


def check_recorded(path: str | Path, data: bytes) -> None:
    """Stop, in one line naming the file and the way out, when `data` (the bytes of `path`) is not
    what the repository's dvc.lock records for it. A file that dvc.lock does not record passes; so
    does one that a stage run by hand wrote from the same inputs (the same bytes)."""
    recorded = recorded_outputs(_lock_text(Path("."))).get(Path(path).as_posix())
    if not recorded or not recorded[1]:
        return
    stage, md5 = recorded
    have = file_md5(path, data)
    if have != md5:
        raise DataError(f"{path}: md5 {have} is not the {md5} that dvc.lock records for {stage}'s output: a damaged "
                        f"file or DVC cache object, or one made from other inputs than dvc.lock's; `make verify` "
                        f"finds damaged cache objects, then rebuild with `dvc repro -f -s {stage}` ({RECOVERY})")


def bad_outputs(lock_text: str | None, root: str | Path = ".") -> dict[str, str]:
    """{path: why} of every output in dvc.lock that is in the workspace under `root` with other
    bytes than recorded."""
    root = Path(root)
    bad = {}
    for path, (stage, md5) in sorted(recorded_outputs(lock_text).items()):
        target = root / path
        if not md5 or not target.exists():
            continue
        have = workspace_md5(target)
        if have != md5:
            bad[path] = f"md5 {have} in the workspace, {md5} in dvc.lock ({stage})"
    return bad


def cache_dir(root: str | Path = ".") -> Path:
    """DVC's cache folder of the repository at `root` (`dvc cache dir`, default .dvc/cache)."""
    import subprocess

    root = Path(root)
    try:
        proc = subprocess.run(["dvc", "cache", "dir"], cwd=root, capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 and proc.stdout.strip():
            return Path(proc.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return root / ".dvc" / "cache"


def cache_object(cache: Path, md5: str) -> Path:
    return cache / "files" / "md5" / md5[:2] / md5[2:]


def bad_cache_objects(lock_text: str | None, cache: Path) -> dict[Path, str]:
    """{cache object: the output it stores} for every object that dvc.lock's outputs name (a
    folder's files through its manifest) whose bytes no longer have its name's md5."""
    bad = {}
    for path, (stage, md5) in sorted(recorded_outputs(lock_text).items()):
        if not md5:
            continue
        obj = cache_object(cache, md5)
        if not obj.exists():
            continue
        if md5.endswith(".dir"):
            try:
                entries = json.loads(obj.read_text())
            except (OSError, ValueError):
                bad[obj] = f"{path}'s folder manifest ({stage})"
                continue
            if file_md5(obj, json.dumps(entries, sort_keys=True).encode()) + ".dir" != md5:
                bad[obj] = f"{path}'s folder manifest ({stage})"
            for entry in entries:
                member = cache_object(cache, entry["md5"])
                if member.exists() and file_md5(member) != entry["md5"]:
                    bad[member] = f"{path}/{entry['relpath']} ({stage})"
        elif file_md5(obj) != md5:
            bad[obj] = f"{path} ({stage})"
    return bad
