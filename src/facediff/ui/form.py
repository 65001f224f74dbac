"""The generate form as data: which input slots a model's condition kinds use, the request fields the slots'
values make, and back (a dropped PNG's request -> slot values). No gradio here, so it is tested directly.

The page holds a fixed pool of inputs per control type (``SLOTS``), shown or hidden per model: a kind whose
``ui_control`` is ``levels`` takes one level slider and one guidance slider per part, ``prompt`` the prompt and
negative prompt boxes, ``drawing`` the sketch pad, ``paint`` the mask painter, ``image`` an upload slot and
``text`` a text box. Built-in kinds keep their request fields (``attrs``, ``sketch``, ``prompt``); any other kind
goes to ``conditions`` under its name.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facediff.conditioning.conditioner import LEGACY_NAMES
from facediff.errors import FacediffError

SLOTS = {"levels": 12, "prompt": 1, "drawing": 1, "paint": 1, "image": 2, "text": 3}  # inputs of each type
DONT_CARE = -1  # a level slider at -1: the attribute is left to the model (not conditioned)
REQUEST_FIELD = {kind: key for key, kind in LEGACY_NAMES.items() if key != "prompts"}  # built-in kind -> field


@dataclass(frozen=True)
class Slot:
    """One input of the pool in use: its type, its index in that type's pool, the kind and part it serves."""

    control: str  # levels | prompt | drawing | paint | image | text
    index: int  # position in SLOTS[control]
    kind: str  # the condition kind's name
    part: str = ""  # levels: the part (attribute) name
    spec: tuple = ()  # levels: (number of levels,); paint: the palette as (label, colour) pairs


def assign(controls: list[tuple[str, dict[str, Any]]]) -> list[Slot]:
    """The slots a model's kinds use (``ui.models.controls_of``); a kind beyond the pool is refused."""
    used = {c: 0 for c in SLOTS}
    slots = []
    for name, spec in controls:
        control = spec.get("control", "text")
        if control not in SLOTS:
            raise FacediffError(f"condition {name}: ui_control {control!r} is not one the UI knows ({', '.join(SLOTS)})")
        parts = spec.get("parts", [""]) if control == "levels" else [""]
        for part in parts:
            if used[control] >= SLOTS[control]:
                raise FacediffError(f"condition {name}: more {control} inputs than the UI has ({SLOTS[control]})")
            extra = (int(spec.get("levels", 6)),) if control == "levels" else \
                tuple(spec.get("palette", {}).items()) if control == "paint" else ()
            slots.append(Slot(control, used[control], name, part, extra))
            used[control] += 1
    return slots


def on_white_paper(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> (H, W, 3) float: transparent is white paper (a sketch pad's, an uploaded sketch's)."""
    a = rgba[..., 3:4] / 255.0
    return rgba[..., :3] * a + 255 * (1 - a)


def save_drawing(image: Any, folder: str | Path, paper: bool) -> str | None:
    """A drawn canvas (gradio ImageEditor value, or an RGBA array) -> a PNG in ``folder`` (named by its content,
    so the request can name it), or None when nothing is drawn. ``paper``: transparent is white paper (a
    sketch); else it stays transparent (a mask: background)."""
    from PIL import Image

    if isinstance(image, dict):
        image = image.get("composite")
    if image is None:
        return None
    rgba = np.asarray(image)
    if rgba.ndim == 2:
        rgba = np.stack([rgba] * 3 + [np.full_like(rgba, 255)], -1)
    if rgba.shape[-1] == 3:
        rgba = np.concatenate([rgba, np.full(rgba.shape[:2] + (1,), 255, rgba.dtype)], -1)
    rgba = rgba.astype(np.uint8)
    drawn = rgba[..., 3] > 0
    if paper:
        drawn &= rgba[..., :3].min(-1) < 250  # white strokes on white paper are no ink
    if not drawn.any():
        return None
    if paper:  # ink over white paper, grey
        out = Image.fromarray(on_white_paper(rgba).mean(-1).round().astype(np.uint8), "L")
    else:
        out = Image.fromarray(rgba, "RGBA")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(np.asarray(out).tobytes()).hexdigest()[:16]}.png"
    if not path.exists():
        out.save(path)
    return str(path)


def fields_from_form(slots: list[Slot], values: dict[str, list[Any]], folder: str | Path) -> dict[str, Any]:
    """Request fields from the slots' values: ``values[control]`` lists that pool's values in slot order
    (levels: (level, guidance) pairs; prompt: (prompt, negative) pairs; drawing / paint: editor values;
    image: file paths; text: strings). Empty inputs give no value (the kind's null value, said in the notes)."""
    by_kind: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for slot in slots:
        value = values[slot.control][slot.index]
        if slot.control == "levels":
            level, scale = value
            entry = by_kind.setdefault(slot.kind, ({}, {}))
            if level is not None and int(level) != DONT_CARE:
                entry[0][slot.part] = int(level)
            if scale:
                entry[1][slot.part] = float(scale)
            continue
        if slot.control == "prompt":
            prompt, negative = value
            if prompt and prompt.strip():
                by_kind[slot.kind] = prompt.strip()
            if negative and negative.strip():
                out["negative_prompt"] = negative.strip()
        elif slot.control in ("drawing", "paint"):
            path = save_drawing(value, Path(folder) / "inputs", paper=slot.control == "drawing")
            if path is not None:
                by_kind[slot.kind] = path
        elif value not in (None, ""):
            by_kind[slot.kind] = value.strip() if isinstance(value, str) else str(value)
    conditions = {}
    for kind, value in by_kind.items():
        if isinstance(value, tuple):  # levels
            levels, scales = value
            if REQUEST_FIELD.get(kind) == "attrs":
                out["attrs"], out["attr_scales"] = levels or None, scales or None
            elif levels:
                conditions[kind] = levels
        elif kind in REQUEST_FIELD:
            out[REQUEST_FIELD[kind]] = value
        else:
            conditions[kind] = value
    if conditions:
        out["conditions"] = conditions
    return out


def form_from_request(req, slots: list[Slot]) -> dict[str, list[Any]]:
    """The inverse for a dropped PNG: each pool's values (None: leave the input as it is) from ``req``."""
    values: dict[str, list[Any]] = {c: [None] * n for c, n in SLOTS.items()}
    conditions = req.conditions or {}

    def of(kind: str) -> Any:
        field = REQUEST_FIELD.get(kind)
        return getattr(req, field) if field else conditions.get(kind)

    for slot in slots:
        value = of(slot.kind)
        if slot.control == "levels":
            scales = (req.attr_scales or {}) if REQUEST_FIELD.get(slot.kind) == "attrs" else {}
            level = (value or {}).get(slot.part, DONT_CARE)
            values["levels"][slot.index] = (level, scales.get(slot.part, 0.0))
        elif slot.control == "prompt":
            prompt = value if isinstance(value, str) else "; ".join(value or [])
            values["prompt"][slot.index] = (prompt, req.negative_prompt or "")
        elif isinstance(value, str) and not value.startswith("array:"):
            values[slot.control][slot.index] = value if slot.control == "text" or Path(value).is_file() else None
    return values
