"""The README and docs/: short README, links that resolve, no first-person or changelog prose, and
every number they quote checked against the committed file it comes from."""

import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from mnist_vae import gate, spread

DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", *DOCS]


def prose(path: Path) -> str:
    """A page without its code blocks, inline code and link targets."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    text = re.sub(r"`[^`]*`", "", text)
    return re.sub(r"\]\([^)]*\)|<img[^>]*>", "]", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'<img[^>]*src="([^"]+)"', text)


def test_the_readme_is_short_and_the_manual_has_pages():
    assert len((REPO / "README.md").read_text().splitlines()) <= 180
    assert {p.name for p in DOCS} >= {"pipeline.md", "reproducibility.md", "dvc.md", "performance.md", "gifs.md",
                                      "data.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in links(page):
        if re.match(r"^[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        assert path.exists() and path.is_relative_to(REPO), (page.name, target)
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)
            assert anchor in {slug(h) for h in headings}, (page.name, target)


def test_the_readme_links_every_docs_page():
    linked = {Path(t.partition("#")[0]).name for t in links(REPO / "README.md") if t.startswith("docs/")}
    assert {p.name for p in DOCS} <= linked


FIRST_PERSON = re.compile(r"\b(I|me|my|[Ww]e|[Oo]ur|[Oo]urs|[Uu]s)\b")
HISTORY = re.compile(r"\b(now (writes|takes|runs)|used to|no longer|previously|was \d|before:|after:)|\b[0-9a-f]{7,40}\b")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_first_person_and_no_changelog_prose(page):
    text = prose(page)
    assert FIRST_PERSON.findall(text) == []
    assert HISTORY.findall(text) == []


def test_the_patterns_catch_what_they_are_for():
    assert FIRST_PERSON.search("the page shows ours") and FIRST_PERSON.search("I measured")
    assert not FIRST_PERSON.search("the status of user stages")
    assert HISTORY.search("it now writes each GIF") and HISTORY.search("commit c157c61")


def table(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("|"))


@pytest.mark.parametrize("page, source", [
    ("README.md", "reports/spread/results.md"),
    ("docs/reproducibility.md", "reports/spread/power.md"),
    ("docs/performance.md", "reports/benchmark.md"),
    ("docs/performance.md", "reports/benchmark-gpu.md"),
])
def test_tables_are_the_committed_reports(page, source):
    assert table(REPO / source) in (REPO / page).read_text()


def test_numbers_in_the_prose_are_the_files():
    tolerances = yaml.safe_load((REPO / "tolerances.yaml").read_text())
    rules = {r["match"]: r for r in tolerances["rules"]}
    study = tolerances["study"]
    text = (REPO / "docs/reproducibility.md").read_text().replace("\n", " ")
    assert f"(k = {study['k']:g} with {study['n_seeds']} seeds)" in text
    assert f"whose tolerance is {rules['reports/models/vae20d/train.json:test_loss']['abs']:g} nats" in text
    assert "beyond 1.5 k sigma_diff" in text and spread.LOO_FACTOR == 1.5
    assert f"exceed {study['max_useful_rel']:.0%} of its value" in text.replace(" %", "%")
    assert f"{gate.SANITY_SIGMA:g} sigma_diff where a" in text and f"{gate.SANITY_REL:.0%} of the committed" in text.replace(" %", "%")
    assert f"runs the default pipeline under {study['n_seeds']} seeds" in text
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    gifs_text = (REPO / "docs/gifs.md").read_text().replace("\n", " ")
    assert f"`gifs.max_mb` ({params['gifs']['max_mb']:g} MB by default)" in gifs_text
    assert f"`gifs.min_psnr_db` ({params['gifs']['min_psnr_db']:g} dB by default" in gifs_text
    readme = (REPO / "README.md").read_text().replace("\n", " ")
    assert f"over {study['n_seeds']} seeds" in readme
