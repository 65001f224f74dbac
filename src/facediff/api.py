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
from facediff.request import Request


# ----------------------------------------------------------------------------------------------- data
def synth(out: str | Path, *, n: int = 1024, size: int = 64, style: str = "human", seed: int = 0,
          layout: str = "faces", overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Render SynthFaces into a prepared data set directory (``layout`` "scenes": also off-centre faces,
    groups of small faces and background-only images, for composition)."""
    from facediff.data.synth_scene import write_synth_layout

    return write_synth_layout(out, n=n, size=size, style=style, seed=seed, layout=layout, overwrite=overwrite,
                       progress=lambda d, t: report(progress, "synth", d, t))


def prepare(source: str, root: str | Path, out: str | Path, *, size: int = 64, crop: str = "center",
            sketch: str | None = None, limit: int | None = None, overwrite: bool = False,
            masks: str | Path | None = None, progress: Progress | None = None) -> Path:
    """Prepare a real source (celeba | celeba-dialog | folder) into a prepared data set directory; ``masks``: a
    folder of face-parsing label PNGs (CelebAMask-HQ ids) -> masks.npy (images without one are skipped)."""
    from facediff.data.prepare import prepare as _prepare

    return _prepare(source, root, size, out, crop=crop, sketch=sketch, limit=limit, overwrite=overwrite,
                    masks=masks, progress=lambda d, t: report(progress, f"prepare {source}", d, t))


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


def train_parser(data: str | Path, out: str | Path, *, steps: int = 4000, batch_size: int = 16, lr: float = 2e-3,
                 size: int = 64, seed: int = 0, budget_minutes: float | None = None, eval_every: int = 250,
                 heldout_n: int = 500, lowres_p: float = 0.4, precision: str = "auto", resume: bool = False,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Train the face parser (the mask oracle) on a prepared data set with masks.npy; writes OUT/parser and
    OUT/metrics.json (validation and, for SynthFaces, held-out mIoU at 64 and 32 px)."""
    from facediff.training.parser import train_parser as _train_parser

    return _train_parser(data, out, steps=steps, batch_size=batch_size, lr=lr, size=size, seed=seed,
                         progress=progress, resume=resume, eval_every=eval_every, heldout_n=heldout_n,
                         lowres_p=lowres_p, mixed_precision=precision,
                         time_budget_s=None if budget_minutes is None else budget_minutes * 60)


def train_text_encoder(data: str | Path, out: str | Path, *, config: str | Path | None = None, steps: int = 3000,
                       batch_size: int = 128, lr: float = 1e-3, seed: int = 0, budget_minutes: float | None = None,
                       eval_every: int = 250, resume: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Pretrain a t2i model's text encoder on what free captions of a SynthFaces set say (``config``: a preset or
    TOML whose [text] section sets the encoder; default t2i-64); writes OUT/text_encoder for a t2i run's
    ``--set text.encoder=OUT/text_encoder``."""
    from facediff.config import load_config
    from facediff.training.text_encoder import train_text_encoder as _train

    return _train(data, out, text=load_config(config or "t2i-64").text, steps=steps, batch_size=batch_size, lr=lr,
                  seed=seed, eval_every=eval_every, resume=resume, progress=progress,
                  time_budget_s=None if budget_minutes is None else budget_minutes * 60)


# ----------------------------------------------------------------------------------------------- sample
def load(model: str | Path | None = None, device: str = "auto", *, text: bool = False,
         lora: str | Path | None = None, lora_scale: float = 1.0):
    """The ``FacediffPipeline`` of a run / export folder / Stable Diffusion folder or hub id (None = the bundled
    default model; the bundled text-to-face model when ``text``), with a LoRA file (diffusers or kohya format)
    applied at ``lora_scale`` when given, on ``device`` (auto = the GPU when torch sees one, cpu, cuda[:N])."""
    from facediff.generate import load_model

    return load_model(model, device, text=text, lora=lora, lora_scale=lora_scale)


def convert(old: str | Path, new: str | Path) -> Path:
    """Rewrite a model folder (e.g. a facediff-export/1 export with facediff.json) in the current format."""
    from facediff.errors import FacediffError
    from facediff.pipelines.load import load_pipeline, save_pipeline

    new = Path(new)
    if new.exists() and any(new.iterdir()):
        raise FacediffError(f"--out {new}: not empty; choose a new folder")
    return save_pipeline(load_pipeline(old), new)


def check_output(path: str | Path, what: str = "--out", overwrite: bool = True) -> Path:
    """Fail before the work, not after it (``fsutil.check_output``)."""
    from facediff.fsutil import check_output as _check

    return _check(path, what, overwrite)


def parse_attrs(text: str | dict[str, int] | None) -> dict[str, int] | None:
    from facediff.conditioning.attributes import parse_attrs as _parse

    if text is None or isinstance(text, dict):
        return text
    return _parse(text) if text.strip() else None


# The three generation commands take a ``facediff.request.Request`` (or its fields as keyword arguments, or
# both: the keywords override single fields) and save PNGs that carry it (``facediff.generate``).
def sample(request: Request | str | Path | None = None, /, *, out: str | Path | None = None,
           save_each: str | Path | None = None, overwrite: bool = False, progress: Progress | None = None,
           callback_on_step_end: Any = None, pipeline: Any = None, **fields: Any) -> dict[str, Any]:
    """Generate faces. ``request``: a ``Request``, or the model (None = the bundled default model; with a
    prompt the bundled text-to-face model); ``fields``: ``Request`` fields (n, attrs "smiling=5,eyeglasses=3",
    attr_scales, prompt, negative_prompt, lora, lora_scale, sketch (a PNG path or a uint8 array), sweep,
    sampler, steps, guidance, seed, eta, init_noise, step_noise, batch_size, precision, device, scale, ncol).
    ``out``: the grid PNG; ``save_each``: a folder for one PNG per image (each with its own seed in its
    settings); ``pipeline``: a loaded pipeline of that model (``api.load``) to use instead of loading it.
    Returns {"images": uint8 (N, H, W, 3), "path", "each", "request", "precision", "interrupted", "notes"}."""
    from facediff.generate import make_request, run_sample

    req, runtime = make_request("sample", request, fields)
    return run_sample(req, out=out, save_each=save_each, overwrite=overwrite, progress=progress,
                      callback_on_step_end=callback_on_step_end, pipeline=pipeline, **runtime)


def compose(request: Request | str | Path | None = None, layout: "str | Path | Any" = None, /, *,
            out: str | Path | None = None, save_each: str | Path | None = None, save_masks: bool = False,
            overwrite: bool = False, batched: bool = True, callback_on_step_end: Any = None,
            progress: Progress | None = None, pipeline: Any = None, **fields: Any) -> dict[str, Any]:
    """Compose images from regions, each with its own condition (MultiDiffusion; layout file format in the
    README). ``request``: a ``Request`` or the model (None: the bundled text model when some region has a
    prompt, else the bundled attribute model); ``layout``: a TOML path, a ``pipelines.compose.Layout`` or its
    tables; ``fields``: n, steps, sampler, seed, guidance, bootstrap (override the layout's), precision,
    device, scale. Returns {"images", "masks", "views", "paths", "path", "masks_path", "each", "request"};
    ``save_masks`` also writes the masks tinted over the result (OUT-masks.png)."""
    from facediff.generate import make_request, run_compose

    if layout is not None:
        fields["layout"] = layout
    req, runtime = make_request("compose", request, fields)
    return run_compose(req, out=out, save_each=save_each, save_masks=save_masks, overwrite=overwrite,
                       batched=batched, callback_on_step_end=callback_on_step_end, progress=progress,
                       pipeline=pipeline, **runtime)


def panorama(request: Request | str | Path | None = None, /, *, out: str | Path | None = None,
             save_each: str | Path | None = None, overwrite: bool = False, callback_on_step_end: Any = None,
             progress: Progress | None = None, pipeline: Any = None, **fields: Any) -> dict[str, Any]:
    """A wide (or tall) canvas under one condition: overlapping native-size windows fused every step.
    ``fields``: width (required), height (None: the model's size), prompt, negative_prompt, attrs, circular,
    stride, steps, sampler, guidance, seed, n, precision, device, scale."""
    from facediff.generate import make_request, run_panorama

    req, _ = make_request("panorama", request, fields)
    return run_panorama(req, out=out, save_each=save_each, overwrite=overwrite,
                        callback_on_step_end=callback_on_step_end, progress=progress, pipeline=pipeline)


def request_from_png(path: str | Path) -> Request:
    """The request a facediff PNG was made with (``facediff sample --from-png``, ``facediff info``)."""
    return Request.from_png(path)


# ----------------------------------------------------------------------------------------------- evaluate
def evaluate(model: str | Path | None, data: str | Path, *, metrics: str | None = None, n: int = 256,
             sampler: str = "dpmpp", steps: int = 25, guidance: float | None = None, seed: int = 0,
             split: str | None = None, init_noise: str = "normal", step_noise: bool = True,
             prompts: str = "caption", clip: str | None = None, text: bool = False, device: str = "auto",
             out: str | Path | None = None, overwrite: bool = False,
             progress: Progress | None = None) -> dict[str, Any]:
    """Sample ``model`` under the conditions of ``data`` and write metrics.json + report.html into ``out``
    (``model`` None: the bundled default model, or the bundled text-to-face model when ``text``).
    Text models are prompted with the labels field ``prompts`` (caption | caption_heldout); ``clip`` is a CLIP
    model (local path or hub id) for the CLIP score. An existing OUT/metrics.json is an error unless
    ``overwrite``."""
    from facediff.evaluation.evaluate import DEFAULT_METRICS, evaluate as _evaluate

    if out is not None:
        check_output(Path(out) / "metrics.json", "--out", overwrite)
    return _evaluate(model, data, metrics=metrics or DEFAULT_METRICS, n=n, sampler=sampler, steps=steps,
                     guidance=guidance, seed=seed, split=split, init_noise=init_noise, step_noise=step_noise,
                     prompts=prompts, clip=clip, text=text, device=device, out=out, progress=progress)


def oracle(estimator: str | Path | None = None, device: str = "cpu"):
    """The oracle on a batch: ``o = oracle(); o.predict(images_uint8)`` -> {property: (n,) array} (attribute
    levels; style and hair_colour as names); ``o.score_prompts(images, prompts)`` / ``o.score_attrs(images,
    attr_dicts)`` -> per-line agreement. ``estimator``: the folder of an estimator you trained (``facediff train
    estimator``, e.g. for real photos) instead of the bundled SynthFaces oracle. See docs/evaluation.md."""
    from facediff.evaluation.user import Oracle

    return Oracle(estimator, device)


def evaluate_prompts(prompts: str | Path | list[str], *, model: str | Path | None = None, per_prompt: int = 4,
                     seed: int = 0, sampler: str = "dpmpp", steps: int = 25, guidance: float | None = None,
                     device: str = "auto", data: str | Path | None = None, out: str | Path | None = None,
                     overwrite: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Score a text-to-face ``model`` (None: the bundled one) on your prompts (a text file, one per line, or a
    list): ``per_prompt`` images each (seeds seed..seed+K-1), read by the oracle; writes prompts.json, .md and
    .png into ``out``; ``data``: also FD_oracle against that prepared data set. Progress task "eval prompts"."""
    from facediff.evaluation.user import evaluate_prompts as _evaluate_prompts

    if out is not None:
        check_output(Path(out) / "prompts.json", "--out", overwrite)
    return _evaluate_prompts(prompts, model=model, per_prompt=per_prompt, seed=seed, sampler=sampler, steps=steps,
                             guidance=guidance, device=device, data=data, out=out, progress=progress)


def evaluate_images(images: str | Path | np.ndarray, *, prompts: str | Path | list[str] | None = None,
                    attrs: str | Path | list[dict[str, int] | str] | None = None, data: str | Path | None = None,
                    out: str | Path | None = None, overwrite: bool = False,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Score images you have (a folder of png / jpg / webp, sorted by name, or uint8 (n, H, W, 3)) against
    ``prompts`` or ``attrs`` (a text file, one line per image or per consecutive group of images, or a list);
    no model is loaded. Writes prompts.json, .md and .png into ``out``. Progress task "eval prompts"."""
    from facediff.evaluation.user import evaluate_images as _evaluate_images

    if out is not None:
        check_output(Path(out) / "prompts.json", "--out", overwrite)
    return _evaluate_images(images, prompts=prompts, attrs=attrs, data=data, out=out, progress=progress)


# ----------------------------------------------------------------------------------------------- experiments
def experiment(name: str, out: str | Path, *, data: str | Path | None = None, budget_minutes: float | None = None,
               size: int = 32, model: str | Path | None = None, n_eval: int | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Run one of the seeds' recipes (``facediff.registry.RECIPES``) into ``out``."""
    from facediff.experiments.registry import run_experiment

    return run_experiment(name, out, data=data, budget_minutes=budget_minutes, size=size, model=model,
                          n_eval=n_eval, progress=progress)
