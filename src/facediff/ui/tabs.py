"""The Compose, Sketch and Evaluate tabs of ``facediff ui`` (the Generate tab is in ``ui.app``).

Compose: up to 12 regions painted in colour on one canvas (any layer; the colour says the region), each with
its own prompt, attributes and image condition (an uploaded sketch or mask, named in the region's row), a
background condition and the bootstrapping fraction of MultiDiffusion; or a
panorama (width, circular) under the background condition. Sketch: a photo -> its extracted sketch, drawn on
or drawn from scratch, -> faces that follow it. Evaluate: a run or eval folder's metrics, pictures and loss.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from facediff.errors import FacediffError
from facediff.registry import SAMPLERS
from facediff.ui.form import assign, on_white_paper, save_drawing
from facediff.ui.models import compose_choice, controls_of

# region colours (name, RGB): what the brush offers and how a painted pixel is read back
REGION_COLOURS = [("red", (230, 25, 75)), ("green", (60, 180, 75)), ("blue", (0, 130, 200)),
                  ("orange", (245, 130, 48)), ("purple", (145, 30, 180)), ("cyan", (70, 240, 240)),
                  ("magenta", (240, 50, 230)), ("lime", (210, 245, 60)), ("pink", (250, 190, 212)),
                  ("teal", (0, 128, 128)), ("brown", (170, 110, 40)), ("navy", (0, 0, 128))]


def region_masks(editor, width: int, height: int) -> list[tuple[str, np.ndarray]]:
    """A painted canvas (ImageEditor value or RGBA array) -> (colour name, uint8 0/255 mask at width x height)
    for each colour painted, in palette order. A pixel belongs to the palette colour nearest to it."""
    from PIL import Image

    rgba = np.asarray(editor.get("composite") if isinstance(editor, dict) else editor)
    if rgba is None or rgba.ndim != 3:
        return []
    if rgba.shape[-1] == 3:
        rgba = np.concatenate([rgba, np.full(rgba.shape[:2] + (1,), 255, np.uint8)], -1)
    colours = np.array([c for _, c in REGION_COLOURS], np.int32)
    d = ((rgba[..., None, :3].astype(np.int32) - colours) ** 2).sum(-1)
    nearest, painted = d.argmin(-1), (rgba[..., 3] > 127) & (d.min(-1) < 60 ** 2)
    out = []
    for k, (name, _) in enumerate(REGION_COLOURS):
        m = (painted & (nearest == k)).astype(np.uint8) * 255
        if m.any():
            out.append((name, np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.NEAREST))))
    return out


def painted_summary(editor) -> str:
    """The regions a canvas holds, as the Compose tab shows them under it while one paints: each colour's share
    of the canvas, so a stray stroke in a second colour is seen before it becomes a face."""
    masks = region_masks(editor, 96, 32)
    if not masks:
        return "No region received yet: each brush colour is one region."
    shares = ", ".join(f"{name} ({100 * float((m > 0).mean()):.0f} %)" for name, m in masks)
    return f"{len(masks)} region{'s' if len(masks) > 1 else ''}: {shares}"


def image_conditions(cell: str, uploads: dict[str, str], image_kinds: list[str], region: str) -> dict[str, str]:
    """A region row's image-condition cell -> {kind: uploaded file}: "FILE" for a model's only image kind
    (sketch or mask), "KIND=FILE" to choose; FILE is the name of a file uploaded beside the table."""
    cell = str(cell or "").strip()
    if not cell:
        return {}
    kind, _, name = cell.rpartition("=")
    kind, name = kind.strip(), name.strip()
    if not image_kinds:
        raise FacediffError(f"region {region}: this model takes no sketch or mask; clear the cell {cell!r}")
    if not kind:
        if len(image_kinds) > 1:
            raise FacediffError(f"region {region}: this model takes {' and '.join(image_kinds)}; write KIND=FILE")
        kind = image_kinds[0]
    if kind not in image_kinds:
        raise FacediffError(f"region {region}: this model takes no {kind!r}; it takes {', '.join(image_kinds)}")
    if name not in uploads:
        raise FacediffError(f"region {region}: no uploaded file is named {name!r}; upload it first "
                            f"(uploaded: {', '.join(sorted(uploads)) or 'none'})")
    return {kind: uploads[name]}


def build_layout(masks, table, background: tuple[str, str], *, width: int, height: int, folder: Path,
                 steps: int, sampler: str, guidance: float, seed: int, bootstrap: float,
                 uploads: dict[str, str] | None = None, image_kinds: list[str] | None = None):
    """A ``Layout`` from painted masks and the region table (rows: colour, prompt, attributes, image condition);
    each mask is saved as a PNG in ``folder`` so that the request (and the PNG it writes) names it."""
    from PIL import Image

    from facediff.pipelines.layout import Layout, Region

    import hashlib

    rows = {str(r[0]).strip(): list(r) + [""] * (4 - len(r)) for r in _rows(table)}
    regions = []
    for name, mask in masks:
        row = rows.get(name, [name, "", "", ""])
        conditions = image_conditions(row[3], uploads or {}, image_kinds or [], name)
        path = folder / f"region-{name}-{hashlib.sha256(mask.tobytes()).hexdigest()[:12]}.png"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask, "L").save(path)
        regions.append(Region(name=name, mask=str(path), prompt=(row[1] or None), attrs=(row[2] or None),
                              conditions=conditions))
    if not regions:
        raise FacediffError("paint at least one region on the canvas (each colour is one region)")
    back = Region(name="background", prompt=background[0] or None, attrs=background[1] or None)
    return Layout(width=width, height=height, regions=regions, background=back, steps=steps, sampler=sampler,
                  guidance=guidance, seed=seed, bootstrap=bootstrap)


IMAGE_CONTROLS = ("drawing", "paint", "image")  # ui_control kinds whose value is an image file


def _saved_uploads(files, folder: Path, server) -> dict[str, str]:
    """Uploaded region files (checked as images under the server's limits) -> {their file name: a PNG copy in
    ``folder``, named by content so that the request names a file that stays}."""
    from PIL import Image

    from facediff.ui.limits import read_upload

    import hashlib

    out = {}
    for path in files or []:
        name = Path(path).name
        rgba = read_upload(path, server.limits, what=f"region file {name}")
        copy = folder / f"upload-{hashlib.sha256(rgba.tobytes()).hexdigest()[:12]}.png"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(on_white_paper(rgba).round().astype(np.uint8), "RGB").save(copy)
        out[name] = str(copy)
    return out


def _rows(table) -> list[list]:
    if table is None:
        return []
    if hasattr(table, "values"):  # a pandas DataFrame
        table = table.values.tolist()
    return [["" if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in row] for row in table]


def _stream_to_page(gr, server, session, req, pipe, progress, runtime=None):
    from facediff.ui.runner import run_request

    for event in run_request(req, pipe, session, server.out_dir, server.limits, runtime=runtime,
                             preview_every=server.preview_every):
        if event.kind in ("step", "preview"):
            progress((event.done, event.total), desc="denoising")
            if event.kind == "preview":
                yield event.image, f"step {event.done} / {event.total}", None
        elif event.kind == "error":
            yield gr.update(), f"**Error:** {event.message}", gr.update()
        else:
            yield None, ("stopped — " if event.result.get("interrupted") else "done — ") + \
                f"seed {req.seed}", event.result


def compose_tab(gr, server, state) -> None:
    from facediff.generate import make_request
    from facediff.pipelines.layout import overlay_masks

    brush = gr.Brush(colors=["#%02x%02x%02x" % c for _, c in REGION_COLOURS], color_mode="fixed", default_size=30)
    with gr.Row():
        with gr.Column(scale=5):
            model = gr.Dropdown([(c.label, c.path) for c in server.choices], value=compose_choice(server.choices),
                                label="Model", elem_id="fd-c-model")
            mode = gr.Radio(["regions", "panorama"], value="regions", label="Mode", elem_id="fd-c-mode")
            canvas = gr.ImageEditor(label="Regions: paint each region in its own colour", canvas_size=(768, 256),
                                    brush=brush, format="png", type="numpy", elem_id="fd-c-canvas")
            painted = gr.Markdown(painted_summary(None), elem_id="fd-c-painted")
            table = gr.Dataframe(headers=["region", "prompt", "attributes", "sketch / mask"], elem_id="fd-c-table",
                                 value=[[name, "", "", ""] for name, _ in REGION_COLOURS], column_count=(4, "fixed"),
                                 row_count=(len(REGION_COLOURS), "fixed"), interactive=True,
                                 label="Each region's prompt (text models), attributes (e.g. smiling=5,age=1) and "
                                       "sketch or mask (the name of a file uploaded below; KIND=FILE to choose)")
            region_files = gr.File(label="Sketches / masks for the regions (PNG, JPEG, WebP)", file_count="multiple",
                                   file_types=["image"], type="filepath", elem_id="fd-c-files")
            with gr.Row():
                bg_prompt = gr.Textbox(label="Background prompt", elem_id="fd-c-bg")
                bg_attrs = gr.Textbox(label="Background attributes", elem_id="fd-c-bg-attrs")
            with gr.Row():
                width = gr.Slider(32, server.limits.max_side, value=192, step=8, label="Width (px)")
                height = gr.Slider(32, server.limits.max_side, value=64, step=8, label="Height (px)")
                circular = gr.Checkbox(label="Circular (panorama)")
            with gr.Row():
                sampler = gr.Dropdown(list(SAMPLERS), value="ddim", label="Sampler", min_width=100)
                steps = gr.Slider(1, server.limits.max_steps, value=25, step=1, label="Steps")
                guidance = gr.Number(3.0, label="Guidance", min_width=80)
                seed = gr.Number(0, label="Seed", precision=0, min_width=80)
                bootstrap = gr.Slider(0, 1, value=0.2, step=0.05, label="Bootstrapping (fraction of steps)")
            with gr.Row():
                go = gr.Button("Compose", variant="primary", elem_id="fd-c-go")
                stop = gr.Button("Stop", variant="stop", elem_id="fd-c-stop")
        with gr.Column(scale=4):
            preview = gr.Image(label="Live preview", interactive=False, format="png", elem_classes=["fd-preview"])
            status = gr.Markdown(elem_id="fd-c-status")
            result = gr.Image(label="Result (PNG with settings)", interactive=False, format="png", elem_id="fd-c-result")
            masks_view = gr.Image(label="Regions over the result", interactive=False, format="png")
    stop.click(lambda s: s.stop.set(), inputs=[state], queue=False)
    # the editor may send its value before an upload is drawn (then nothing more until the next stroke): Compose
    # refreshes the readout with the value it runs on too
    for trigger in (canvas.change, go.click):
        trigger(painted_summary, inputs=[canvas], outputs=[painted], queue=False, show_progress="hidden",
                trigger_mode="always_last")

    def run(model_path, mode_name, editor, rows, files, bgp, bga, w, h, circ, smp, n_steps, g, sd, boot, session,
            progress=gr.Progress()):
        try:
            pipe = server.pipe(model_path)
            w, h = int(w), int(h)
            common = dict(model=model_path, steps=int(n_steps), sampler=smp, guidance=float(g), seed=int(sd))
            if mode_name == "panorama":
                req, runtime = make_request("panorama", None, dict(common, width=w, height=h, circular=bool(circ),
                                                                   prompt=bgp or None, attrs=bga or None))
            else:
                folder = session.folder(server.out_dir) / "inputs"
                layout = build_layout(region_masks(editor, w, h), rows, (bgp, bga), width=w, height=h,
                                      folder=folder, steps=int(n_steps), sampler=smp, guidance=float(g),
                                      seed=int(sd), bootstrap=float(boot), uploads=_saved_uploads(files, folder, server),
                                      image_kinds=[k for k, c in controls_of(pipe) if c["control"] in IMAGE_CONTROLS])
                req, runtime = make_request("compose", None, dict(common, layout=layout, bootstrap=float(boot)))
        except FacediffError as e:
            yield gr.update(), f"**Error:** {e}", gr.update(), gr.update()
            return
        for image, text, res in _stream_to_page(gr, server, session, req, pipe, progress, runtime):
            if isinstance(res, dict):
                over = overlay_masks(res["images"][0], res["masks"]) if res.get("masks") is not None else None
                yield None, text, res["path"], over
            else:
                yield image, text, gr.update(), gr.update()

    go.click(run, inputs=[model, mode, canvas, table, region_files, bg_prompt, bg_attrs, width, height, circular, sampler, steps,
                          guidance, seed, bootstrap, state],
             outputs=[preview, status, result, masks_view], api_name="compose", concurrency_id="generate",
             concurrency_limit=server.limits.concurrency)


def sketch_tab(gr, server, state) -> None:
    from facediff.request import Request

    takes = [c for c in server.choices if _takes(server, c.path, "drawing")]
    with gr.Row():
        with gr.Column(scale=5):
            photo = gr.Image(label="A photo (optional): its sketch is extracted", type="filepath", format="png",
                             elem_id="fd-s-photo")
            pad = gr.ImageEditor(label="Sketch: draw or edit (dark lines on white)", canvas_size=(256, 256),
                                 format="png", type="numpy", elem_id="fd-s-pad",
                                 brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=3))
            model = gr.Dropdown([(c.label, c.path) for c in takes], value=takes[0].path if takes else None,
                                label="Sketch model", elem_id="fd-s-model",
                                info=None if takes else "no offered model takes a sketch: train one with "
                                                        "facediff train ldm --set latent.sketch=true")
            with gr.Row():
                n = gr.Slider(1, server.limits.max_images, value=4, step=1, label="Images")
                seed = gr.Number(0, label="Seed", precision=0)
                go = gr.Button("Generate from sketch", variant="primary", elem_id="fd-s-go")
        with gr.Column(scale=4):
            status = gr.Markdown(elem_id="fd-s-status")
            gallery = gr.Gallery(label="Faces", columns=4, format="png", elem_id="fd-s-gallery")

    def extract(path, session):
        from facediff import api
        from facediff.ui.limits import read_upload

        if not path:
            return gr.update(), ""
        try:
            read_upload(path, server.limits, "photo")
            folder = session.folder(server.out_dir) / "inputs"
            folder.mkdir(parents=True, exist_ok=True)
            out = api.sketch(path, folder / (Path(path).stem + "-sketch.png"))
        except FacediffError as e:
            return gr.update(), f"**Error:** {e}"
        return {"background": str(out), "layers": [], "composite": str(out)}, "Extracted the sketch; draw on it"

    photo.upload(extract, inputs=[photo, state], outputs=[pad, status], api_name="extract_sketch")

    def generate(model_path, editor, n_images, sd, session, progress=gr.Progress()):
        try:
            if not model_path:
                raise FacediffError("no offered model takes a sketch")
            pipe = server.pipe(model_path)
            path = save_drawing(editor, session.folder(server.out_dir) / "inputs", paper=True)
            if path is None:
                raise FacediffError("draw a sketch (or extract one from a photo) first")
            slot = next(s for s in assign(controls_of(pipe)) if s.control == "drawing")
            from facediff.ui.form import REQUEST_FIELD

            field = REQUEST_FIELD.get(slot.kind)
            values = {field: path} if field else {"conditions": {slot.kind: path}}
            req = Request(model=model_path, n=int(n_images), seed=int(sd), **values)
        except FacediffError as e:
            yield f"**Error:** {e}", gr.update()
            return
        for _, text, res in _stream_to_page(gr, server, session, req, pipe, progress):
            yield text, (res["gallery"] if isinstance(res, dict) else gr.update())

    go.click(generate, inputs=[model, pad, n, seed, state], outputs=[status, gallery], api_name="sketch",
             concurrency_id="generate", concurrency_limit=server.limits.concurrency)


def _takes(server, path: str, control: str) -> bool:
    try:
        return any(s.control == control for s in assign(controls_of(server.pipe(path))))
    except FacediffError:
        return False


def evaluate_tab(gr, server) -> None:
    from facediff.report.html import flatten_metrics

    folders = _result_folders(server)
    with gr.Row():
        folder = gr.Dropdown(folders, label="Run or eval folder", elem_id="fd-e-folder",
                             info=None if folders else "none found: start facediff ui with --models-dir RUNS")
    with gr.Row():
        table = gr.Dataframe(headers=["metric", "value"], label="Metrics", elem_id="fd-e-metrics")
        curve = gr.LinePlot(x="step", y="loss", label="Loss curve", elem_id="fd-e-curve")
    pictures = gr.Gallery(label="Grids and plots", columns=3, format="png")
    report = gr.Markdown()

    def show(name):
        root = _inside_results(server, name)
        rows, loss, pngs, text = [], None, [], ""
        if (root / "metrics.json").is_file():
            flat = flatten_metrics(json.loads((root / "metrics.json").read_text()))
            rows = [[k, v] for k, v in flat.items() if isinstance(v, (int, float, str))]
        if (root / "metrics.jsonl").is_file():
            import pandas as pd

            lines = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines() if x.strip()]
            loss = pd.DataFrame([{"step": r["step"], "loss": r["loss"]} for r in lines if "loss" in r])
        for sub in ("report_files", "samples", "."):
            pngs += sorted((root / sub).glob("*.png"))[-12:]
        if (root / "report.md").is_file():
            text = (root / "report.md").read_text()[:20000]
        return rows, loss, [str(p) for p in pngs[:24]], text

    folder.change(show, inputs=[folder], outputs=[table, curve, pictures, report], api_name="evaluate")


def _result_folders(server) -> list[str]:
    root = server.models_root
    if root is None:
        return []
    found = {p.parent for pattern in ("metrics.json", "metrics.jsonl") for p in root.rglob(pattern)}
    return sorted(str(p.relative_to(root)) for p in found if p.resolve().is_relative_to(root.resolve()))


def _inside_results(server, name: str) -> Path:
    from facediff.ui.limits import inside

    if server.models_root is None or not name:
        raise FacediffError("no folder chosen")
    return inside(server.models_root, name)
