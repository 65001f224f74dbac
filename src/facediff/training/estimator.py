"""Train the attribute estimator (seed 002, Sec. 3.2) on a prepared data set.

Recipe as seed 002: cross-entropy averaged over the heads, Adam, ReduceLROnPlateau on validation accuracy;
here the trunk is trained from scratch (no ImageNet weights are available) with light augmentation: small
random translations and horizontal flips (label-safe: no attribute level depends on left/right).

Accuracy is measured on the data set's ``val`` split (or a held-back 10 % of train when it has none) and,
for SynthFaces, on an extra held-out set rendered with OTHER seeds: the oracle's ground truth is exact, so
that number says how far FD_oracle / attribute accuracy can be trusted.
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
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError
from facediff.models.estimator import AttributeEstimator, EstimatorConfig, save_estimator
from facediff.progress import Progress
from facediff.training.common import step_generator
from facediff.training.data import EpochOrder
from facediff.training.loop import Task, train_loop
HELDOUT_SEED_OFFSET = 1_000_003  # held-out SynthFaces use seed + this (other seeds than any training set)


class _Labelled:
    """Images as float (N, 3, S, S) in [-1, 1] plus integer targets per head (-1 = unknown)."""

    def __init__(self, images: np.ndarray, labels: list[dict[str, Any]], size: int, attributes: tuple[str, ...],
                 styles: tuple[str, ...], hair: tuple[str, ...]):
        images = resize_batch(images, size)
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        self.x = x.contiguous()
        targets: dict[str, list[int]] = {a: [] for a in attributes}
        if styles:
            targets["style"] = []
        if hair:
            targets["hair_colour"] = []
        for lab in labels:
            attrs = lab.get("attributes") or {}
            for a in attributes:
                v = attrs.get(a)
                targets[a].append(int(v) if v is not None else -1)
            if styles:
                targets["style"].append(styles.index(lab["style"]) if lab.get("style") in styles else -1)
            if hair:
                hc = lab.get("hair_colour")
                targets["hair_colour"].append(hair.index(hc) if hc in hair else -1)
        self.y = {k: torch.tensor(v, dtype=torch.int64) for k, v in targets.items()}

    def __len__(self) -> int:
        return len(self.x)


def _augment(x: torch.Tensor, gen: torch.Generator, shift: int) -> torch.Tensor:
    """Random translation by up to ``shift`` px (edge-replicated) and horizontal flip, per image."""
    b, _, h, w = x.shape
    if shift > 0:
        pad = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        dx = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (b,), generator=gen)
        x = torch.stack([pad[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _loss(logits: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy averaged over heads (seed 002); unknown targets (-1) are ignored."""
    losses = [F.cross_entropy(logits[k], y[k], ignore_index=-1) for k in logits if bool((y[k] >= 0).any())]
    return torch.stack(losses).mean()


@torch.no_grad()
def evaluate_estimator(model: AttributeEstimator, data: _Labelled, batch_size: int = 512) -> dict[str, Any]:
    """Accuracy per head on ``data``; per attribute also per-level accuracy and the confusion matrix."""
    was = model.training
    model.eval()
    preds: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(data), batch_size):
        for k, v in model(data.x[i:i + batch_size]).items():
            preds.setdefault(k, []).append(v.argmax(1))
    model.train(was)
    out: dict[str, Any] = {"n": len(data), "per_attribute": {}}
    L = model.config.num_levels
    for k, chunks in preds.items():
        p, t = torch.cat(chunks).numpy(), data.y[k].numpy()
        keep = t >= 0
        acc = float((p[keep] == t[keep]).mean()) if keep.any() else None
        if k in model.config.attributes:
            conf = np.bincount(t[keep] * L + p[keep], minlength=L * L).reshape(L, L)
            rows = conf.sum(1)
            out["per_attribute"][k] = {
                "accuracy": acc, "per_level": [float(conf[i, i] / rows[i]) if rows[i] else None for i in range(L)],
                "confusion": conf.tolist()}
        else:
            out[f"{k}_accuracy"] = acc
    accs = [v["accuracy"] for v in out["per_attribute"].values() if v["accuracy"] is not None]
    out["mean_accuracy"] = float(np.mean(accs)) if accs else None
    out["min_accuracy"] = float(np.min(accs)) if accs else None
    return out


def _render_heldout(manifest: dict[str, Any], n: int, size: int) -> tuple[np.ndarray, list[dict[str, Any]]] | None:
    """SynthFaces rendered with other seeds than the training set's, same styles and, where the manifest names
    them, the same render sizes (``render_sizes``, each brought to ``size``); None if not SynthFaces."""
    if "synth" not in str(manifest.get("source", "")).lower():
        return None
    from facediff.data.synth import render_images_at_sizes

    seed = int(manifest.get("seed", 0)) + HELDOUT_SEED_OFFSET
    sizes = tuple(int(s) for s in manifest.get("render_sizes") or [size])
    return render_images_at_sizes(seed, 0, n, size, str(manifest.get("style", "human")), sizes)


class _PlateauOnEval:
    """ReduceLROnPlateau on validation accuracy (seed 002), stepped at evaluations, not every step."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
        self.optimizer = optimizer

    def step(self) -> None:  # the loop's per-step call: the LR only changes at evaluations
        pass

    def plateau(self, accuracy: float) -> None:
        self.inner.step(accuracy)

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.inner.state_dict().items() if k != "optimizer"}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class EstimatorTask(Task):
    """Cross-entropy over the heads; best-validation weights kept (and checkpointed as ``best``)."""

    def __init__(self, cfg: RunConfig, out: Path, base: EstimatorConfig, eval_every: int, heldout: str | Path | None,
                 heldout_n: int):
        self.cfg, self.out, self.base = cfg, Path(out), base
        self.eval_every, self.heldout, self.heldout_n = eval_every, heldout, heldout_n
        self.name = "train estimator"
        self.curve: list[dict[str, Any]] = []
        self.best_acc = -1.0
        self.ema_loss = math.nan

    def build(self, acc: Accelerator, data_path: Path) -> None:
        size = self.cfg.data.size
        full = PreparedDataset(data_path)
        self.full, self.data_dir = full, data_path
        splits = {lab.get("split", "train") for lab in full.all_labels}
        train_ds = PreparedDataset(data_path, split="train") if "train" in splits else full
        train_img, train_lab = train_ds.images(), train_ds.labels
        if "val" in splits:
            val_ds = PreparedDataset(data_path, split="val")
            val_img, val_lab = val_ds.images(), val_ds.labels
        else:  # hold back every 10th image
            idx = np.arange(len(train_lab))
            val_img, val_lab = train_img[idx % 10 == 0], [train_lab[i] for i in idx[idx % 10 == 0]]
            train_img, train_lab = train_img[idx % 10 != 0], [train_lab[i] for i in idx[idx % 10 != 0]]
        if len(train_lab) < 2:
            raise FacediffError(f"{data_path}: too few training images ({len(train_lab)}) for the estimator")
        base = self.base
        present = [a for a in base.attributes if any(a in (l.get("attributes") or {}) for l in train_lab)]
        if not present:
            raise FacediffError(f"{data_path}: no image has any of the attributes {', '.join(base.attributes)}")
        styles = tuple(sorted({l["style"] for l in train_lab if l.get("style")}))
        hair = tuple(sorted({l["hair_colour"] for l in train_lab if l.get("hair_colour")}))
        self.est_cfg = dataclasses.replace(base, size=size, attributes=tuple(present),
                                           styles=styles if len(styles) > 1 else (),
                                           hair_colours=hair if len(hair) > 1 else ())
        c = self.est_cfg
        self.make = lambda im, lab: _Labelled(im, lab, size, c.attributes, c.styles, c.hair_colours)  # noqa: E731
        self.train, self.val = self.make(train_img, train_lab), self.make(val_img, val_lab)
        self.order = EpochOrder(len(self.train), self.cfg.train.seed)
        torch.manual_seed(self.cfg.train.seed)
        self.model = AttributeEstimator(c)
        self.best = AttributeEstimator(c).requires_grad_(False)
        self.best.load_state_dict(self.model.state_dict())
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.cfg.train.lr)
        self._sched = _PlateauOnEval(self.optimizer)
        self.device = acc.device
        self.shift = max(1, size // 16)

    def lr_scheduler(self):
        return self._sched

    def extra_modules(self):
        return {"best": (self.best, None)}

    def prepare(self, acc: Accelerator) -> None:
        self._sched.optimizer = self.optimizer  # accelerate's wrapper shares the param groups
        self.raw = acc.unwrap_model(self.model)

    def losses(self, step: int, micro: int, rank: int, world: int):
        tc = self.cfg.train
        idx = torch.from_numpy(self.order.positions(((step * tc.grad_accum + micro) * world + rank) * tc.batch_size,
                                                    tc.batch_size))
        gen = step_generator(tc.seed, step, micro, rank)
        x = _augment(self.train.x[idx], gen, self.shift).to(self.device)
        loss = _loss(self.model(x), {k: v[idx].to(self.device) for k, v in self.train.y.items()})
        return [loss], {}, len(idx)

    def after_step(self, step: int, acc: Accelerator) -> dict[str, Any]:
        """Every process evaluates (same weights, same data), so the plateau scheduler agrees everywhere."""
        tc = self.cfg.train
        if not (step % self.eval_every == 0 or step == tc.max_steps):
            return {}
        return self._evaluate(step)

    def _evaluate(self, step: int) -> dict[str, Any]:
        ev = evaluate_estimator(self.raw, self.val)
        self._sched.plateau(ev["mean_accuracy"])
        row = {"step": step, "lr": self.optimizer.param_groups[0]["lr"], "val_accuracy": ev["mean_accuracy"],
               "val_per_attribute": {k: v["accuracy"] for k, v in ev["per_attribute"].items()}}
        self.curve.append(row)
        if ev["mean_accuracy"] > self.best_acc:
            self.best_acc = ev["mean_accuracy"]
            self.best.load_state_dict(self.raw.state_dict())
        return {"val_accuracy": ev["mean_accuracy"]}

    def state(self) -> dict[str, Any]:
        return {"curve": self.curve, "best_acc": self.best_acc}

    def load_state(self, state: dict[str, Any]) -> None:
        self.curve, self.best_acc = list(state.get("curve", [])), float(state.get("best_acc", -1.0))

    def finish(self, step: int, ema_model: nn.Module | None) -> dict[str, Any]:
        if not self.curve or self.curve[-1]["step"] != step:
            self._evaluate(step)
        model = self.best.eval()
        metrics: dict[str, Any] = {"steps": step, "train_images": len(self.train),
                                   "batch_size": self.cfg.train.batch_size, "lr": self.cfg.train.lr,
                                   "size": self.cfg.data.size, "seed": self.cfg.train.seed, "data": str(self.data_dir),
                                   "val": evaluate_estimator(model, self.val), "curve": self.curve}
        held = None
        if self.heldout == "auto":
            r = _render_heldout(self.full.manifest, self.heldout_n, self.cfg.data.size)
            if r is not None:
                held = self.make(*r)
                metrics["heldout_source"] = f"SynthFaces seed + {HELDOUT_SEED_OFFSET}, {len(held)} images"
        elif self.heldout is not None:
            hd = PreparedDataset(self.heldout)
            held = self.make(hd.images(), hd.labels)
            metrics["heldout_source"] = str(self.heldout)
        if held is not None:
            metrics["heldout"] = evaluate_estimator(model, held)
        save_estimator(model.cpu(), self.out / "estimator")
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        with open(self.out / "metrics.jsonl", "w") as log:  # the evaluation curve, one row per evaluation
            log.writelines(json.dumps(r) + "\n" for r in self.curve)
        return {"metrics": metrics}


def train_estimator(data_dir: str | Path, out_dir: str | Path, *, steps: int = 3000, batch_size: int = 64,
                    lr: float = 1e-3, size: int = 32, seed: int = 0, progress: Progress | None = None,
                    config: EstimatorConfig | None = None, eval_every: int = 250, heldout: str | Path | None = "auto",
                    heldout_n: int = 1000, time_budget_s: float | None = None, resume: bool = False,
                    mixed_precision: str = "auto") -> dict[str, Any]:
    """Train an attribute estimator on ``data_dir`` (a prepared data set) in the one training loop.

    Writes the run (``config.json``, ``state/``, ``logs/``) and ``out_dir/estimator/`` (config.json +
    model.safetensors, the best-validation weights), ``out_dir/metrics.jsonl`` (one row per evaluation) and
    ``out_dir/metrics.json``; returns the metrics. ``config`` sets the architecture (its ``size``, style and
    hair-colour classes are filled from ``size`` and the data). ``heldout``: "auto" renders ``heldout_n``
    SynthFaces with other seeds when the data set is SynthFaces; a path names a prepared data set; None
    skips. ``time_budget_s`` stops training early (then evaluates). ``mixed_precision``: as [train]'s ("auto"
    probes at start, so two runs may choose differently on a busy machine; "no" for runs that must repeat).
    """
    from facediff.config import ConfigError, DataConfig, TrainConfig

    if eval_every < 1:
        raise FacediffError(f"train estimator: eval_every = {eval_every} must be at least 1")
    if not (Path(data_dir) / "manifest.json").is_file():
        raise FacediffError(f"--data {data_dir}: not a prepared data set (no manifest.json)")
    try:
        cfg = RunConfig(kind="estimator", data=DataConfig(path=str(data_dir), size=size, split=""),
                        train=TrainConfig(batch_size=batch_size, max_steps=steps, lr=lr, warmup_steps=0,
                                          grad_clip=0.0, checkpoint_every=eval_every,  # a kill loses <= 1 eval
                                          log_every=max(1, min(50, eval_every)),
                                          time_budget_minutes=(time_budget_s or 0.0) / 60, seed=seed,
                                          mixed_precision=mixed_precision))
    except ConfigError as e:
        raise FacediffError(f"train estimator: {e}") from None
    task = EstimatorTask(cfg, Path(out_dir), config or EstimatorConfig(), eval_every, heldout, heldout_n)
    summary = train_loop(task, cfg, out_dir, resume=resume, progress=progress)
    return summary.get("metrics", summary)  # off the main process: the loop summary only
