"""Guided denoising over condition branches, in ONE batched network call per step.

Given ``Branches`` (base, [(c_k, w_k)]) the denoiser evaluates every branch at once, batched field by field
(``Condition.cat``), and returns

    pred = pred(x_t, base) + sum_k w_k (pred(x_t, c_k) - pred(x_t, base))

which is classifier-free guidance (Ho & Salimans 2022, eq. 6) for base = null, [(cond, s)], and composable
guidance (Liu et al. 2022, eq. 9) for several deltas. Linear in the prediction, so it holds for eps, v and x0.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from facediff.conditioning.condition import Branches, Condition
from facediff.sampling.samplers import Denoise

ModelFn = Callable[..., torch.Tensor]  # model_fn(x_t, t, **condition.fields()) -> prediction


def guided_denoiser(model_fn: ModelFn, branches: Branches) -> Denoise:
    """``denoise(x, t)`` for the sampler: all branches in one forward of batch (1 + k) B, then combined."""
    conds = branches.conditions
    weights = branches.weights
    n = len(conds)
    batched = Condition.cat(conds) if n > 1 else conds[0]

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = batched.to(x.device)
        if n == 1:
            return model_fn(x, t, **cond.fields())
        out = model_fn(torch.cat([x] * n), torch.cat([t] * n), **cond.fields()).chunk(n)
        pred = out[0]
        for w, p in zip(weights, out[1:]):
            pred = pred + w * (p - out[0])
        return pred

    return denoise
