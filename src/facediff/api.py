"""The Python API. The CLI and the UI only call these functions.

    import facediff.api as fd
    fd.synth("data/synth32", n=2048, size=32)
    fd.train("ddpm", "configs/tiny-ddpm.toml", out="runs/tiny")
    fd.sample(model="runs/tiny", attrs="smiling=5", guidance=3, n=16, out="smiles.png")
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from facediff.config import RunConfig, load_config
from facediff.errors import FacediffError
from facediff.imaging import make_grid, save_png, to_uint8
from facediff.training.progress import ProgressBar

TRAIN_KINDS = ("ddpm", "autoencoder", "ldm")


# ----------------------------------------------------------------------------------------------- data
def synth(out: str | Path, *, n: int = 1024, size: int = 64, style: str = "human", seed: int = 0,
          overwrite: bool = False, show_progress: bool = True) -> Path:
    """Render SynthFaces into a prepared data set directory."""
    from facediff.data.synth import write_synth

    if n < 1:
        raise FacediffError(f"--n {n}: must be at least 1")
    bar = ProgressBar(n, "synth", enabled=show_progress)
    try:
        return write_synth(out, n=n, size=size, style=style, seed=seed, overwrite=overwrite, progress=bar.callback())
    finally:
        bar.close()


def prepare(source: str, root: str | Path, out: str | Path, *, size: int = 64, crop: str = "center",
            sketch: str | None = None, limit: int | None = None, overwrite: bool = False,
            show_progress: bool = True) -> Path:
    """Prepare a real source (celeba | celeba-dialog | folder) into a prepared data set directory."""
    from facediff.data.prepare import prepare as _prepare

    bar = ProgressBar(1, f"prepare {source}", enabled=show_progress)

    try:
        return _prepare(source, root, size, out, crop=crop, sketch=sketch, limit=limit, overwrite=overwrite,
                        progress=bar.set_total)
    finally:
        bar.close()


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
          resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train a model of ``kind`` from a TOML config (+ ``section.key=value`` overrides) into run dir ``out``."""
    if kind not in TRAIN_KINDS:
        raise FacediffError(f"unknown kind {kind!r} (known: {', '.join(TRAIN_KINDS)}, estimator)")
    out = Path(out)
    if resume:
        from facediff.config import apply_overrides, load_config_json

        if not (out / "config.json").is_file():
            raise FacediffError(f"--resume: {out} holds no run (no config.json)")
        cfg = apply_overrides(load_config_json(out / "config.json"), overrides)
    elif isinstance(config, RunConfig):
        cfg = config
    else:
        cfg = load_config(config, overrides)
    if config is None and not resume and cfg.kind != kind:
        from dataclasses import replace

        cfg = replace(cfg, kind=kind)  # defaults for this kind
    if cfg.kind != kind:
        raise FacediffError(f"the config is for kind = {cfg.kind!r}, not {kind!r}")
    if kind == "autoencoder":
        from facediff.training.autoencoder import train_autoencoder

        return train_autoencoder(cfg, out, resume=resume, show_progress=show_progress)
    from facediff.training.loop import train as _train

    return _train(cfg, out, resume=resume, show_progress=show_progress)


def train_estimator(data: str | Path, out: str | Path, *, steps: int = 3000, batch_size: int = 64,
                    lr: float = 1e-3, size: int = 32, seed: int = 0, budget_minutes: float | None = None,
                    show_progress: bool = True) -> dict[str, Any]:
    """Train the multi-head attribute estimator (seed 002) on a prepared data set; writes OUT/estimator."""
    from facediff.training.estimator import train_estimator as _train_estimator

    bar = ProgressBar(steps, "train estimator", enabled=show_progress)
    try:
        return _train_estimator(data, out, steps=steps, batch_size=batch_size, lr=lr, size=size, seed=seed,
                                progress=lambda step, total, loss: bar.update(step, loss=float(loss)),
                                time_budget_s=None if budget_minutes is None else budget_minutes * 60)
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------------- sample
def load_sketch(sketch: str | Path | np.ndarray, image_size: int, latent_size: int) -> torch.Tensor:
    """A sketch PNG/array (dark lines on light paper) -> (1, latent_size**2) ink density, as in training."""
    from PIL import Image, UnidentifiedImageError

    from facediff.training.latents import sketch_to_latent_grid

    if isinstance(sketch, np.ndarray):
        arr = sketch if sketch.ndim == 2 else np.asarray(Image.fromarray(sketch).convert("L"))
    else:
        try:
            im = Image.open(sketch).convert("L")
        except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
            raise FacediffError(f"--sketch {sketch}: cannot read it as an image ({type(e).__name__})") from None
        arr = np.asarray(im)
    if arr.shape != (image_size, image_size):
        arr = np.asarray(Image.fromarray(arr).resize((image_size, image_size), Image.LANCZOS))
    return sketch_to_latent_grid(arr[None], latent_size)


def parse_attrs(text: str | dict[str, int] | None) -> dict[str, int] | None:
    from facediff.sampling.conditioning import parse_attrs as _parse

    if text is None or isinstance(text, dict):
        return text
    return _parse(text) if text.strip() else None


def sample(model: str | Path | None = None, *, n: int = 16, attrs: str | dict[str, int] | None = None,
           guidance: float = 3.0, attr_scales: str | dict[str, float] | None = None, sampler: str = "dpmpp",
           steps: int = 25, seed: int = 0, eta: float = 0.0, init_noise: str = "normal", step_noise: bool = True,
           sweep: bool = False, sketch: str | Path | np.ndarray | None = None, batch_size: int = 64,
           out: str | Path | None = None, ncol: int | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Generate faces. ``model`` None = the bundled default model. Returns {"images": uint8 (N,H,W,3), "path"}.

    ``attrs`` ("smiling=5,eyeglasses=3") are guided with scale ``guidance``; ``attr_scales`` gives some
    attributes their own scale (per-attribute guidance). ``sweep`` makes the attribute-sweep grid instead:
    one row per attribute, its levels 0..5 left to right, everything else fixed. ``sketch`` (a PNG path or
    a uint8 array, dark lines on light paper) conditions a sketch-conditional latent model.
    """
    from facediff.models.bundle import load_bundle
    from facediff.sampling.conditioning import parse_scales
    from facediff.sampling.generate import attribute_sweep, generate_images
    from facediff.sampling.samplers import SAMPLERS

    if sampler not in SAMPLERS:
        raise FacediffError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if steps < 1 or n < 1:
        raise FacediffError("--steps and --n must be at least 1")
    if init_noise not in ("normal", "zero", "constant"):
        raise FacediffError(f"--init-noise {init_noise!r}: choose normal, zero or constant")
    bundle = load_bundle(model)
    cond_attrs = parse_attrs(attrs)
    scales = attr_scales if isinstance(attr_scales, dict) or attr_scales is None else parse_scales(attr_scales)
    if (cond_attrs or scales or sweep) and not bundle.conditional:
        raise FacediffError(f"{bundle.path} is an unconditional model: --attrs/--attr-scales/--sweep need an "
                            "attribute-conditional model")
    for name in list(cond_attrs or {}) + list(scales or {}):
        if name not in bundle.attributes:
            raise FacediffError(f"unknown attribute {name!r} for this model (known: {', '.join(bundle.attributes)})")
    if sweep:
        conditions, seeds = attribute_sweep(bundle.attributes, bundle.num_levels, seed)
        ncol = bundle.num_levels
    else:
        seeds = [seed + i for i in range(n)]
        conditions = [cond_attrs] * n if bundle.conditional else None
    sketches = None
    if sketch is not None:
        if not bundle.sketch:
            raise FacediffError(f"{bundle.path} does not take a sketch; train an ldm with [latent] sketch = true")
        sketches = load_sketch(sketch, bundle.sample_size, bundle.latent_shape[1]).expand(len(seeds), -1)
    elif bundle.sketch:
        sketches = None  # null sketch: unconditional in the sketch
    size = bundle.sample_size
    bar = ProgressBar(1, "sample", enabled=show_progress)

    try:
        x = generate_images(bundle, seeds=seeds, conditions=conditions, sketches=sketches, guidance=guidance,
                            per_attribute_scales=scales, sampler=sampler, steps=steps, eta=eta,
                            init_noise=init_noise, step_noise=step_noise, batch_size=batch_size, progress=bar.set_total)
    finally:
        bar.close()
    images = to_uint8(x)
    result: dict[str, Any] = {"images": images, "path": None}
    if out is not None:
        scale = max(1, 96 // size)
        if sweep:
            grid = make_grid(images, ncol, scale=scale, row_labels=list(bundle.attributes),
                             col_labels=[str(i) for i in range(bundle.num_levels)])
        else:
            grid = make_grid(images, ncol or int(np.ceil(np.sqrt(len(images)))), scale=scale)
        result["path"] = save_png(grid, out)
    return result


# ----------------------------------------------------------------------------------------------- evaluate
def evaluate(model: str | Path | None, data: str | Path, *, metrics: str | None = None, n: int = 256,
             sampler: str = "dpmpp", steps: int = 25, guidance: float = 3.0, seed: int = 0,
             split: str | None = None, init_noise: str = "normal", step_noise: bool = True,
             out: str | Path | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Sample ``model`` under the conditions of ``data`` and write metrics.json + report.html into ``out``."""
    from facediff.metrics.evaluate import DEFAULT_METRICS, evaluate as _evaluate

    return _evaluate(model, data, metrics=metrics or DEFAULT_METRICS, n=n, sampler=sampler, steps=steps,
                     guidance=guidance, seed=seed, split=split, init_noise=init_noise, step_noise=step_noise,
                     out=out, show_progress=show_progress)


# ----------------------------------------------------------------------------------------------- experiments
def experiment(name: str, out: str | Path, *, data: str | Path | None = None, budget_minutes: float | None = None,
               size: int = 32, model: str | Path | None = None, n_eval: int | None = None,
               show_progress: bool = True) -> dict[str, Any]:
    """Run one of the seeds' recipes (see ``facediff.experiments.registry.RECIPES``) into ``out``."""
    from facediff.experiments.registry import run_experiment

    return run_experiment(name, out, data=data, budget_minutes=budget_minutes, size=size, model=model,
                          n_eval=n_eval, show_progress=show_progress)
