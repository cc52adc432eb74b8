"""The README and docs/: short README, links that resolve, no first-person or changelog prose, and
every number they quote checked against the committed file it comes from."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, load_script

from mnist_vae.study import gate, spread

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


def tables(path: Path) -> list[str]:
    """Each markdown table of a file, as its lines joined."""
    blocks, current = [], []
    for line in path.read_text().splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks


@pytest.mark.parametrize("page, source, which", [
    ("README.md", "reports/spread/results.md", None),
    ("docs/reproducibility.md", "reports/spread/power.md", None),
    ("docs/studies.md", "reports/studies/latent-size/summary.md", None),
    ("docs/performance.md", "reports/benchmark.md", None),
    ("docs/performance.md", "reports/benchmark-gpu.md", None),
    ("docs/performance.md", "reports/benchmark-numerics.md", None),
])
def test_tables_are_the_committed_reports(page, source, which):
    found = tables(REPO / source)
    wanted = found if which is None else [found[which]]
    assert wanted and all(t in (REPO / page).read_text() for t in wanted)


def test_numbers_in_the_prose_are_the_files():
    tolerances = yaml.safe_load((REPO / "tolerances.yaml").read_text())
    rules = {r["match"]: r for r in tolerances["rules"]}
    study = tolerances["study"]
    study["n_seeds"] = study["n_runs"] - 1  # the default seed is one of the runs
    text = (REPO / "docs/reproducibility.md").read_text().replace("\n", " ")
    assert f"(k = {study['k']:g} with {study['n_runs']} runs)" in text
    assert f"whose tolerance is {rules['reports/models/vae20d/train.json:test_loss']['abs']:g} nats" in text
    assert f"1 - (1 - {study['family_false_alarm']:g})^(1 / m)" in text
    assert f"wider than {study['max_useful_rel']:.0%} of its value" in text.replace(" %", "%")
    assert f"{gate.SANITY_SIGMA:g} sigma_diff where a" in text and f"{gate.SANITY_REL:.0%} of the committed" in text.replace(" %", "%")
    assert f"runs the default pipeline under {study['n_seeds']} seeds" in text
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    gifs_text = (REPO / "docs/gifs.md").read_text().replace("\n", " ")
    assert f"`gifs.max_mb` ({params['gifs']['max_mb']:g} MB by default)" in gifs_text
    assert f"`gifs.min_psnr_db` ({params['gifs']['min_psnr_db']:g} dB by default" in gifs_text
    readme = (REPO / "README.md").read_text().replace("\n", " ")
    assert f"{study['n_seeds'] + 1} runs at the default params, {study['n_seeds']} seeds" in readme
    assert f"the default pipeline under {study['n_seeds']} seeds" in readme
    # the documented study is the one studies.yaml's spread entry runs: its seeds, a groups-of-98 product
    from mnist_vae.core.objective import _product_group
    from mnist_vae.study import engine

    entry = engine.load(REPO / "studies.yaml")["spread"]
    assert len(engine.seed_values("spread", entry)) == study["n_seeds"]
    assert _product_group(784) == 98 and "over groups of 98 pixels" in (REPO / "docs/performance.md").read_text()
    slurm = "`plan --names | wc -l`"
    n_planned = len(engine.plan("spread", entry))
    assert f"sbatch --array=0-{n_planned - 1} spread.sbatch   ({n_planned} experiments: {slurm})" in text


def code_blocks(text: str, language: str = "bash") -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_the_documented_study_commands_parse():
    """Every `tools/study.py ...` and `tools/spread.py ...` line in the README's and docs' code
    blocks is a valid command line of its tool, and the Slurm example is valid bash."""
    lines = [line for page in PAGES for block in code_blocks(page.read_text()) for line in block.splitlines()
             if re.search(r"tools/(study|spread)\.py ", line) and not line.lstrip().startswith("#")]
    assert len([line for line in lines if "tools/study.py " in line]) >= 8
    for line in lines:
        tool = "tools/study.py" if "tools/study.py " in line else "tools/spread.py"
        command = line.split(f"{tool} ", 1)[1].split(")", 1)[0].rstrip("\\ ")
        args = load_script(tool).parser().parse_args(shlex.split(command, comments=True))
        assert (args.what == "run") == (getattr(args, "name", None) is not None), line
    slurm = [b for b in code_blocks((REPO / "docs/reproducibility.md").read_text()) if "#SBATCH" in b]
    assert slurm, "the Slurm example is gone"
    proc = subprocess.run(["bash", "-n"], input=slurm[0], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
