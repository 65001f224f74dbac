"""Small image utilities shared by every layer: tensor <-> uint8, grids with labels, PNG writing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model-space images in [-1, 1], (B, C, H, W) with C in {1, 3} -> uint8 (B, H, W, 3)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"to_uint8: expected (batch, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
    x = x.detach().float().clamp(-1.0, 1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return ((x + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return t / 127.5 - 1.0


def make_grid(images: np.ndarray, ncol: int, *, pad: int = 2, scale: int = 1,
              row_labels: list[str] | None = None, col_labels: list[str] | None = None,
              background: int = 255) -> Image.Image:
    """Tile uint8 images (N, H, W, 3) into a grid, optionally upscaled (nearest) and labelled."""
    n, h, w = images.shape[:3]
    ncol = max(1, min(ncol, n))
    nrow = (n + ncol - 1) // ncol
    h2, w2 = h * scale, w * scale
    left = 0 if not row_labels else 8 + 7 * max(len(s) for s in row_labels)
    top = 0 if not col_labels else 14
    canvas = Image.new("RGB", (left + ncol * (w2 + pad) + pad, top + nrow * (h2 + pad) + pad),
                       (background,) * 3)
    for i in range(n):
        tile = Image.fromarray(images[i])
        if scale != 1:
            tile = tile.resize((w2, h2), Image.NEAREST)
        r, c = divmod(i, ncol)
        canvas.paste(tile, (left + pad + c * (w2 + pad), top + pad + r * (h2 + pad)))
    if row_labels or col_labels:
        draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
        for r, text in enumerate(row_labels or []):
            draw.text((2, top + pad + r * (h2 + pad) + h2 // 2 - 5), text, fill=(0, 0, 0), font=font)
        for c, text in enumerate(col_labels or []):
            draw.text((left + pad + c * (w2 + pad) + 2, 1), text, fill=(0, 0, 0), font=font)
    return canvas


def save_png(image: Image.Image | np.ndarray, path: str | Path, text: dict[str, str] | None = None) -> Path:
    """Write a PNG, creating parent folders; ``text`` becomes PNG text chunks (tEXt where the value is Latin-1,
    else iTXt, UTF-8), e.g. the generation settings (``facediff.request``)."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            try:
                value.encode("latin-1")
                info.add_text(key, value)
            except UnicodeEncodeError:
                info.add_itxt(key, value)
    image.save(path, format="PNG", pnginfo=info)
    return path


MAX_TEXT_BYTES = 1 << 20  # PNG text chunks longer than this are not read (Pillow's own limit per chunk)


def read_png_text(path: str | Path) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG as strings; nothing is evaluated. A file that is not a PNG
    raises ValueError; decompression bombs and oversized chunks are refused by Pillow's limits."""
    from PIL import PngImagePlugin

    PngImagePlugin.MAX_TEXT_CHUNK = MAX_TEXT_BYTES
    with Image.open(path) as img:
        if img.format != "PNG":
            raise ValueError(f"a {img.format} image, not a PNG")
        img.load()  # text chunks after the image data are read with it
        return {str(k): str(v) for k, v in getattr(img, "text", {}).items()}
