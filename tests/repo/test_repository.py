"""The repository stands alone: a user's clone has nothing beside it, so no file it ships or
tests reads outside it (CI's own script may point its mirror at the folder CI provides)."""

import re
import subprocess

from conftest import REPO


def outside(folder: str) -> re.Pattern:
    """A path into a sibling folder of the clone: a relative '../<folder>' or a pathlib parent."""
    name = re.escape(folder)
    return re.compile(rf"\.\./{name}\b|parents?(\[\d\])?\s*/\s*[\"']{name}[\"']")


OUTSIDE = outside("shared")  # the folder beside this project's own checkout, and CI's
ALLOWED = {".ci/run"}  # CI's script: the mirror beside CI's clone, exported as MNIST_MIRROR


def tracked_text_files():
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, names):
        path = REPO / name
        if path.is_file() and path.stat().st_size < 2_000_000:
            try:
                yield name, path.read_text()
            except UnicodeDecodeError:
                continue


def test_nothing_in_the_repository_points_outside_it():
    offenders = [name for name, text in tracked_text_files() if name not in ALLOWED and OUTSIDE.search(text)]
    assert offenders == []


def test_the_outside_pattern_catches_the_forms_it_is_for():
    """The same pattern for another sibling name, so that this file names no real one."""
    pattern = outside("sibling")
    for text in ('"../sibling/reference/x.md"', 'REPO.parent / "sibling" / "mnist"', "parents[1] / 'sibling'"):
        assert pattern.search(text), text
    assert not pattern.search("a sibling helper") and not pattern.search("../siblings/x")


def test_make_help_lists_every_target_with_a_line():
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, flags=re.M).group(1).split()
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[1]: line.split(None, 2)[2] for line in out.splitlines() if line.strip().startswith("make ")}
    assert sorted(listed) == sorted(phony)
    assert all(len(text.split()) >= 3 for text in listed.values()), listed
    assert out.splitlines()[0].split()[:2] == ["make", "help"]
