"""The web UI without a browser: the form built from a model's declared conditions, the limits and input
safety, the per-session Stop, the `/sample` API and its queue (gradio_client), and flat memory over 200
generations. Browser tests (Chromium + Playwright) are in test_ui_browser.py."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.conditioning.attributes import AttributesKind
from facediff.conditioning.kinds import Grid
from facediff.conditioning.mask import MaskKind
from facediff.conditioning.sketch import SketchKind
from facediff.errors import FacediffError
from facediff.request import Request
from facediff.ui.form import DONT_CARE, SLOTS, assign, fields_from_form, form_from_request
from facediff.ui.limits import Limits, check_request, inside, read_upload
from facediff.ui.models import model_choices
from facediff.ui.runner import Session, run_request

gr = pytest.importorskip("gradio")


def _values(**given):
    values = {c: [None] * n for c, n in SLOTS.items()}
    values["levels"] = [(DONT_CARE, 0.0)] * SLOTS["levels"]
    values["prompt"] = [("", "")]
    for k, v in given.items():
        values[k] = v
    return values


def test_form_follows_the_declared_conditions(tmp_path):
    controls = [(k.name, k.ui_control()) for k in (AttributesKind(("smiling", "age"), 6), SketchKind(), MaskKind())]
    controls.append(("style_tag", {"control": "text"}))  # a plug-in kind without its own control: a text box
    slots = assign(controls)
    assert [(s.control, s.part) for s in slots] == [("levels", "smiling"), ("levels", "age"), ("drawing", ""),
                                                     ("paint", ""), ("text", "")]
    assert dict(slots[3].spec)["hair"].startswith("#")  # the mask painter gets the class palette
    ink = np.zeros((32, 32, 4), np.uint8)
    ink[10:20, 15, 3] = 255  # one black stroke on a transparent canvas
    paint = np.zeros((32, 32, 4), np.uint8)
    paint[4:28, 4:28] = (232, 186, 150, 255)  # skin
    levels = [(5, 0.0), (DONT_CARE, 4.0)] + [(DONT_CARE, 0.0)] * (SLOTS["levels"] - 2)
    fields = fields_from_form(slots, _values(levels=levels, drawing=[{"composite": ink}], paint=[paint],
                                             text=["gothic", None, None]), tmp_path)
    assert fields["attrs"] == {"smiling": 5} and fields["attr_scales"] == {"age": 4.0}
    sketch = np.asarray(Image.open(fields["sketch"]))
    assert sketch[15, 15] < 50 and sketch[0, 0] == 255  # ink on white paper
    mask = MaskKind().prepare(fields["conditions"]["mask"], Grid(32, 32))
    assert float(mask[0, 1, 16, 16]) == 1.0  # skin where painted
    assert fields["conditions"]["style_tag"] == "gothic"
    registered = {k: v for k, v in fields["conditions"].items() if k != "style_tag"}  # Request checks the names
    req = Request(**{**fields, "conditions": registered})  # a valid request; and back to the form (a dropped PNG)
    back = form_from_request(req, slots)
    assert back["levels"][0] == (5, 0.0) and back["levels"][1] == (DONT_CARE, 4.0)
    assert back["drawing"][0] == fields["sketch"] and back["paint"][0] == registered["mask"]
    empty = fields_from_form(slots, _values(), tmp_path)
    assert empty == {"attrs": None, "attr_scales": None}  # nothing set or drawn: no value, no file


def test_a_kind_the_ui_cannot_show_is_refused():
    with pytest.raises(FacediffError, match="ui_control 'dial'"):
        assign([("knob", {"control": "dial"})])
    with pytest.raises(FacediffError, match="more levels inputs"):
        assign([("many", {"control": "levels", "parts": [str(i) for i in range(SLOTS["levels"] + 1)]})])


def test_limits_refuse_big_requests_and_bad_uploads(tmp_path):
    limits = Limits(max_images=4, max_steps=10, max_side=128)
    check_request(Request(n=4, steps=10), limits)
    for req, word in ((Request(n=5), "images = 5"), (Request(n=1, steps=11), "steps = 11"),
                      (Request(command="panorama", width=256, steps=5), "width = 256")):
        with pytest.raises(FacediffError, match=word):
            check_request(req, limits)
    (tmp_path / "fake.png").write_text("import os; os.system('rm -rf /')")
    with pytest.raises(FacediffError, match="not a readable image"):
        read_upload(tmp_path / "fake.png", limits)
    big = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(big)
    with pytest.raises(FacediffError, match="above this server's limit"):
        read_upload(big, Limits(max_upload_pixels=1000 * 1000))
    with pytest.raises(FacediffError, match="MB is above"):
        read_upload(big, Limits(max_upload_bytes=100))
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "ok.png")
    assert read_upload(tmp_path / "ok.png", limits).shape == (8, 8, 4)


def test_model_paths_cannot_leave_the_models_folder(tmp_path, tiny_run):
    root = tmp_path / "models"
    root.mkdir()
    (root / "link").symlink_to(tiny_run)  # a link to a model outside
    (root / "inner").symlink_to(tiny_run / "export", target_is_directory=True)
    with pytest.raises(FacediffError, match="outside the models folder"):
        inside(root, "../" + tiny_run.name)
    with pytest.raises(FacediffError, match="outside the models folder"):
        inside(root, "link")
    labels = [c.label for c in model_choices(root)]
    assert not any("link" in x or "inner" in x for x in labels)  # links out of the folder are not offered
    assert labels[0].startswith("bundled")


def test_stop_ends_a_run_within_a_step_and_keeps_what_was_made(tiny_run, tmp_path):
    from facediff import api

    pipe = api.load(tiny_run, "cpu")
    session = Session()
    req = Request(model=str(tiny_run), n=16, steps=100, sampler="ddim", batch_size=1)  # 1600 network calls
    stopped_at, events = None, []
    for event in run_request(req, pipe, session, tmp_path, Limits(), preview_every=20):
        events.append(event)
        if event.kind == "preview" and stopped_at is None:
            session.stop.set()
            stopped_at = time.monotonic()
    done = events[-1]
    assert done.kind == "done" and done.result["interrupted"], [(e.kind, e.message) for e in events[-3:]]
    assert time.monotonic() - stopped_at < 2.0
    assert sum(e.kind != "done" for e in events) < 100  # it ended in the first of 16 images' runs
    assert len(done.result["each"]) == 1 and all(Path(p).is_file() for p in done.result["each"])
    assert any(e.image is not None and e.image.shape[-1] == 3 for e in events)  # live previews came
    assert Request.from_png(done.result["each"][0]).seed == 0  # the PNG carries its settings


@pytest.fixture(scope="module")
def api_server(tiny_run, tmp_path_factory):
    from facediff.ui.app import launch

    out = tmp_path_factory.mktemp("ui-out")
    demo, url = launch(model=str(tiny_run / "export"), host="127.0.0.1", port=_free_port(), out_dir=str(out),
                       limits=Limits(max_images=4, max_steps=400, queue_size=2), block=False, quiet=True)
    yield url
    demo.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_api_sample_runs_requests_and_refuses_over_the_limits(api_server, tiny_run):
    from gradio_client import Client

    client = Client(api_server, verbose=False)
    model = str((tiny_run / "export").resolve())
    res = client.predict(json.dumps({"model": model, "n": 2, "steps": 3, "seed": 7}), api_name="/sample")
    assert len(res["images"]) == 2 and Request.from_png(res["images"][0]).seed == 7
    for bad, word in (({"model": model, "n": 5}, "images = 5"), ({"model": model, "n": 1, "steps": 401}, "steps = 401"),
                      ({"model": "/etc"}, "not one this server offers"), ({"n": "x"}, "n = 'x'")):
        with pytest.raises(Exception, match=word):
            client.predict(json.dumps(bad), api_name="/sample")


def test_queue_runs_one_at_a_time_and_refuses_a_burst(api_server, tiny_run):
    from gradio_client import Client

    model = str((tiny_run / "export").resolve())
    slow = json.dumps({"model": model, "n": 4, "steps": 100, "sampler": "ddim", "batch_size": 1})
    clients = [Client(api_server, verbose=False) for _ in range(5)]
    jobs = [c.submit(slow, api_name="/sample") for c in clients]
    outcomes = []
    for job in jobs:
        try:
            job.result(timeout=300)
            outcomes.append("ok")
        except Exception as e:  # noqa: BLE001
            outcomes.append(str(e))
    assert outcomes.count("ok") >= 1
    assert any("queue" in o.lower() or "full" in o.lower() for o in outcomes if o != "ok"), outcomes


def test_memory_stays_flat_over_200_generations(tiny_run, tmp_path):
    from facediff import api

    def rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        pytest.skip("no /proc/self/status here")

    pipe = api.load(tiny_run, "cpu")
    session = Session()

    def one(i: int) -> None:
        req = Request(model=str(tiny_run), n=1, steps=2, seed=i)
        events = list(run_request(req, pipe, session, tmp_path, Limits(), preview_every=1))
        assert events[-1].kind == "done"

    for i in range(30):  # warm-up
        one(i)
    before = rss()
    for i in range(200):
        one(i)
    grown = (rss() - before) / before
    assert grown < 0.05, f"RSS grew {grown:.1%} over 200 generations"
    assert len(session.gallery) <= 48


def test_facediff_ui_cli_warns_and_refuses(tmp_path):
    from facediff.cli.ui import host_warning, read_auth

    assert host_warning("127.0.0.1", False) is None
    assert "reachable from other machines" in host_warning("0.0.0.0", False) and "--auth" in host_warning("0.0.0.0", False)
    assert "--auth" not in host_warning("0.0.0.0", True)

    assert read_auth("ann:pw", None) == [("ann", "pw")]
    (tmp_path / "users").write_text("# users\nbob:secret\n")
    assert read_auth(None, tmp_path / "users") == [("bob", "secret")]
    with pytest.raises(FacediffError, match="user:password"):
        read_auth("nopassword", None)


def test_launch_binds_localhost_by_default(tiny_run, tmp_path):
    import inspect

    from facediff.ui.app import launch

    assert inspect.signature(launch).parameters["host"].default == "127.0.0.1"
    demo, url = launch(model=str(tiny_run / "export"), port=_free_port(), out_dir=str(tmp_path), block=False,
                       quiet=True)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert demo.server_name == "127.0.0.1"
    finally:
        demo.close()


def test_compose_tab_starts_on_the_model_that_knows_where_faces_are():
    from facediff.ui.models import ModelChoice, compose_choice

    bundled = [ModelChoice("bundled: default model", "/a/default_model"),
               ModelChoice("bundled: compose model", "/a/compose_model")]
    assert compose_choice(bundled) == "/a/compose_model"
    assert compose_choice([ModelChoice("mine (--model)", "/r/mine"), *bundled]) == "/r/mine"
    assert compose_choice(bundled[:1]) == "/a/default_model"


def test_the_canvas_readout_names_each_painted_colour_and_its_share():
    """What the Compose tab shows under the canvas: one entry per colour, in palette order, with its share; a
    near-colour (anti-aliased edge) counts as its palette colour, a transparent or off-palette pixel as none."""
    from facediff.ui.tabs import REGION_COLOURS, painted_summary

    rgba = np.zeros((32, 96, 4), np.uint8)
    rgba[:, 48:72] = (*REGION_COLOURS[1][1], 255)  # green: a quarter of the canvas
    rgba[:16, :48] = (*(np.array(REGION_COLOURS[0][1]) - 10), 255)  # red, slightly off: another quarter
    rgba[16:, :48] = (200, 200, 200, 0)  # transparent
    rgba[:, 72:] = (250, 250, 250, 255)  # white paper: not a region
    assert painted_summary({"composite": rgba}) == "2 regions: red (25 %), green (25 %)"
    assert painted_summary({"composite": None, "layers": [], "background": None}).startswith("No region received")
