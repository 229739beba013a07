"""Regenerate docs/html_view.png: ResNet-50 (tests/zoo.py export, random weights) pruned at 30 % with
``zigraph prune --html``, opened in headless Chromium with one group selected.

    python scripts/html_view_screenshot.py [--group 12] [--out docs/html_view.png]

Needs torch/torchvision (the export), playwright and a Chromium binary (``apt-get install chromium``;
``ZIGRAPH_CHROMIUM`` names another one).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", type=int, default=12, help="the group selected in the picture")
    ap.add_argument("--out", default=str(ROOT / "docs" / "html_view.png"))
    ap.add_argument("--zoo", default=os.environ.get("ZIGRAPH_ZOO_DIR", "/tmp/zoo"), help="export cache")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from tests.zoo import export
    from zigraph.cli import main as zigraph

    chromium = (
        os.environ.get("ZIGRAPH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not chromium:
        sys.exit("no Chromium found: apt-get install chromium, or set ZIGRAPH_CHROMIUM")
    Path(args.zoo).mkdir(parents=True, exist_ok=True)
    model = export("resnet50", Path(args.zoo), dynamo=False)
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "resnet50.html"
        code = zigraph(
            ["prune", str(model), "--sparsity", "0.3", "-o", f"{tmp}/small.onnx", "--html", str(page_path)]
        )
        if code != 0:
            sys.exit(f"zigraph prune failed ({code})")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(page_path.as_uri())
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            page.evaluate(f"zigraphView.selectGroupById({args.group})")
            page.screenshot(path=args.out)
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
