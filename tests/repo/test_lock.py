"""requirements.txt is one lock for every supported machine: it resolves, through the package
index, for Linux x86-64 and aarch64 and macOS arm64 on the supported Pythons, and it is what
`make lock` writes from requirements.in. uv evaluates the lock's environment markers for the
target platform (pip's --platform would evaluate them for this machine)."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

UV = str(Path(sys.executable).parent / "uv")
# (uv's platform, Python): the README's machines, the spread workflow's runners among them
TARGETS = [("x86_64-unknown-linux-gnu", "3.11"), ("x86_64-unknown-linux-gnu", "3.12"),
           ("x86_64-unknown-linux-gnu", "3.13"), ("aarch64-unknown-linux-gnu", "3.11"),
           ("aarch64-apple-darwin", "3.11"), ("aarch64-apple-darwin", "3.13")]


def pins(text: str) -> dict[str, str]:
    """name -> version of every line of a lock (markers dropped), names normalized as pip does."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^ ;]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def resolve(lock: Path, platform: str, python: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MACOSX_DEPLOYMENT_TARGET="14.0")  # torch's macOS wheels need macOS 14
    return subprocess.run([UV, "pip", "install", "--dry-run", "--python-platform", platform, "--python-version",
                           python, "--target", str(tmp_path / f"{platform}-{python}"), "-r", str(lock)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("platform, python", TARGETS)
def test_the_lock_resolves_for_each_supported_machine(platform, python, tmp_path):
    proc = resolve(REPO / "requirements.txt", platform, python, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chosen = pins("\n".join(line.strip(" +") for line in proc.stderr.splitlines() if line.startswith(" + ")))
    locked = pins((REPO / "requirements.txt").read_text())
    assert chosen and all(locked.get(name) == version for name, version in chosen.items()), \
        {n: (v, locked.get(n)) for n, v in chosen.items() if locked.get(n) != v}  # nothing from outside the lock
    assert ("torch" in chosen) and (("nvidia-cublas" in chosen) == platform.endswith("linux-gnu"))


def test_a_lock_that_pins_a_linux_only_wheel_everywhere_fails_on_macos(tmp_path):
    text = (REPO / "requirements.txt").read_text()
    line = next(li for li in text.splitlines() if li.startswith("cuda-bindings=="))
    bad = tmp_path / "requirements.txt"
    bad.write_text(text.replace(line, line.split(" ;")[0]))
    proc = resolve(bad, "aarch64-apple-darwin", "3.13", tmp_path)
    assert proc.returncode != 0 and "cuda-bindings" in proc.stderr


def test_the_lock_is_what_make_lock_writes(tmp_path):
    """Regenerated from requirements.in with the committed pins as preferences: byte for byte
    the committed file, so nobody edited it by hand and requirements.in has not moved on."""
    out = tmp_path / "requirements.txt"
    shutil.copy(REPO / "requirements.txt", out)
    make = (REPO / "Makefile").read_text()
    command = re.search(r"^lock:.*\n\t(.*)$", make, flags=re.M).group(1)
    argv = [{"$(BIN)/uv": UV, "$(LOCK)": str(out)}.get(word, word) for word in shlex.split(command)]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text() == (REPO / "requirements.txt").read_text(), "requirements.txt is stale: run `make lock`"
