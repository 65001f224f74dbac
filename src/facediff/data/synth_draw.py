"""Drawing primitives of SynthFaces: a canvas in face coordinates, signed distance fields, analytic anti-aliasing.

Coordinates. The image spans [-1, 1] on both axes (x to the right, y downwards). A face is drawn in its own
*face frame* (origin at the face centre, face half-height about 0.54), mapped onto the image by the similarity
``image = t + s * R(theta) @ face``. So pose jitter (rotation, translation, scale) costs nothing per shape.

Shapes are signed distance fields ``d(X, Y)`` in face units (negative inside). The pixel coverage of a shape is
the analytic box-filter estimate ``clip(0.5 - d / px, 0, 1)`` with ``px`` one pixel in face units, so edges are
anti-aliased at every size without supersampling; a stroke of width ``w`` around a curve is ``|d| <= w / 2``.

A :class:`Canvas` holds three layers that are painted together in back-to-front order:
``img`` (float RGB, channel-planar (3, H, W) so that compositing broadcasts cheaply), ``mask`` (part ids, the front-most part whose coverage exceeds 1/2) and ``ink``
(the line drawing: each shape may add its outline, and every opaque paint erases the ink it covers, so the
sketch shows only visible contours). Small parts are painted through :meth:`Canvas.window` views so their
fields are evaluated only on the pixels around them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import math
from functools import lru_cache
from typing import Union

import numpy as np

F32 = np.float32
Colour = Union[tuple, np.ndarray]


@lru_cache(maxsize=32)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates of the pixel centres, (xi, yi), each float32 (size, size) in (-1, 1)."""
    c = (np.arange(size, dtype=F32) + F32(0.5)) * F32(2.0 / size) - F32(1.0)
    xi = np.ascontiguousarray(np.broadcast_to(c[None, :], (size, size)))
    yi = np.ascontiguousarray(np.broadcast_to(c[:, None], (size, size)))
    xi.flags.writeable = False
    yi.flags.writeable = False
    return xi, yi


class Canvas:
    """Image + part mask + ink layers of one face, with face-frame coordinates ``X``, ``Y`` per pixel."""

    __slots__ = ("X", "Y", "img", "ink", "mask", "px", "xi", "yi", "_pose")

    def __init__(self, size: int, angle: float = 0.0, tx: float = 0.0, ty: float = 0.0, scale: float = 1.0):
        xi, yi = pixel_grid(size)
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = xi - F32(tx), yi - F32(ty)
        # face = R(-theta) (image - t) / s
        self.X = (dx * F32(c / scale) + dy * F32(s / scale))
        self.Y = (dy * F32(c / scale) - dx * F32(s / scale))
        self.xi, self.yi = xi, yi
        self.px = 2.0 / size / scale  # one pixel in face units
        self.img = np.zeros((3, size, size), F32)
        self.ink = np.zeros((size, size), F32)
        self.mask = np.zeros((size, size), np.uint8)
        self._pose = (c, s, tx, ty, scale, size)

    def window(self, x0: float, y0: float, x1: float, y1: float) -> "Canvas | None":
        """A view of the pixels covering the face-frame box [x0, x1] x [y0, y1] (+1 px); None when off-image."""
        c, s, tx, ty, sc, size = self._pose
        xs, ys = (x0, x1, x0, x1), (y0, y0, y1, y1)
        cols = [(tx + sc * (c * x - s * y) + 1.0) * size / 2 for x, y in zip(xs, ys)]
        rows = [(ty + sc * (s * x + c * y) + 1.0) * size / 2 for x, y in zip(xs, ys)]
        c0, c1 = max(int(min(cols)) - 1, 0), min(int(math.ceil(max(cols))) + 1, size)
        r0, r1 = max(int(min(rows)) - 1, 0), min(int(math.ceil(max(rows))) + 1, size)
        if c0 >= c1 or r0 >= r1:
            return None
        v = Canvas.__new__(Canvas)
        v.X, v.Y = self.X[r0:r1, c0:c1], self.Y[r0:r1, c0:c1]
        v.xi, v.yi = self.xi[r0:r1, c0:c1], self.yi[r0:r1, c0:c1]
        v.img, v.ink, v.mask = self.img[:, r0:r1, c0:c1], self.ink[r0:r1, c0:c1], self.mask[r0:r1, c0:c1]
        v.px, v._pose = self.px, self._pose
        return v

    # -- coverage -------------------------------------------------------------------------------------------
    def cover(self, d: np.ndarray) -> np.ndarray:
        """Anti-aliased coverage in [0, 1] of the region d < 0."""
        a = d * F32(-1.0 / self.px)
        a += F32(0.5)
        return clip01(a)

    def band(self, d: np.ndarray, width: float) -> np.ndarray:
        """Coverage of a stroke of ``width`` face units centred on d = 0 (thin strokes fade, not vanish)."""
        w = max(width, self.px)
        a = np.abs(d) * F32(-1.0 / self.px)
        a += F32(0.5 * w / self.px + 0.5)
        clip01(a)
        if w > width:
            a *= F32(width / w)
        return a

    # -- painting -------------------------------------------------------------------------------------------
    def paint(self, a: np.ndarray, colour: Colour, part: int = 0, erase_ink: bool = True) -> None:
        """Alpha-composite ``colour`` (RGB tuple or (3, h, w) array) with coverage ``a`` over the image."""
        col = np.asarray(colour, F32)
        if col.ndim == 1:
            col = col[:, None, None]
        tmp = col - self.img
        tmp *= a
        self.img += tmp
        if erase_ink:
            self.ink *= F32(1.0) - a
        if part:
            np.putmask(self.mask, a > F32(0.5), part)

    def fill(self, d: np.ndarray, colour: Colour, part: int = 0, alpha: float = 1.0,
             line: float = 1.0, ink: float = 1.0) -> np.ndarray:
        """Paint the region d < 0; add its contour to the sketch (``line`` px wide, 0 = none). Returns coverage."""
        a = self.cover(d)
        if alpha != 1.0:
            a *= F32(alpha)
        self.paint(a, colour, part)
        if line > 0:
            self.outline(d, line, ink)
        return a

    def stroke(self, d: np.ndarray, width: float, colour: Colour, part: int = 0, alpha: float = 1.0,
               ink: float = 1.0) -> np.ndarray:
        """Paint a line of ``width`` face units along d = 0 on the image and (with strength ``ink``) the sketch."""
        a = self.band(d, width)
        if alpha != 1.0:
            a *= F32(alpha)
        self.paint(a, colour, part, erase_ink=False)
        if ink > 0:
            np.maximum(self.ink, a * F32(ink) if ink != 1.0 else a, out=self.ink)
        return a

    def outline(self, d: np.ndarray, width_px: float = 1.0, strength: float = 1.0) -> None:
        """Add the contour d = 0, ``width_px`` pixels wide, to the ink layer only."""
        a = self.band(d, width_px * self.px)
        if strength != 1.0:
            a *= F32(strength)
        np.maximum(self.ink, a, out=self.ink)

    def mark(self, d: np.ndarray, part: int) -> None:
        """Label the region d < 0 as ``part`` in the mask without painting (e.g. the nose, drawn by shading)."""
        np.putmask(self.mask, d < 0, part)


# -- signed distance fields (face units, negative inside) --------------------------------------------------------
def circle(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return np.hypot(X - F32(cx), Y - F32(cy)) - F32(r)


def ellipse(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Axis-aligned ellipse; the first-order distance k0 (k0 - 1) / k1 (exact on the axes, smooth elsewhere)."""
    px, py = (X - F32(cx)) * F32(1 / rx), (Y - F32(cy)) * F32(1 / ry)
    k0 = np.hypot(px, py)
    k1 = np.hypot(px * F32(1 / rx), py * F32(1 / ry))
    k1 += F32(1e-6)
    return k0 * (k0 - F32(1.0)) / k1


def rounded_box(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, hw: float, hh: float, r: float) -> np.ndarray:
    qx = np.abs(X - F32(cx)) - F32(hw - r)
    qy = np.abs(Y - F32(cy)) - F32(hh - r)
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - F32(r)


def parabola(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, hw: float, sag: float,
             tilt: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance to y = cy + tilt*u + sag*(1 - u^2), u = (x - cx)/hw (positive below), and u itself.

    ``sag`` > 0 bends the middle downwards (a smile's lower lip), < 0 upwards (an eyebrow's arch)."""
    u = (X - F32(cx)) * F32(1.0 / hw)
    yc = F32(cy + sag) + u * F32(tilt) - (u * u) * F32(sag)
    slope = (F32(tilt) - F32(2 * sag) * u) * F32(1.0 / hw)
    return (Y - yc) / np.sqrt(F32(1.0) + slope * slope), u


def curve_band(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, hw: float, sag: float, half: float,
               taper: float = 0.6, tilt: float = 0.0) -> np.ndarray:
    """A tapered stroke along a parabola (eyebrow, moustache, wrinkle): thickness ``2*half*(1 - taper*u^2)``."""
    s, u = parabola(X, Y, cx, cy, hw, sag, tilt)
    d = np.abs(s) - F32(half) * (F32(1.0) - F32(taper) * np.minimum(u * u, F32(1.0)))
    return np.maximum(d, np.abs(X - F32(cx)) - F32(hw))


def union(*ds: np.ndarray) -> np.ndarray:
    out = ds[0]
    for d in ds[1:]:
        out = np.minimum(out, d)
    return out


def intersect(*ds: np.ndarray) -> np.ndarray:
    out = ds[0]
    for d in ds[1:]:
        out = np.maximum(out, d)
    return out


# -- colour helpers ---------------------------------------------------------------------------------------------
def mix(a: Colour, b: Colour, t: float) -> tuple[float, float, float]:
    """Linear blend of two RGB tuples."""
    return tuple(float(x) * (1 - t) + float(y) * t for x, y in zip(a, b))  # type: ignore[return-value]


def scale_rgb(a: Colour, k: float) -> tuple[float, float, float]:
    return tuple(min(max(float(x) * k, 0.0), 1.0) for x in a)  # type: ignore[return-value]


def shaded(colour: Colour, shade: np.ndarray) -> np.ndarray:
    """Per-pixel colour ``colour * shade`` as (3, h, w)."""
    return shade[None] * np.asarray(colour, F32)[:, None, None]


def clip01(a: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] in place (two ufunc calls: cheaper than np.clip on small arrays)."""
    np.maximum(a, F32(0.0), out=a)
    return np.minimum(a, F32(1.0), out=a)


def luminance(a: Colour) -> float:
    return 0.299 * float(a[0]) + 0.587 * float(a[1]) + 0.114 * float(a[2])


def contrasting(colour: Colour, against: Colour, min_diff: float = 0.25) -> tuple[float, float, float]:
    """``colour`` darkened (or, on dark ``against``, lightened) until its luminance differs by ``min_diff``."""
    lc, la = luminance(colour), luminance(against)
    if abs(lc - la) >= min_diff:
        return tuple(float(x) for x in colour)  # type: ignore[return-value]
    if la - min_diff > 0.05:  # darken
        return scale_rgb(colour, (la - min_diff) / max(lc, 1e-3))
    t = min(1.0, (la + min_diff - lc) / max(1.0 - lc, 1e-3))
    return mix(colour, (1.0, 1.0, 1.0), t)


def hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV (all in [0, 1]) to an RGB tuple."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


@dataclass
class Look:
    """Every choice that defines one face (drawn from its random stream, then attribute overrides applied)."""
    style: str
    attrs: dict[str, int]
    gender: str
    skin: tuple
    hair: tuple  # final hair colour (after greying with age)
    hair_name: str
    hair_length: str  # short | medium | long
    eye: tuple
    eye_name: str
    face_w: float  # face width factor
    pose: tuple  # (angle rad, tx, ty, scale) of the face frame in the image
    light: tuple  # unit light direction (x, y, z), y down, z towards the viewer
    bg: tuple  # (top RGB, bottom RGB, gradient tilt)
    clothes: tuple
    frame: tuple
    lips: tuple
    u: np.ndarray = field(repr=False)  # the look's uniform draws, for small per-part variations
