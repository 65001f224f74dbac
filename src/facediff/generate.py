"""Run a ``Request`` (sample, compose, panorama) and save what it made: the grid PNG at the size asked for (times
``scale``, nearest neighbour), one PNG per image with ``save_each``, every PNG carrying the request it came
from (``Request.png_text``). ``facediff.api`` calls these; the CLI and the UI call the API.

Output rule, the same in every command: an existing file is refused before any work unless ``overwrite``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from facediff import __version__
from facediff.errors import FacediffError
from facediff.progress import Progress
from facediff.request import Request


def make_request(command: str, request: Request | str | Path | None,
                 fields: dict[str, Any]) -> tuple[Request, dict[str, Any]]:
    """``request`` (a Request, or the model) + ``fields`` -> (one checked Request, the inputs that only live in
    memory: {"sketch": uint8 array, "layout": Layout}); the request records those by their SHA-256 / tables."""
    from facediff.pipelines.layout import Layout, layout_to_dict, load_layout

    fields, runtime = dict(fields), {}
    if isinstance(fields.get("sketch"), np.ndarray):
        runtime["sketch"] = fields.pop("sketch")
    layout = fields.get("layout")
    if isinstance(layout, (str, Path)):
        layout = load_layout(layout)
    if isinstance(layout, Layout):
        runtime["layout"] = layout
        fields["layout"] = layout_to_dict(layout)
    if isinstance(request, Request):
        if request.command != command:
            raise FacediffError(f"a {request.command} request given to {command}; use facediff {request.command}")
        return (request.replace(**fields) if fields else request), runtime
    if request is not None:
        fields = {"model": request, **fields}
    return Request(command=command, **fields), runtime


# ------------------------------------------------------------------------------------------------ sample
def run_sample(req: Request, *, out: str | Path | None, save_each: str | Path | None, overwrite: bool,
               progress: Progress | None, callback_on_step_end: Any = None,
               sketch: np.ndarray | None = None, pipeline: Any = None) -> dict[str, Any]:
    from facediff.conditioning.attributes import attribute_sweep

    req, sketch_array = _runtime_sketch(req, sketch)
    _check_outputs(out, save_each, overwrite)
    pipe = pipeline if pipeline is not None else _load(req, text=_wants_text(req))
    req = _stamp(req, pipe)
    if req.sweep:
        if not pipe.conditional:
            kind = "a text-to-face" if pipe.takes_text else "an unconditional"
            raise FacediffError(f"{pipe.model_dir} is {kind} model: --sweep needs an attribute-conditional model")
        conditions, seeds = attribute_sweep(pipe.attributes, pipe.num_levels, req.seed)
    else:
        conditions, seeds = req.attrs, [req.seed + i for i in range(req.n)]
    req = dataclasses.replace(req, seeds=seeds)
    output = pipe(seeds=seeds, attrs=conditions, sketch=sketch_array if sketch_array is not None else req.sketch,
                  conditions=req.conditions,
                  prompt=req.prompt, negative_prompt=req.negative_prompt, guidance=req.guidance,
                  attr_scales=req.attr_scales, sampler=req.sampler, steps=req.steps, eta=req.eta,
                  init_noise=req.init_noise, step_noise=req.step_noise, batch_size=req.batch_size,
                  precision=req.precision, callback_on_step_end=callback_on_step_end, progress=progress)
    images = output.images
    result = {"images": images, "path": None, "each": [], "request": req, "precision": output.precision,
              "interrupted": output.interrupted, "notes": [*req.notes, *output.notes]}
    if out is not None:
        from facediff.imaging import make_grid, save_png

        labels = dict(row_labels=list(pipe.attributes), col_labels=[str(i) for i in range(pipe.num_levels)]) \
            if req.sweep else {}
        ncol = pipe.num_levels if req.sweep else (req.ncol or _square_columns(len(images)))
        grid = make_grid(images, ncol, scale=req.scale, pad=2 if len(images) > 1 or labels else 0, **labels)
        result["path"] = save_png(grid, out, req.png_text(_size(images, req.scale)))
    if save_each is not None:
        def one(i: int) -> Request:
            attrs = conditions[i] if isinstance(conditions, list) else conditions
            prompt = req.prompt[i] if isinstance(req.prompt, list) else req.prompt
            return dataclasses.replace(req, n=1, seed=seeds[i], seeds=[seeds[i]], sweep=False, attrs=attrs,
                                       prompt=prompt, ncol=None)
        result["each"] = _save_each(images, save_each, out, one, req.scale)
    return result


# ------------------------------------------------------------------------------------------------ compose
def run_compose(req: Request, *, out: str | Path | None, save_each: str | Path | None, save_masks: bool,
                overwrite: bool, batched: bool = True, callback_on_step_end: Any = None,
                progress: Progress | None = None, layout=None, pipeline: Any = None) -> dict[str, Any]:
    from facediff.pipelines.compose import compose
    from facediff.pipelines.layout import layout_from_dict

    masks_out = None if out is None or not save_masks else Path(out).with_name(Path(out).stem + "-masks.png")
    _check_outputs(out, save_each, overwrite, masks_out)
    if layout is None:  # from the request's tables (a layout given as an object runs as given: it may hold arrays)
        layout = layout_from_dict(req.layout, "layout")
    else:
        layout = dataclasses.replace(layout, **{k: getattr(req, k) for k in ("sampler", "steps", "seed", "guidance",
                                                                              "bootstrap", "window_weights")})
    text = any(r.prompt is not None or r.negative_prompt is not None for r in [layout.background, *layout.regions])
    pipe = pipeline if pipeline is not None else _load(req, text=req.text or text)
    req = _stamp(req, pipe)
    seeds = [req.seed + i for i in range(req.n)]
    req = dataclasses.replace(req, seeds=seeds)
    res = compose(pipe, layout, n=req.n, batched=batched, precision=req.precision,
                  callback_on_step_end=callback_on_step_end, progress=progress)
    return _composed(res, req, out, save_each, masks_out)


def run_panorama(req: Request, *, out: str | Path | None, save_each: str | Path | None, overwrite: bool,
                 callback_on_step_end: Any = None, progress: Progress | None = None,
                 pipeline: Any = None) -> dict[str, Any]:
    from facediff.pipelines.compose import panorama

    _check_outputs(out, save_each, overwrite)
    pipe = pipeline if pipeline is not None else _load(req, text=_wants_text(req))
    req = _stamp(req, pipe)
    req = dataclasses.replace(req, seeds=[req.seed + i for i in range(req.n)])
    res = panorama(pipe, width=req.width, height=req.height, prompt=req.prompt, negative_prompt=req.negative_prompt,
                   attrs=req.attrs, conditions=req.conditions, circular=req.circular, stride=req.stride,
                   window_weights=req.window_weights, steps=req.steps, sampler=req.sampler,
                   guidance=req.guidance, seed=req.seed, n=req.n, precision=req.precision,
                   callback_on_step_end=callback_on_step_end, progress=progress, task="panorama")
    return _composed(res, req, out, save_each, None)


def _composed(res, req: Request, out, save_each, masks_out) -> dict[str, Any]:
    from facediff.imaging import make_grid, save_png
    from facediff.pipelines.compose import overlay_masks

    result: dict[str, Any] = {"images": res.images, "masks": res.masks, "views": res.views, "paths": res.paths,
                              "path": None, "masks_path": None, "each": [], "request": req,
                              "precision": res.precision, "interrupted": res.interrupted, "notes": list(req.notes)}
    ncol = req.ncol or _square_columns(len(res.images))
    if out is not None:
        grid = make_grid(res.images, ncol, scale=req.scale, pad=2 if len(res.images) > 1 else 0)
        result["path"] = save_png(grid, out, req.png_text(_size(res.images, req.scale)))
    if masks_out is not None:
        over = np.stack([overlay_masks(im, res.masks) for im in res.images])
        grid = make_grid(over, ncol, scale=req.scale, pad=2 if len(over) > 1 else 0)
        result["masks_path"] = save_png(grid, masks_out, req.png_text(_size(over, req.scale)))
    if save_each is not None:
        result["each"] = _save_each(res.images, save_each, out, lambda i: dataclasses.replace(
            req, n=1, seed=req.seeds[i], seeds=[req.seeds[i]], ncol=None), req.scale)
    return result


# ------------------------------------------------------------------------------------------------ helpers
def load_model(model: str | Path | None, device: str = "auto", *, text: bool = False,
               lora: str | Path | None = None, lora_scale: float = 1.0):
    """``api.load``: the pipeline of ``model`` on ``device``, with a LoRA applied when given."""
    from facediff.pipelines.load import apply_lora, load_pipeline, resolve_device

    pipe = load_pipeline(model, resolve_device(device), text=text)
    if lora is not None:
        apply_lora(pipe, lora, lora_scale)
    return pipe


def _wants_text(req: Request) -> bool:
    """The bundled text model, not the attribute one, when no --model is given: --text, a prompt or a negative
    prompt (text the attribute model cannot read)."""
    return bool(req.text or req.prompt is not None or req.negative_prompt is not None)


def _load(req: Request, *, text: bool):
    """The request's model; without one, the bundled model that takes the conditions given by kind name
    (``--cond``, ``--sketch``; for compose and panorama, one that also takes a layout when bundled), else the
    bundled text model for a prompt, else the bundled attribute model. The output
    names the model chosen (``model_name`` in the result and the PNG)."""
    from facediff.conditioning.conditioner import LEGACY_NAMES
    from facediff.pipelines.load import bundled_for

    model = req.model
    kinds = set(req.conditions or {}) | ({LEGACY_NAMES["sketch"]} if req.sketch is not None else set())
    if model is None and not text and req.command in ("compose", "panorama"):
        from facediff.conditioning.registry import context_kinds

        for context in sorted(context_kinds()):  # a model that knows where faces are: no ghost faces
            chosen = bundled_for(kinds | {context})
            model = str(chosen) if chosen is not None else model
    if model is None and kinds and not text:
        chosen = bundled_for(kinds)
        model = str(chosen) if chosen is not None else None
    return load_model(model, req.device, text=text, lora=req.lora, lora_scale=req.lora_scale)


def _stamp(req: Request, pipe) -> Request:
    """Fill what the run decides: the model's name and hash, the guidance default, input hashes, the version;
    a re-run whose model or inputs changed since the PNG was made gets a note saying so."""
    from facediff.fsutil import content_sha256, file_sha256

    notes = list(req.notes)
    folder = getattr(pipe, "model_dir", None)
    name = (Path(folder).parent.name if Path(folder).name == "export" else Path(folder).name) \
        if folder is not None else str(req.model)  # a run's export is named after the run
    model_hash = content_sha256(folder) if folder is not None else None
    if req.model_hash and model_hash and req.model_hash != model_hash:
        notes.append(f"the model's weights differ from the ones recorded ({req.model_hash[:10]} -> "
                     f"{model_hash[:10]}): the images will differ")
    from facediff.pipelines.load import resolve_guidance

    guidance = resolve_guidance(pipe, req.guidance)
    lora_hash = None
    if req.lora is not None:
        lora = Path(req.lora)
        lora_hash = content_sha256(lora) if lora.exists() else None
    sketch_hash = req.sketch_hash
    if req.sketch is not None and not req.sketch.startswith("array:"):
        if not Path(req.sketch).is_file():
            raise FacediffError(f"--sketch {req.sketch}: no such file")
        new = file_sha256(req.sketch)
        if sketch_hash and sketch_hash != new:
            notes.append(f"the sketch {req.sketch} changed since it was recorded: the images will differ")
        sketch_hash = new
    if req.command != "compose" and not req.sweep:  # nothing silently blank: say which conditions are null
        from facediff.conditioning.conditioner import LEGACY_NAMES

        given = {LEGACY_NAMES[k]: v for k, v in (("attrs", req.attrs), ("sketch", req.sketch), ("prompt", req.prompt))}
        if req.command == "panorama":  # kinds with a panorama default (a layout's row of faces) are not null
            given.update({k.name: k.panorama_default() for k in pipe.conditioner.kinds
                          if k.panorama_default() is not None})
        notes += pipe.conditioner.null_notes({**given, **(req.conditions or {})})
    return dataclasses.replace(req, model_name=name, model_hash=model_hash, guidance=guidance, lora_hash=lora_hash,
                               sketch_hash=sketch_hash, version=__version__, notes=notes)


def _runtime_sketch(req: Request, array: np.ndarray | None) -> tuple[Request, np.ndarray | None]:
    """A sketch given as an array (API, UI) runs as is; the request records its SHA-256."""
    if array is None:
        if req.sketch is not None and req.sketch.startswith("array:"):
            raise FacediffError("this request was made from a drawn sketch that was not saved; pass --sketch FILE")
        return req, None
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    return dataclasses.replace(req, sketch=f"array:{digest[:16]}", sketch_hash=digest), array


def _check_outputs(out, save_each, overwrite: bool, *more: Path | None) -> None:
    from facediff.fsutil import check_output

    for path in (out, *more):
        if path is not None:
            check_output(path, "--out", overwrite)
    if save_each is not None:
        folder = Path(save_each)
        if folder.exists() and not folder.is_dir():
            raise FacediffError(f"--save-each {folder}: a file; give a folder")
        check_output(folder / "x.png", "--save-each", True)
        stem = Path(out).stem if out is not None else "image"
        old = sorted(folder.glob(f"{stem}-[0-9][0-9][0-9]-seed*.png")) if folder.is_dir() else []
        if old and not overwrite:
            raise FacediffError(f"--save-each {folder}: holds {old[0].name} (and maybe more) already; pass "
                                "--overwrite to replace them (or choose another folder)")


def _save_each(images: np.ndarray, folder: str | Path, out, request_of, scale: int) -> list[Path]:
    """One PNG per image, ``FOLDER/<out stem>-<i>-seed<seed>.png``, each with its own request."""
    from facediff.imaging import save_png

    folder = Path(folder)
    stem = Path(out).stem if out is not None else "image"
    reqs = [request_of(i) for i in range(len(images))]
    paths = [folder / f"{stem}-{i:03d}-seed{r.seed}.png" for i, r in enumerate(reqs)]
    written = []
    for image, r, path in zip(images, reqs, paths):
        big = np.kron(image, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else image
        written.append(save_png(big, path, r.png_text(_size(image[None], scale))))
    return written


def _square_columns(n: int) -> int:
    """Columns of a square-ish grid of n tiles."""
    return max(1, int(np.ceil(np.sqrt(n))))


def _size(images: np.ndarray, scale: int) -> tuple[int, int]:
    """(width, height) of one image as saved."""
    return images.shape[2] * scale, images.shape[1] * scale
