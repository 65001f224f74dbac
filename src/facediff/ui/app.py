"""``facediff ui``: the gradio app — a thin layer over ``facediff.api``, the typed request and the condition
registry. The Generate tab's inputs come from the conditions the chosen model declares (``ui.form``); runs go
through ``ui.runner`` (per-session Stop, live previews, PNGs with their settings); ``ui.limits`` bounds every
request; the Compose, Sketch and Evaluate tabs live in ``ui.tabs``.
"""
from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facediff.errors import FacediffError
from facediff.registry import SAMPLERS
from facediff.ui.form import DONT_CARE, SLOTS, assign, fields_from_form, form_from_request
from facediff.ui.limits import Limits
from facediff.ui.models import ModelCache, ModelChoice, allowed_model, controls_of, model_choices
from facediff.ui.runner import Session, run_request

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports leave the machine

CSS = """
#fd-title h1 {margin-bottom: 0}
.fd-preview img {width: 256px !important; height: 256px !important; object-fit: contain; image-rendering: pixelated}
#fd-gallery img, #fd-s-gallery img {image-rendering: pixelated}
"""


@dataclass
class Server:
    """What every session shares: the models on offer, the loaded ones, the limits and the output folder."""

    choices: list[ModelChoice]
    out_dir: Path
    limits: Limits = field(default_factory=Limits)
    cache: ModelCache = field(default_factory=ModelCache)
    preview_every: int = 5  # steps between live previews
    models_root: Path | None = None  # --models-dir: the only folder models and results are opened from

    def pipe(self, model: str, lora: str | None = None, lora_scale: float = 1.0):
        return self.cache.get(allowed_model(model, self.choices), lora or None, lora_scale)


def _message(text: str, kind: str = "error") -> str:
    return f"**{'Error' if kind == 'error' else 'Note'}:** {text}"


def _slot_updates(gr, server: Server, model: str) -> list:
    """Visibility, labels and ranges of every pooled input for ``model``, and its guidance default."""
    pipe = server.pipe(model)
    slots = assign(controls_of(pipe))
    used = {(s.control, s.index): s for s in slots}
    ups = []
    for i in range(SLOTS["levels"]):
        s = used.get(("levels", i))
        top = s.spec[0] - 1 if s else 5
        ups.append(gr.update(visible=s is not None, label=(s.part if s else ""), maximum=top))
    for i in range(SLOTS["levels"]):
        s = used.get(("levels", i))
        ups.append(gr.update(visible=s is not None, label=f"{s.part} guidance" if s else ""))
    takes = {s.control for s in slots}
    ups += [gr.update(visible="prompt" in takes), gr.update(visible="prompt" in takes)]
    ups.append(gr.update(visible="drawing" in takes))
    palette = next((s.spec for s in slots if s.control == "paint"), ())
    labels = ", ".join(f"{name} {colour}" for name, colour in palette)
    ups.append(gr.update(visible=bool(palette), label=f"Mask: paint the parts ({labels})" if palette else "Mask",
                         brush=gr.Brush(colors=[c for _, c in palette] or ["#000000"], color_mode="fixed",
                                        default_size=12)))
    for control in ("image", "text"):
        for i in range(SLOTS[control]):
            s = used.get((control, i))
            ups.append(gr.update(visible=s is not None, label=f"{s.kind}" if s else ""))
    ups.append(gr.update(value=float(getattr(pipe, "default_guidance", None) or 3.0)))
    ups.append(gr.update(visible=bool(pipe.takes_text)))  # LoRA: Stable-Diffusion-format (text) models
    kinds = ", ".join(k.name for k in pipe.condition_kinds) or "nothing (unconditional)"
    ups.append(f"{pipe.sample_size}x{pipe.sample_size} px; conditioned on: {kinds}")
    return ups


def _split(values: list) -> dict[str, list]:
    """The flat list of pooled input values (in ``_pool`` order) -> values per control type."""
    n = SLOTS["levels"]
    levels = list(zip(values[:n], values[n:2 * n]))
    rest = values[2 * n:]
    out = {"levels": levels, "prompt": [(rest[0], rest[1])], "drawing": [rest[2]], "paint": [rest[3]]}
    out["image"] = rest[4:4 + SLOTS["image"]]
    out["text"] = rest[4 + SLOTS["image"]:4 + SLOTS["image"] + SLOTS["text"]]
    return out


def build(server: Server):
    """The gr.Blocks app (not launched)."""
    import gradio as gr

    first = server.choices[0].path
    with gr.Blocks(title="facediff", analytics_enabled=False) as demo:
        state = gr.State(Session())
        gr.Markdown("# facediff\nDiffusion models for faces: pick a model, set what it takes, generate. "
                    "Every image downloads as a PNG that carries its settings; drop one below to get them back.",
                    elem_id="fd-title")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                gen = _generate_tab(gr, server, state, first)
            from facediff.ui.tabs import compose_tab, evaluate_tab, sketch_tab

            with gr.Tab("Compose", id="compose"):
                compose_tab(gr, server, state)
            with gr.Tab("Sketch", id="sketch"):
                sketch_tab(gr, server, state)
            with gr.Tab("Evaluate", id="evaluate"):
                evaluate_tab(gr, server)
        demo.load(lambda m: _slot_updates(gr, server, m), inputs=[gen["model"]], outputs=gen["slot_outputs"],
                  queue=False, api_visibility="private")
    return demo


def _generate_tab(gr, server: Server, state, first: str) -> dict[str, Any]:
    with gr.Row():
        with gr.Column(scale=5):
            model = gr.Dropdown([(c.label, c.path) for c in server.choices], value=first, label="Model",
                                elem_id="fd-model")
            about = gr.Markdown(elem_id="fd-about")
            prompt = gr.Textbox("", label="Prompt", lines=2, elem_id="fd-prompt", visible=False,
                                placeholder="a smiling woman with long red hair and glasses")
            negative = gr.Textbox("", label="Negative prompt", elem_id="fd-negative", visible=False,
                                  placeholder="what to steer away from, e.g. beard")
            with gr.Row(elem_id="fd-levels"):
                levels = [gr.Slider(DONT_CARE, 5, value=DONT_CARE, step=1, label=f"level {i}", visible=False,
                                    info="-1 = don't care", elem_id=f"fd-level-{i}", min_width=120)
                          for i in range(SLOTS["levels"])]
            with gr.Accordion("Per-attribute guidance (0 = the overall guidance)", open=False):
                with gr.Row():
                    scales = [gr.Slider(0, 15, value=0, step=0.5, label=f"guidance {i}", visible=False,
                                        elem_id=f"fd-scale-{i}", min_width=120) for i in range(SLOTS["levels"])]
            drawing = gr.ImageEditor(label="Sketch (dark lines on white)", visible=False, canvas_size=(256, 256),
                                     brush=gr.Brush(colors=["#000000"], default_color="#000000",
                                                    color_mode="fixed", default_size=3),
                                     format="png", elem_id="fd-drawing", type="numpy")
            paint = gr.ImageEditor(label="Face-parsing mask (paint the parts in their colours)", visible=False,
                                   canvas_size=(256, 256), format="png", elem_id="fd-paint", type="numpy",
                                   brush=gr.Brush(colors=["#000000"], color_mode="fixed", default_size=12))
            images = [gr.File(label=f"image {i}", file_types=["image"], visible=False, elem_id=f"fd-image-{i}")
                      for i in range(SLOTS["image"])]
            texts = [gr.Textbox("", label=f"text {i}", visible=False, elem_id=f"fd-text-{i}") for i in range(SLOTS["text"])]
            with gr.Accordion("LoRA", open=False, visible=False) as lora_box:
                lora = gr.Textbox("", label="LoRA file (.safetensors, diffusers or kohya)", elem_id="fd-lora")
                lora_scale = gr.Slider(0, 2, value=1, step=0.05, label="LoRA scale")
            with gr.Row():
                sampler = gr.Dropdown(list(SAMPLERS), value="dpmpp", label="Sampler", min_width=100)
                steps = gr.Slider(1, server.limits.max_steps, value=25, step=1, label="Steps", elem_id="fd-steps")
                guidance = gr.Number(3.0, label="Guidance", elem_id="fd-guidance", min_width=80)
            with gr.Row():
                seed = gr.Number(0, label="Seed (-1: random)", precision=0, elem_id="fd-seed", min_width=100)
                dice = gr.Button("Random", elem_id="fd-dice", min_width=60, scale=0)
                reuse = gr.Button("Last seed", elem_id="fd-reuse", min_width=60, scale=0)
                n = gr.Slider(1, server.limits.max_images, value=4, step=1, label="Images", elem_id="fd-n")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="fd-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="fd-stop")
            drop = gr.File(label="Drop a facediff PNG here to restore its settings", file_types=[".png"],
                           elem_id="fd-drop")
        with gr.Column(scale=4):
            preview = gr.Image(label="Live preview", interactive=False, elem_id="fd-preview", height=256,
                               elem_classes=["fd-preview"], format="png")
            status = gr.Markdown(elem_id="fd-status")
            gallery = gr.Gallery(label="Results (PNG with settings)", columns=4, elem_id="fd-gallery",
                                 format="png", object_fit="contain", height=420)
    pool = [*levels, *scales, prompt, negative, drawing, paint, *images, *texts]
    slot_outputs = pool[:2 * SLOTS["levels"]] + [prompt, negative, drawing, paint, *images, *texts,
                                                   guidance, lora_box, about]
    model.change(lambda m: _slot_updates(gr, server, m), inputs=[model], outputs=slot_outputs, queue=False, api_visibility="private")
    dice.click(lambda: random.randrange(2**31), outputs=[seed], queue=False, api_visibility="private")
    reuse.click(lambda s: s.last_seed if s.last_seed is not None else 0, inputs=[state], outputs=[seed],
                queue=False, api_visibility="private")
    stop.click(lambda s: s.stop.set(), inputs=[state], queue=False, api_name="stop")

    def generate(model_path, sampler_name, n_steps, scale, seed_value, n_images, lora_file, lora_w, session,
                 *values, progress=gr.Progress()):
        yield from _generate(gr, server, session, progress, model_path, sampler_name, n_steps, scale,
                             seed_value, n_images, lora_file, lora_w, list(values))

    go.click(generate, inputs=[model, sampler, steps, guidance, seed, n, lora, lora_scale, state, *pool],
             outputs=[preview, status, gallery, seed], api_name="generate", concurrency_id="generate",
             concurrency_limit=server.limits.concurrency)

    def restore(path, session):
        return _restore(gr, server, path, len(slot_outputs), pool, model)

    drop.upload(restore, inputs=[drop, state],
                outputs=[model, sampler, steps, guidance, seed, n, lora, lora_scale, status, *pool, drop],
                api_name="restore", queue=False)
    def sample(request_json: str) -> dict:
        return _sample_api(gr, server, request_json)

    gr.api(sample, api_name="sample", concurrency_id="generate", concurrency_limit=server.limits.concurrency)
    return {"model": model, "slot_outputs": slot_outputs}


def _sample_api(gr, server: Server, request_json: str) -> dict:
    """The `/sample` API endpoint: a facediff request as JSON (the ``facediff`` chunk of a PNG, or just its
    settings) -> {"images": PNG paths, "seed", "notes"}; the same limits and queue as the page."""
    import json

    from facediff.request import FORMAT, Request

    try:
        data = json.loads(request_json) if isinstance(request_json, str) else dict(request_json)
        if not isinstance(data, dict):
            raise FacediffError("give the request as a JSON object")
        data.setdefault("format", FORMAT)
        req = Request.from_json(json.dumps(data), "request")
        if req.command != "sample":
            raise FacediffError(f"/sample runs sample requests, not {req.command}")
        model = _model_of(server, req)
        req = req.replace(model=model)
        pipe = server.pipe(model, req.lora, req.lora_scale)
    except (FacediffError, ValueError) as e:
        raise gr.Error(str(e)) from None
    for event in run_request(req, pipe, Session(), server.out_dir, server.limits, preview_every=0):
        if event.kind == "error":
            raise gr.Error(event.message)
        if event.kind == "done":
            res = event.result
            return {"images": [str(p) for p in res["each"]], "seed": req.seed, "notes": res["notes"],
                    "interrupted": bool(res.get("interrupted"))}
    raise gr.Error("the generation ended without a result")


def _generate(gr, server: Server, session: Session, progress, model, sampler, steps, guidance, seed, n,
              lora, lora_scale, values: list):
    """The Generate button: form -> request -> streamed run (preview, status, gallery, seed)."""
    from facediff.request import Request

    try:
        pipe = server.pipe(model, lora, lora_scale)
        seed = random.randrange(2**31) if seed is None or int(seed) < 0 else int(seed)
        slots = assign(controls_of(pipe))
        fields = fields_from_form(slots, _split(values), session.folder(server.out_dir))
        req = Request(model=model, sampler=sampler, steps=int(steps), guidance=guidance, seed=seed, n=int(n),
                      lora=lora or None, lora_scale=float(lora_scale), **fields)
    except FacediffError as e:
        yield gr.update(), _message(str(e)), gr.update(), gr.update()
        return
    yield None, f"Generating {req.n} image(s) with seed {seed} …", gr.update(), seed
    for event in run_request(req, pipe, session, server.out_dir, server.limits,
                             preview_every=server.preview_every):
        if event.kind in ("step", "preview"):
            progress((event.done, event.total), desc="denoising")
            if event.kind == "preview":
                yield event.image, f"step {event.done} / {event.total}", gr.update(), gr.update()
        elif event.kind == "error":
            yield gr.update(), _message(event.message), gr.update(), gr.update()
        else:
            res = event.result
            done = "stopped — kept the images made so far" if res.get("interrupted") else "done"
            notes = "".join(f"\n- {n}" for n in res.get("notes") or [])
            yield (res["images"][0], f"{done}: {len(res['images'])} image(s), seed {seed}, model "
                   f"{res['request'].model_name}{notes}", res["gallery"], seed)


def _restore(gr, server: Server, path, n_slots: int, pool: list, model_component):
    """A dropped PNG -> every setting that made it (or one error line)."""
    from facediff.request import Request
    from facediff.ui.limits import read_upload

    keep = [gr.update()] * 8
    try:
        read_upload(path, server.limits, "dropped file")  # an image within the limits, or refused
        req = Request.from_png(path)
        if req.command != "sample":
            raise FacediffError(f"{Path(path).name}: made by facediff {req.command}; open it in the Compose tab")
        model = _model_of(server, req)
        slots = assign(controls_of(server.pipe(model)))
    except FacediffError as e:
        return [*keep, _message(str(e)), *[gr.update()] * len(pool), None]
    values = form_from_request(req, slots)
    flat = [v[0] if v is not None else None for v in values["levels"]] + \
           [v[1] if v is not None else None for v in values["levels"]]
    prompt = values["prompt"][0]
    flat += [prompt[0] if prompt else None, prompt[1] if prompt else None]
    flat += [values["drawing"][0], values["paint"][0], *values["image"], *values["text"]]
    ups = [gr.update() if v is None else gr.update(value=v) for v in flat]
    head = [model, req.sampler, req.steps, req.guidance, req.seed, req.n, req.lora or "", req.lora_scale]
    return [*head, f"Restored the settings of {Path(path).name} (seed {req.seed})", *ups, None]  # drop zone cleared


def _model_of(server: Server, req) -> str:
    """The offered model a request names (its folder, or for no folder the bundled one it used)."""
    if req.model is not None:
        return allowed_model(str(Path(req.model).resolve()) if Path(req.model).exists() else req.model,
                             server.choices)
    wanted = "text_model" if (req.text or req.prompt) else "default_model"
    for c in server.choices:
        if Path(c.path).name == wanted:
            return c.path
    raise FacediffError("this PNG was made with a bundled model this server does not offer")


def launch(*, model: str | None = None, models_dir: str | None = None, host: str = "127.0.0.1",
           port: int = 7860, out_dir: str | None = None, auth: list[tuple[str, str]] | None = None,
           limits: Limits | None = None, block: bool = True, quiet: bool = False):
    """Build and start the app; returns (demo, url). ``block``: serve until interrupted."""
    import gradio as gr

    out = Path(out_dir) if out_dir else Path(tempfile.gettempdir()) / "facediff-ui"
    out.mkdir(parents=True, exist_ok=True)
    server = Server(model_choices(models_dir, model), out.resolve(), limits or Limits(),
                    models_root=Path(models_dir).resolve() if models_dir else None)
    demo = build(server)
    demo.queue(max_size=server.limits.queue_size, default_concurrency_limit=server.limits.concurrency)
    _, url, _ = demo.launch(server_name=host, server_port=port, auth=auth, prevent_thread_lock=True,
                            quiet=quiet, ssr_mode=False, allowed_paths=[str(server.out_dir)],
                            max_file_size=server.limits.max_upload_bytes, theme=gr.themes.Soft(), css=CSS,
                            footer_links=["api"])
    if block:
        demo.block_thread()
    return demo, url
