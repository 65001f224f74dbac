"""Generate a batch of images from any network callable: conditions -> guided denoiser -> sampler.

Only sees ``model_fn(x, t, cond) -> prediction``; which network that is (pixel U-Net, latent U-Net) is
the caller's business. Images are produced in chunks of ``batch_size``; image i always uses ``seeds[i]``,
so the result does not depend on the chunking.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from facediff.sampling.conditioning import attr_vector, guided_denoiser
from facediff.sampling.samplers import sample

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def generate(model_fn: ModelFn, *, scheduler_config: dict, shape: tuple[int, int, int], seeds: list[int],
             conditions: list[dict[str, int] | None] | None = None, attributes: tuple[str, ...] = (),
             num_levels: int = 6, guidance: float = 1.0, per_attribute_scales: dict[str, float] | None = None,
             sampler: str = "dpmpp", steps: int = 25, eta: float = 0.0, init_noise: str = "normal",
             step_noise: bool = True, batch_size: int = 64, device: str | torch.device = "cpu",
             progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Sample ``len(seeds)`` images of ``shape`` (C, H, W); returns the final x_0 in model space (N, C, H, W)."""
    n = len(seeds)
    if conditions is not None and len(conditions) != n:
        raise ValueError("conditions must have one entry per seed")
    outs, done_steps = [], 0
    chunks = list(range(0, n, batch_size))
    total = len(chunks) * steps
    for start in chunks:
        sl = slice(start, min(n, start + batch_size))
        cond = None
        if attributes and conditions is not None:
            cond = torch.stack([attr_vector(c, attributes, num_levels) for c in conditions[sl]]).to(device)
        denoise = guided_denoiser(model_fn, cond, guidance, per_attribute_scales=per_attribute_scales,
                                  attributes=attributes, num_levels=num_levels)

        def chunk_progress(i: int, _total: int, offset: int = done_steps) -> None:
            if progress is not None:
                progress(offset + i + 1, total)

        x = sample(denoise, (sl.stop - sl.start, *shape), scheduler_config=scheduler_config, sampler=sampler,
                   steps=steps, seeds=list(seeds[sl]), eta=eta, init_noise=init_noise, step_noise=step_noise,
                   device=device, progress=chunk_progress)
        outs.append(x.float().cpu())
        done_steps += steps
    return torch.cat(outs)


def attribute_sweep(attributes: tuple[str, ...], num_levels: int, seed: int) -> tuple[list[dict[str, int]], list[int]]:
    """Conditions + seeds for a grid whose row r sweeps attribute r over its levels, the rest fixed.

    The base levels of the other attributes are drawn from ``seed``; every tile shares the seed, so the only
    thing changing along a row is the attribute named at its left.
    """
    rng = np.random.default_rng(seed)
    base = {a: int(rng.integers(0, num_levels)) for a in attributes}
    base["eyeglasses"] = 0 if "eyeglasses" in base else None  # keep the eyes visible in the other rows
    base = {k: v for k, v in base.items() if v is not None}
    conds = []
    for a in attributes:
        for level in range(num_levels):
            conds.append({**base, a: level})
    return conds, [seed] * len(conds)
