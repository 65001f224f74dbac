"""Face-parsing mask conditions (mask-to-face, as Collaborative Diffusion and SD ControlNet users work): a parsing
map with the classes of ``data.parsing.PARSING_CLASSES`` (background, skin, hair, eyes, brows, nose, mouth,
glasses, beard) -> one channel per class on the spatial route, each channel the share of its latent cell the
class covers (area-pooled one-hot, the way a sketch becomes its ink density). The null map is all zeros (no
class anywhere), which training shows with classifier-free dropout.

A user's map is a PNG either of class ids (grey values 0-8 in facediff's class order) or drawn in facediff's
colours (``data.parsing.PALETTE``: what ``colorize`` writes and the UI's mask painter uses), or an array of
either. Composition draws a region's map into its box.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facediff.conditioning.kinds import ConditionKind, Grid, paste_into_box
from facediff.data.parsing import NUM_PARSING_CLASSES, PALETTE, PARSING_CLASSES, parsing_from_rgb, read_label_png
from facediff.errors import FacediffError

MAX_MASK_PIXELS = 64 * 1024 * 1024  # larger files are refused before decoding (a decompression bomb)


def read_mask(value: str | Path | np.ndarray, size: int) -> np.ndarray:
    """A parsing map (path or array; ids or palette colours) -> uint8 class ids (size, size), nearest resize."""
    from PIL import Image

    if isinstance(value, np.ndarray):
        ids = parsing_from_rgb(value) if value.ndim == 3 else np.asarray(value)
        if ids.ndim != 2 or (ids.size and (ids.min() < 0 or ids.max() >= NUM_PARSING_CLASSES)):
            raise FacediffError(f"mask array of shape {value.shape}: give (H, W) class ids 0-{NUM_PARSING_CLASSES - 1}"
                                " or (H, W, 3) palette colours")
        img = Image.fromarray(ids.astype(np.uint8), "L").resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(img, dtype=np.uint8)
    path = Path(value)
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_MASK_PIXELS:
                raise FacediffError(f"--mask {path}: {img.width}x{img.height} pixels is above the limit")
            colour = img.mode in ("RGB", "RGBA") and bool((np.asarray(img.convert("RGB")).std(-1) > 0).any())
            rgb = np.asarray(img.convert("RGBA")) if colour else None
    except FileNotFoundError:
        raise FacediffError(f"--mask {path}: no such file") from None
    except OSError as e:
        raise FacediffError(f"--mask {path}: not a readable image ({type(e).__name__}); give a PNG") from None
    if rgb is not None:  # drawn in the palette's colours
        return read_mask(parsing_from_rgb(rgb), size)
    return read_label_png(path, size, classes="facediff")


def mask_to_map(ids: np.ndarray, side: int) -> torch.Tensor:
    """uint8 class ids (S, S) -> (1, C, side, side): per class, the share of each cell it covers."""
    onehot = F.one_hot(torch.from_numpy(np.asarray(ids, dtype=np.int64)), NUM_PARSING_CLASSES)
    return F.adaptive_avg_pool2d(onehot.permute(2, 0, 1)[None].float(), side)


class MaskKind(ConditionKind):
    """A face-parsing map -> per-class coverage maps on the spatial route (null: all zeros)."""

    name = "mask"
    route = "spatial"
    user_help = "a face-parsing PNG: class ids 0-8 or facediff's mask colours (docs/extending.md)"
    null_label = "no map"
    fidelity_metric = "parsing"  # mIoU of the face parser's reading against the input map
    absent = "this model does not take a face-parsing mask; train one with [model] conditions = [\"mask\"]"

    @property
    def width(self) -> int:
        return NUM_PARSING_CLASSES

    def own_drop_prob(self, cfg) -> float:
        return cfg.diffusion.cond_drop_prob  # the mask alone too: guidance over the mask with other conditions

    def parse(self, value, where: str = ""):
        if value is None or isinstance(value, (np.ndarray, torch.Tensor)):
            return value
        if isinstance(value, (str, Path)):
            return str(value)
        raise FacediffError(f"{where or '--cond mask'} {value!r}: give a face-parsing PNG")

    def prepare(self, value, grid: Grid) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.float().reshape(1, NUM_PARSING_CLASSES, *value.shape[-2:])
        return mask_to_map(read_mask(value, grid.pixels), grid.side)

    def encode(self, values, grid: Grid) -> torch.Tensor:
        blank = torch.zeros(1, NUM_PARSING_CLASSES, grid.side, grid.side)
        return torch.cat([blank if v is None else self.prepare(v, grid) for v in values])

    def dataset_values(self, dataset, rows, **options) -> list[np.ndarray]:
        return list(dataset.parsing(rows))

    def place(self, value, box, grid: Grid, canvas: tuple[int, int]) -> torch.Tensor:
        """The region's map drawn into its box on an empty canvas map (latent grid of the canvas)."""
        return paste_into_box(lambda g: self.prepare(value, g), box, grid, canvas, "face-parsing mask")

    def ui_control(self) -> dict:
        palette = {name: "#%02x%02x%02x" % tuple(int(c) for c in rgb) for name, rgb in zip(PARSING_CLASSES, PALETTE)}
        return {"control": "paint", "palette": palette, "help": self.user_help}

    def label(self, value) -> str:
        return "array" if isinstance(value, (np.ndarray, torch.Tensor)) else str(value)
