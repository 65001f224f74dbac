"""Line drawings from photos: the sketch condition of sketch-conditioned latent diffusion (seed 000).

``extract_sketch(rgb, method)`` returns uint8 (H, W) with 255 = paper and 0 = ink, the convention of
``sketches.npy`` in a prepared data set and of SynthFaces' rendered sketches.

All methods run at a working resolution whose short side is at least WORK_SIDE = 256 px (smaller
inputs are upscaled with bicubic interpolation first), so the pixel parameters below mean the same thing
for a 64 px training image and a 1024 px photo. The drawing is then resized to the output size with area
averaging; when that shrinks it by a factor f, ink is multiplied by f / w (at least 1), w the line width
at working resolution (2 sigma for XDoG, 1 px for Canny), so a line stays about one output pixel dark.

xdog   eXtended Difference-of-Gaussians, Winnemoeller, Kyprianidis & Olsen, "XDoG: An eXtended
       difference-of-Gaussians compendium including advanced image stylization", Computers & Graphics
       36(6), 2012, eqs. (5)-(6), on luminance u in [0, 1]:
         D(x) = G_sigma * u - tau * G_{k sigma} * u
         T(x) = 1                                 if D >= epsilon
                1 + tanh(phi * (D - epsilon))     otherwise
       sigma = 0.9 px per 256 px of working short side (inner Gaussian); k = 1.6 (DoG ~ Laplacian of
       Gaussian, Marr-Hildreth); tau = 0.98 (flat areas give D = (1 - tau) u >= 0, i.e. paper);
       epsilon = -0.015 (ink where the dark side of an edge dips below it); phi = 200 (steep soft
       threshold: near-binary, anti-aliased lines). For an input upscaled by f to reach 256 px, sigma
       is multiplied by sqrt(f) (it carries no detail finer than f px); for a small sketch of a large
       photo, pass its sharpest crop (up to 256 px) with ``size=``, as ``prepare`` does.
canny  OpenCV Canny (L2 gradient) on luminance after a Gaussian blur of sigma = 1.0 px per 256 px, with
       thresholds from the median luminance v: low = (1 - 0.33) v, high = (1 + 0.33) v, clamped so that
       10 <= low and low + 10 <= high <= 255 (the common "auto Canny" heuristic); edges become ink.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facediff.errors import FacediffError
from facediff.registry import SKETCH_METHODS

METHODS: tuple[str, ...] = SKETCH_METHODS  # facediff.registry
WORK_SIDE = 256  # minimum short side (px) of the working resolution
XDOG_SIGMA = 0.9  # inner Gaussian sigma (px) per 256 px of working short side
XDOG_K = 1.6  # ratio of the outer to the inner Gaussian (k)
XDOG_TAU = 0.98  # weight of the outer Gaussian (tau)
XDOG_EPSILON = -0.015  # ink threshold on D (epsilon)
XDOG_PHI = 200.0  # soft-threshold steepness (phi)
CANNY_SIGMA = 1.0  # pre-blur sigma (px) per 256 px of working short side
CANNY_SPREAD = 0.33  # relative spread of the auto thresholds around the median


def _luminance(image: np.ndarray) -> np.ndarray:
    """float32 (H, W) luminance in [0, 1] (ITU-R BT.601 weights) from uint8 RGB or grayscale."""
    a = np.asarray(image)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise FacediffError(f"extract_sketch: expected a uint8 (H, W, 3) RGB image, got {a.dtype} {a.shape}")
    f = a.astype(np.float32) / 255.0
    if f.ndim == 3 and f.shape[2] >= 3:
        return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    return f[..., 0] if f.ndim == 3 else f


def _blur(u: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(u, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def _to_work(u: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Upscale luminance so its short side is >= WORK_SIDE.

    Returns it, the sigma scale (working short side / 256) and the upscale factor f (1 when none).
    """
    h, w = u.shape
    short = min(h, w)
    f = 1.0
    if short < WORK_SIDE:
        f = WORK_SIDE / short
        u = cv2.resize(u, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_CUBIC)
        u = np.clip(u, 0.0, 1.0)
    return u, min(u.shape) / 256.0, f


def xdog(u: np.ndarray, *, sigma: float = XDOG_SIGMA, k: float = XDOG_K, tau: float = XDOG_TAU,
         epsilon: float = XDOG_EPSILON, phi: float = XDOG_PHI) -> np.ndarray:
    """XDoG on working-resolution luminance in [0, 1] (sigma in px): float32 in [0, 1], 1 = paper."""
    d = _blur(u, sigma) - tau * _blur(u, k * sigma)  # D_{sigma,k,tau}
    return np.where(d >= epsilon, 1.0, 1.0 + np.tanh(phi * (d - epsilon))).astype(np.float32)  # T_{eps,phi}


def canny(u: np.ndarray, *, sigma: float = CANNY_SIGMA, spread: float = CANNY_SPREAD) -> np.ndarray:
    """Auto-threshold Canny on working-resolution luminance (sigma in px): float32 in {0, 1}, 1 = paper."""
    g = np.clip(np.rint(_blur(u, sigma) * 255.0), 0, 255).astype(np.uint8)
    v = float(np.median(g))
    low = max(10.0, (1.0 - spread) * v)
    high = min(255.0, max(low + 10.0, (1.0 + spread) * v))
    edges = cv2.Canny(g, low, high, L2gradient=True)
    return np.where(edges > 0, 0.0, 1.0).astype(np.float32)


def extract_sketch(image: np.ndarray, method: str = "xdog", *, size: int | None = None,
                   **params: float) -> np.ndarray:
    """Line drawing of a uint8 RGB (H, W, 3) image: uint8, 255 = paper, 0 = ink.

    The output is (H, W), or (size, size) when ``size`` is given (pass a square image then, e.g. a
    high-resolution crop to get a clean small sketch). ``params`` override the method's defaults;
    ``sigma`` is in px per 256 px of working short side.
    """
    if method not in METHODS:
        raise FacediffError(f"sketch method {method!r}: choose one of {', '.join(METHODS)}")
    u = _luminance(image)
    h, w = u.shape
    work, scale, f = _to_work(u)
    p = dict(params)
    p["sigma"] = float(p.get("sigma", XDOG_SIGMA if method == "xdog" else CANNY_SIGMA)) * scale
    if method == "xdog":
        p["sigma"] *= np.sqrt(f)  # an input upscaled by f has no detail finer than f px: widen the DoG
    paper = xdog(work, **p) if method == "xdog" else canny(work, **p)
    oh, ow = (size, size) if size is not None else (h, w)
    if (oh, ow) != paper.shape:
        shrink = min(paper.shape) / min(oh, ow)
        interp = cv2.INTER_AREA if shrink > 1 else cv2.INTER_LINEAR
        paper = cv2.resize(paper, (ow, oh), interpolation=interp)
        if shrink > 1:  # keep shrunk lines dark: XDoG lines are ~2 sigma px wide, Canny's 1 px
            width = 2.0 * p["sigma"] if method == "xdog" else 1.0
            paper = 1.0 - np.clip((1.0 - paper) * max(1.0, shrink / width), 0.0, 1.0)
    return np.clip(np.rint(paper * 255.0), 0, 255).astype(np.uint8)


def sketch_file(in_path: str | Path, out_path: str | Path, method: str = "xdog", size: int | None = None,
                crop: str = "center") -> Path:
    """Write the line drawing of one image file as a grayscale PNG (``facediff data sketch``).

    ``size`` None keeps the image's own resolution; otherwise it is square-cropped (``crop``) and
    resized to size x size first, as ``prepare`` does.
    """
    from facediff.data.imageio import load_rgb, square_resize

    if method not in METHODS:
        raise FacediffError(f"sketch method {method!r}: choose one of {', '.join(METHODS)}")
    src = Path(in_path)
    if not src.is_file():
        raise FacediffError(f"{src}: no such image file")
    rgb, reason = load_rgb(src)
    if rgb is None:
        raise FacediffError(f"{src}: {reason}; give a readable image (jpg, png, webp, ...)")
    if size is not None:
        sharp = min(WORK_SIDE, min(rgb.shape[:2]))  # draw from a crop that is not an upscaled blur
        rgb = square_resize(rgb, max(int(size), sharp), crop)
    out = Path(out_path)
    if out.suffix == "":
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(extract_sketch(rgb, method, size=size), "L").save(out)
    return out
