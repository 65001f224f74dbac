"""Server-side limits and input safety of the web UI: what one click may ask for, which uploads are read, and
which model folders may be opened. Every check raises a one-line ``FacediffError`` the UI shows as it is; the
same checks run for the browser and for ``gradio_client`` calls, so no request over a limit reaches a model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facediff.errors import FacediffError
from facediff.request import Request

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # what an upload may be (decoded by Pillow, nothing else)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (``facediff ui --max-...`` overrides; the defaults fit a laptop CPU)."""

    max_images: int = 16  # images per click (n)
    max_steps: int = 150  # sampler steps
    max_side: int = 1024  # canvas width and height in pixels (compose, panorama)
    max_regions: int = 12  # compose regions
    max_scale: int = 8  # saved images enlarged at most this many times
    max_upload_bytes: int = 8 * 2**20  # one uploaded file
    max_upload_pixels: int = 4096 * 4096  # an upload with more pixels is refused before decoding (bombs)
    queue_size: int = 8  # generations waiting per model; a click beyond it is refused with a message
    concurrency: int = 1  # generations running at once per model (the rest wait in the queue)


def check_request(req: Request, limits: Limits) -> None:
    """Refuse a request over a limit (one line naming the setting, its value and the limit)."""
    def over(name: str, value: int, limit: int) -> None:
        if value > limit:
            raise FacediffError(f"{name} = {value}: this server allows at most {limit}")

    over("images", req.n, limits.max_images)
    over("steps", req.steps, limits.max_steps)
    over("scale", req.scale, limits.max_scale)
    for name in ("width", "height"):
        value = getattr(req, name)
        if value is not None:
            over(name, value, limits.max_side)
    if req.layout is not None:
        over("regions", len(req.layout.get("region", [])), limits.max_regions)
        for name in ("width", "height"):
            over(f"canvas {name}", int(req.layout.get(name, 0)), limits.max_side)


def read_upload(path: str | Path, limits: Limits, what: str = "upload") -> np.ndarray:
    """An uploaded image file -> uint8 RGBA (H, W, 4). Read by Pillow as an image only (never unpickled or run);
    refused when larger than the byte or pixel limit (checked before decoding) or not an image."""
    from PIL import Image

    path = Path(path)
    size = os.path.getsize(path)
    if size > limits.max_upload_bytes:
        raise FacediffError(f"{what}: {size / 2**20:.1f} MB is above this server's {limits.max_upload_bytes / 2**20:.0f}"
                            " MB limit")
    try:
        with Image.open(path) as img:
            if img.format not in IMAGE_FORMATS:
                raise FacediffError(f"{what}: a {img.format} file; give a PNG, JPEG or WebP image")
            if img.width * img.height > limits.max_upload_pixels:
                raise FacediffError(f"{what}: {img.width}x{img.height} pixels is above this server's limit")
            return np.asarray(img.convert("RGBA"))
    except FacediffError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError):
        raise FacediffError(f"{what}: not a readable image; give a PNG, JPEG or WebP file") from None


def inside(folder: str | Path, choice: str | Path) -> Path:
    """``choice`` resolved (symlinks followed) when it lies inside ``folder``; else a one-line error. Keeps a
    picked model (or a path typed into a request) from leaving ``--models-dir`` by ``../`` or a symlink."""
    root = Path(folder).resolve()
    path = (root / choice).resolve() if not Path(choice).is_absolute() else Path(choice).resolve()
    if path != root and root not in path.parents:
        raise FacediffError(f"model {choice}: outside the models folder {root}; pick one of the listed models")
    return path
