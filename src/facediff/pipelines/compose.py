"""Region composition and panoramas with any ``FacediffPipeline`` (seed 001; MultiDiffusion, Bar-Tal et al. 2023).

A ``Layout`` is a canvas (pixels), a background ``Region`` and foreground regions, each a box or a mask image
with its own condition: a prompt (text models), attributes (attribute-conditional models) or a sketch drawn
into its box (sketch models), and its own guidance scale. ``compose`` turns it into latent-grid masks and
guidance branches (the pipeline's ``Conditioner``, one ``encode`` per region) and samples the canvas with
``sampling.multidiffusion``. A region may set its own guidance, seed (its part of x_T is drawn from that
seed, so one face can be re-rolled while the others keep theirs) and bootstrapping fraction; steps and
sampler are the layout's, because all paths are fused into ONE latent at every step (one trajectory, one
scheduler state).

Layouts and masks are in ``pipelines.layout`` (re-exported here). The background's weight is
clamp(1 - sum of the foreground masks, 0) (the reference's).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from facediff.conditioning.attributes import parse_attrs
from facediff.conditioning.condition import Branches
from facediff.errors import FacediffError
from facediff.imaging import to_uint8
from facediff.pipelines.layout import (  # noqa: F401  (re-exported: the public names of composition)
    Layout, Region, _fail, latent_mask, load_layout, overlay_masks, pixel_mask)
from facediff.progress import Progress, report
from facediff.registry import SAMPLERS, check_choice
from facediff.sampling.multidiffusion import (MAX_PATHS, Bootstrap, RegionPaths, View, make_views,
                                             multidiffusion_denoiser, window_weight)
from facediff.sampling.precision import autocast_model, sampling_precision
from facediff.sampling.preview import RememberDenoised
from facediff.sampling.samplers import make_scheduler, sample

BACKGROUND_COLOURS = 8  # random constant colours the bootstrapping draws from


# --------------------------------------------------------------------------------------------- compose
@dataclass
class ComposeOutput:
    images: np.ndarray  # uint8 (N, height, width, 3)
    masks: np.ndarray  # float (R, height, width) pixel weights of the foreground regions, layout order
    views: int  # windows per step
    paths: int  # (view, region) paths with weight, per step
    interrupted: bool = False  # pipe.interrupt stopped sampling early
    precision: str = "no"  # the network's precision: "no" (fp32) or "bf16" (autocast)


def _region_branches(pipe, region: Region, where: str, n: int, guidance: float, lmask: torch.Tensor,
                     box_px: tuple[int, int, int, int] | None, canvas: tuple[int, int]) -> Branches:
    """The guidance branches of one region: its values of every condition kind the model declares, spatial
    ones placed into its box on the canvas (``kind.place``), the rest holding for the whole region."""
    conditioner = pipe.conditioner
    try:
        values = conditioner.gather(n, region.conditions, prepare=False, attrs=region.attrs, sketch=region.sketch,
                                    prompt=region.prompt)
        negatives = [region.negative_prompt] * n
        values, negatives, _ = conditioner.read_negatives(values, negatives)
        cond = conditioner.encode_region(n, values, box_px, canvas)
        return conditioner.branches(cond, guidance, None, negatives if any(negatives) else None)
    except FacediffError as e:
        raise _fail(where, str(e)) from None


@dataclass
class ComposePlan:
    """What sampling a layout needs: the fused denoiser and the canvas (``plan`` builds it)."""

    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # fused prediction over the latent canvas
    shape: tuple[int, int, int, int]  # (n, C, H, W) of the latent canvas
    seeds: list[int]  # one per composition
    views: int  # windows per step
    paths: int  # (view, region) paths with weight, per step
    masks: np.ndarray  # float (R, height, width) pixel weights of the foreground regions
    latents: torch.Tensor | None = None  # x_T when a region draws its own noise (None: the seeds' draw)
    precision: str = "no"  # the network's precision: "no" (fp32) or "bf16" (autocast)


def plan(pipe, layout: Layout, *, n: int = 1, seeds: list[int] | None = None, max_batch: int = 64,
         batched: bool = True, max_paths: int = MAX_PATHS, on_call: Callable[[int], None] | None = None,
         precision: str = "no") -> ComposePlan:
    """Validate ``layout`` for ``pipe`` and build its fused denoiser (image i: seed ``layout.seed + i``);
    ``batched`` / ``max_batch`` / ``on_call`` as in ``multidiffusion_denoiser``, ``precision`` as in
    ``FacediffPipeline.__call__``."""
    check_choice("sampler", layout.sampler, SAMPLERS)
    seeds = list(seeds) if seeds is not None else [layout.seed + i for i in range(n)]
    n = len(seeds)
    if n < 1 or layout.steps < 1:
        raise FacediffError(f"n = {n}, steps = {layout.steps}: each must be at least 1")
    if not 0.0 <= layout.bootstrap <= 1.0:
        raise FacediffError(f"bootstrap = {layout.bootstrap}: give a fraction of the steps in [0, 1]")
    H, W, views = _latent_views(pipe, layout)
    view_weight = window_weight(layout.window_weights, (views[0].rows.numel(), views[0].cols.numel()))
    regions, masks_px = _region_paths(pipe, layout, n, (H, W))

    device = pipe.device
    C = pipe.latent_shape[0]
    shape = (n, C, H, W)
    k = int(round(layout.bootstrap * layout.steps))
    own_seeds = [(region.seed, r.mask) for region, r in zip(layout.regions, regions) if region.seed is not None]
    latents = _initial_noise(shape, seeds, own_seeds, device) if own_seeds else None
    boot = None
    if any(r.foreground and (k if r.bootstrap_steps is None else r.bootstrap_steps) > 0 for r in regions):
        gen = torch.Generator().manual_seed(int(seeds[0]))
        colours = torch.rand(BACKGROUND_COLOURS, 3, 1, 1, generator=gen) * 2 - 1
        backgrounds = pipe.space.encode(colours.expand(-1, -1, layout.height, layout.width).to(device)).float()
        noise = latents if latents is not None else _initial_noise(shape, seeds, [], device)
        scheduler = make_scheduler(layout.sampler, dict(pipe.scheduler.config))
        boot = Bootstrap(k, backgrounds, noise, scheduler.alphas_cumprod.float(), gen)
    mixed, _ = sampling_precision(precision, device)
    denoise = multidiffusion_denoiser(autocast_model(pipe.denoise_fn, mixed, device), (H, W), views, [
        RegionPaths(r.branches, r.mask.to(device), r.foreground, r.bootstrap_steps) for r in regions],
        bootstrap=boot, max_batch=max_batch, batched=batched, max_paths=max_paths, on_call=on_call,
        view_weight=view_weight)
    active = sum(1 for v in views for r in regions if bool(v.crop(r.mask).sum() > 0))
    masks = np.stack(masks_px) if masks_px else np.zeros((0, layout.height, layout.width), np.float32)
    return ComposePlan(denoise, shape, seeds, len(views), active, masks, latents, mixed)


def _latent_views(pipe, layout: Layout) -> tuple[int, int, list[View]]:
    """(H, W, views) of the layout's latent canvas: the canvas, window and stride checked against ``pipe``."""
    f = pipe.space.downsample
    native = pipe.latent_shape[1]
    if layout.width % f or layout.height % f or layout.width < 1 or layout.height < 1:
        raise FacediffError(f"canvas {layout.width}x{layout.height}: width and height must be positive multiples "
                            f"of the model's latent factor {f}")
    H, W = layout.height // f, layout.width // f
    window = native if layout.window is None else layout.window // f
    if layout.window is not None and (layout.window % f or window < 1):
        raise FacediffError(f"window {layout.window}: must be a positive multiple of the latent factor {f}")
    if window != native:
        raise FacediffError(f"window {layout.window}: this model's native size is {native * f} pixels; "
                            "leave window out or give that size")
    if H < window or W < window:
        raise FacediffError(f"canvas {layout.width}x{layout.height} is smaller than the model's native size "
                            f"{window * f}x{window * f}; make it at least that large")
    if layout.stride is not None and layout.stride > window * f:
        raise FacediffError(f"stride {layout.stride} is larger than the window {window * f} pixels: parts of the "
                            "canvas would be covered by no view; use a stride <= the window")
    stride = max(1, window // 2) if layout.stride is None else layout.stride // f
    if layout.stride is not None and (layout.stride % f or stride < 1):
        raise FacediffError(f"stride {layout.stride}: must be a positive multiple of the latent factor {f}")
    views = make_views((H, W), (window, window), (stride, stride), circular=layout.circular)
    return H, W, views


def _region_paths(pipe, layout: Layout, n: int, latent: tuple[int, int]) -> tuple[list[RegionPaths], list[np.ndarray]]:
    """(the paths of every region, background last when it has weight; the foreground masks in pixels)."""
    H, W = latent
    masks_px, regions = [], []
    canvas = (layout.height, layout.width)
    for i, region in enumerate(layout.regions):
        where = f"region {i + 1}" + (f" ({region.name})" if region.name else "")
        m = pixel_mask(region, layout.width, layout.height, where)
        soft = region.soft or region.feather > 0
        lm = latent_mask(m, (H, W), soft, where)
        # The region's pixel bounding box (a drawn box, or the painted mask's extent): spatial conditions
        # (a sketch, a parsing mask) are placed into it.
        ys, xs = torch.nonzero(m[0, 0] > 0, as_tuple=True)
        box = None if len(xs) == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        guidance = layout.guidance if region.guidance is None else region.guidance
        if region.bootstrap is not None and not 0.0 <= region.bootstrap <= 1.0:
            raise _fail(where, f"bootstrap = {region.bootstrap}: give a fraction of the steps in [0, 1]")
        k_own = None if region.bootstrap is None else int(round(region.bootstrap * layout.steps))
        regions.append(RegionPaths(_region_branches(pipe, region, where, n, guidance, lm, box, canvas), lm,
                                   bootstrap_steps=k_own))
        masks_px.append(m[0, 0].numpy())
    fg = sum((r.mask for r in regions), torch.zeros(1, 1, H, W))
    bg_mask = (1.0 - fg).clamp_min(0.0)
    bg = layout.background
    if bg.box is not None or bg.mask is not None:
        raise FacediffError("background: takes no box or mask (it covers what the regions leave)")
    bg_guidance = layout.guidance if bg.guidance is None else bg.guidance
    if float(bg_mask.sum()) > 0 or not regions:
        regions.append(RegionPaths(_region_branches(pipe, bg, bg.name or "background", n, bg_guidance, bg_mask, None,
                                                    canvas),
                                   bg_mask if regions else torch.ones(1, 1, H, W), foreground=False))
    return regions, masks_px


def _initial_noise(shape: tuple[int, ...], seeds: list[int], own: list[tuple[int, torch.Tensor]],
                   device) -> torch.Tensor:
    """x_T as ``sample`` draws it from the layout's seeds; where a region's latent mask is >= 0.5, the same
    draw from the region's own seed (image i: seed + i) instead (later regions win where they overlap)."""
    def draw(first: list[int]) -> torch.Tensor:
        return randn_tensor(shape, generator=[torch.Generator("cpu").manual_seed(int(s)) for s in first],
                            device=torch.device(device), dtype=torch.float32)

    x = draw(seeds)
    for seed, mask in own:
        x = torch.where(mask.to(x.device) >= 0.5, draw([seed + i for i in range(len(seeds))]), x)
    return x


def compose(pipe, layout: Layout, *, n: int = 1, seeds: list[int] | None = None, max_batch: int = 64,
            batched: bool = True, max_paths: int = MAX_PATHS, precision: str = "no",
            callback_on_step_end: Callable[..., dict | None] | None = None,
            progress: Progress | None = None, task: str = "compose") -> ComposeOutput:
    """Sample ``n`` compositions of ``layout`` with ``pipe`` (image i: seed ``layout.seed + i``).
    ``callback_on_step_end(pipe, step_index, timestep, {"latents": x, "denoised": x0_hat})`` runs after every
    step (diffusers' signature; it may return {"latents": ...}); ``pipe.interrupt = True`` stops after the current step;
    ``task`` names the progress reports."""
    p = plan(pipe, layout, n=n, seeds=seeds, max_batch=max_batch, batched=batched, max_paths=max_paths,
             precision=precision)
    pipe.interrupt = False
    denoise = RememberDenoised(p.denoise, pipe.scheduler.config)

    def on_step(done: int, total: int, t: torch.Tensor, x: torch.Tensor) -> bool:
        pipe.num_timesteps = total
        if callback_on_step_end is not None:
            changed = callback_on_step_end(pipe, done - 1, t, {"latents": x, "denoised": denoise.denoised()})
            if changed and "latents" in changed:
                x.copy_(changed["latents"])
        report(progress, task, done, total, preview=x)
        return bool(pipe.interrupt)

    with torch.no_grad():
        z = sample(denoise, p.shape, scheduler_config=dict(pipe.scheduler.config), sampler=layout.sampler,
                   steps=layout.steps, seeds=p.seeds, device=pipe.device, callback=on_step, latents=p.latents)
        images = pipe.space.decode(z).float().clamp(-1, 1).cpu()
    return ComposeOutput(to_uint8(images), p.masks, p.views, p.paths, interrupted=bool(pipe.interrupt),
                         precision=p.precision)


def panorama(pipe, *, width: int, height: int | None = None, prompt: str | None = None,
             negative_prompt: str | None = None, attrs: dict[str, int] | str | None = None, circular: bool = False,
             stride: int | None = None, conditions: dict | None = None, **settings: Any) -> ComposeOutput:
    """One condition over a wide canvas (``height`` None: the model's native size); ``settings`` are the
    other ``Layout`` fields (steps, sampler, guidance, seed) and ``compose`` options (n, callback, ...)."""
    layout_keys = {f.name for f in fields(Layout)}
    conditions = dict(conditions or {})
    for k in pipe.conditioner.kinds:  # e.g. a layout: one face per native-size tile
        if k.name not in conditions and k.panorama_default() is not None:
            conditions[k.name] = k.panorama_default()
    layout = Layout(width=width, height=height or pipe.sample_size, stride=stride, circular=circular,
                    background=Region(name="panorama", prompt=prompt, negative_prompt=negative_prompt, attrs=attrs,
                                      conditions=conditions),
                    **{k: v for k, v in settings.items() if k in layout_keys})
    return compose(pipe, layout, **{k: v for k, v in settings.items() if k not in layout_keys})
