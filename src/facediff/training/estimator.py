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
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError
from facediff.models.estimator import AttributeEstimator, EstimatorConfig, save_estimator

Progress = Callable[[int, int, float], None]
HELDOUT_SEED_OFFSET = 1_000_003  # held-out SynthFaces use seed + this (other seeds than any training set)


class _Labelled:
    """Images as float (N, 3, S, S) in [-1, 1] plus integer targets per head (-1 = unknown)."""

    def __init__(self, images: np.ndarray, labels: list[dict[str, Any]], size: int, attributes: tuple[str, ...],
                 styles: tuple[str, ...], hair: tuple[str, ...]):
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if x.shape[-1] != size:
            x = torch.cat([F.interpolate(x[i:i + 512], size=(size, size), mode="bilinear", align_corners=False,
                                         antialias=True) for i in range(0, len(x), 512)])
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
    """SynthFaces rendered with other seeds than the training set's, same styles; None if not SynthFaces."""
    if "synth" not in str(manifest.get("source", "")).lower():
        return None
    try:
        from facediff.data.synth import render_batch
    except ImportError:
        return None
    seed = int(manifest.get("seed", 0)) + HELDOUT_SEED_OFFSET
    faces = render_batch(seed, 0, n, size, str(manifest.get("style", "human")))
    images, labels = [f.image for f in faces], [f.label for f in faces]
    return np.stack(images), labels


def train_estimator(data_dir: str | Path, out_dir: str | Path, *, steps: int = 3000, batch_size: int = 64,
                    lr: float = 1e-3, size: int = 32, seed: int = 0, progress: Progress | None = None,
                    config: EstimatorConfig | None = None, eval_every: int = 250, heldout: str | Path | None = "auto",
                    heldout_n: int = 1000, time_budget_s: float | None = None,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Train an attribute estimator on ``data_dir`` (a prepared data set); returns the metrics dict.

    Writes ``out_dir/estimator/`` (config.json + model.safetensors, the best-validation weights),
    ``out_dir/metrics.jsonl`` (one row per evaluation: step, loss, lr, val accuracy) and
    ``out_dir/metrics.json``. ``config`` sets the architecture (its ``size``, style and hair-colour classes
    are filled from ``size`` and the data). ``heldout``: "auto" renders ``heldout_n`` SynthFaces with other
    seeds when the data set is SynthFaces; a path names a prepared data set; None skips. ``time_budget_s``
    stops training early (then evaluates). ``progress(step, total, loss)`` is called every step.
    """
    if steps < 1 or batch_size < 1 or lr <= 0 or size < 8:
        raise FacediffError(f"train estimator: steps={steps}, batch_size={batch_size}, lr={lr}, size={size} "
                            "must be positive (size >= 8)")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    full = PreparedDataset(data_dir)
    splits = {lab.get("split", "train") for lab in full.all_labels}
    train_ds = PreparedDataset(data_dir, split="train") if "train" in splits else full
    train_img, train_lab = train_ds.images(), train_ds.labels
    if "val" in splits:
        val_ds = PreparedDataset(data_dir, split="val")
        val_img, val_lab = val_ds.images(), val_ds.labels
    else:  # hold back every 10th image
        idx = np.arange(len(train_lab))
        val_img, val_lab = train_img[idx % 10 == 0], [train_lab[i] for i in idx[idx % 10 == 0]]
        train_img, train_lab = train_img[idx % 10 != 0], [train_lab[i] for i in idx[idx % 10 != 0]]
    if len(train_lab) < 2:
        raise FacediffError(f"{data_dir}: too few training images ({len(train_lab)}) for the estimator")
    base = config or EstimatorConfig()
    present = [a for a in base.attributes if any(a in (l.get("attributes") or {}) for l in train_lab)]
    if not present:
        raise FacediffError(f"{data_dir}: no image has any of the attributes {', '.join(base.attributes)}")
    styles = tuple(sorted({l["style"] for l in train_lab if l.get("style")}))
    hair = tuple(sorted({l["hair_colour"] for l in train_lab if l.get("hair_colour")}))
    cfg = dataclasses.replace(base, size=size, attributes=tuple(present), styles=styles if len(styles) > 1 else (),
                              hair_colours=hair if len(hair) > 1 else ())
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    make = lambda im, lab: _Labelled(im, lab, size, cfg.attributes, cfg.styles, cfg.hair_colours)  # noqa: E731
    train, val = make(train_img, train_lab), make(val_img, val_lab)
    model = AttributeEstimator(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2)
    shift = max(1, size // 16)
    curve: list[dict[str, Any]] = []
    best_acc, best_state, t0, step, ema_loss = -1.0, None, time.time(), 0, math.nan
    perm, pos = torch.randperm(len(train), generator=gen), 0
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.jsonl").unlink(missing_ok=True)
    model.train()
    while step < steps:
        if pos + batch_size > len(train):
            perm, pos = torch.randperm(len(train), generator=gen), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        x = _augment(train.x[idx], gen, shift).to(device)
        loss = _loss(model(x), {k: v[idx].to(device) for k, v in train.y.items()})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        lv = float(loss.detach())
        ema_loss = lv if math.isnan(ema_loss) else 0.95 * ema_loss + 0.05 * lv
        if progress is not None:
            progress(step, steps, lv)
        out_of_time = time_budget_s is not None and time.time() - t0 > time_budget_s
        if step % eval_every == 0 or step == steps or out_of_time:
            ev = evaluate_estimator(model, val)
            sched.step(ev["mean_accuracy"])
            curve.append({"step": step, "loss": ema_loss, "lr": opt.param_groups[0]["lr"],
                          "val_accuracy": ev["mean_accuracy"], "seconds": round(time.time() - t0, 1),
                          "val_per_attribute": {k: v["accuracy"] for k, v in ev["per_attribute"].items()}})
            with open(out_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(curve[-1]) + "\n")
            if ev["mean_accuracy"] > best_acc:
                best_acc = ev["mean_accuracy"]
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if out_of_time:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    metrics: dict[str, Any] = {"steps": step, "seconds": round(time.time() - t0, 1), "train_images": len(train),
                               "batch_size": batch_size, "lr": lr, "size": size, "seed": seed,
                               "data": str(data_dir), "val": evaluate_estimator(model, val), "curve": curve}
    held = None
    if heldout == "auto":
        r = _render_heldout(full.manifest, heldout_n, size)
        if r is not None:
            held = make(*r)
            metrics["heldout_source"] = f"SynthFaces seed + {HELDOUT_SEED_OFFSET}, {len(held)} images"
    elif heldout is not None:
        hd = PreparedDataset(heldout)
        held = make(hd.images(), hd.labels)
        metrics["heldout_source"] = str(heldout)
    if held is not None:
        metrics["heldout"] = evaluate_estimator(model, held)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_estimator(model.cpu(), out_dir / "estimator")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
