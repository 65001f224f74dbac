"""Sketch conditions: a line drawing (dark ink on light paper) -> an ink-density map at latent resolution.

Latent-diffusion "concat" conditioning (Rombach et al. 2022, sec. 3.3): the map is concatenated to z_t as
one extra input channel (``Condition.concat``); a zero map (blank paper) is the null sketch.

``load_sketch`` takes a square sketch. A non-square one is still used, centre-cropped to its largest
square (as the training sketches were cut), with a one-line ``warnings.warn`` when its aspect differs
from square by more than 2 %. A file that is missing, truncated, not an image, or larger than
MAX_SKETCH_PIXELS (a decompression bomb) is a one-line FacediffError.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facediff.data.imageio import resize_batch
from facediff.conditioning.kinds import ConditionKind, Grid, paste_into_box
from facediff.errors import FacediffError

MAX_SKETCH_PIXELS = 64 * 1024 * 1024  # 64 Mpx (8192 x 8192): anything larger is refused before decoding
SQUARE_TOLERANCE = 0.02  # aspect differences up to 2 % are cropped without a warning


def sketch_to_map(sketches: np.ndarray | torch.Tensor, latent_size: int) -> torch.Tensor:
    """uint8 (N, S, S) sketches (255 paper, 0 ink) -> ink density (N, 1, latent_size, latent_size) in [0, 1]."""
    s = torch.from_numpy(np.array(sketches, dtype=np.float32))
    ink = 1.0 - s[:, None] / 255.0
    ink = F.adaptive_avg_pool2d(ink, latent_size)
    return (ink * 2.0).clamp(0, 1)  # thin lines cover a small share of a latent cell: boost, then clip


def _shown(sketch: object) -> str:
    text = str(sketch)
    return text if text.isprintable() else repr(text)


def _read(sketch: str | Path) -> np.ndarray:
    """A sketch file as uint8 (H, W) grayscale; every unusable file is a one-line FacediffError."""
    from PIL import Image, UnidentifiedImageError

    name = _shown(sketch)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(sketch) as img:
                w, h = img.size
                if w * h > MAX_SKETCH_PIXELS:
                    raise FacediffError(f"--sketch {name} is {w}x{h} = {w * h} pixels, above the "
                                        f"{MAX_SKETCH_PIXELS} limit (a decompression bomb?); give a smaller sketch")
                img.seek(0)
                return np.asarray(img.convert("L"))
    except FacediffError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise FacediffError(f"--sketch {name}: too many pixels (a decompression bomb); give a smaller sketch") from None
    except FileNotFoundError:
        raise FacediffError(f"--sketch {name}: no such file") from None
    except UnidentifiedImageError:
        raise FacediffError(f"--sketch {name}: not an image (unrecognised format); give a PNG or JPEG") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError, MemoryError) as e:
        what = " ".join(str(e).split())[:120] or type(e).__name__
        raise FacediffError(f"--sketch {name}: cannot read it as an image ({what}); "
                            "give a complete PNG or JPEG") from None


def load_sketch(sketch: str | Path | np.ndarray, image_size: int, latent_size: int) -> torch.Tensor:
    """A sketch PNG path or array (dark lines on light paper) -> (1, 1, latent_size, latent_size) ink density,
    exactly as the training sketches are reduced. A non-square sketch is centre-cropped, with a warning."""
    from PIL import Image

    if isinstance(sketch, np.ndarray):
        if sketch.ndim not in (2, 3) or min(sketch.shape[:2]) < 1:
            raise FacediffError(f"sketch array of shape {sketch.shape}: expected (H, W) or (H, W, 3) uint8")
        arr = sketch if sketch.ndim == 2 else np.asarray(Image.fromarray(np.asarray(sketch, np.uint8)).convert("L"))
        name = "array"
    else:
        arr = _read(sketch)
        name = _shown(sketch)
    h, w = arr.shape[:2]
    if 1.0 - min(w, h) / max(w, h) > SQUARE_TOLERANCE + 1e-9:
        side = min(w, h)
        warnings.warn(f"--sketch {name} is {w}x{h}, not square; using its centre {side}x{side} square",
                      stacklevel=2)
    return sketch_to_map(resize_batch(arr[None], image_size), latent_size)


# ------------------------------------------------------------------------------------------------ the kind


class SketchKind(ConditionKind):
    """A line drawing -> its ink density on the spatial route, one channel (null: blank paper, zeros)."""

    name = "sketch"
    route = "spatial"
    user_help = "a sketch PNG: dark lines on light paper"
    null_label = "blank paper"
    fidelity_metric = "sketch"  # edge F1 / Chamfer of the faces' extracted sketches
    absent = "this model does not take a sketch; train an ldm with [latent] sketch = true"

    def own_drop_prob(self, cfg) -> float:
        return cfg.latent.sketch_drop_prob  # guidance over the sketch alone

    @property
    def width(self) -> int:
        return 1

    def parse(self, value, where: str = ""):
        if value is None or isinstance(value, (np.ndarray, torch.Tensor)):
            return value
        if isinstance(value, (str, Path)):
            return str(value)
        raise FacediffError(f"{where or '--sketch'} {value!r}: give a sketch PNG file")

    def _map(self, value, grid: Grid) -> torch.Tensor:
        """One value -> (1, 1, side, side): a file / uint8 array is reduced as in training; a map passes."""
        if isinstance(value, torch.Tensor):
            m = value.float().reshape(1, 1, *value.shape[-2:])
            if m.shape[-1] != grid.side or m.shape[-2] != grid.side:
                raise FacediffError(f"sketch map has shape {tuple(value.shape)}; this model takes "
                                    f"(n, 1, {grid.side}, {grid.side})")
            return m
        return load_sketch(value, grid.pixels, grid.side)

    def prepare(self, value, grid: Grid) -> torch.Tensor:
        return self._map(value, grid)

    def ui_control(self) -> dict:
        return {"control": "drawing", "help": self.user_help}

    def encode(self, values, grid: Grid) -> torch.Tensor:
        return torch.cat([torch.zeros(1, 1, grid.side, grid.side) if v is None else self._map(v, grid)
                          for v in values])

    def dataset_values(self, dataset, rows, **options) -> list[np.ndarray]:
        return list(dataset.sketches(rows))

    def place(self, value, box, grid: Grid, canvas: tuple[int, int]):
        """The sketch drawn into the region's box on a blank canvas map (latent grid of the canvas)."""
        return paste_into_box(lambda g: value if isinstance(value, torch.Tensor) else load_sketch(value, g.pixels, g.side),
                              box, grid, canvas, "sketch")

    def legacy_config(self) -> dict:
        return {"sketch": True}

    def label(self, value) -> str:
        return "array" if isinstance(value, (np.ndarray, torch.Tensor)) else str(value)
