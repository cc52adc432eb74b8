"""Scratch copies of the project for tests and benchmarks: the working tree's files (tracked
and untracked-but-not-ignored, as git lists them) in a fresh git repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path



def tool_env(**extra: str) -> dict[str, str]:
    """The environment for DVC and stage subprocesses: this interpreter's bin first on PATH,
    so dvc.yaml's `python` is the same Python (the project's venv)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.update(extra)
    return env


def dvc_exe() -> str:
    return str(Path(sys.executable).parent / "dvc")


def copy_worktree(source: Path, dest: Path, commit: bool = True) -> Path:
    """Copy the project's files (no data, no cache, no venv) into dest and make it a git repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=source,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if (source / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
    if commit:
        git(dest, "init", "-q")
        git(dest, "add", "-A")
        git(dest, "commit", "-qm", "scratch copy")
    return dest


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=scratch", "-c", "user.email=scratch@localhost", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout


def git_show(rev: str, path: str) -> str | None:
    """A file's text at a commit (of the repository in the working directory), None where the
    commit has no such file."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None
