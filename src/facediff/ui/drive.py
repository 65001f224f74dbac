"""Driving the web UI from a Playwright page: what the browser tests and ``scripts/ui_screenshots.py`` share.

Only the page object's methods are used, so this module needs no Playwright import (the UI does not depend on it).
"""
from __future__ import annotations

from pathlib import Path


def upload_regions(page, png: str | Path, expect: str, attempts: int = 4, timeout_s: float = 20) -> str:
    """Upload ``png`` onto the Compose canvas and wait until the readout under it (computed by the server from
    the canvas it holds) starts with ``expect`` (e.g. "2 regions"); returns the readout.

    Gradio's image editor now and then sends its value before the upload is drawn (an empty canvas) and then
    nothing more; a user's next stroke sends it again, so each failed wait draws one short stroke in the first
    brush colour (red) near the middle of the canvas, which adds no region."""
    page.wait_for_selector("#fd-c-canvas canvas", state="visible", timeout=60000)  # its drawing surface
    page.set_input_files("#fd-c-canvas input[type=file]", str(png))
    for attempt in range(attempts):
        try:
            page.wait_for_function(f"document.querySelector('#fd-c-painted').innerText.startsWith({expect!r})",
                                   timeout=timeout_s * 1000)
            break
        except Exception:  # noqa: BLE001 — Playwright's TimeoutError (not imported here): stroke, wait again
            box = page.locator("#fd-c-canvas canvas").first.bounding_box()
            x, y = box["x"] + box["width"] * (0.45 + 0.02 * attempt), box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 8, y, steps=4)
            page.mouse.up()
    return page.inner_text("#fd-c-painted")
