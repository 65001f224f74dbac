"""Inner face features of SynthFaces (eyes, brows, nose, mouth, beard, glasses) and the full paint order.

All features are painted through small canvas windows around them (see :meth:`Canvas.window`). Attribute
levels map to geometry monotonically: smiling lifts the mouth corners, widens and then opens the mouth and
finally squints the eyes; glasses go from rimless lenses to thin and thick frames, then dark lenses; the beard
grows from stubble to moustache, goatee, full beard and a long beard below the chin.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from facediff.data import synth_draw as D
from facediff.data.synth_draw import F32, Canvas, mix, scale_rgb
from facediff.data.synth_parts import (BEARD, BROWS, EYES, GLASSES, MOUTH, NOSE, SKIN, SMILE, SMILE_LINE, Geom,
                                       face_sdf, geometry, hair_colour_field, paint_back_hair, paint_background,
                                       paint_body, paint_ears, paint_front_hair, paint_head)

if TYPE_CHECKING:
    from facediff.data.synth_draw import Look

_DARK = (0.10, 0.06, 0.06)
_WHITE = (0.97, 0.97, 0.96)


def _ink_fill(w: Canvas, a: np.ndarray, strength: float) -> None:
    np.maximum(w.ink, a * F32(strength), out=w.ink)


# -- eyes and brows ---------------------------------------------------------------------------------------------
def _human_eye(w: Canvas, look: "Look", g: Geom, s: float, open_f: float) -> None:
    cx, ey, ew, eh = s * g.ex, g.ey, g.ew, g.eh * open_f
    tilt = 0.006 * s  # outer corners slightly higher
    smile = look.attrs["smiling"]
    up, _ = D.parabola(w.X, w.Y, cx, ey, ew, -eh, tilt)  # upper lid, distance positive below
    lo, _ = D.parabola(w.X, w.Y, cx, ey, ew, (0.75 if smile < 3 else 0.4) * eh, tilt)  # raised cheeks squint
    cap = np.abs(w.X - F32(cx)) - F32(ew)
    d_eye = np.maximum(np.maximum(-up, lo), cap)
    a_eye = w.fill(d_eye, scale_rgb((0.94, 0.93, 0.90), 0.95), EYES, line=1.0)
    gaze = (look.u[31] - 0.5) * 0.25 * ew
    ri = 0.46 * g.ew
    ix, iy = cx + gaze, ey + 0.1 * eh
    iris = D.circle(w.X, w.Y, ix, iy, ri)
    a = w.cover(iris) * a_eye
    w.paint(a, look.eye, erase_ink=False)
    np.maximum(w.ink, w.band(iris, w.px) * a_eye * F32(0.7), out=w.ink)
    pupil = w.cover(D.circle(w.X, w.Y, ix, iy, 0.45 * ri)) * a_eye
    w.paint(pupil, (0.04, 0.03, 0.03), erase_ink=False)
    _ink_fill(w, pupil, 1.0)
    w.paint(w.cover(D.circle(w.X, w.Y, ix - 0.35 * ri, iy - 0.4 * ri, 0.3 * ri)) * a_eye * F32(0.9), _WHITE,
            erase_ink=False)
    fem = look.gender == "female"
    lid = np.maximum(np.abs(up), cap - F32(0.01))
    w.stroke(lid, 0.026 if fem else 0.019, _DARK, alpha=0.95)
    w.stroke(np.maximum(np.abs(lo), cap), 0.008, scale_rgb(look.skin, 0.55), alpha=0.5, ink=0.4)
    if look.attrs["age"] >= 1:  # upper eyelid crease
        crease, _ = D.parabola(w.X, w.Y, cx, ey - 0.012, ew * 0.95, -eh - 0.012, tilt)
        w.stroke(np.maximum(np.abs(crease), cap), 0.01, scale_rgb(look.skin, 0.6), alpha=0.45, ink=0.4)
    if smile >= 3:  # broad smile and laugh: raised cheeks push a fold under the eye
        fold = D.curve_band(w.X, w.Y, cx, ey + 0.045, ew * 0.9, -0.015, 0.004)
        w.stroke(fold, 0.016, scale_rgb(look.skin, 0.55), alpha=0.6 if smile < 5 else 0.7, ink=0.6)


def _anime_eye(w: Canvas, look: "Look", g: Geom, s: float, open_f: float) -> None:
    cx, ey, ew = s * g.ex, g.ey, g.ew
    if open_f < 0.5:  # laughing: closed happy eyes, upward arcs
        arc = D.curve_band(w.X, w.Y, cx, ey + 0.02, ew * 0.85, -0.055, 0.014, taper=0.5)
        w.fill(arc, _DARK, EYES, line=0.0)
        _ink_fill(w, w.cover(arc), 1.0)
        return
    eh = g.eh * open_f
    top = ey - eh
    d_eye = D.ellipse(w.X, w.Y, cx, ey, ew, eh)
    a_eye = w.fill(d_eye, _WHITE, EYES, line=1.0, ink=0.6)
    ix, iy = cx + (look.u[31] - 0.5) * 0.2 * ew, ey + 0.1 * eh
    iris = D.ellipse(w.X, w.Y, ix, iy, 0.72 * ew, 0.9 * g.eh)
    grad = F32(0.45) + F32(0.75) * np.clip((w.Y - F32(top)) * F32(0.5 / eh), 0.0, 1.0)
    a = w.cover(iris) * a_eye
    w.paint(a, D.shaded(look.eye, np.minimum(grad, F32(1.15))), erase_ink=False)
    np.maximum(w.ink, w.band(iris, w.px) * a_eye * F32(0.6), out=w.ink)
    pupil = w.cover(D.ellipse(w.X, w.Y, ix, iy + 0.05 * eh, 0.33 * ew, 0.45 * g.eh)) * a_eye
    w.paint(pupil, scale_rgb(look.eye, 0.25), erase_ink=False)
    _ink_fill(w, pupil, 0.8)
    w.paint(w.cover(D.circle(w.X, w.Y, cx - 0.3 * ew, ey - 0.35 * eh, 0.3 * ew)) * a_eye, _WHITE, erase_ink=False)
    w.paint(w.cover(D.circle(w.X, w.Y, cx + 0.3 * ew, ey + 0.4 * eh, 0.13 * ew)) * a_eye, _WHITE, erase_ink=False)
    # Thick upper lash line with a flick at the outer corner; thin lower lash.
    lash = D.curve_band(w.X, w.Y, cx + s * 0.01, ey - 0.3 * eh, ew * 1.12, -0.72 * eh, 0.022, taper=0.4,
                        tilt=-0.02 * s)
    w.fill(lash, _DARK, EYES, line=0.0)
    _ink_fill(w, w.cover(lash), 1.0)
    if look.attrs["smiling"] >= 3:  # broad smile: the raised cheek pushes the lower lid up into an arc
        lid, _ = D.parabola(w.X, w.Y, cx, ey + 0.75 * eh, ew * 1.05, -0.35 * eh)
        below = np.maximum(np.maximum(-lid, w.Y - F32(ey + eh + 0.012)), np.abs(w.X - F32(cx)) - F32(ew * 1.05))
        w.paint(w.cover(below), scale_rgb(look.skin, 0.97), SKIN)
        w.stroke(np.maximum(np.abs(lid), np.abs(w.X - F32(cx)) - F32(ew * 0.85)), 0.014, _DARK, alpha=0.85)
        return
    lower = D.curve_band(w.X, w.Y, cx + s * 0.02 * ew, ey + 0.97 * eh, ew * 0.45, 0.0, 0.006)
    w.stroke(lower, 0.01, _DARK, alpha=0.8)


def paint_eyes(cv: Canvas, look: "Look", g: Geom) -> None:
    open_f = SMILE[look.attrs["smiling"]][3]
    for s in (-1.0, 1.0):
        cx = s * g.ex
        w = cv.window(cx - g.ew - 0.06, g.ey - g.eh - 0.08, cx + g.ew + 0.06, g.ey + g.eh + 0.08)
        if w is not None:
            (_anime_eye if g.anime else _human_eye)(w, look, g, s, open_f)


def paint_brows(cv: Canvas, look: "Look", g: Geom) -> None:
    fem = look.gender == "female"
    colour = D.contrasting(mix(look.hair, (0.05, 0.04, 0.04), 0.35 if look.attrs["age"] < 4 else 0.15),
                           look.skin, 0.25)
    for s in (-1.0, 1.0):
        cx = s * (g.ex + 0.005)
        hw = 0.07 if g.anime else 0.085 * (1.0 if g.ew < 0.1 else 1.15)
        w = cv.window(cx - hw - 0.02, g.brow_y - 0.06, cx + hw + 0.02, g.brow_y + 0.05)
        if w is None:
            continue
        half = 0.008 if g.anime else (0.013 if fem else 0.019)
        brow = D.curve_band(w.X, w.Y, cx, g.brow_y, hw, -0.022, half, taper=0.55, tilt=0.012 * s)
        a = w.fill(brow, colour, BROWS, line=0.0)
        _ink_fill(w, a, 0.9)


# -- nose and mouth ---------------------------------------------------------------------------------------------
def paint_nose(cv: Canvas, look: "Look", g: Geom) -> None:
    ns, ny = g.ns, g.ny
    w = cv.window(-0.09, ny - 0.18, 0.09, ny + 0.05)
    if w is None:
        return
    w.mark(D.ellipse(w.X, w.Y, 0.0, ny - 0.05 * ns, 0.05 * ns, 0.09 * ns), NOSE)
    side = -1.0 if look.light[0] > 0 else 1.0  # shadow on the side away from the light
    dark = scale_rgb(look.skin, 0.55)
    if g.anime:
        tick = D.curve_band(w.X, w.Y, side * 0.008, ny, 0.014, 0.004, 0.005, taper=0.3)
        w.stroke(tick, 0.002, dark, ink=0.0)
        w.fill(tick, dark, 0, line=0.0)
        _ink_fill(w, w.cover(tick), 0.8)
        return
    bridge = D.curve_band(w.Y, w.X, ny - 0.07 * ns, side * 0.032 * ns, 0.085 * ns, side * 0.006, 0.012)
    w.paint(w.cover(bridge * F32(0.35)) * F32(0.35), dark, erase_ink=False)
    w.outline(bridge, 0.8, 0.35)
    w.paint(w.cover(D.ellipse(w.X, w.Y, 0.0, ny - 0.012, 0.028 * ns, 0.022 * ns) * F32(0.4)) * F32(0.25),
            (1.0, 0.95, 0.9), erase_ink=False)
    for s in (-1.0, 1.0):
        nostril = D.ellipse(w.X, w.Y, s * 0.03 * ns, ny + 0.015, 0.017 * ns, 0.009 * ns)
        w.fill(nostril, scale_rgb(look.skin, 0.4), 0, alpha=0.85, line=0.8, ink=0.8)
    base = D.curve_band(w.X, w.Y, 0.0, ny + 0.02, 0.055 * ns, 0.008, 0.004)
    w.stroke(base, 0.01, dark, alpha=0.35, ink=0.5)


def paint_mouth(cv: Canvas, look: "Look", g: Geom) -> None:
    lvl = look.attrs["smiling"]
    hwf, lift, opening, _ = SMILE[lvl]
    k = 0.9 if g.anime else 1.0
    hw, lift, opening, my = g.mw * hwf, lift * k, opening * k, g.my
    w = cv.window(-hw - 0.12, my - 0.14, hw + 0.12, my + opening + 0.1)
    if w is None:
        return
    thin = 0.7 if look.attrs["age"] == 5 else 1.0
    tu, tl = 0.022 * thin, (0.034 if look.gender == "female" else 0.028) * thin
    cap = np.abs(w.X) - F32(hw)
    lips_col = look.lips
    if not g.anime and (look.attrs["beard"] >= 3 or D.luminance(look.skin) < 0.35):
        lips_col = mix(look.lips, (0.88, 0.50, 0.50), 0.55)  # lips in a beard or dark skin: light enough to show
    line_col = mix(look.lips, (0.12, 0.03, 0.03), 0.7)
    if lvl >= 3 and not g.anime:  # smile folds from the nose wings past the mouth corners
        for s in (-1.0, 1.0):
            fold = D.curve_band(w.Y, w.X, (g.ny + my) / 2 + 0.01, s * (hw + 0.035), (my - g.ny) / 2 + 0.03,
                                -s * 0.02, 0.004)
            w.stroke(fold, 0.022, scale_rgb(look.skin, 0.55), alpha=0.5 + 0.1 * (lvl - 3), ink=0.6)
    if opening == 0:
        mid, _ = D.parabola(w.X, w.Y, 0.0, my - lift, hw, lift)
        if not g.anime:
            top, _ = D.parabola(w.X, w.Y, 0.0, my - lift, hw, lift - tu)
            bot, _ = D.parabola(w.X, w.Y, 0.0, my - lift, hw, lift + tl)
            lips = np.maximum(np.maximum(-top, bot), cap)
            w.fill(lips, lips_col, MOUTH, line=0.8, ink=0.6)
            w.paint(w.cover(np.maximum(np.maximum(-top, mid), cap)) * F32(0.25), (0.2, 0.05, 0.05),
                    erase_ink=False)
        else:
            w.mark(np.maximum(np.abs(mid) - F32(0.015), cap), MOUTH)
        w.stroke(np.maximum(np.abs(mid), cap - F32(0.004)), SMILE_LINE[lvl] * (0.9 if g.anime else 1.0), line_col)
        if lvl >= 2:  # dimples at the corners
            for s in (-1.0, 1.0):
                dim = D.curve_band(w.Y, w.X, my - lift + 0.005, s * (hw + 0.012), 0.018, s * 0.004, 0.003)
                w.stroke(dim, 0.011, scale_rgb(look.skin, 0.55), alpha=0.7, ink=0.6)
        return
    # Open mouth: the opening lies between an upper curve (corners at my - lift) and a deep lower curve.
    top, _ = D.parabola(w.X, w.Y, 0.0, my - lift, hw, lift - 0.2 * opening)
    bot, _ = D.parabola(w.X, w.Y, 0.0, my - lift, hw, lift + 0.8 * opening)
    if not g.anime:
        lip_top, _ = D.parabola(w.X, w.Y, 0.0, my - lift, hw * 1.04, lift - 0.2 * opening - tu)
        lip_bot, _ = D.parabola(w.X, w.Y, 0.0, my - lift, hw * 1.04, lift + 0.8 * opening + tl)
        w.fill(np.maximum(np.maximum(-lip_top, lip_bot), np.abs(w.X) - F32(hw * 1.04)), lips_col, MOUTH,
               line=0.8, ink=0.6)
    hole = np.maximum(np.maximum(-top, bot), cap)
    a_hole = w.fill(hole, (0.30, 0.07, 0.08), MOUTH, line=1.2)
    tongue = D.ellipse(w.X, w.Y, 0.0, my + 0.8 * opening - 0.02 * k, hw * 0.55, 0.35 * opening)
    w.paint(w.cover(tongue) * a_hole, (0.86, 0.42, 0.45), erase_ink=False)
    teeth_h = 0.032 if not g.anime else 0.02
    teeth, _ = D.parabola(w.X, w.Y, 0.0, my - lift + teeth_h, hw, lift - 0.2 * opening)
    a_teeth = w.cover(teeth) * a_hole
    w.paint(a_teeth, (0.96, 0.95, 0.91), erase_ink=False)
    np.maximum(w.ink, w.band(teeth, w.px) * a_hole * F32(0.7), out=w.ink)


# -- beard and glasses ------------------------------------------------------------------------------------------
def _beard_colour(w: Canvas, look: "Look", g: Geom) -> np.ndarray:
    base = D.contrasting(mix(look.hair, (0.05, 0.04, 0.03), 0.15), look.skin, 0.3)
    if g.anime:
        return D.shaded(base, np.ones_like(w.X))
    amp = 0.14 if w.px < 0.02 else 0.04  # strands only where pixels resolve them (no moire at 32 px)
    tex = F32(1.0 - amp) + F32(amp) * np.sin(w.X * F32(90.0) + F32(2.0) * np.sin(w.Y * F32(30.0)))
    return D.shaded(base, tex)


def paint_beard(cv: Canvas, look: "Look", g: Geom, moustache: bool) -> None:
    lvl = look.attrs["beard"]
    if lvl == 0 or (moustache and lvl < 2) or (not moustache and lvl == 2):
        return
    w = cv.window(-g.rx - 0.05, g.ey - 0.05, g.rx + 0.05, 1.2 if lvl == 5 else g.ry + 0.12)
    if w is None:
        return
    colour = _beard_colour(w, look, g)
    lift = SMILE[look.attrs["smiling"]][1]
    if moustache:
        hw, half = (0.16, 0.046) if lvl == 5 else (0.145, 0.04)
        centre = g.my - 0.04 - half - 0.7 * lift  # above the upper lip (rises with the smile); ends droop 0.03
        m = D.curve_band(w.X, w.Y, 0.0, centre + 0.03, hw, -0.03, half, taper=0.5)
        w.fill(m, colour, BEARD, line=1.0)
        return
    face_d = face_sdf(w.X, w.Y, g)
    ax = np.clip((np.abs(w.X) - F32(0.1)) * F32(1.0 / (g.rx - 0.1)), 0.0, 1.0) ** F32(0.7)
    top = F32(g.ny + 0.045) - F32(g.ny + 0.045 - g.ey - 0.06) * ax  # cheek line, sideburn to under the nose
    full = np.maximum(face_d - F32(0.012), top - w.Y)
    if lvl == 1:  # stubble: a dense dark shadow over jaw, chin and upper lip (darker than the skin on any tone)
        shadow = mix(scale_rgb(look.skin, 0.42), colour.mean(axis=(1, 2)), 0.35 if not g.anime else 0.5)
        if D.luminance(shadow) > 0.8 * D.luminance(look.skin):
            shadow = scale_rgb(look.skin, 0.45)
        a = w.cover(full * F32(0.3))
        if w.px < 0.03:  # stipple where pixels resolve it
            a *= F32(0.78) + F32(0.22) * np.sin(w.X * F32(160.0)) * np.sin(w.Y * F32(150.0))
        w.paint(a * F32(0.72), shadow, erase_ink=False)
        w.mark(full, BEARD)
        w.outline(full, 1.0, 0.3)
        return
    if lvl == 3:  # goatee: a ring around the mouth and a patch on the chin
        hw = g.mw * 1.1
        ring = np.maximum(D.ellipse(w.X, w.Y, 0.0, g.my + 0.02, hw + 0.05, 0.09), F32(g.my - 0.02) - w.Y)
        chin = D.ellipse(w.X, w.Y, 0.0, g.my + 0.13, hw * 0.85, 0.1)
        region = np.maximum(D.union(ring, chin), face_d - F32(0.02))
    else:
        region = D.union(full, D.ellipse(w.X, w.Y, 0.0, g.ry - 0.01, g.rx * 0.45, 0.07))
        if lvl == 5:  # long bushy beard below the chin
            long_d = D.ellipse(w.X, w.Y, 0.0, g.ry + 0.17, g.rx * 0.8, 0.34)
            long_d = long_d + F32(0.015) * np.sin(w.X * F32(45.0)) * np.sin(w.Y * F32(25.0))
            region = D.union(region, long_d, np.maximum(face_d - F32(0.04), top - w.Y))
    w.fill(region, colour, BEARD, line=1.2)


def paint_glasses(cv: Canvas, look: "Look", g: Geom) -> None:
    lvl = look.attrs["eyeglasses"]
    if lvl == 0:
        return
    thick = lvl in (3, 5)
    dark = lvl >= 4
    fw = {1: 0.012, 2: 0.024, 3: 0.06, 4: 0.024, 5: 0.06}[lvl]
    frame = (0.82, 0.84, 0.88) if lvl == 1 else look.frame
    lrx = max(g.ew * (1.3 if not g.anime else 1.12), 0.1)
    lry = min(0.075, 0.28 * (g.my - g.ey)) if not g.anime else g.eh * 1.05
    ly = g.ey + 0.005
    w = cv.window(-g.rx - 0.05, ly - lry - 0.08, g.rx + 0.05, ly + lry + 0.05)
    if w is None:
        return
    lenses = []
    for s in (-1.0, 1.0):
        cx = s * g.ex
        if thick:
            lenses.append(D.rounded_box(w.X, w.Y, cx, ly, lrx + 0.005, lry + 0.005, 0.03))
        else:
            lenses.append(D.ellipse(w.X, w.Y, cx, ly, lrx, lry))
    lens = D.union(*lenses)
    a = w.cover(lens)
    if dark:
        w.paint(a * F32(0.9), (0.06, 0.07, 0.09), GLASSES)
        _ink_fill(w, a, 0.45)
    else:
        w.paint(a * F32(0.22 if lvl == 1 else 0.1), (0.85, 0.92, 1.0), 0, erase_ink=False)
        w.mark(lens, GLASSES)
    glare = np.maximum(lens + F32(0.012), np.abs(w.X + w.Y * F32(0.8) - F32(g.ex * 0.6)) - F32(0.018))
    glare = np.minimum(glare, np.maximum(lens + F32(0.012),
                                         np.abs(w.X + w.Y * F32(0.8) + F32(g.ex * 1.4)) - F32(0.018)))
    w.paint(w.cover(glare) * F32(0.35 if lvl == 1 else 0.25), (1.0, 1.0, 1.0), erase_ink=False)
    alpha, ink = (0.85, 0.45) if lvl == 1 else (1.0, 1.0)
    rim = np.abs(lens) - F32(fw / 2)
    gap = g.ex - lrx
    bridge = D.curve_band(w.X, w.Y, 0.0, ly - lry * 0.35, gap + 0.01, -0.012, fw / 2, taper=0.0)
    arm_x0 = g.ex + lrx
    arm_hw = (g.rx + 0.03 - arm_x0) / 2
    arms = D.union(*[D.curve_band(w.X, w.Y, s * (arm_x0 + arm_hw), ly - lry * 0.45, arm_hw, 0.0,
                                  min(fw / 2, 0.014), taper=0.0) for s in (-1.0, 1.0)])
    parts = D.union(rim, bridge, arms)
    a_frame = w.cover(parts) * F32(alpha)
    w.paint(a_frame, frame, GLASSES)
    np.maximum(w.ink, w.band(parts, w.px) * F32(ink), out=w.ink)


# -- the whole face ---------------------------------------------------------------------------------------------
def paint_face(cv: Canvas, look: "Look") -> None:
    """Paint every part of ``look`` onto ``cv``, back to front."""
    g = geometry(look)
    paint_background(cv, look)
    paint_body(cv, look, g)
    hair = hair_colour_field(cv, look, g)
    paint_back_hair(cv, look, g, hair)
    paint_ears(cv, look, g)
    face_d = paint_head(cv, look, g)
    paint_nose(cv, look, g)
    paint_beard(cv, look, g, moustache=False)
    paint_mouth(cv, look, g)
    paint_beard(cv, look, g, moustache=True)
    paint_eyes(cv, look, g)
    paint_brows(cv, look, g)
    paint_front_hair(cv, look, g, face_d, hair)
    paint_glasses(cv, look, g)
    if g.ink:  # anime: the sketch's contours become the image's cel outlines
        cv.img *= (F32(1.0) - F32(g.ink) * cv.ink)[None]
