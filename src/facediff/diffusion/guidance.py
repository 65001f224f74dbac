"""Classifier-free guidance over model predictions (no networks, no conditioning layout).

Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", eq. 6, written with scale s = 1 + w:
    pred = pred(x_t, null) + s * (pred(x_t, c) - pred(x_t, null))
Composable conditions (Liu et al. 2022, "Compositional Visual Generation with Composable Diffusion
Models", eq. 9), one scale per concept c_i:
    pred = pred(x_t, base) + sum_i s_i * (pred(x_t, c_i) - pred(x_t, base))
Both are linear in the prediction, so they apply to eps, v and x_0 predictions alike.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def cfg_combine(pred_uncond: torch.Tensor, pred_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + scale * (cond - uncond); scale 1 is the conditional model, 0 the unconditional one."""
    return pred_uncond + scale * (pred_cond - pred_uncond)


def compose(
    pred_uncond: torch.Tensor, preds_per_attr: Sequence[torch.Tensor], scales: Sequence[float]
) -> torch.Tensor:
    """uncond + sum_i scales[i] * (preds_per_attr[i] - uncond)  (Liu et al. 2022)."""
    if len(preds_per_attr) != len(scales):
        raise ValueError(f"compose: {len(preds_per_attr)} predictions but {len(scales)} scales")
    out = pred_uncond.clone()
    for pred, s in zip(preds_per_attr, scales):
        out = out + float(s) * (pred - pred_uncond)
    return out
