"""Geometry and painting of SynthFaces parts, back to front, in the face frame of :mod:`synth_draw`.

Face frame (y down): face centre at the origin, face half-height ``ry`` ~0.54 and half-width ``rx`` ~0.40
(adult human). Eyes lie on y = ``ey`` (~0, the face's horizontal midline, as in real faces), the nose tip at
~1/3 and the mouth at ~0.6 of the way from the eyes to the chin. Children have larger heads relative to the
body, rounder faces, lower and larger eyes and smaller noses and mouths; anime faces have a pointed chin,
eyes twice as large placed lower, a tiny nose and a small mouth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facediff.data import synth_draw as D
from facediff.data.synth_draw import F32, Canvas, mix, scale_rgb

if TYPE_CHECKING:
    from facediff.data.synth_draw import Look

# Part ids (see synth.PART_NAMES).
SKIN, HAIR, EYES, BROWS, NOSE, MOUTH, GLASSES, BEARD, EARS_NECK, CLOTHES = range(1, 11)

# Per age level 0..5: face half-height, half-width, eye line, eye scale, nose scale, nose y, mouth y,
# mouth width, head scale in the image, shoulder width, wrinkle strength, jowl sag.
AGE_RY = (0.45, 0.50, 0.54, 0.545, 0.55, 0.56)
AGE_RX = (0.42, 0.405, 0.39, 0.40, 0.405, 0.41)
AGE_EY = (0.07, 0.035, 0.0, 0.0, 0.005, 0.01)
AGE_ES = (1.45, 1.20, 1.0, 0.97, 0.93, 0.88)
AGE_NS = (0.55, 0.8, 1.0, 1.05, 1.12, 1.18)
AGE_NY = (0.215, 0.20, 0.185, 0.19, 0.195, 0.205)
AGE_MY = (0.30, 0.32, 0.33, 0.335, 0.34, 0.35)
AGE_MW = (0.90, 0.95, 1.0, 1.0, 1.0, 0.97)
AGE_HEAD = (1.16, 1.07, 1.0, 1.0, 1.0, 0.99)
AGE_BODY = (0.62, 0.82, 1.0, 1.04, 1.04, 1.0)
AGE_WRINKLE = (0.0, 0.0, 0.0, 0.6, 0.8, 1.0)
AGE_SAG = (0.0, 0.0, 0.0, 0.0, 0.012, 0.03)

# Smiling level -> (mouth half-width factor, corner lift, mouth opening, eye opening factor). The closed levels
# 0..3 must stay apart at 32 px, where one pixel is 0.0625 face units: each one widens the mouth by about 1.5 px
# there and lifts the corners by about another pixel, with a thicker, darker lip line (plus dimples from level 2,
# cheek raise and lower-lid squint from level 3, see paint_mouth / paint_head / the eyes).
SMILE = ((0.62, 0.000, 0.0, 1.0), (1.05, 0.070, 0.0, 1.0), (1.50, 0.140, 0.0, 0.92),
         (1.90, 0.200, 0.0, 0.80), (1.55, 0.100, 0.09, 0.72), (1.60, 0.070, 0.16, 0.30))
#: Width of the line between the closed lips per smiling level 0..3 (face units): darker as the smile grows.
SMILE_LINE = (0.020, 0.034, 0.050, 0.066)


@dataclass
class Geom:
    """Derived face geometry (face-frame units)."""
    anime: bool
    rx: float
    ry: float
    taper: float  # jaw narrowing towards the chin
    sag: float
    ex: float  # eye centre |x|
    ey: float
    ew: float  # eye half-width
    eh: float  # eye half-height
    brow_y: float
    ny: float
    ns: float
    my: float
    mw: float  # mouth half-width (before the smile factor)
    hairline: float  # y of the natural hairline at the centre
    ink: float  # strength of the contour lines drawn into the image (anime cel outlines)


def geometry(look: "Look") -> Geom:
    a, anime, fem = look.attrs["age"], look.style == "anime", look.gender == "female"
    rx, ry = AGE_RX[a] * look.face_w * (0.97 if fem else 1.0), AGE_RY[a]
    es = AGE_ES[a]
    if anime:
        es = 1.0 + 0.5 * (es - 1.0)  # anime adults already have child-like eyes
        ey, ew, eh, ex = AGE_EY[a] + 0.06, 0.105 * es, 0.095 * es, 0.185
        taper = 0.45
    else:
        ey, ew, eh, ex = AGE_EY[a], 0.08 * es, 0.038 * es, 0.155 + 0.01 * (es - 1)
        taper = 0.12 if a == 0 else (0.30 if fem else 0.22)
    brow_y = ey - (0.095 * es if not anime else eh + 0.055)
    ns = AGE_NS[a] * (0.9 if fem else 1.0)
    return Geom(anime, rx, ry, taper, AGE_SAG[a], ex, ey, ew, eh, brow_y, AGE_NY[a] + (0.04 if anime else 0.0),
                ns, AGE_MY[a] + (0.06 if anime else 0.0), 0.105 * AGE_MW[a] * (0.75 if anime else 1.0),
                -0.79 * ry, 0.85 if anime else 0.0)


# -- head ---------------------------------------------------------------------------------------------------------
def face_sdf(X: np.ndarray, Y: np.ndarray, g: Geom, grow: float = 0.0) -> np.ndarray:
    """Egg-shaped face: an ellipse whose half-width narrows towards the chin (w = rx (1 - taper t^p)), with jowls."""
    t = np.clip(Y * F32(1.0 / g.ry), 0.0, 1.0)
    p = F32(2.2) if g.anime else F32(2.0)
    w = F32(g.rx) * (F32(1.0) - F32(g.taper) * t ** p)
    if g.sag:
        w += F32(g.sag) * np.exp(-((t - F32(0.72)) * F32(5.0)) ** 2)
    k = np.hypot(X / w, Y * F32(1.0 / g.ry))
    return (k - F32(1.0)) * np.minimum(w, F32(g.ry)) - F32(grow)


def _shade(cv: Canvas, look: "Look", cx: float, cy: float, rx: float, ry: float, anime: bool) -> np.ndarray:
    """Lambert shading of an ellipsoid (normal from the face-frame position); cel-shaded in anime style."""
    nx = (cv.X - F32(cx)) * F32(1.0 / rx)
    ny = (cv.Y - F32(cy)) * F32(1.0 / ry)
    nz = np.sqrt(np.clip(F32(1.0) - nx * nx - ny * ny, 0.0, 1.0))
    lx, ly, lz = look.light
    lam = nx * F32(lx) + ny * F32(ly) + nz * F32(lz)
    if anime:  # two tones with an anti-aliased terminator
        return F32(0.87) + F32(0.13) * np.clip((lam - F32(0.25)) * F32(12.0), 0.0, 1.0)
    return F32(0.60) + F32(0.45) * np.clip(lam, 0.0, 1.0)


def paint_background(cv: Canvas, look: "Look") -> None:
    top, bottom, tilt = look.bg
    t = np.clip((cv.yi + cv.xi * F32(tilt)) * F32(0.5) + F32(0.5), 0.0, 1.0)
    top_, bottom_ = np.asarray(top, F32)[:, None, None], np.asarray(bottom, F32)[:, None, None]
    cv.img[...] = top_ + t[None] * (bottom_ - top_)


def paint_body(cv: Canvas, look: "Look", g: Geom) -> None:
    """Shoulders (clothes) with a round or V neckline, then the neck with the chin's shadow."""
    a = look.attrs["age"]
    body, fem = AGE_BODY[a], look.gender == "female"
    w = cv.window(-1.3, 0.2, 1.3, 1.3)
    if w is None:
        return
    shoulders = D.ellipse(w.X, w.Y, 0.0, 1.28, 0.86 * body * (0.92 if fem else 1.0), 0.52)
    cloth = D.shaded(look.clothes, F32(0.8) + F32(0.25) * np.clip(F32(1.2) - w.Y, 0.0, 1.0))
    w.fill(shoulders, cloth, CLOTHES, line=1.2)
    neck_hw = (0.15 if fem else 0.175) * (0.75 + 0.25 * body)
    neck = D.rounded_box(w.X, w.Y, 0.0, 0.52, neck_hw, 0.34, 0.06)
    neckline = D.ellipse(w.X, w.Y, 0.0, 0.80, neck_hw + 0.03 + 0.06 * look.u[32], 0.09 + 0.05 * look.u[33])
    skin_dark = scale_rgb(look.skin, 0.78)
    w.fill(D.union(neck, neckline), skin_dark, EARS_NECK, line=1.0)
    chin_shadow = face_sdf(w.X, w.Y - F32(0.07), g)
    w.paint(w.cover(chin_shadow) * F32(0.35 if not g.anime else 0.5), scale_rgb(look.skin, 0.5), erase_ink=False)
    if AGE_WRINKLE[a] >= 1.0:  # neck folds
        for k in (0.48, 0.58):
            w.stroke(D.curve_band(w.X, w.Y, 0.0, k, neck_hw * 0.8, 0.02, 0.004), 0.012,
                     scale_rgb(look.skin, 0.55), alpha=0.6, ink=0.5)


def hair_shape(X: np.ndarray, Y: np.ndarray, g: Geom, look: "Look") -> tuple[np.ndarray, np.ndarray]:
    """(cap, back) fields: the hair over the skull, and the mass that falls behind the head and shoulders."""
    vol = 0.03 * look.u[34] + (0.02 if g.anime else 0.0)
    cap_top = -(g.ry + 0.06 + vol)
    cap_cy = -0.10
    cap = D.ellipse(X, Y, 0.0, cap_cy, g.rx + 0.04 + vol, cap_cy - cap_top)
    length = look.hair_length
    if length == "short":
        return cap, cap
    bottom = g.ry * 0.75 if length == "medium" else 0.98
    hw = g.rx + (0.05 if length == "medium" else 0.07) + vol
    side = D.rounded_box(X, Y, 0.0, (cap_cy + bottom) / 2, hw, (bottom - cap_cy) / 2, 0.12)
    if g.anime:  # spiky ends
        side = side + F32(0.03) * np.abs(np.sin(X * F32(28.0) + F32(look.u[35] * 6)))
    else:  # wavy ends
        side = side + F32(0.012) * np.sin(X * F32(40.0) + Y * F32(9.0))
    return cap, D.union(cap, side)


def hair_colour_field(cv: Canvas, look: "Look", g: Geom) -> np.ndarray:
    """Hair colour per pixel: ellipsoid shading, strand texture (human) or a highlight ring (anime)."""
    shade = _shade(cv, look, 0.0, -0.2, g.rx + 0.15, g.ry + 0.25, g.anime)
    if g.anime:
        ring = np.abs(D.ellipse(cv.X, cv.Y, 0.0, -0.1, g.rx * 0.82, g.ry * 0.62)) - F32(0.025)
        ring = np.maximum(ring, cv.Y + F32(0.25))
        shade = shade + F32(0.3) * cv.cover(ring)
        out = D.shaded(look.hair, shade)
        if look.attrs["age"] == 3:
            _grey_temples(cv, g, out, look.hair)
        return out
    strands = np.sin(cv.X * F32(110.0) + F32(2.0) * np.sin(cv.Y * F32(7.0) + F32(look.u[35] * 6)))
    shade = shade * (F32(1.0) + F32(0.05 if cv.px < 0.02 else 0.02) * strands)
    out = D.shaded(look.hair, shade)
    if float(np.mean(look.hair)) < 0.2:  # dark hair: add a sheen so the shading shows
        out += (F32(0.10) * np.clip(shade - F32(0.85), 0.0, 1.0))[None]
    if look.attrs["age"] == 3:
        _grey_temples(cv, g, out, look.hair)
    return out


def _grey_temples(cv: Canvas, g: Geom, out: np.ndarray, hair: tuple) -> None:
    """Middle age: the hair greys at the temples and above the ears (ages 4/5 grey all of it)."""
    side = np.clip((np.abs(cv.X) - F32(g.rx * 0.55)) * F32(1.0 / (g.rx * 0.3)), 0.0, 1.0)
    side *= np.clip((cv.Y + F32(g.ry * 0.55)) * F32(1.0 / (g.ry * 0.3)), 0.0, 1.0)
    grey = (0.70, 0.70, 0.71) if D.luminance(hair) < 0.55 else (0.52, 0.52, 0.54)
    out += (side * F32(0.75))[None] * (np.asarray(grey, F32)[:, None, None] - out)


def paint_back_hair(cv: Canvas, look: "Look", g: Geom, colour: np.ndarray) -> None:
    if look.hair_length == "short":
        return
    _, back = hair_shape(cv.X, cv.Y, g, look)
    cv.fill(back, colour, HAIR, line=1.2)


def paint_ears(cv: Canvas, look: "Look", g: Geom) -> None:
    for s in (-1.0, 1.0):
        cx = s * (g.rx * (0.96 if not g.anime else 0.93))
        w = cv.window(cx - 0.07, g.ey - 0.05, cx + 0.07, g.ey + 0.17)
        if w is None:
            continue
        ear = D.ellipse(w.X, w.Y, cx, g.ey + 0.06, 0.055 if not g.anime else 0.045, 0.095)
        w.fill(ear, scale_rgb(look.skin, 0.9), EARS_NECK, line=1.0)
        inner = D.ellipse(w.X, w.Y, cx + s * 0.01, g.ey + 0.065, 0.022, 0.05)
        w.stroke(inner, 0.012, scale_rgb(look.skin, 0.6), alpha=0.7, ink=0.6)


def paint_head(cv: Canvas, look: "Look", g: Geom) -> np.ndarray:
    """Face skin with shading, cheeks and age lines; returns the face field on the full canvas."""
    d = face_sdf(cv.X, cv.Y, g)
    w = cv.window(-g.rx - 0.05, -g.ry - 0.05, g.rx + 0.05, g.ry + 0.05)
    assert w is not None
    dw = face_sdf(w.X, w.Y, g)
    col = D.shaded(look.skin, _shade(w, look, 0.0, -0.05, g.rx * 1.1, g.ry * 1.1, g.anime))
    w.fill(dw, col, SKIN, line=1.3)
    smile = look.attrs["smiling"]
    # Cheeks: blush for anime and big smiles; from smiling 3 the cheeks rise (higher, rounder, lit apples).
    raise_ = max(smile - 2, 0)
    blush = (0.35 if g.anime else 0.12) + 0.08 * raise_
    cy = g.ey + (0.16 if not g.anime else 0.15) - (0.02 if raise_ else 0.0)
    for s in (-1.0, 1.0):
        cx = s * (g.ex + 0.01)
        v = cv.window(cx - 0.15, cy - 0.12, cx + 0.15, cy + 0.12)
        if v is not None:
            cheek = D.ellipse(v.X, v.Y, cx, cy, 0.075, 0.045 + 0.01 * min(raise_, 1))
            v.paint(v.cover(cheek * F32(0.25)) * F32(blush), (0.95, 0.45, 0.45), erase_ink=False)
            if raise_:
                apple = D.ellipse(v.X, v.Y, cx - s * 0.01, cy - 0.015, 0.05, 0.03)
                v.paint(v.cover(apple * F32(0.3)) * F32(0.35), mix(look.skin, (1.0, 0.97, 0.94), 0.45),
                        erase_ink=False)
    paint_wrinkles(cv, look, g)
    return d


def _line(cv: Canvas, box: tuple[float, float, float, float], field, width: float, colour, alpha: float,
          ink: float = 0.6) -> None:
    """Stroke the zero set of ``field(X, Y)`` inside the face-frame ``box`` (evaluated on that window only)."""
    v = cv.window(*box)
    if v is not None:
        v.stroke(field(v.X, v.Y), width, colour, alpha=alpha, ink=ink)


def paint_wrinkles(cv: Canvas, look: "Look", g: Geom) -> None:
    """Age lines: forehead lines (2 / 2 / 3 for age 3 / 4 / 5, darker with age), under-eye shadows and lines
    and (human) nasolabial folds from age 3 (thick enough to read at 32 px; age 3 also greys the temples, see
    hair_colour_field), crow's feet from age 4, marionette lines at age 5."""
    a = look.attrs["age"]
    wr = AGE_WRINKLE[a]
    if wr == 0:
        return
    col = scale_rgb(look.skin, 0.45)
    for s in (-1.0, 1.0):  # under-eye shadows (soft, visible at 32 px)
        v = cv.window(s * g.ex - g.ew - 0.02, g.ey, s * g.ex + g.ew + 0.02, g.ey + g.eh + 0.08)
        if v is not None:
            bag = D.ellipse(v.X, v.Y, s * g.ex, g.ey + g.eh + 0.025, g.ew * 0.85, 0.028)
            v.paint(v.cover(bag * F32(0.4)) * F32(0.22 + 0.12 * wr), scale_rgb(look.skin, 0.55), erase_ink=False)
    for k in range(2 if a < 5 else 3):
        y, hw = g.brow_y - 0.07 - 0.05 * k, 0.16 - 0.015 * k
        _line(cv, (-hw, y - 0.04, hw, y + 0.03), lambda X, Y: D.curve_band(X, Y, 0.0, y, hw, -0.02, 0.005),
              0.028, col, 0.5 + 0.4 * wr)
    for s in (-1.0, 1.0):
        fy, fx = (g.ny + g.my) / 2 + 0.01, s * (g.mw + 0.07)
        if not g.anime:  # x as a parabola of y: from the nose wing to beyond the mouth corner
            _line(cv, (fx - 0.05, fy - 0.1, fx + 0.05, fy + 0.1),
                  lambda X, Y: D.curve_band(Y, X, fy, fx, 0.08, -s * 0.015, 0.005), 0.03, col, 0.45 + 0.45 * wr)
        by = g.ey + g.eh + (0.03 if not g.anime else 0.025)  # under-eye line / bag
        _line(cv, (s * g.ex - g.ew, by - 0.03, s * g.ex + g.ew, by + 0.04),
              lambda X, Y: D.curve_band(X, Y, s * g.ex, by, g.ew * 0.8, 0.015, 0.004), 0.018, col, 0.3 + 0.5 * wr,
              0.5)
        if a >= 4:
            cx = s * (g.ex + g.ew + 0.045)
            _line(cv, (cx - 0.04, g.ey - 0.05, cx + 0.04, g.ey + 0.05),
                  lambda X, Y: D.union(*[D.curve_band(X, Y, cx, g.ey + 0.02 * k, 0.025, 0.0, 0.003,
                                                      tilt=0.012 * k * s) for k in (-1, 0, 1)]),
                  0.016, col, 0.7, 0.5)
        if a == 5:
            mx, my = s * (g.mw + 0.03), g.my + 0.09
            _line(cv, (mx - 0.04, my - 0.08, mx + 0.04, my + 0.08),
                  lambda X, Y: D.curve_band(Y, X, my, mx, 0.06, 0.0, 0.004, tilt=-s * 0.01), 0.02, col, 0.8)


def paint_front_hair(cv: Canvas, look: "Look", g: Geom, face_d: np.ndarray, colour: np.ndarray) -> None:
    """Hair over the skull and forehead down to the hairline or, with bangs, to the bangs' edge.

    The natural hairline is y = hairline + 0.3 (x / rx)^2. Bangs of level b put a fringe edge at
    y = hairline + (b / 5) (brow_y + 0.02 - hairline): the share b/5 of the forehead is covered."""
    X, Y = cv.X, cv.Y
    cap, back = hair_shape(X, Y, g, look)
    b = look.attrs["bangs"]
    line = F32(g.hairline) + F32(0.3 / g.rx ** 2) * X * X  # natural hairline (temples lower)
    if b > 0:
        edge = g.hairline + (b / 5.0) * (g.brow_y + 0.02 - g.hairline)
        if g.anime:  # spiky fringe: a triangle wave hanging down, mean at the edge
            tri = np.abs(((X * F32(1.0 / 0.09) + F32(look.u[36])) % F32(1.0)) - F32(0.5)) * F32(2.0)
            fringe = F32(edge - 0.02) + F32(0.045) * (F32(1.0) - tri)
        else:  # soft strands
            fringe = F32(edge) + F32(0.012) * np.sin(X * F32(55.0) + F32(look.u[36] * 6.0))
        fringe = np.where(np.abs(X) < F32(g.rx * 0.92), fringe, F32(-9.0))
        # a soft shadow of the fringe on the forehead makes its edge read even for light hair
        sh = np.maximum(face_d, np.maximum(Y - fringe - F32(0.035), fringe - F32(0.01) - Y))
        cv.paint(cv.cover(sh * F32(0.5)) * F32(0.3), scale_rgb(look.skin, 0.45), erase_ink=False)
        line = np.maximum(line, fringe)
    forehead = np.maximum(face_d, line - Y)  # visible skin below the hair line
    cut = g.ey - 0.02 if look.hair_length == "short" else g.ey + 0.1
    front = np.maximum(np.maximum(cap, Y - F32(cut)), -forehead)
    if look.hair_length != "short" and (look.gender == "female" or look.u[27] < 0.3):
        # locks falling in front of the ears along the face
        locks = np.maximum(back, F32(g.rx * 0.93) - np.abs(X))
        locks = np.maximum(locks, F32(g.ey - 0.2) - Y)
        front = np.minimum(front, locks)
    cv.fill(front, colour, HAIR, line=1.2)
