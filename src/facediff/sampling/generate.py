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
             step_noise: bool = True, sketches: torch.Tensor | None = None, batch_size: int = 64,
             device: str | torch.device = "cpu",
             progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Sample ``len(seeds)`` images of ``shape`` (C, H, W); returns the final x_0 in model space (N, C, H, W).

    ``sketches`` (N, h*w), if given, are appended to the attribute vectors as context columns (the model
    function splits them off); the guidance's null branch drops them with everything else.
    """
    n = len(seeds)
    if conditions is not None and len(conditions) != n:
        raise ValueError("conditions must have one entry per seed")
    outs, done_steps = [], 0
    chunks = list(range(0, n, batch_size))
    total = len(chunks) * steps
    for start in chunks:
        sl = slice(start, min(n, start + batch_size))
        parts = []
        if attributes and (conditions is not None or sketches is not None):
            conds = conditions[sl] if conditions is not None else [None] * (sl.stop - sl.start)
            parts.append(torch.stack([attr_vector(c, attributes, num_levels) for c in conds]))
        if sketches is not None:
            parts.append(sketches[sl].float())
        cond = torch.cat(parts, 1).to(device) if parts else None
        denoise = guided_denoiser(model_fn, cond, guidance, per_attribute_scales=per_attribute_scales,
                                  attributes=attributes, num_levels=num_levels)

        def chunk_progress(i: int, _total: int, offset: int = done_steps) -> None:
            if progress is not None:
                progress(offset + i, total)

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


def generate_images(bundle, *, seeds: list[int], conditions: list[dict[str, int] | None] | None = None,
                    sketches: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """Images in [-1, 1] (N, 3, H, W) from a model bundle (anything with model_fn, decode, latent_shape,
    attributes, num_levels, scheduler_config, conditional): samples in its diffusion space, then decodes."""
    conds = conditions if bundle.conditional else None
    with torch.inference_mode():
        z = generate(bundle.model_fn, scheduler_config=bundle.scheduler_config, shape=bundle.latent_shape,
                     seeds=seeds, conditions=conds, attributes=bundle.attributes, num_levels=bundle.num_levels,
                     sketches=sketches, **kwargs)
        return torch.cat([bundle.decode(z[i:i + 64]) for i in range(0, len(z), 64)]).float().clamp(-1, 1)
