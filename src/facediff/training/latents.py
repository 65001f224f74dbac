"""Latent-diffusion training data: the frozen autoencoder's latents, encoded once and cached.

Rombach et al. 2022: the diffusion model learns p(z) with z = E(x) * s, where the scale s = 1 / std(z)
over the training latents (so z has about unit variance, like the pixel-space x in [-1, 1]). Each image
is encoded twice (as is and mirrored) so flip augmentation needs no encoder at training time. The
sketch condition is the data set's line drawing reduced to the latent grid as ink density in [0, 1]
(0 = blank paper = the null sketch).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from facediff.config import RunConfig
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError
from facediff.training.data import TrainingData
from facediff.training.progress import ProgressBar


def sketch_to_latent_grid(sketches: np.ndarray | torch.Tensor, latent_size: int) -> torch.Tensor:
    """uint8 (N, S, S) sketches (255 paper, 0 ink) -> ink density (N, latent_size * latent_size) in [0, 1]."""
    s = torch.from_numpy(np.array(sketches, dtype=np.float32))
    ink = 1.0 - s[:, None] / 255.0
    ink = F.adaptive_avg_pool2d(ink, latent_size)
    ink = (ink * 2.0).clamp(0, 1)  # thin lines cover a small share of a latent cell: boost, then clip
    return ink.flatten(1)


class LatentData(TrainingData):
    """TrainingData whose 'images' are cached latents z * s (plus mirrored latents and latent sketches)."""

    def __init__(self, path: Path, cfg: RunConfig, ae: torch.nn.Module, cache_file: Path, *, show_progress: bool):
        super().__init__(path, cfg.data, cfg.model, cfg.train.seed)
        self.use_sketch = cfg.latent.sketch
        if not cache_file.is_file():
            self._encode(ae, cache_file, show_progress)
        cache = load_file(str(cache_file))
        self.z, self.z_flip = cache["z"], cache["z_flip"]
        if len(self.z) != self.n:
            raise FacediffError(f"{cache_file} holds {len(self.z)} latents for {self.n} images; delete it")
        self.latent_size = int(self.z.shape[-1])
        self.scale = cfg.latent.scale_factor or float(1.0 / cache["z"].float().std())
        self.sketch_grid = None
        if self.use_sketch:
            ds = PreparedDataset(path, split=cfg.data.split or None)
            if not ds.has_sketches:
                raise FacediffError(f"{path} has no sketches.npy: prepare it with --sketch xdog|canny, "
                                    "or set [latent] sketch = false")
            self.sketch_grid = sketch_to_latent_grid(ds.sketches(), self.latent_size)
            self.sketch_grid_flip = sketch_to_latent_grid(ds.sketches()[:, :, ::-1].copy(), self.latent_size)
        self.images = None  # the pixels are no longer needed

    @torch.no_grad()
    def _encode(self, ae: torch.nn.Module, cache_file: Path, show_progress: bool) -> None:
        from facediff.models.autoencoder import encode

        zs, zfs = [], []
        bar = ProgressBar(self.n, "encode latents", enabled=show_progress)
        for i in range(0, self.n, 64):
            x = self.images[i:i + 64].permute(0, 3, 1, 2).float() / 127.5 - 1.0
            zs.append(encode(ae, x).float())
            zfs.append(encode(ae, x.flip(-1)).float())
            bar.update(min(self.n, i + 64))
        bar.close()
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        save_file({"z": torch.cat(zs).contiguous(), "z_flip": torch.cat(zfs).contiguous()}, str(tmp))
        os.replace(tmp, cache_file)

    def batch(self, idx: np.ndarray, gen: torch.Generator, cond_drop: float, attr_drop: float,
              sketch_drop: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z_0 = s * E(x) (B, C, h, w) and c = [attribute one-hots | sketch ink density], with CFG dropout."""
        ti = torch.from_numpy(idx)
        flip = (torch.rand(len(idx), generator=gen) < 0.5) if self.hflip else torch.zeros(len(idx), dtype=torch.bool)
        z = torch.where(flip[:, None, None, None], self.z_flip[ti], self.z[ti]) * self.scale
        cond, drop_all = self.attribute_condition(idx, gen, cond_drop, attr_drop)
        if self.use_sketch:
            sk = torch.where(flip[:, None], self.sketch_grid_flip[ti], self.sketch_grid[ti])
            drop = drop_all | (torch.rand(len(idx), generator=gen) < sketch_drop)  # each condition dropped alone
            sk = torch.where(drop[:, None], torch.zeros_like(sk), sk)
            cond = sk if cond is None else torch.cat([cond, sk], 1)
        return z, cond
