"""Screenshots of each tab of `facediff ui` with a real generation in it, for the README (docs/ui/*.png).

    python scripts/ui_screenshots.py [--models-dir runs] [--out docs/ui]

Starts the app on a free localhost port with the bundled models, drives Debian's Chromium with Playwright
(headless) through Generate, Compose, Sketch and Evaluate, and saves one PNG per tab.
"""
from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _number(page, elem: str, value) -> None:
    box = page.locator(f"#{elem} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def _wait(page, elem: str, prefix: str, seconds: float = 300) -> None:
    page.wait_for_function(f"document.querySelector('#{elem}').innerText.startsWith('{prefix}')",
                           timeout=seconds * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=None, help="also offer the models (and results) under this folder")
    ap.add_argument("--out", default="docs/ui", help="where the PNGs go")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from facediff.ui.app import launch
    from facediff.ui.drive import upload_regions
    from facediff.ui.tabs import REGION_COLOURS

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    demo, url = launch(models_dir=a.models_dir, port=_port(), out_dir=tempfile.mkdtemp(), block=False, quiet=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1050})
        page.goto(url)
        page.wait_for_selector("#fd-level-0", state="visible", timeout=120000)
        for elem, value in (("fd-level-3", 5), ("fd-level-1", 5), ("fd-n", 8), ("fd-steps", 25)):
            _number(page, elem, value)
        page.click("#fd-generate")
        _wait(page, "fd-status", "done")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "generate.png"))
        page.get_by_role("tab", name="Compose").click()
        canvas = np.zeros((256, 768, 4), np.uint8)
        for k, (x0, x1) in enumerate(((40, 220), (300, 480), (560, 740))):
            canvas[40:230, x0:x1] = (*REGION_COLOURS[k][1], 255)
        regions = Path(tempfile.mkdtemp()) / "regions.png"
        Image.fromarray(canvas, "RGBA").save(regions)
        page.wait_for_selector("#fd-c-canvas canvas", state="visible", timeout=60000)  # the editor is drawn
        page.wait_for_timeout(2000)
        try:
            upload_regions(page, regions, "3 regions")  # uploads, waits for the readout (a stroke if needed)
            page.click("#fd-c-go")
            _wait(page, "fd-c-status", "done", 240)
        finally:
            page.screenshot(path=str(out / "compose.png"), full_page=True)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "compose.png"), full_page=True)
        page.get_by_role("tab", name="Sketch").click()
        from facediff.data.synth import write_synth

        # a 64 px face whose extracted sketch has its outline (the extractor works at the models' resolution)
        photo_dir = write_synth(Path(tempfile.mkdtemp()) / "photo", n=1, size=64, style="human", seed=6)
        photo = Path(tempfile.mkdtemp()) / "photo.png"
        Image.fromarray(np.load(photo_dir / "images.npy")[0]).save(photo)
        page.set_input_files("#fd-s-photo input[type=file]", str(photo))
        page.wait_for_timeout(4000)
        page.click("#fd-s-go")  # the bundled sketch model, four faces from the extracted sketch
        _wait(page, "fd-s-status", "done", 240)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "sketch.png"))
        page.get_by_role("tab", name="Evaluate").click()
        if a.models_dir:
            page.click("#fd-e-folder input")  # the keyboard picks an option (a mouse click on it did not)
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")
            page.wait_for_timeout(4000)
        page.screenshot(path=str(out / "evaluate.png"), full_page=True)
        browser.close()
    demo.close()
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.png')))} to {out}")


if __name__ == "__main__":
    main()
