"""Region composition and panoramas with any ``FacediffPipeline`` (seed 001; MultiDiffusion, Bar-Tal et al. 2023).

A ``Layout`` is a canvas (pixels), a background ``Region`` and foreground regions, each a box or a mask image
with its own condition: a prompt (text models), attributes (attribute-conditional models) or a sketch drawn
into its box (sketch models), and its own guidance scale. ``compose`` turns it into latent-grid masks and
guidance branches (the pipeline's ``Conditioner``, one ``encode`` per region) and samples the canvas with
``sampling.multidiffusion``. A region may set its own guidance, seed (its part of x_T is drawn from that
seed, so one face can be re-rolled while the others keep theirs) and bootstrapping fraction; steps and
sampler are the layout's, because all paths are fused into ONE latent at every step (one trajectory, one
scheduler state).

Masks: a box ``[x0, y0, x1, y1]`` in pixels (fractions of the canvas when every value is <= 1) or a
canvas-sized grayscale image (white = inside); hard masks are thresholded at 0.5 after area-downsampling to
the latent grid (the reference's nearest downsampling of a binary mask), ``soft`` keeps the grey levels and
``feather`` (pixels) blurs the edge first. The background's weight is clamp(1 - sum of the foreground
masks, 0) (the reference's). The layout file format is in the README ("Composition and panoramas").
"""
from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from facediff.conditioning.attributes import parse_attrs
from facediff.conditioning.condition import Branches
from facediff.conditioning.sketch import load_sketch
from facediff.errors import FacediffError
from facediff.imaging import to_uint8
from facediff.progress import Progress, report
from facediff.registry import SAMPLERS, check_choice
from facediff.sampling.precision import autocast_model, sampling_precision
from facediff.sampling.multidiffusion import MAX_PATHS, Bootstrap, RegionPaths, make_views, multidiffusion_denoiser
from facediff.sampling.samplers import make_scheduler, sample

BACKGROUND_COLOURS = 8  # random constant colours the bootstrapping draws from


@dataclass
class Region:
    """One region of a layout (the background has neither box nor mask: it takes what is left)."""

    name: str = ""  # shown in errors and in the mask overlay
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1: pixels, or fractions if all <= 1
    mask: str | Path | np.ndarray | None = None  # instead of a box: canvas-sized grayscale image, white = inside
    soft: bool = False  # keep a mask's grey levels as weights (else threshold at 0.5)
    feather: float = 0.0  # Gaussian blur of the mask edge, sigma in pixels (makes the mask soft)
    prompt: str | list[str] | None = None  # text models (a list: one prompt per image of the batch)
    negative_prompt: str | None = None  # text models: the guidance's null branch
    attrs: dict[str, int] | str | list | None = None  # attribute models: {"smiling": 5}, "smiling=5", or one per image
    sketch: str | Path | np.ndarray | None = None  # sketch models: drawn into the box
    guidance: float | None = None  # this region's guidance scale (None: the layout's)
    seed: int | None = None  # this region's initial noise (image i: seed + i; None: the layout's seed)
    bootstrap: float | None = None  # this region's fraction of bootstrapping steps (None: the layout's)


@dataclass
class Layout:
    """A composition: canvas, background, regions and the sampling settings shared by all regions."""

    width: int  # canvas width in pixels (a multiple of the model's latent factor)
    height: int  # canvas height in pixels
    regions: list[Region] = field(default_factory=list)  # the foreground regions
    background: Region = field(default_factory=Region)  # the condition outside the regions
    steps: int = 25  # sampler steps
    sampler: str = "ddim"  # any of facediff's samplers (one scheduler state for the canvas)
    guidance: float = 3.0  # default guidance scale of every region
    seed: int = 0  # image i uses seed + i
    bootstrap: float = 0.2  # fraction of the steps with bootstrapping (paper: 20 %)
    window: int | None = None  # view size in pixels (None: the model's native size)
    stride: int | None = None  # view stride in pixels (None: half the window)
    circular: bool = False  # wrap left and right edges (360-degree panorama)


def _fail(where: str, text: str) -> FacediffError:
    return FacediffError(f"{where}: {text}")


# the TOML value types of the scalar keys (the others are checked where they are read)
_NUMBER = (int, float)
_LAYOUT_TYPES = {"width": int, "height": int, "steps": int, "sampler": str, "guidance": _NUMBER, "seed": int,
                 "bootstrap": _NUMBER, "window": int, "stride": int, "circular": bool}
_REGION_TYPES = {"name": str, "soft": bool, "feather": _NUMBER, "negative_prompt": str, "guidance": _NUMBER,
                 "seed": int, "bootstrap": _NUMBER, "mask": str, "sketch": str}


def _check_types(table: dict, types: dict, where: str) -> None:
    for key, want in types.items():
        value = table.get(key)
        if value is None:
            continue
        wants = want if isinstance(want, tuple) else (want,)
        if not isinstance(value, wants) or (isinstance(value, bool) and bool not in wants):
            names = " or ".join("a number" if w is float else {int: "an integer", str: "a string",
                                                               bool: "true or false"}[w] for w in wants
                                if not (w is int and float in wants))
            raise _fail(where, f"{key} = {value!r}: give {names}")


def _region_from(table: dict, where: str, base: Path) -> Region:
    known = {f.name for f in fields(Region)}
    for k in table:
        if k not in known:
            raise _fail(where, f"unknown key {k!r}; known: {', '.join(sorted(known))}")
    _check_types(table, _REGION_TYPES, where)
    r = Region(**table)
    if r.box is not None:
        if not isinstance(r.box, (list, tuple)) or len(r.box) != 4 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r.box):
            raise _fail(where, f"box = {r.box!r}: give [x0, y0, x1, y1] numbers")
        r.box = tuple(float(v) for v in r.box)
    for key in ("mask", "sketch"):
        value = getattr(r, key)
        if isinstance(value, str):
            setattr(r, key, base / value)
    return r


def load_layout(path: str | Path) -> Layout:
    """A layout TOML file (README "Composition and panoramas"); mask and sketch paths are relative to it."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FacediffError(f"--layout {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FacediffError(f"--layout {path}: not valid TOML ({' '.join(str(e).split())})") from None
    known = {f.name for f in fields(Layout)} - {"regions"} | {"region"}
    for k in data:
        if k not in known:
            raise _fail(f"{path}", f"unknown key {k!r}; known: {', '.join(sorted(known))}")
    for k in ("width", "height"):
        if not isinstance(data.get(k), int) or isinstance(data.get(k), bool):
            raise _fail(f"{path}", f"{k} = {data.get(k)!r}: give the canvas {k} in pixels (an integer)")
    _check_types(data, _LAYOUT_TYPES, f"{path}")
    regions = data.pop("region", [])
    if not isinstance(regions, list):
        raise _fail(f"{path}", "regions are [[region]] tables")
    background = data.pop("background", {})
    layout = Layout(**data, background=_region_from(background, f"{path} [background]", path.parent),
                    regions=[_region_from(t, f"{path} region {i + 1}", path.parent) for i, t in enumerate(regions)])
    return layout


# ---------------------------------------------------------------------------------------------- masks
def _read_mask(mask: str | Path | np.ndarray, where: str) -> np.ndarray:
    if isinstance(mask, np.ndarray):
        arr = mask.astype(np.float32)
        return arr / 255.0 if arr.max() > 1.0 else arr
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(mask) as img:
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise _fail(where, f"mask {mask}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise _fail(where, f"mask {mask}: cannot read it as an image ({type(e).__name__}); give a PNG") from None


def _blur(m: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    m = F.conv2d(F.pad(m, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))


def pixel_mask(region: Region, width: int, height: int, where: str) -> torch.Tensor:
    """(1, 1, height, width) weights in [0, 1] of a foreground region on the pixel canvas."""
    if (region.box is None) == (region.mask is None):
        raise _fail(where, "give either box = [x0, y0, x1, y1] or mask = \"file.png\"")
    if region.box is not None:
        x0, y0, x1, y1 = region.box
        if max(abs(v) for v in region.box) <= 1.0:
            x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise _fail(where, f"box {list(region.box)} is not inside the {width}x{height} canvas "
                               "(need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)")
        m = torch.zeros(1, 1, height, width)
        m[..., int(round(y0)):int(round(y1)), int(round(x0)):int(round(x1))] = 1.0
    else:
        arr = _read_mask(region.mask, where)
        if arr.shape != (height, width):
            raise _fail(where, f"mask is {arr.shape[1]}x{arr.shape[0]}; the canvas is {width}x{height}")
        m = torch.from_numpy(np.ascontiguousarray(arr)).clamp(0, 1)[None, None]
    if not region.soft and region.mask is not None:
        m = (m >= 0.5).float()
    if region.feather < 0 or not math.isfinite(region.feather):
        raise _fail(where, f"feather = {region.feather}: give a blur radius >= 0 in pixels")
    if region.feather > 0:
        m = _blur(m, region.feather)
    if float(m.sum()) == 0:
        raise _fail(where, "the mask is empty (no pixel inside the region)")
    return m


def latent_mask(m: torch.Tensor, size: tuple[int, int], soft: bool, where: str) -> torch.Tensor:
    """Pixel mask -> the latent grid: area average, thresholded at 0.5 unless soft."""
    lm = F.interpolate(m, size=size, mode="area")
    if not soft:
        lm = (lm >= 0.5).float()
    if float(lm.sum()) == 0:
        raise _fail(where, f"the mask has no weight on the {size[1]}x{size[0]} latent grid; make the region larger")
    return lm


def overlay_masks(image: np.ndarray, masks: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """uint8 (H, W, 3) image with each (H, W) mask tinted in its own colour (the background left plain)."""
    colours = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                        [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=np.float32)
    out = image.astype(np.float32)
    for i, m in enumerate(masks):
        w = alpha * m[..., None]
        out = out * (1 - w) + colours[i % len(colours)] * w
    return out.clip(0, 255).astype(np.uint8)


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
                     box_px: tuple[int, int, int, int] | None) -> Branches:
    conditioner = pipe.conditioner

    def per_image(value: Any, what: str) -> list | None:  # one value for every image, or a list of n
        if value is None:
            return None
        rows = list(value) if isinstance(value, (list, tuple)) else [value] * n
        if len(rows) != n:
            raise FacediffError(f"{len(rows)} {what} for {n} images: give one, or one per image")
        return rows

    try:
        attrs = per_image(region.attrs, "attribute sets")
        if attrs is not None:
            attrs = [parse_attrs(a, pipe.attributes or None, pipe.num_levels) if isinstance(a, str) and a.strip()
                     else (a or None) for a in attrs]
        if region.sketch is not None and not conditioner.takes_sketch:
            raise FacediffError("this model does not take a sketch; train an ldm with [latent] sketch = true")
        cond = conditioner.encode(n, attrs if attrs and any(attrs) else None, None,
                                  per_image(region.prompt, "prompts"))
        if region.negative_prompt is not None and not conditioner.takes_text:
            raise FacediffError("negative_prompt needs a text-to-face model")
        if cond.concat is not None:  # the sketch map on the canvas: the region's sketch in its box, blank elsewhere
            canvas = torch.zeros(1, 1, *lmask.shape[-2:])
            if region.sketch is not None:
                if box_px is None:
                    raise FacediffError("a sketch needs a box to be drawn into")
                f = pipe.space.downsample
                x0, y0, x1, y1 = (int(v) // f for v in box_px)
                side = max(x1 - x0, y1 - y0)
                ink = load_sketch(region.sketch, side * f, side)
                canvas[..., y0:y1, x0:x1] = F.interpolate(ink, size=(y1 - y0, x1 - x0), mode="area")
            cond = cond.with_fields(concat=canvas.expand(n, -1, -1, -1))
        return conditioner.branches(cond, guidance, None,
                                    [region.negative_prompt] * n if region.negative_prompt is not None else None)
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

    masks_px, regions = [], []
    for i, region in enumerate(layout.regions):
        where = f"region {i + 1}" + (f" ({region.name})" if region.name else "")
        m = pixel_mask(region, layout.width, layout.height, where)
        soft = region.soft or region.feather > 0
        lm = latent_mask(m, (H, W), soft, where)
        box = None
        if region.box is not None:
            ys, xs = torch.nonzero(m[0, 0] > 0, as_tuple=True)
            box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        guidance = layout.guidance if region.guidance is None else region.guidance
        if region.bootstrap is not None and not 0.0 <= region.bootstrap <= 1.0:
            raise _fail(where, f"bootstrap = {region.bootstrap}: give a fraction of the steps in [0, 1]")
        k_own = None if region.bootstrap is None else int(round(region.bootstrap * layout.steps))
        regions.append(RegionPaths(_region_branches(pipe, region, where, n, guidance, lm, box), lm,
                                   bootstrap_steps=k_own))
        masks_px.append(m[0, 0].numpy())
    fg = sum((r.mask for r in regions), torch.zeros(1, 1, H, W))
    bg_mask = (1.0 - fg).clamp_min(0.0)
    bg = layout.background
    if bg.box is not None or bg.mask is not None:
        raise FacediffError("background: takes no box or mask (it covers what the regions leave)")
    bg_guidance = layout.guidance if bg.guidance is None else bg.guidance
    if float(bg_mask.sum()) > 0 or not regions:
        regions.append(RegionPaths(_region_branches(pipe, bg, "background", n, bg_guidance, bg_mask, None),
                                   bg_mask if regions else torch.ones(1, 1, H, W), foreground=False))

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
        bootstrap=boot, max_batch=max_batch, batched=batched, max_paths=max_paths, on_call=on_call)
    active = sum(1 for v in views for r in regions if bool(v.crop(r.mask).sum() > 0))
    masks = np.stack(masks_px) if masks_px else np.zeros((0, layout.height, layout.width), np.float32)
    return ComposePlan(denoise, shape, seeds, len(views), active, masks, latents, mixed)


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
            progress: Progress | None = None) -> ComposeOutput:
    """Sample ``n`` compositions of ``layout`` with ``pipe`` (image i: seed ``layout.seed + i``).
    ``callback_on_step_end(pipe, step_index, timestep, {"latents": x})`` runs after every step (diffusers'
    signature; it may return {"latents": ...}); ``pipe.interrupt = True`` stops after the current step."""
    p = plan(pipe, layout, n=n, seeds=seeds, max_batch=max_batch, batched=batched, max_paths=max_paths,
             precision=precision)
    pipe.interrupt = False

    def on_step(done: int, total: int, t: torch.Tensor, x: torch.Tensor) -> bool:
        pipe.num_timesteps = total
        if callback_on_step_end is not None:
            changed = callback_on_step_end(pipe, done - 1, t, {"latents": x})
            if changed and "latents" in changed:
                x.copy_(changed["latents"])
        report(progress, "compose", done, total, preview=x)
        return bool(pipe.interrupt)

    with torch.no_grad():
        z = sample(p.denoise, p.shape, scheduler_config=dict(pipe.scheduler.config), sampler=layout.sampler,
                   steps=layout.steps, seeds=p.seeds, device=pipe.device, callback=on_step, latents=p.latents)
        images = pipe.space.decode(z).float().clamp(-1, 1).cpu()
    return ComposeOutput(to_uint8(images), p.masks, p.views, p.paths, interrupted=bool(pipe.interrupt),
                         precision=p.precision)


def panorama(pipe, *, width: int, height: int | None = None, prompt: str | None = None,
             negative_prompt: str | None = None, attrs: dict[str, int] | str | None = None, circular: bool = False,
             stride: int | None = None, **settings: Any) -> ComposeOutput:
    """One condition over a wide canvas (``height`` None: the model's native size); ``settings`` are the
    other ``Layout`` fields (steps, sampler, guidance, seed) and ``compose`` options (n, callback, ...)."""
    layout_keys = {f.name for f in fields(Layout)}
    layout = Layout(width=width, height=height or pipe.sample_size, stride=stride, circular=circular,
                    background=Region(name="panorama", prompt=prompt, negative_prompt=negative_prompt, attrs=attrs),
                    **{k: v for k, v in settings.items() if k in layout_keys})
    return compose(pipe, layout, **{k: v for k, v in settings.items() if k not in layout_keys})
