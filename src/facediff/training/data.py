"""Training batches: the prepared data set held as uint8, batches chosen statelessly from the step.

Every random choice of a training step (which images, flips, condition dropout) is a pure function of
(seed, step, micro-batch, process), so a resumed run sees exactly the batches an uninterrupted run sees
and no data-loader state has to be saved.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facediff.config import DataConfig, ModelConfig, cond_dim
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError


def resolve_dataset(cfg: DataConfig, cache_dir: Path, progress=None) -> Path:
    """The prepared data set to train on: ``cfg.path``, or SynthFaces rendered once into ``cache_dir``."""
    if cfg.path:
        return Path(cfg.path)
    from facediff.data.synth import write_synth

    out = cache_dir / f"synth-{cfg.synth_style}-s{cfg.synth_seed}-n{cfg.synth_n}-{cfg.size}px"
    if not (out / "manifest.json").is_file():
        write_synth(out, n=cfg.synth_n, size=cfg.size, style=cfg.synth_style, seed=cfg.synth_seed,
                    overwrite=True, progress=progress)
    return out


def _resize_all(images: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, im in enumerate(images):
        out[i] = np.asarray(Image.fromarray(np.asarray(im)).resize((size, size), Image.LANCZOS))
    return out


class TrainingData:
    """In-memory uint8 images + attribute levels, with deterministic per-step batches."""

    def __init__(self, path: Path, data_cfg: DataConfig, model_cfg: ModelConfig, seed: int):
        ds = PreparedDataset(path, split=data_cfg.split or None)
        images = ds.images()
        if ds.size != data_cfg.size:
            images = _resize_all(images, data_cfg.size)
        self.images = torch.from_numpy(images)  # (N, S, S, 3) uint8
        self.levels = torch.from_numpy(ds.attribute_levels(model_cfg.attributes))  # (N, A), -1 = unknown
        self.n, self.seed, self.hflip = len(ds), seed, data_cfg.hflip
        self.model_cfg = model_cfg
        if self.n == 0:
            raise FacediffError(f"{path}: the data set is empty")
        if model_cfg.conditioning == "attributes" and bool((self.levels < 0).all()):
            raise FacediffError(f"{path} has no attribute labels; train with --set model.conditioning=none")
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def indices(self, step: int, micro: int, accum: int, rank: int, world: int, batch: int) -> np.ndarray:
        """Image indices of one micro-batch: consecutive slices of per-epoch permutations."""
        start = ((step * accum + micro) * world + rank) * batch
        pos = np.arange(start, start + batch)
        return np.array([self._perm(int(p // self.n))[p % self.n] for p in pos])

    def batch(self, idx: np.ndarray, gen: torch.Generator, cond_drop: float, attr_drop: float
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x0 in [-1, 1] (B, 3, S, S) and the condition vector (B, A*L) with CFG dropout applied."""
        x = self.images[torch.from_numpy(idx)].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if self.hflip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        cond, _ = self.attribute_condition(idx, gen, cond_drop, attr_drop)
        return x, cond

    def attribute_condition(self, idx: np.ndarray, gen: torch.Generator, cond_drop: float, attr_drop: float
                            ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, A*L) concatenated one-hots with classifier-free-guidance dropout, and the drop-all mask (B,)."""
        drop_all = torch.rand(len(idx), generator=gen) < cond_drop  # classifier-free guidance: p_uncond
        if self.model_cfg.conditioning == "none":
            return None, drop_all
        levels = self.levels[torch.from_numpy(idx)].clone()  # (B, A)
        drop_one = torch.rand(levels.shape, generator=gen) < attr_drop  # per-attribute "don't care"
        levels[drop_all[:, None] | drop_one] = -1
        onehot = torch.zeros(len(idx), levels.shape[1], self.model_cfg.num_levels)
        known = levels >= 0
        onehot[known, levels[known]] = 1.0  # concatenated one-hots; unknown/dropped = zero block
        return onehot.reshape(len(idx), cond_dim(self.model_cfg)), drop_all
