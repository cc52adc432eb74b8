"""The pages a person opens, in a real browser with the network cut: the report stage's
reports/index.html and DVC's `dvc plots show` / `dvc plots diff` pages.

Headless Chromium is Debian's `chromium` (CI installs it), driven by playwright through its
executable path; playwright never downloads a browser here. Without Chromium these tests skip,
except where REQUIRE_BROWSER=1 (CI sets it), where they fail. Screenshots of every page go to
test-artifacts/ (or $TEST_ARTIFACTS) to look at.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import REPO, dvc, sh

from mnist_vae.io import layout

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO / "test-artifacts"))


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but no Chromium: install Debian's chromium package")
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        # --no-sandbox: CI and containers run as root, where Chromium's sandbox refuses to start
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class OfflinePage:
    """A page whose every request other than file: and data: URLs is refused and recorded."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1300, "height": 900})
        self.network: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _route(self, route):
        url = route.request.url
        if url.startswith(("file:", "data:")):
            route.continue_()
        else:
            self.network.append(url)
            route.abort()

    def open(self, path: Path):
        self.page.goto(path.resolve().as_uri(), wait_until="load")
        return self.page

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        out = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(out), full_page=True)
        return out

    def close(self):
        self.context.close()


@pytest.fixture
def offline(browser):
    page = OfflinePage(browser)
    yield page
    page.close()


IMAGES = """() => Array.from(document.images).map(img => ({src: img.getAttribute('src'),
    loaded: img.complete && img.naturalWidth > 0, width: img.naturalWidth}))"""

# per plot: the SVG marks Vega drew (paths of the plot's own marks, not of its axes), after every
# vegaEmbed promise settled (window.plotsDrawn, kept by tools/plots_template.py's page)
MARKS = """async () => { await Promise.allSettled(window.plotsDrawn || []);
    return Array.from(document.querySelectorAll('.vega-embed')).map(el =>
        Array.from(el.querySelectorAll('g.role-mark path')).filter(p => (p.getAttribute('d') || '').length > 10).length); }"""


def test_report_page_loads_every_image_offline(repo, offline):
    page = offline.open(repo / "reports/index.html")
    images = page.evaluate(IMAGES)
    offline.screenshot("report-index")
    # report plots, 2 models x 4 figures, GIFs, 1 anomaly study x 2, the committed latent-size sweep's figure
    assert len(images) == 2 + 2 * 4 + 6 + 1 * 2 + 1
    assert "studies/latent-size/figure.png" in [i["src"] for i in images]
    assert [i["src"] for i in images if not i["loaded"]] == []
    assert offline.network == [] and offline.errors == []
    gifs = [i["src"] for i in images if i["src"].endswith(".gif")]
    assert len(gifs) == 6  # 2 reconstruction GIFs a model, 2 manifold GIFs of the 2-d one
    text = page.inner_text("#reference-table")
    for number in ("87.65", "140.24", "27.57", "4.38"):
        assert number in text
    # ours beside them: the 20-d and 2-d test losses of this run
    for model in ("vae20d", "vae2d"):
        ours = json.loads((repo / layout.train_metrics(model)).read_text())["test_loss"]
        assert f"{ours:.2f}" in text


def plots_page(repo: Path, out: Path, *args: str) -> Path:
    dvc("plots", *args, "-o", str(out), cwd=repo)
    return out / "index.html"


@pytest.mark.parametrize("command", [("show",), ("diff", "HEAD")])
def test_dvc_plots_draw_offline(repo, offline, tmp_path, command):
    html = plots_page(repo, tmp_path / "plots", *command)
    text = html.read_text()
    assert "<script src=" not in text and "cdn.jsdelivr" not in text
    page = offline.open(html)
    marks = page.evaluate(MARKS)
    offline.screenshot(f"dvc-plots-{command[0]}")
    # a learning curve per model (2), a ROC curve per score and outlier set of each anomaly study (1 x 4)
    assert len(marks) == 2 + 1 * 4 and all(n > 0 for n in marks), marks
    assert offline.network == [] and offline.errors == []


def test_dvc_default_page_draws_nothing_offline(repo, offline, tmp_path):
    """The control: DVC's own template loads Vega from a CDN, so with the network cut no plot draws.
    (What the offline template fixes, and proof that the mark count above can fail.)"""
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML)
    html = plots_page(repo, tmp_path / "plots", "show", "--html-template", str(default))
    page = offline.open(html)
    marks = page.evaluate(MARKS)
    assert any("cdn.jsdelivr.net" in url for url in offline.network)
    assert marks == [] or all(n == 0 for n in marks)


def test_plots_template_is_generated_from_the_pinned_package(repo):
    config = (repo / ".dvc/config").read_text()
    assert "html_template = plots-offline.html" in config
    template = (repo / ".dvc/plots-offline.html").read_text()
    assert "{plot_divs}" in template and "{scripts}" not in template
    assert "Vega-Lite 5.21" in template and "vl-convert-python 1.7.0" in template
    pinned = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("vl-convert-python==")]
    assert pinned == ["vl-convert-python==1.7.0"]
    ignored = sh(["git", "status", "--short", "--ignored"], repo).stdout
    assert "!! .dvc/plots-offline.html" in ignored  # generated by make setup, never committed
