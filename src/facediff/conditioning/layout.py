"""Where the faces are: the "layout" condition, what lets a composition window draw the right thing (issue 26,
section 3).

A MultiDiffusion window over a region border sees half of that region's face, one over the background sees
none. A model that only knows "a face with these attributes" draws a whole face into every window (ghost faces);
given this map, it draws the part of the face the map shows and plain background where the map is empty. The
value is a list of faces ``(cx, cy, scale)`` in image half-units (-1..1, the SynthFaces face frame: ``faces`` of
``--layout scenes`` labels); the map is one channel on the spatial route: the coverage of each face's head
ellipse per latent cell. Values a user gives: ``portrait`` (one centred face, what a plain sample gets),
``none`` (no face), ``row`` (a panorama: one centred face per native-size tile of the canvas),
``cx,cy,scale;cx,cy,scale`` or a list of triples.

It is a *context* condition: never dropped in training and kept in the null branch of guidance, so
classifier-free guidance steers the attributes within a layout instead of towards "some face". In composition a
region's face fills its box as a portrait fills the image (``region_default``); the background has none.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from facediff.conditioning.kinds import ConditionKind, Grid, paste_into_box
from facediff.errors import FacediffError

# The head (skin, hair and face parts) of a SynthFaces face at pose (cx, cy, scale) spans x in [-0.46, 0.46] and
# y in [-0.60, 0.55] face units around (cx, cy) (medians over 150 faces): an ellipse of these radii and centre.
HEAD_RX, HEAD_RY, HEAD_DY = 0.47, 0.60, -0.03
PORTRAIT = ((0.0, -0.01, 1.14),)  # the mean pose of a SynthFaces portrait
SUPERSAMPLE = 4  # sub-cells per latent cell and side: coverage, not a hard edge


def faces_of(value: Any, where: str = "--cond layout") -> tuple[tuple[float, float, float], ...]:
    """A layout value -> its faces (cx, cy, scale); one-line error for anything else. ``row`` is a portrait on
    one tile (``LayoutKind.prepare_canvas`` repeats it along a canvas)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("portrait", "row")):
        return PORTRAIT
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", ""):
            return ()
        try:
            value = [tuple(float(v) for v in face.split(",")) for face in text.split(";") if face.strip()]
        except ValueError:
            raise FacediffError(f"{where} {value!r}: give portrait, none, or faces as cx,cy,scale;cx,cy,scale") from None
    try:
        faces = tuple((float(cx), float(cy), float(s)) for cx, cy, s in value)
    except (TypeError, ValueError):
        raise FacediffError(f"{where} {value!r}: give portrait, none, or faces as cx,cy,scale;cx,cy,scale") from None
    for cx, cy, s in faces:
        if not (np.isfinite([cx, cy, s]).all() and 0 < s <= 4 and abs(cx) <= 3 and abs(cy) <= 3):
            raise FacediffError(f"{where}: face ({cx}, {cy}, {s}) is off the canvas or not a size in (0, 4]")
    return faces


def layout_map(faces: Sequence[tuple[float, float, float]], side: int) -> torch.Tensor:
    """(1, 1, side, side): per cell, the share covered by the union of the faces' head ellipses."""
    k = side * SUPERSAMPLE
    c = (np.arange(k) + 0.5) / k * 2 - 1  # sub-cell centres in half-units
    x, y = np.meshgrid(c, c)
    inside = np.zeros((k, k), bool)
    for cx, cy, s in faces:
        inside |= ((x - cx) / (HEAD_RX * s)) ** 2 + ((y - cy - HEAD_DY * s) / (HEAD_RY * s)) ** 2 <= 1.0
    cover = inside.reshape(side, SUPERSAMPLE, side, SUPERSAMPLE).mean((1, 3))
    return torch.from_numpy(cover.astype(np.float32))[None, None]


class LayoutKind(ConditionKind):
    """Faces' positions and sizes -> a head-coverage map on the spatial route (a context: never dropped)."""

    name = "layout"
    route = "spatial"
    context = True
    user_help = "where faces are: portrait (default), none, or cx,cy,scale;... in image half-units (-1..1)"
    null_label = "one centred face"
    absent = "this model does not take a layout; train one with [model] conditions = [\"layout\"]"

    @property
    def width(self) -> int:
        return 1

    def own_drop_prob(self, cfg) -> float:
        return 0.0  # a context: the map is always there (and kept in guidance's null branch)

    def parse(self, value, where: str = ""):
        if isinstance(value, (np.ndarray, torch.Tensor)):
            return value
        if isinstance(value, str) and value.strip().lower() == "row":
            return "row"
        return faces_of(value, where or "--cond layout")

    def prepare(self, value, grid: Grid) -> torch.Tensor:
        if isinstance(value, (np.ndarray, torch.Tensor)):
            m = torch.as_tensor(np.asarray(value, dtype=np.float32))
            return torch.nn.functional.interpolate(m.reshape(1, 1, *m.shape[-2:]), size=grid.side, mode="area")
        return layout_map(faces_of(value), grid.side)

    def encode(self, values, grid: Grid) -> torch.Tensor:
        portrait = layout_map(PORTRAIT, grid.side)
        return torch.cat([portrait if v is None else (v if isinstance(v, torch.Tensor) else self.prepare(v, grid))
                          for v in values])

    def dataset_values(self, dataset, rows, **options) -> list[Any]:
        labels = dataset.labels
        return [tuple(tuple(f) for f in labels[r]["faces"]) if "faces" in labels[r] else PORTRAIT for r in rows]

    def region_default(self, box) -> Any:
        return PORTRAIT if box is not None else ()  # a region's face fills its box; the background has none

    def panorama_default(self) -> Any:
        return "row"  # one face per native-size tile

    def place(self, value, box, grid: Grid, canvas: tuple[int, int]) -> torch.Tensor:
        if box is None:  # the background: its own faces over the whole canvas (none by default)
            return self.prepare_canvas(value, grid, canvas)
        return paste_into_box(lambda g: self.prepare(value, g), box, grid, canvas, "layout")

    def prepare_canvas(self, value, grid: Grid, canvas: tuple[int, int]) -> torch.Tensor:
        """A value over a whole (height, width) pixel canvas: ``row`` repeats the portrait on every native-size
        tile along the long side; faces are in half-units of the canvas's long side."""
        f = grid.pixels // grid.side
        h, w = canvas[0] // f, canvas[1] // f
        if isinstance(value, str) and value == "row":
            out = torch.zeros(1, 1, h, w)
            tile = layout_map(PORTRAIT, grid.side)
            for y in range(0, h - grid.side + 1, grid.side):
                for x in range(0, w - grid.side + 1, grid.side):
                    out[..., y:y + grid.side, x:x + grid.side] = tile
            return out
        faces = faces_of(value)
        return layout_map(faces, max(h, w))[..., :h, :w] if faces else torch.zeros(1, 1, h, w)

    def ui_control(self) -> dict:
        return {"control": "text", "help": self.user_help}  # a line: portrait, none, or the faces

    def label(self, value) -> str:
        if isinstance(value, str) and value == "row":
            return "row"
        if isinstance(value, (np.ndarray, torch.Tensor)):
            return "map"
        faces = faces_of(value)
        return "portrait" if faces == PORTRAIT else ("none" if not faces else
                                                    ";".join(",".join(f"{v:g}" for v in face) for face in faces))
