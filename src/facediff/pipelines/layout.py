"""Composition layouts: the ``Layout`` / ``Region`` dataclasses, the TOML file (``load_layout``) and region
masks on the pixel canvas and the latent grid (used by ``pipelines.compose``).

Masks: a box ``[x0, y0, x1, y1]`` in pixels (fractions of the canvas when every value is <= 1) or a
canvas-sized grayscale image (white = inside); hard masks are thresholded at 0.5 after area-downsampling to
the latent grid (the reference's nearest downsampling of a binary mask), ``soft`` keeps the grey levels and
``feather`` (pixels) blurs the edge first. The layout file format is in the README ("Composition and
panoramas").
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facediff.errors import FacediffError
from facediff.registry import WINDOW_WEIGHTS

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
    conditions: dict = field(default_factory=dict)  # values of other condition kinds, by kind name (TOML: their keys)


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
    window_weights: str = "hann"  # a view's weight in the fused average: hann (a cross-fade over each overlap: no step at view borders) | uniform (the MultiDiffusion paper)


def _fail(where: str, text: str) -> FacediffError:
    return FacediffError(f"{where}: {text}")


# the TOML value types of the scalar keys (the others are checked where they are read)
_NUMBER = (int, float)
_LAYOUT_TYPES = {"width": int, "height": int, "steps": int, "sampler": str, "guidance": _NUMBER, "seed": int,
                 "bootstrap": _NUMBER, "window": int, "stride": int, "circular": bool,
                 "window_weights": str}
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
    from facediff.conditioning.registry import registered

    known = {f.name for f in fields(Region)} - {"conditions"}
    kinds = registered()
    conditions = dict(table.pop("conditions", None) or {})
    for k in list(table):
        if k in kinds and k not in known:  # a condition kind's value under its own name
            conditions[k] = table.pop(k)
        elif k not in known:
            raise _fail(where, f"unknown key {k!r}; known: {', '.join(sorted(known | set(kinds)))}")
    table["conditions"] = conditions
    in_memory = {k: table.pop(k) for k in ("mask", "sketch")  # drawn in the UI / given as arrays: kept by hash
                 if isinstance(table.get(k), dict) and set(table[k]) == {"array_sha256"}}
    _check_types(table, _REGION_TYPES, where)
    r = Region(**table, **in_memory)
    if r.box is not None:
        if not isinstance(r.box, (list, tuple)) or len(r.box) != 4 or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r.box):
            raise _fail(where, f"box = {r.box!r}: give [x0, y0, x1, y1] numbers")
        r.box = tuple(float(v) for v in r.box)
    for key in ("mask", "sketch"):
        value = getattr(r, key)
        if isinstance(value, dict):
            continue
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
    return layout_from_dict(data, f"{path}", path.parent)


def layout_from_dict(data: dict, where: str = "layout", base: Path = Path(".")) -> Layout:
    """A layout from its TOML tables (``layout_to_dict``'s form); relative mask / sketch paths are under ``base``."""
    data = dict(data)
    known = {f.name for f in fields(Layout)} - {"regions"} | {"region"}
    for k in data:
        if k not in known:
            raise _fail(where, f"unknown key {k!r}; known: {', '.join(sorted(known))}")
    for k in ("width", "height"):
        if not isinstance(data.get(k), int) or isinstance(data.get(k), bool):
            raise _fail(where, f"{k} = {data.get(k)!r}: give the canvas {k} in pixels (an integer)")
    _check_types(data, _LAYOUT_TYPES, where)
    if data.get("window_weights", "hann") not in WINDOW_WEIGHTS:
        raise _fail(where, f"window_weights = {data['window_weights']!r}: choose one of {', '.join(WINDOW_WEIGHTS)}")
    regions = data.pop("region", [])
    if not isinstance(regions, list) or not all(isinstance(t, dict) for t in regions):
        raise _fail(where, "regions are [[region]] tables")
    background = data.pop("background", {})
    if not isinstance(background, dict):
        raise _fail(where, "background is a [background] table")
    return Layout(**data, background=_region_from(dict(background), f"{where} [background]", base),
                  regions=[_region_from(dict(t), f"{where} region {i + 1}", base) for i, t in enumerate(regions)])


def layout_to_dict(layout: Layout) -> dict:
    """The layout as TOML tables (``layout_from_dict`` reads them back): None values left out, file paths made
    absolute, a mask or sketch given as an array (API / UI) kept as its SHA-256 (``{"array_sha256": ...}``)."""
    import hashlib

    def region(r: Region) -> dict:
        out = {}
        for f in fields(Region):
            v = getattr(r, f.name)
            if v is None or (f.name in ("name", "soft", "feather") and v == f.default) or (f.name == "conditions"
                                                                                      and not v):
                continue
            if isinstance(v, np.ndarray):
                v = {"array_sha256": hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()}
            elif isinstance(v, Path) or f.name in ("mask", "sketch"):
                v = str(Path(v).resolve())
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    data = {f.name: getattr(layout, f.name) for f in fields(Layout) if f.name not in ("regions", "background")}
    data = {k: v for k, v in data.items() if v is not None}
    data["background"] = region(layout.background)
    data["region"] = [region(r) for r in layout.regions]
    return data


# ---------------------------------------------------------------------------------------------- masks
def _read_mask(mask: str | Path | np.ndarray, where: str) -> np.ndarray:
    if isinstance(mask, dict):
        raise _fail(where, "the mask was drawn in memory and not saved with the settings; give a mask file")
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
