"""Robust image loading for real data sources: any file in, an 8-bit RGB array (or a reason) out.

``load_rgb(path)`` never raises for a bad file: it returns ``(array, None)`` or ``(None, reason)`` for
zero-byte, truncated, non-image, tiny and decompression-bomb files. Every Pillow mode is brought to
8-bit sRGB: CMYK (via its ICC profile when it has one), transparency (RGBA, LA, P/PA with a tRNS key)
composited on white, 16/32-bit integer and float grayscale scaled to 0..255, bilevel/grayscale
replicated to three channels. EXIF orientation is applied first, so crop boxes refer to the image as
it is displayed.

``load_square(path, size, crop)`` adds the square crop + antialiased resize used by ``prepare``:
  center          the largest centred square
  celeba          the face box used for 64x64 CelebA by DDIM (Song et al. 2021) and later DDPM/PNDM work:
                  a 128x128 square centred on (x=89, y=121) of the 178x218 aligned image, i.e.
                  x0,y0,x1,y1 = 25,57,153,185. Images of another aspect than 178:218 (e.g. the 1024x1024
                  CelebA-HQ images of CelebA-Dialog, already face-centred) fall back to ``center``.
  x0,y0,x1,y1     a user box in pixels of the (orientation-corrected) image; a non-square box is
                  reduced to its largest centred square.
The resize is Pillow's LANCZOS with ``reducing_gap=3`` (box-reduce first for large ratios, then
Lanczos), applied straight to the crop box so sub-pixel boxes are exact.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from facediff.errors import FacediffError

MIN_SIDE = 16  # images whose short side is below this are skipped as "too small"
CELEBA_BOX = (25, 57, 153, 185)  # x0, y0, x1, y1 in the 178 x 218 aligned CelebA frame (DDIM's 64 px crop)
CELEBA_FRAME = (178, 218)  # width, height of img_align_celeba images
_SRGB = None  # lazily built sRGB profile for ICC conversion


@dataclass(frozen=True)
class CropSpec:
    """A parsed ``crop`` option: kind is center | celeba | box (then ``box`` = x0, y0, x1, y1)."""

    kind: str
    box: tuple[float, float, float, float] | None = None

    def __str__(self) -> str:
        return self.kind if self.box is None else ",".join(f"{v:g}" for v in self.box)


def parse_crop(crop: str | CropSpec) -> CropSpec:
    """Parse ``center`` | ``celeba`` | ``x0,y0,x1,y1``; a malformed option is a FacediffError."""
    if isinstance(crop, CropSpec):
        return crop
    text = str(crop).strip().lower()
    if text in ("center", "centre"):
        return CropSpec("center")
    if text == "celeba":
        return CropSpec("celeba")
    parts = [p.strip() for p in text.split(",")]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4 or vals[2] <= vals[0] or vals[3] <= vals[1] or min(vals) < 0:
        raise FacediffError(f"--crop {crop!r}: use center, celeba, or a box x0,y0,x1,y1 in pixels with x1>x0, y1>y0")
    return CropSpec("box", vals)  # type: ignore[arg-type]


def crop_box(width: int, height: int, spec: CropSpec) -> tuple[tuple[float, float, float, float] | None, str]:
    """The square box (x0, y0, x1, y1) to cut from a width x height image, and the crop actually used.

    Returns ``(None, reason)`` when a user box does not fit the image.
    """
    if spec.kind == "celeba":
        fw, fh = CELEBA_FRAME
        if abs(width / height - fw / fh) < 0.01:
            s = width / fw
            return tuple(v * s for v in CELEBA_BOX), "celeba"  # type: ignore[return-value]
        spec = CropSpec("center")
        used = "center"
    else:
        used = spec.kind
    if spec.kind == "box":
        x0, y0, x1, y1 = spec.box  # type: ignore[misc]
        if x1 > width + 1e-6 or y1 > height + 1e-6:
            return None, f"crop box {spec} lies outside the {width}x{height} image"
    else:
        x0, y0, x1, y1 = 0.0, 0.0, float(width), float(height)
    w, h = x1 - x0, y1 - y0
    side = min(w, h)
    cx, cy = x0 + (w - side) / 2, y0 + (h - side) / 2
    return (cx, cy, cx + side, cy + side), used


def _srgb_profile():
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.createProfile("sRGB")
    return _SRGB


def _icc_to_srgb(img: Image.Image) -> Image.Image | None:
    """Convert an RGB/CMYK image with an embedded ICC profile to sRGB; None when that fails."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "CMYK"):
        return None
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(img, src, _srgb_profile(), outputMode="RGB")
    except Exception:  # a broken or exotic profile: fall back to Pillow's plain conversion
        return None


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale an I;16* / I / F single-channel image to 8-bit L.

    Integer data that fits 0..255 is kept; data within 0..65535 is treated as 16-bit (v / 257);
    float data within 0..1 is multiplied by 255; anything else is min-max normalised.
    """
    a = np.asarray(img).astype(np.float64)
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if img.mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif lo >= 0 and hi <= 255 and img.mode != "F" and not img.mode.startswith("I;16"):
        pass
    elif lo >= 0 and hi <= 65535 and img.mode != "F":
        a = a / 257.0
    elif hi > lo:
        a = (a - lo) / (hi - lo) * 255.0
    else:
        a = np.zeros_like(a)
    a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _white_composite(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Bring a loaded Pillow image of any mode to 8-bit RGB (see the module docstring)."""
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _high_depth_to_l(img).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        if mode == "La":
            img = img.convert("LA")  # un-premultiply alpha
        return _white_composite(img)
    if mode in ("RGB", "CMYK"):
        converted = _icc_to_srgb(img)
        if converted is not None:
            return converted
    if mode == "1":
        img = img.convert("L")
    return img.convert("RGB")


def _open_rgb(path: str | Path, min_side: int, max_pixels: int | None) -> tuple[Image.Image | None, str | None]:
    """Open, verify, fully decode and convert one file; (image, None) or (None, reason)."""
    p = Path(path)
    try:
        if p.stat().st_size == 0:
            return None, "empty file (0 bytes)"
    except FileNotFoundError:
        return None, "file not found"
    except OSError as e:
        return None, f"cannot read file ({e.strerror or e})"
    except ValueError:  # e.g. a NUL byte in the name
        return None, "invalid file name"
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        # the pixel bound is checked from the header, before decoding (no global warning filters:
        # prepare decodes in threads)
        with Image.open(p) as probe:
            w, h = probe.size
            if limit is not None and w * h > limit:
                return None, f"decompression bomb: {w}x{h} = {w * h} pixels > limit {limit}"
            probe.verify()
        with Image.open(p) as img:
            img.seek(0)  # first frame of animated GIF / multi-page TIFF
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # malformed EXIF: keep the stored orientation
                pass
            rgb = to_rgb(img)
    except UnidentifiedImageError:
        return None, "not an image (unrecognised format)"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return None, f"decompression bomb ({e})"
    except MemoryError:
        return None, "image too large to decode (out of memory)"
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError) as e:
        msg = str(e).strip() or type(e).__name__
        if "truncated" in msg.lower():
            return None, f"truncated or corrupt image ({msg})"
        return None, f"corrupt or unsupported image ({msg})"
    except Exception as e:  # noqa: BLE001 - a decoder bug must not stop a 200k-image run
        return None, f"unreadable image ({type(e).__name__}: {e})"
    if min(rgb.size) < min_side:
        return None, f"too small ({rgb.size[0]}x{rgb.size[1]} < {min_side} px)"
    return rgb, None


def load_rgb(path: str | Path, *, min_side: int = MIN_SIDE,
             max_pixels: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """Load any image file as uint8 (H, W, 3) RGB: ``(array, None)`` or ``(None, reason)``; never raises.

    ``max_pixels`` (default Pillow's MAX_IMAGE_PIXELS, ~89 Mpx) bounds width x height.
    """
    img, reason = _open_rgb(path, min_side, max_pixels)
    if img is None:
        return None, reason
    return np.asarray(img, dtype=np.uint8).copy(), None


def _resize_box(img: Image.Image, size: int, box: tuple[float, float, float, float]) -> np.ndarray:
    out = img.resize((size, size), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8).copy()


def square_resize(image: np.ndarray, size: int, crop: str | CropSpec = "center") -> np.ndarray:
    """Square-crop (``center`` | ``celeba`` | box) and LANCZOS-resize a uint8 (H, W, 3) array to (size, size, 3)."""
    spec = parse_crop(crop)
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    box, _ = crop_box(img.width, img.height, spec)
    if box is None:
        raise FacediffError(f"--crop {spec}: box lies outside the {img.width}x{img.height} image")
    return _resize_box(img, size, box)


def resize_batch(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) or (N, H, W) images -> (N, size, size[, 3]), each through ``square_resize`` (centre
    square crop + Lanczos; the one resize of the toolkit), returned as is when already that size."""
    images = np.asarray(images)
    if images.shape[1:3] == (size, size):
        return images
    return np.stack([square_resize(im, size) for im in images])


def load_square(path: str | Path, size: int, crop: str | CropSpec = "center", *, min_side: int = MIN_SIDE,
                max_pixels: int | None = None) -> tuple[np.ndarray | None, str | None, str | None]:
    """Load, square-crop and resize one file: ``(array (size,size,3), None, crop_used)`` or ``(None, reason, None)``.

    ``crop_used`` is ``"center"`` when a ``celeba`` crop fell back for an image of another aspect.
    Never raises for a bad file (a malformed ``crop`` option is a FacediffError).
    """
    arrays, reason, used = load_crops(path, (size,), crop, min_side=min_side, max_pixels=max_pixels)
    return (arrays[0] if arrays else None), reason, used


def load_crops(path: str | Path, sizes: tuple[int, ...], crop: str | CropSpec = "center", *,
               min_side: int = MIN_SIDE, max_pixels: int | None = None, native_cap: bool = False
               ) -> tuple[list[np.ndarray] | None, str | None, str | None]:
    """Like ``load_square`` but one decode gives the same crop at several sizes (e.g. image + sketch source).

    With ``native_cap`` every size after the first is lowered to the crop box's own side in pixels (but
    not below the first size), so a detail copy is never an upscaled blur.
    """
    spec = parse_crop(crop)
    img, reason = _open_rgb(path, min_side, max_pixels)
    if img is None:
        return None, reason, None
    box, used = crop_box(img.width, img.height, spec)
    if box is None:
        return None, used, None
    if native_cap:
        native = max(1, int(round(box[2] - box[0])))
        sizes = sizes[:1] + tuple(max(sizes[0], min(s, native)) for s in sizes[1:])
    cache: dict[int, np.ndarray] = {}
    for s in sizes:
        if s not in cache:
            cache[s] = _resize_box(img, s, box)
    return [cache[s] for s in sizes], None, used
