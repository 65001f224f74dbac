"""Sketch conditions: a line drawing (dark ink on light paper) -> an ink-density map at latent resolution.

Latent-diffusion "concat" conditioning (Rombach et al. 2022, sec. 3.3): the map is concatenated to z_t as
one extra input channel (``Condition.concat``); a zero map (blank paper) is the null sketch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facediff.data.imageio import resize_batch
from facediff.errors import FacediffError



def sketch_to_map(sketches: np.ndarray | torch.Tensor, latent_size: int) -> torch.Tensor:
    """uint8 (N, S, S) sketches (255 paper, 0 ink) -> ink density (N, 1, latent_size, latent_size) in [0, 1]."""
    s = torch.from_numpy(np.array(sketches, dtype=np.float32))
    ink = 1.0 - s[:, None] / 255.0
    ink = F.adaptive_avg_pool2d(ink, latent_size)
    return (ink * 2.0).clamp(0, 1)  # thin lines cover a small share of a latent cell: boost, then clip


def load_sketch(sketch: str | Path | np.ndarray, image_size: int, latent_size: int) -> torch.Tensor:
    """A sketch PNG path or array (dark lines on light paper) -> (1, 1, latent_size, latent_size) ink density,
    exactly as the training sketches are reduced."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(sketch, np.ndarray):
        arr = sketch if sketch.ndim == 2 else np.asarray(Image.fromarray(sketch).convert("L"))
    else:
        try:
            arr = np.asarray(Image.open(sketch).convert("L"))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
            raise FacediffError(f"--sketch {sketch}: cannot read it as an image ({type(e).__name__})") from None
    return sketch_to_map(resize_batch(arr[None], image_size), latent_size)
