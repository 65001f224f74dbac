"""Train the face parser (the "mask oracle", ``facediff.models.parser``) on a prepared data set with masks.

Per-pixel cross-entropy over ``PARSING_CLASSES`` (targets from ``PreparedDataset.parsing``: SynthFaces parts are
mapped, prepared label sets used as stored), Adam with a short linear warmup and cosine decay to 0 at ``steps``
(the loop's [train] schedule; a time budget that stops earlier leaves it unfinished), the best-validation weights
kept (as the attribute estimator, ``training/estimator.py``). Augmentation, all label-safe (our classes have no
left / right): horizontal flip, a translation of up to size/16 px (edge-replicated, image and mask alike) and,
with probability ``lowres_p``, the image box-filtered to half its side and enlarged back as the parser enlarges
small inputs, so that it also reads 32 px faces.

mIoU is measured on the data set's ``val`` split (or every 10th training image) and, for SynthFaces, on faces
rendered with OTHER seeds at each of ``heldout_sizes``: real images against their own masks, the ceiling a
mask-conditioned model is compared to.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from facediff.config import RunConfig
from facediff.data.imageio import resize_batch
from facediff.data.parsing import PARSING_CLASSES
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError
from facediff.metrics.parsing import per_class_iou
from facediff.models.parser import FaceParser, ParserConfig, save_parser, upsample
from facediff.progress import Progress
from facediff.training.common import step_generator
from facediff.training.data import EpochOrder
from facediff.training.estimator import HELDOUT_SEED_OFFSET
from facediff.training.loop import Task, train_loop

EVAL_MAX = 500  # validation images scored at each evaluation (the first ones of the split)


class _Segmented:
    """uint8 images (N, S, S, 3) and parsing ids (N, S, S) at the training side, as tensors."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, size: int):
        self.x = torch.from_numpy(np.ascontiguousarray(resize_batch(images, size)))
        y = torch.from_numpy(np.ascontiguousarray(masks))
        if y.shape[-2:] != (size, size):
            y = F.interpolate(y[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].to(torch.uint8)
        self.y = y

    def __len__(self) -> int:
        return len(self.x)

    def pixels(self, idx: torch.Tensor | slice) -> torch.Tensor:
        return self.x[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, shift: int,
             lowres_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: translation by up to ``shift`` px, horizontal flip (image and mask), 2x down-up resample."""
    b, _, h, w = x.shape
    if shift > 0:
        px = F.pad(x, (shift,) * 4, mode="replicate")
        py = F.pad(y[:, None].float(), (shift,) * 4, mode="replicate")[:, 0]
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        x = torch.stack([px[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
        y = torch.stack([py[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)]).long()
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None], y.flip(-1), y)
    low = torch.rand(b, generator=gen) < lowres_p
    if bool(low.any()):  # a face rendered at half the side (box-filtered), read as the parser reads it
        x = x.clone()
        x[low] = upsample(F.interpolate(x[low], size=(h // 2, w // 2), mode="area"), h)
    return x, y.long()


@torch.no_grad()
def evaluate_parser(model: FaceParser, images: np.ndarray, masks: np.ndarray, batch_size: int = 256
                    ) -> dict[str, Any]:
    """mIoU (over classes present), IoU per class (None = absent) and pixel accuracy of ``model`` on uint8
    images (N, H, W, 3) against parsing ids (N, H, W), at the images' own side."""
    classes = model.config.classes
    pred = model.parse(images, batch_size=batch_size)
    iou = per_class_iou(pred, masks, len(classes))
    present = ~np.isnan(iou)
    return {"n": int(len(images)), "size": int(images.shape[1]),
            "miou": float(iou[present].mean()) if present.any() else None,
            "per_class": {c: (None if np.isnan(v) else round(float(v), 4)) for c, v in zip(classes, iou)},
            "pixel_accuracy": float((pred == masks).mean())}


def render_heldout(manifest: dict[str, Any], n: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """SynthFaces of other seeds than the training set's (same style) at ``size``: (images, parsing ids);
    None when the data set is not SynthFaces."""
    if "synth" not in str(manifest.get("source", "")).lower():
        return None
    from facediff.data.parsing import to_parsing
    from facediff.data.synth import render_batch

    faces = render_batch(int(manifest.get("seed", 0)) + HELDOUT_SEED_OFFSET, 0, n, size,
                         str(manifest.get("style", "human")))
    return np.stack([f.image for f in faces]), np.stack([to_parsing(f.mask) for f in faces])


class ParserTask(Task):
    """Per-pixel cross-entropy; best-validation weights kept (and checkpointed as ``best``)."""

    def __init__(self, cfg: RunConfig, out: Path, base: ParserConfig, eval_every: int, heldout: str | Path | None,
                 heldout_n: int, heldout_sizes: tuple[int, ...], lowres_p: float):
        self.cfg, self.out, self.base = cfg, Path(out), base
        self.eval_every, self.heldout, self.heldout_n = eval_every, heldout, heldout_n
        self.heldout_sizes, self.lowres_p = heldout_sizes, lowres_p
        self.name = "train parser"
        self.curve: list[dict[str, Any]] = []
        self.best_miou = -1.0

    def build(self, acc: Accelerator, data_path: Path) -> None:
        size = self.cfg.data.size
        full = PreparedDataset(data_path)
        if full.mask_classes is None:
            raise FacediffError(f"{data_path}: no masks.npy; render SynthFaces or prepare the set with --masks")
        self.full, self.data_dir = full, data_path
        images, masks = full.images(), full.parsing()
        split = np.array([lab.get("split", "train") for lab in full.all_labels])
        val = split == "val" if (split == "val").any() else np.arange(len(split)) % 10 == 0
        if int((~val).sum()) < 2:
            raise FacediffError(f"{data_path}: too few training images ({int((~val).sum())}) for the parser")
        self.train = _Segmented(images[~val], masks[~val], size)
        vi = np.flatnonzero(val)[:EVAL_MAX]
        held = _Segmented(images[vi], masks[vi], size)
        self.val_images, self.val_masks = held.x.numpy(), held.y.numpy()
        self.parser_cfg = dataclasses.replace(self.base, size=size)
        self.order = EpochOrder(len(self.train), self.cfg.train.seed)
        torch.manual_seed(self.cfg.train.seed)
        self.model = FaceParser(self.parser_cfg)
        self.best = FaceParser(self.parser_cfg).requires_grad_(False)
        self.best.load_state_dict(self.model.state_dict())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cfg.train.lr)
        self.device = acc.device
        self.shift = max(1, size // 16)

    def extra_modules(self):
        return {"best": (self.best, None)}

    def prepare(self, acc: Accelerator) -> None:
        self.raw = acc.unwrap_model(self.model)

    def losses(self, step: int, micro: int, rank: int, world: int):
        tc = self.cfg.train
        idx = torch.from_numpy(self.order.positions(((step * tc.grad_accum + micro) * world + rank) * tc.batch_size,
                                                    tc.batch_size))
        gen = step_generator(tc.seed, step, micro, rank)
        x, y = _augment(self.train.pixels(idx), self.train.y[idx], gen, self.shift, self.lowres_p)
        loss = F.cross_entropy(self.model(x.to(self.device)).float(), y.to(self.device))
        return [loss], {}, len(idx)

    def after_step(self, step: int, acc: Accelerator) -> dict[str, Any]:
        """Every process evaluates (same weights, same data), so the best weights agree everywhere."""
        if not (step % self.eval_every == 0 or step == self.cfg.train.max_steps):
            return {}
        return self._evaluate(step)

    def _evaluate(self, step: int) -> dict[str, Any]:
        ev = evaluate_parser(self.raw, self.val_images, self.val_masks)
        self.curve.append({"step": step, "lr": self.optimizer.param_groups[0]["lr"], "val_miou": ev["miou"],
                           "val_per_class": ev["per_class"]})
        if ev["miou"] > self.best_miou:
            self.best_miou = ev["miou"]
            self.best.load_state_dict(self.raw.state_dict())
        return {"val_miou": ev["miou"]}

    def state(self) -> dict[str, Any]:
        return {"curve": self.curve, "best_miou": self.best_miou}

    def load_state(self, state: dict[str, Any]) -> None:
        self.curve, self.best_miou = list(state.get("curve", [])), float(state.get("best_miou", -1.0))

    def _heldout(self, model: FaceParser) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.heldout == "auto":
            for s in self.heldout_sizes:
                r = render_heldout(self.full.manifest, self.heldout_n, s)
                if r is None:
                    return {}
                out[str(s)] = evaluate_parser(model, *r)
            out["source"] = f"SynthFaces seed + {HELDOUT_SEED_OFFSET}, {self.heldout_n} images per size"
        elif self.heldout is not None:
            hd = PreparedDataset(self.heldout)
            out[str(hd.size)] = evaluate_parser(model, hd.images(), hd.parsing())
            out["source"] = str(self.heldout)
        return out

    def finish(self, step: int, ema_model: nn.Module | None) -> dict[str, Any]:
        if not self.curve or self.curve[-1]["step"] != step:
            self._evaluate(step)
        model = self.best.eval()
        metrics: dict[str, Any] = {"steps": step, "train_images": len(self.train),
                                   "batch_size": self.cfg.train.batch_size, "lr": self.cfg.train.lr,
                                   "size": self.cfg.data.size, "seed": self.cfg.train.seed, "lowres_p": self.lowres_p,
                                   "data": str(self.data_dir), "classes": list(model.config.classes),
                                   "val": evaluate_parser(model, self.val_images, self.val_masks),
                                   "curve": self.curve}
        held = self._heldout(model)
        if held:
            metrics["heldout"] = held
        save_parser(model.cpu(), self.out / "parser")
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        with open(self.out / "metrics.jsonl", "w") as log:  # the evaluation curve, one row per evaluation
            log.writelines(json.dumps(r) + "\n" for r in self.curve)
        return {"metrics": metrics}


def train_parser(data_dir: str | Path, out_dir: str | Path, *, steps: int = 4000, batch_size: int = 16,
                 lr: float = 2e-3, size: int = 64, seed: int = 0, progress: Progress | None = None,
                 config: ParserConfig | None = None, eval_every: int = 250, heldout: str | Path | None = "auto",
                 heldout_n: int = 500, heldout_sizes: tuple[int, ...] = (64, 32), lowres_p: float = 0.4,
                 time_budget_s: float | None = None, resume: bool = False,
                 mixed_precision: str = "auto") -> dict[str, Any]:
    """Train a face parser on ``data_dir`` (a prepared data set with masks.npy) in the one training loop.

    Writes the run (``config.json``, ``state/``, ``logs/``), ``out_dir/parser/`` (config.json +
    model.safetensors, the best-validation weights), ``out_dir/metrics.jsonl`` (one row per evaluation) and
    ``out_dir/metrics.json``; returns the metrics. ``config`` sets the architecture (its ``size`` is ``size``).
    ``heldout``: "auto" renders ``heldout_n`` SynthFaces with other seeds at each of ``heldout_sizes`` when the
    data set is SynthFaces; a path names a prepared data set with masks; None skips. ``time_budget_s`` stops
    training early (then evaluates). ``mixed_precision``: as [train]'s.
    """
    from facediff.config import ConfigError, DataConfig, TrainConfig

    if eval_every < 1:
        raise FacediffError(f"train parser: eval_every = {eval_every} must be at least 1")
    if not 0.0 <= lowres_p <= 1.0:
        raise FacediffError(f"train parser: lowres_p = {lowres_p} must lie in 0..1")
    if not (Path(data_dir) / "manifest.json").is_file():
        raise FacediffError(f"--data {data_dir}: not a prepared data set (no manifest.json)")
    base = config or ParserConfig()
    if tuple(base.classes) != PARSING_CLASSES:
        raise FacediffError(f"train parser: classes must be {', '.join(PARSING_CLASSES)} (the training targets)")
    try:
        cfg = RunConfig(kind="parser", data=DataConfig(path=str(data_dir), size=size, split=""),
                        train=TrainConfig(batch_size=batch_size, max_steps=steps, lr=lr,
                                          warmup_steps=min(100, steps // 10), lr_schedule="cosine",
                                          grad_clip=0.0, checkpoint_every=eval_every,  # a kill loses <= 1 eval
                                          log_every=max(1, min(50, eval_every)),
                                          time_budget_minutes=(time_budget_s or 0.0) / 60, seed=seed,
                                          mixed_precision=mixed_precision))
    except ConfigError as e:
        raise FacediffError(f"train parser: {e}") from None
    task = ParserTask(cfg, Path(out_dir), base, eval_every, heldout, heldout_n, tuple(heldout_sizes), lowres_p)
    summary = train_loop(task, cfg, out_dir, resume=resume, progress=progress)
    return summary.get("metrics", summary)  # off the main process: the loop summary only
