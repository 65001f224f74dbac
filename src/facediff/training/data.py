"""Training data: the prepared data set held as uint8, batches chosen statelessly from the step.

Which images a micro-batch holds is a pure function of (seed, step, micro-batch, process): consecutive
slices of per-epoch permutations, in the order step -> micro-batch -> process. So a resumed run sees exactly
the batches an uninterrupted run sees, no data-loader state is saved, and (batch b, accumulation k) covers
the same images as (batch k*b, no accumulation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facediff.config import DataConfig
from facediff.data.imageio import resize_batch
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError



def resolve_dataset(cfg: DataConfig, cache_dir: Path) -> Path:
    """The prepared data set to train on: ``cfg.path``, or SynthFaces rendered once into ``cache_dir``."""
    if cfg.path:
        path = Path(cfg.path)
        if not (path / "manifest.json").is_file():
            raise FacediffError(f"[data] path = {cfg.path!r}: not a prepared data set (no manifest.json); make one "
                                "with `facediff data prepare` or `facediff data synth`")
        return path
    from facediff.data.synth import GENERATOR
    from facediff.data.synth_scene import write_synth_layout

    scenes = "-scenes" if cfg.synth_layout == "scenes" else ""
    out = cache_dir / f"synth-{cfg.synth_style}{scenes}-s{cfg.synth_seed}-n{cfg.synth_n}-{cfg.size}px"
    if not (out / "manifest.json").is_file() or _generator(out) != GENERATOR:  # a cache of an older renderer
        write_synth_layout(out, n=cfg.synth_n, size=cfg.size, style=cfg.synth_style, seed=cfg.synth_seed,
                           layout=cfg.synth_layout, overwrite=True)
    return out


def _generator(folder: Path) -> str | None:
    import json

    try:
        return json.loads((folder / "manifest.json").read_text()).get("generator")
    except (OSError, ValueError):
        return None


class EpochOrder:
    """Per-epoch permutations of ``n`` items, seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {k: v for k, v in self._perms.items() if k >= epoch - 1}
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def positions(self, start: int, count: int) -> np.ndarray:
        """Items at global positions start .. start + count - 1 of the endless epoch sequence."""
        pos = np.arange(start, start + count)
        return np.array([self._perm(int(p // self.n))[p % self.n] for p in pos])

    def step_indices(self, step: int, accum: int, world: int, batch: int) -> np.ndarray:
        """Every item of one optimizer step, in the order (micro-batch, process, row)."""
        total = accum * world * batch
        return self.positions(step * total, total)


def micro_slice(micro: int, rank: int, world: int, batch: int) -> slice:
    """The rows of one process's micro-batch inside the step's items (``EpochOrder.step_indices``)."""
    start = (micro * world + rank) * batch
    return slice(start, start + batch)


class TrainingData:
    """In-memory uint8 images (+ attribute levels, + sketches) of a prepared data set at the training size."""

    def __init__(self, path: Path, data_cfg: DataConfig, attributes: tuple[str, ...] = (), *, seed: int = 0,
                 need_labels: bool = False, sketches: bool = False, caption_field: str | None = None):
        ds = PreparedDataset(path, split=data_cfg.split or None)
        if len(ds) == 0:
            raise FacediffError(f"{path}: the data set is empty (split {data_cfg.split!r})")
        self.images = torch.from_numpy(resize_batch(ds.images(), data_cfg.size))  # (N, S, S, 3) uint8
        self.levels = torch.from_numpy(ds.attribute_levels(attributes)) if attributes else None  # (N, A), -1 = ?
        if need_labels and (self.levels is None or bool((self.levels < 0).all())):
            raise FacediffError(f"{path} has no attribute labels; train with --set model.conditioning=none")
        self.sketches = None
        if sketches:
            if not ds.has_sketches:
                raise FacediffError(f"{path} has no sketches.npy: prepare it with --sketch xdog|canny, "
                                    "or set [latent] sketch = false")
            self.sketches = resize_batch(ds.sketches(), data_cfg.size)  # (N, S, S) uint8
        # captions of the labels.jsonl field ``caption_field`` ("" where an image has none); None: not needed
        self.captions = None if caption_field is None else [str(lab.get(caption_field) or "") for lab in ds.labels]
        self.n, self.hflip, self.size = len(ds), data_cfg.hflip, data_cfg.size
        self.dataset = ds  # the prepared set (condition kinds read their values from it)
        self.order = EpochOrder(self.n, seed)

    def pixels(self, idx: np.ndarray | torch.Tensor) -> torch.Tensor:
        """x in [-1, 1], float (B, 3, S, S), contiguous (NCHW).

        The images are held as (N, S, S, 3) uint8; a plain permute would hand the network a channels-last
        batch, and oneDNN's fp32 convolutions on a 1-thread AVX2 CPU trained the default 4.1M U-Net at 13.4
        img/s that way against 14.5 img/s in NCHW (batch 32, 32 px; /tmp/prof/step.py, 2026-12-02)."""
        idx = torch.as_tensor(idx)
        return self.images[idx].permute(0, 3, 1, 2).contiguous().float() / 127.5 - 1.0
