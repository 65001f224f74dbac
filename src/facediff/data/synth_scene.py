"""SynthFaces scenes: what a MultiDiffusion window sees besides one centred face (issue 26, section 3).

A composed group picture or a panorama is denoised window by window; a window over a region border sees half a
face, one over the background sees no face, and a wide canvas holds several small faces. A model that has only
ever seen one centred face draws a whole face into each such window: the ghost faces. ``--layout scenes``
renders training images of every kind a window meets, with captions that say so:

  portrait    the usual centred face (its attributes, caption and held-out caption as ``render`` gives them)
  offcentre   the same face shifted towards one edge so that 25-60 % of it leaves the frame ("..., partly out of
              frame on the left"); its attributes stay labelled
  group       2 or 3 smaller faces of their own looks side by side ("a group of three small faces, ...");
              attributes unlabelled (-1: several faces disagree)
  background  the background alone ("background only, no face"); attributes unlabelled

Each image's label row adds ``scene`` (the kind) and ``faces``: [[cx, cy, scale], ...] in image half-units
(-1..1, the face frame's centre and size), the ground truth for a future layout condition. Scene ``i`` of seed
``s`` depends only on (s, i, size, style), like every SynthFaces image; its main face is face ``i`` of seed ``s``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from facediff.data.synth_draw import Canvas

SCENE_KINDS: tuple[tuple[str, float], ...] = (("portrait", 0.40), ("offcentre", 0.25), ("group", 0.15),
                                              ("background", 0.20))  # kind, share of the images
_KEY_SCENE = 0x5CE4E
_NUMBER = {2: "two", 3: "three"}


def _kind(u: float) -> str:
    edge = 0.0
    for name, share in SCENE_KINDS:
        edge += share
        if u < edge:
            return name
    return SCENE_KINDS[-1][0]


def _paint(look, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rgb float (3, S, S) in [0, 1], ink (S, S), part mask (S, S), coverage (S, S) in [0, 1]) of one face."""
    from facediff.data.synth_features import paint_face

    angle, tx, ty, scale = look.pose
    cv = Canvas(size, angle, tx, ty, scale)
    paint_face(cv, look)
    covered = (cv.mask > 0).astype(np.float32)
    # a 3x3 box blur of the hard part mask, kept inside it: anti-aliased edges over the scene's background
    # without a halo of the face canvas's own background
    pad = np.pad(covered, 1, mode="edge")
    soft = sum(pad[dy:dy + size, dx:dx + size] for dy in range(3) for dx in range(3)) / 9.0
    return np.clip(cv.img, 0.0, 1.0), cv.ink, cv.mask, soft * covered


def _background(look, size: int) -> np.ndarray:
    from facediff.data.synth_parts import paint_background

    cv = Canvas(size)
    paint_background(cv, look)
    return np.clip(cv.img, 0.0, 1.0)


def _side(cx: float, cy: float) -> str:
    if abs(cx) >= abs(cy):
        return "on the right" if cx > 0 else "on the left"
    return "at the bottom" if cy > 0 else "at the top"


def write_synth_layout(out, n: int, size: int = 64, style: str = "human", seed: int = 0, *, layout: str = "faces",
                       **kwargs):
    """``synth.write_synth`` for a layout of ``registry.SYNTH_LAYOUTS``: faces (one centred face each) or
    scenes (``render_scene``)."""
    from facediff.data.synth import write_synth
    from facediff.registry import SYNTH_LAYOUTS, check_choice

    check_choice("SynthFaces layout", layout, SYNTH_LAYOUTS)
    return write_synth(out, n, size, style, seed, layout=layout,
                       render_one=render_scene if layout == "scenes" else None, **kwargs)


def render_scene(seed: int, index: int, size: int, style: str):
    """Scene ``index`` of ``seed`` (module docstring) as a ``SynthFace``."""
    from facediff.data.synth import SynthFace, _label, _render_look, make_look

    u = np.random.default_rng([seed, index, _KEY_SCENE]).random(16)
    kind = _kind(u[0])
    look = make_look(seed, index, style)
    label = _label(seed, index, look)
    angle, tx, ty, scale = look.pose
    if kind == "portrait":
        image, sketch, mask = _render_look(look, size)
        return SynthFace(image, sketch, mask, {**label, "scene": kind, "faces": [[tx, ty, scale]]})
    if kind == "offcentre":
        # the face frame spans about +-0.9 scale: a centre this far out leaves 25-60 % of it outside
        shift = (0.55 + 0.45 * u[1]) * scale * (1 if u[2] < 0.5 else -1)
        horizontal = u[3] < 0.7
        cx, cy = (shift, ty + (u[4] - 0.5) * 0.3) if horizontal else (tx + (u[4] - 0.5) * 0.3, shift)
        moved = replace(look, pose=(angle, cx, cy, scale))
        image, sketch, mask = _render_look(moved, size)
        where = f", partly out of frame {_side(cx, cy)}"
        label = {**label, "caption": label["caption"].rstrip(".") + where,
                 "caption_heldout": label["caption_heldout"].rstrip(".") + where}
        return SynthFace(image, sketch, mask, {**label, "scene": kind, "faces": [[cx, cy, scale]]})
    rgb = _background(look, size)
    ink = np.zeros((size, size), np.float32)
    parts = np.zeros((size, size), np.uint8)
    faces: list[list[float]] = []
    if kind == "group":
        k = 2 if u[5] < 0.6 else 3
        small = scale * (0.34 + 0.1 * u[6]) * (2.6 / (k + 0.6))
        for j in range(k):
            other = make_look(seed, index, style) if j == 0 else make_look(seed + 7919 * j, index, style)
            cx = -1 + (2 * j + 1) / k + (u[7 + j] - 0.5) * 0.15
            cy = (u[10 + j] - 0.5) * 0.35
            face = replace(other, pose=(other.pose[0], cx, cy, small))
            f_rgb, f_ink, f_mask, alpha = _paint(face, size)
            rgb = rgb * (1 - alpha[None]) + f_rgb * alpha[None]
            ink = np.maximum(ink, f_ink * (alpha > 0.5))
            parts = np.where(f_mask > 0, f_mask, parts)
            faces.append([cx, cy, small])
        text = f"a group of {_NUMBER[k]} small faces, side by side"
        row: dict[str, Any] = {"attributes": {}, "caption": text, "caption_heldout": f"{_NUMBER[k]} people together"}
    else:
        row = {"attributes": {}, "caption": "background only, no face", "caption_heldout": "an empty backdrop"}
    image = (rgb.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
    sketch = (255.5 - 255.0 * np.clip(ink, 0.0, 1.0)).astype(np.uint8)
    return SynthFace(np.ascontiguousarray(image), sketch, parts, {**label, **row, "scene": kind, "faces": faces})
