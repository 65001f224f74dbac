"""The Python API. The CLI and the UI only call these functions; each is a thin shell over its layer.

    import facediff.api as fd
    fd.synth("data/synth32", n=2048, size=32)
    fd.train("ddpm", "tiny-ddpm", out="runs/tiny")
    fd.sample(model="runs/tiny", attrs="smiling=5", guidance=3, n=16, out="smiles.png")
    pipe = fd.load("runs/tiny")          # a FacediffPipeline (diffusers DiffusionPipeline)
    images = pipe(8, attrs={"smiling": 5}, guidance=3).images

Long functions take ``progress(task, done, total, **info)`` (``facediff.progress``); None reports nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facediff.config import RunConfig
from facediff.progress import Progress, report


# ----------------------------------------------------------------------------------------------- data
def synth(out: str | Path, *, n: int = 1024, size: int = 64, style: str = "human", seed: int = 0,
          overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Render SynthFaces into a prepared data set directory."""
    from facediff.data.synth import write_synth

    return write_synth(out, n=n, size=size, style=style, seed=seed, overwrite=overwrite,
                       progress=lambda d, t: report(progress, "synth", d, t))


def prepare(source: str, root: str | Path, out: str | Path, *, size: int = 64, crop: str = "center",
            sketch: str | None = None, limit: int | None = None, overwrite: bool = False,
            progress: Progress | None = None) -> Path:
    """Prepare a real source (celeba | celeba-dialog | folder) into a prepared data set directory."""
    from facediff.data.prepare import prepare as _prepare

    return _prepare(source, root, size, out, crop=crop, sketch=sketch, limit=limit, overwrite=overwrite,
                    progress=lambda d, t: report(progress, f"prepare {source}", d, t))


def inspect(path: str | Path, out_png: str | Path | None = None, n: int = 64) -> dict[str, Any]:
    """Contact sheet PNG + counts per attribute level of a prepared data set."""
    from facediff.data.inspect import inspect_dataset

    out_png = Path(out_png) if out_png else Path(path) / "contact_sheet.png"
    return inspect_dataset(path, out_png, n=n, quiet=True)


def sketch(image: str | Path, out: str | Path, method: str = "xdog") -> Path:
    """Extract a line drawing (sketch) from a photo."""
    from facediff.data.sketch import sketch_file

    return sketch_file(image, out, method)


# ----------------------------------------------------------------------------------------------- train
def train(kind: str, config: str | Path | RunConfig | None, out: str | Path, *, overrides: list[str] | None = None,
          resume: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Train a model of ``kind`` from a TOML config or preset name (+ ``section.key=value`` overrides) into ``out``."""
    from facediff.training.run import train as _train

    return _train(kind, config, out, overrides=overrides, resume=resume, progress=progress)


def train_estimator(data: str | Path, out: str | Path, *, steps: int = 3000, batch_size: int = 64,
                    lr: float = 1e-3, size: int = 32, seed: int = 0, budget_minutes: float | None = None,
                    eval_every: int = 250, precision: str = "auto", resume: bool = False,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Train the multi-head attribute estimator (seed 002) on a prepared data set; writes OUT/estimator.
    ``precision``: [train] mixed_precision (auto | no | bf16 | fp16 on CUDA)."""
    from facediff.training.estimator import train_estimator as _train_estimator

    return _train_estimator(data, out, steps=steps, batch_size=batch_size, lr=lr, size=size, seed=seed,
                            progress=progress, resume=resume, eval_every=eval_every, mixed_precision=precision,
                            time_budget_s=None if budget_minutes is None else budget_minutes * 60)


# ----------------------------------------------------------------------------------------------- sample
def load(model: str | Path | None = None, device: str = "auto", *, text: bool = False,
         lora: str | Path | None = None, lora_scale: float = 1.0):
    """The ``FacediffPipeline`` of a run / export folder / Stable Diffusion folder or hub id (None = the bundled
    default model; the bundled text-to-face model when ``text``), with a LoRA file (diffusers or kohya format)
    applied at ``lora_scale`` when given, on ``device`` (auto = the GPU when torch sees one, cpu, cuda[:N])."""
    from facediff.pipelines.load import load_pipeline, resolve_device

    pipe = load_pipeline(model, resolve_device(device), text=text)
    if lora is not None:
        from facediff.pipelines.load import apply_lora

        apply_lora(pipe, lora, lora_scale)
    return pipe


def convert(old: str | Path, new: str | Path) -> Path:
    """Rewrite a model folder (e.g. a facediff-export/1 export with facediff.json) in the current format."""
    from facediff.errors import FacediffError
    from facediff.pipelines.load import load_pipeline, save_pipeline

    new = Path(new)
    if new.exists() and any(new.iterdir()):
        raise FacediffError(f"--out {new}: not empty; choose a new folder")
    return save_pipeline(load_pipeline(old), new)


def check_output(path: str | Path, what: str = "--out") -> Path:
    """Fail before the work, not after it: ``path`` must be creatable (its first existing ancestor a writable
    folder, nothing on the way a file)."""
    import os

    from facediff.errors import FacediffError

    path = Path(path)
    if path.is_dir() and what == "--out" and path.suffix:
        raise FacediffError(f"{what} {path}: a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FacediffError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise FacediffError(f"{what} {path}: {parent} is not writable")
    return path


def parse_attrs(text: str | dict[str, int] | None) -> dict[str, int] | None:
    from facediff.conditioning.attributes import parse_attrs as _parse

    if text is None or isinstance(text, dict):
        return text
    return _parse(text) if text.strip() else None


def sample(model: str | Path | None = None, *, n: int = 16, attrs: str | dict[str, int] | None = None,
           prompt: str | list[str] | None = None, negative_prompt: str | None = None,
           lora: str | Path | None = None, lora_scale: float = 1.0, guidance: float = 3.0, attr_scales: str | dict[str, float] | None = None, sampler: str = "dpmpp",
           steps: int = 25, seed: int = 0, eta: float = 0.0, init_noise: str = "normal", step_noise: bool = True,
           sweep: bool = False, sketch: str | Path | np.ndarray | None = None, batch_size: int = 64,
           precision: str = "no", device: str = "auto", out: str | Path | None = None, ncol: int | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """Generate faces. ``model`` None = the bundled default model. Returns {"images": uint8 (N,H,W,3), "path"}.

    ``attrs`` ("smiling=5,eyeglasses=3") are guided with scale ``guidance``; ``attr_scales`` gives some
    attributes their own scale (per-attribute guidance). ``sweep`` makes the attribute-sweep grid instead:
    one row per attribute, its levels 0..5 left to right, everything else fixed. ``sketch`` (a PNG path or
    a uint8 array, dark lines on light paper) conditions a sketch-conditional latent model. ``prompt`` (one
    text, or one per image) conditions a text-to-face model (``model`` None: the bundled one); ``lora`` applies
    a LoRA file to it at ``lora_scale``. ``precision``: the network's, "no" (fp32: the same images on every
    machine), "bf16" or "auto" (bf16 where measured faster on this machine). ``device``: auto (the GPU when
    torch sees one), cpu, cuda or cuda:N.
    """
    from facediff.conditioning.attributes import attribute_sweep, parse_scales
    from facediff.errors import FacediffError
    from facediff.imaging import make_grid, save_png

    if out is not None:
        check_output(out)
    pipe = load(model, device, text=prompt is not None, lora=lora, lora_scale=lora_scale)
    scales = attr_scales if isinstance(attr_scales, dict) or attr_scales is None else parse_scales(attr_scales)
    if sweep:
        if not pipe.conditional:
            kind = "a text-to-face" if pipe.takes_text else "an unconditional"
            raise FacediffError(f"{pipe.model_dir} is {kind} model: --sweep needs an attribute-conditional model")
        conditions, seeds = attribute_sweep(pipe.attributes, pipe.num_levels, seed)
        ncol = pipe.num_levels
    else:
        conditions, seeds = parse_attrs(attrs), [seed + i for i in range(n)]
    output = pipe(seeds=seeds, attrs=conditions, sketch=sketch, prompt=prompt, negative_prompt=negative_prompt,
                  guidance=guidance, attr_scales=scales,
                  sampler=sampler, steps=steps, eta=eta, init_noise=init_noise, step_noise=step_noise,
                  batch_size=batch_size, precision=precision, progress=progress)
    images = output.images
    result: dict[str, Any] = {"images": images, "path": None, "precision": output.precision}
    if out is not None:
        scale = max(1, 96 // images.shape[1])
        if sweep:
            grid = make_grid(images, ncol, scale=scale, row_labels=list(pipe.attributes),
                             col_labels=[str(i) for i in range(pipe.num_levels)])
        else:
            grid = make_grid(images, ncol or int(np.ceil(np.sqrt(len(images)))), scale=scale)
        result["path"] = save_png(grid, out)
    return result


# ----------------------------------------------------------------------------------------------- compose
def _save_compositions(images: np.ndarray, out: str | Path) -> Path:
    from facediff.imaging import make_grid, save_png

    scale = max(1, 256 // min(images.shape[1:3]))
    return save_png(make_grid(images, len(images), scale=scale) if len(images) > 1 else
                    np.kron(images[0], np.ones((scale, scale, 1), np.uint8)), out)


def _compose_result(res, out: str | Path | None, save_masks: bool) -> dict[str, Any]:
    from facediff.pipelines.compose import overlay_masks

    result: dict[str, Any] = {"images": res.images, "masks": res.masks, "views": res.views, "paths": res.paths,
                              "path": None, "masks_path": None, "precision": res.precision}
    if out is not None:
        result["path"] = _save_compositions(res.images, out)
        if save_masks:
            over = np.stack([overlay_masks(im, res.masks) for im in res.images])
            result["masks_path"] = _save_compositions(over, Path(out).with_name(Path(out).stem + "-masks.png"))
    return result


def compose(model: str | Path | None, layout: "str | Path | Any", *, n: int = 1, steps: int | None = None,
            sampler: str | None = None, seed: int | None = None, bootstrap: float | None = None,
            out: str | Path | None = None, save_masks: bool = False, batched: bool = True, precision: str = "no",
            device: str = "auto", callback_on_step_end: Any = None, progress: Progress | None = None) -> dict[str, Any]:
    """Compose one image from regions, each with its own condition (MultiDiffusion; layout file format in the
    README). ``layout``: a TOML path or a ``facediff.pipelines.compose.Layout``; ``steps`` / ``sampler`` /
    ``seed`` / ``bootstrap`` override the layout's. ``model`` None: the bundled text model when some region
    has a prompt, else the bundled attribute model. Returns {"images", "masks", "views", "paths", "path",
    "masks_path"}; ``save_masks`` also writes the masks tinted over the result (OUT-masks.png)."""
    from facediff.pipelines.compose import compose as _compose, load_layout

    if out is not None:
        check_output(out)
    lay = load_layout(layout) if isinstance(layout, (str, Path)) else layout
    for key, value in (("steps", steps), ("sampler", sampler), ("seed", seed), ("bootstrap", bootstrap)):
        if value is not None:
            setattr(lay, key, value)
    text = any(r.prompt is not None for r in [lay.background, *lay.regions])
    pipe = load(model, device, text=text)
    res = _compose(pipe, lay, n=n, batched=batched, precision=precision, callback_on_step_end=callback_on_step_end,
                   progress=progress)
    return _compose_result(res, out, save_masks)


def panorama(model: str | Path | None = None, *, width: int, height: int | None = None, prompt: str | None = None,
             negative_prompt: str | None = None, attrs: str | dict[str, int] | None = None, circular: bool = False,
             stride: int | None = None, steps: int = 25, sampler: str = "ddim", guidance: float = 3.0, seed: int = 0,
             n: int = 1, precision: str = "no", device: str = "auto", out: str | Path | None = None,
             callback_on_step_end: Any = None, progress: Progress | None = None) -> dict[str, Any]:
    """A wide (or tall) canvas under one condition: overlapping native-size windows fused every step;
    ``circular`` wraps the left and right edges (a 360-degree panorama). ``height`` None: the model's size."""
    from facediff.pipelines.compose import panorama as _panorama

    if out is not None:
        check_output(out)
    pipe = load(model, device, text=prompt is not None)
    res = _panorama(pipe, width=width, height=height, prompt=prompt, negative_prompt=negative_prompt,
                    attrs=parse_attrs(attrs), circular=circular, stride=stride, steps=steps, sampler=sampler,
                    guidance=guidance, seed=seed, n=n, precision=precision, callback_on_step_end=callback_on_step_end,
                    progress=progress)
    return _compose_result(res, out, False)


# ----------------------------------------------------------------------------------------------- evaluate
def evaluate(model: str | Path | None, data: str | Path, *, metrics: str | None = None, n: int = 256,
             sampler: str = "dpmpp", steps: int = 25, guidance: float = 3.0, seed: int = 0,
             split: str | None = None, init_noise: str = "normal", step_noise: bool = True,
             prompts: str = "caption", clip: str | None = None, text: bool = False, device: str = "auto",
             out: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Sample ``model`` under the conditions of ``data`` and write metrics.json + report.html into ``out``
    (``model`` None: the bundled default model, or the bundled text-to-face model when ``text``).
    Text models are prompted with the labels field ``prompts`` (caption | caption_heldout); ``clip`` is a CLIP
    model (local path or hub id) for the CLIP score."""
    from facediff.evaluation.evaluate import DEFAULT_METRICS, evaluate as _evaluate

    if out is not None:
        check_output(Path(out) / "metrics.json")
    return _evaluate(model, data, metrics=metrics or DEFAULT_METRICS, n=n, sampler=sampler, steps=steps,
                     guidance=guidance, seed=seed, split=split, init_noise=init_noise, step_noise=step_noise,
                     prompts=prompts, clip=clip, text=text, device=device, out=out, progress=progress)


# ----------------------------------------------------------------------------------------------- experiments
def experiment(name: str, out: str | Path, *, data: str | Path | None = None, budget_minutes: float | None = None,
               size: int = 32, model: str | Path | None = None, n_eval: int | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Run one of the seeds' recipes (``facediff.registry.RECIPES``) into ``out``."""
    from facediff.experiments.registry import run_experiment

    return run_experiment(name, out, data=data, budget_minutes=budget_minutes, size=size, model=model,
                          n_eval=n_eval, progress=progress)
