"""The web UI in a real browser: Debian's Chromium driven by Playwright (headless), against the app started on
a free localhost port with the bundled 32 px attribute model and a tiny run. Skipped, with the reason, when
Chromium or Playwright is missing (`.ci/run` installs Chromium, so CI runs them)."""
from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = os.environ.get("FACEDIFF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tiny_run, tmp_path_factory):
    from facediff.ui.app import launch
    from facediff.ui.limits import Limits

    models = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny_run, models / "tiny", ignore=shutil.ignore_patterns("state"))
    demo, url = launch(models_dir=str(models), port=_free_port(), out_dir=str(tmp_path_factory.mktemp("out")),
                       limits=Limits(max_steps=1000), block=False, quiet=True)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as e:  # noqa: BLE001 — the reason goes into the skip message
            pytest.skip(f"Chromium does not start here: {str(e).splitlines()[0]}")
        yield b
        b.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#fd-level-0", state="visible", timeout=60000)  # the model's controls are built
    return page


def _set_number(page, elem: str, value) -> None:
    box = page.locator(f"#{elem} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def _gallery_sources(page) -> list[str]:
    return page.eval_on_selector_all("#fd-gallery img", "els => els.map(e => e.src)")


def _generate(page, timeout: float = 60) -> str:
    page.click("#fd-generate")
    page.wait_for_function("document.querySelector('#fd-status').innerText.startsWith('done')",
                           timeout=timeout * 1000)
    return page.inner_text("#fd-status")


def test_generate_moves_with_the_slider_and_the_seed(chromium, app_url):
    page = _open(chromium, app_url)
    assert "attributes" in page.inner_text("#fd-about")
    assert not page.is_visible("#fd-prompt")  # the attribute model takes no prompt: no prompt box
    _set_number(page, "fd-level-3", 5)  # smiling = 5
    _set_number(page, "fd-steps", 5)
    _set_number(page, "fd-n", 2)
    _generate(page)
    first = _gallery_sources(page)
    assert len(first) == 2
    png = page.request.get(first[0]).body()
    _set_number(page, "fd-seed", 9)
    _generate(page)
    assert "seed 9" in page.inner_text("#fd-status")
    newest = _gallery_sources(page)[:2]
    assert page.request.get(newest[0]).body() != png  # another seed, another face
    from facediff.request import Request

    path = Path(page.url)  # noqa: F841  (keeps the page alive)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"fd-ui-{time.time_ns()}.png"
    tmp.write_bytes(page.request.get(newest[0]).body())
    req = Request.from_png(tmp)  # what the gallery serves is the PNG with its settings
    assert req.seed == 9 and req.attrs == {"smiling": 5} and req.steps == 5
    page.close()


def test_stop_ends_a_long_generation_within_2_s(chromium, app_url):
    page = _open(chromium, app_url)
    _set_number(page, "fd-steps", 1000)
    _set_number(page, "fd-n", 16)
    page.click("#fd-generate")
    page.wait_for_function("document.querySelector('#fd-status').innerText.startsWith('step')", timeout=60000)
    t0 = time.monotonic()
    page.click("#fd-stop")
    page.wait_for_function("document.querySelector('#fd-status').innerText.startsWith('stopped')", timeout=5000)
    assert time.monotonic() - t0 < 2.0
    assert len(_gallery_sources(page)) == 16  # the images as far as they got, saved
    page.close()


def test_dropping_a_png_restores_its_settings(chromium, app_url, tmp_path):
    from facediff import api

    res = api.sample(None, n=1, seed=11, steps=7, attrs="smiling=4,age=1", out=tmp_path / "cli.png")
    page = _open(chromium, app_url)
    page.set_input_files("#fd-drop input[type=file]", str(res["path"]))
    page.wait_for_function("document.querySelector('#fd-status').innerText.startsWith('Restored')",
                           timeout=30000)
    assert page.input_value("#fd-seed input") == "11"
    assert page.input_value("#fd-steps input[type=number]") == "7"
    assert page.input_value("#fd-level-3 input[type=number]") == "4"
    assert page.input_value("#fd-level-4 input[type=number]") == "1"
    assert page.input_value("#fd-level-0 input[type=number]") == "-1"  # not in the PNG: don't care
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")  # an invalid upload: one error line, nothing restored
    page.set_input_files("#fd-drop input[type=file]", str(bad))
    page.wait_for_function("document.querySelector('#fd-status').innerText.startsWith('Error')", timeout=30000)
    assert "not a readable image" in page.inner_text("#fd-status")
    page.close()


def test_compose_two_painted_regions(chromium, app_url, tmp_path):
    from facediff.ui.drive import upload_regions
    from facediff.ui.tabs import REGION_COLOURS

    canvas = np.zeros((64, 192, 4), np.uint8)
    canvas[8:56, 8:72] = (*REGION_COLOURS[0][1], 255)  # red region, left
    canvas[8:56, 120:184] = (*REGION_COLOURS[1][1], 255)  # green region, right
    Image.fromarray(canvas, "RGBA").save(tmp_path / "regions.png")
    page = _open(chromium, app_url)
    page.get_by_role("tab", name="Compose").click()
    readout = upload_regions(page, tmp_path / "regions.png", "2 regions")
    assert readout.startswith("2 regions: red"), readout
    page.locator("#fd-c-go").click()
    page.wait_for_function("(t => t.startsWith('done') || t.includes('Error'))"
                           "(document.querySelector('#fd-c-status').innerText)", timeout=300000)
    assert page.inner_text("#fd-c-status").startswith("done"), page.inner_text("#fd-c-status")
    src = page.get_attribute("#fd-c-result img", "src")
    (tmp_path / "out.png").write_bytes(page.request.get(src).body())
    from facediff.request import Request

    req = Request.from_png(tmp_path / "out.png")
    assert req.command == "compose" and [r["name"] for r in req.layout["region"]] == ["red", "green"]
    page.close()


def test_two_sessions_get_their_own_results(chromium, app_url):
    contexts = [chromium.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    pages = []
    for i, ctx in enumerate(contexts):
        page = ctx.new_page()
        page.goto(app_url)
        page.wait_for_selector("#fd-level-0", state="visible", timeout=60000)
        _set_number(page, "fd-steps", 5)
        _set_number(page, "fd-n", 1 + i)
        _set_number(page, "fd-seed", 100 + i)
        pages.append(page)
    for page in pages:
        page.click("#fd-generate")
    for i, page in enumerate(pages):
        page.wait_for_function("document.querySelector('#fd-status').innerText.startsWith('done')", timeout=120000)
        assert f"seed {100 + i}" in page.inner_text("#fd-status")
        assert len(_gallery_sources(page)) == 1 + i  # its own gallery, not the other session's
    for ctx in contexts:
        ctx.close()
