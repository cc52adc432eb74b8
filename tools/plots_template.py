"""Write DVC's HTML template for `dvc plots show` / `dvc plots diff` with Vega, Vega-Lite and
Vega-Embed inline, so the page draws with no network (DVC's default page loads them from a CDN).

The JavaScript comes from the pinned vl-convert-python (its `javascript_bundle()`), never from a
copy kept in the repository. `make setup` runs this; .dvc/config points `plots.html_template` at
the output (a path relative to .dvc/), which git ignores.

    python tools/plots_template.py [--out .dvc/plots-offline.html] [--vega-lite 5.21]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# DVC's plot specs are Vega-Lite v5 (their $schema); the newest v5 that vl-convert bundles.
VEGA_LITE = "5.21"
# dvc_render's HTML fills these by plain string replacement; the bundle must not contain them.
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega __VEGA__, Vega-Lite __VEGA_LITE__ and Vega-Embed, inline from vl-convert-python __VLC__
         (tools/plots_template.py): this page loads nothing from the network. -->
    <script>
__BUNDLE__
    </script>
    <script>
        // Draw SVG (crisp, and its marks can be counted by tests/e2e/test_browser.py); keep each
        // plot's promise in window.plotsDrawn so a test can wait for every plot to finish.
        window.plotsDrawn = [];
        const vegaEmbedInline = window.vegaEmbed;
        window.vegaEmbed = (el, spec, opts) => {
            const drawn = vegaEmbedInline(el, spec, Object.assign({renderer: "svg"}, opts));
            window.plotsDrawn.push(drawn);
            return drawn;
        };
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build(bundle: str, versions: dict[str, str]) -> str:
    """The template around `bundle` (JavaScript that sets window.vegaEmbed, vega, vegaLite).
    It has no {scripts} placeholder, so DVC's CDN <script> tags are never inserted."""
    for text in PLACEHOLDERS:
        if text in bundle:
            raise ValueError(f"the JavaScript bundle contains {text!r}, which DVC would replace")
    bundle = bundle.replace("</script", "<\\/script")  # inline script: the HTML parser must not end it early
    return (PAGE.replace("__VEGA__", versions["vega"]).replace("__VEGA_LITE__", versions["vega_lite"])
            .replace("__VLC__", versions["vl_convert"]).replace("__BUNDLE__", bundle))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".dvc/plots-offline.html", help="where to write the template")
    ap.add_argument("--vega-lite", default=VEGA_LITE, help="the Vega-Lite version to bundle")
    args = ap.parse_args()
    import vl_convert
    from importlib.metadata import version

    bundle = vl_convert.javascript_bundle(vl_version=args.vega_lite)
    html = build(bundle, {"vega": vl_convert.get_vega_version(), "vega_lite": args.vega_lite,
                          "vl_convert": version("vl-convert-python")})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)
    print(f"{out}: {len(html) / 1e6:.2f} MB, Vega {vl_convert.get_vega_version()}, Vega-Lite {args.vega_lite}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
