"""The denoised estimate x0_hat of the current step, for live previews (k-diffusion reports ``denoised`` in
its callback; diffusers' DDIM/DDPM steps return ``pred_original_sample``, but DPM-Solver++ and UniPC do not).

``RememberDenoised(denoise, scheduler_config)`` wraps a ``denoise(x_t, t)`` callable, keeps its last input and
prediction, and ``denoised()`` turns them into x0_hat with the training schedule's alpha_bar_t
(``diffusion.process.predicted_x0_eps``; a fractional Euler/Heun timestep uses the nearest integer one). The
sampler's update itself is untouched: the wrapper only reads.
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers import DDPMScheduler

from facediff.diffusion.process import predicted_x0_eps


class RememberDenoised:
    """``denoise`` with a memory of its last call; ``denoised()`` -> x0_hat of that call (or None)."""

    def __init__(self, denoise, scheduler_config: dict[str, Any]):
        self.denoise = denoise
        self.prediction_type = scheduler_config.get("prediction_type", "epsilon")
        self.alphas_cumprod = DDPMScheduler.from_config(scheduler_config).alphas_cumprod  # alpha_bar_t, t = 0..T-1
        self.last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = self.denoise(x, t, **kwargs)
        self.last = (x, t, out)
        return out

    def denoised(self) -> torch.Tensor | None:
        if self.last is None:
            return None
        x, t, out = self.last
        index = t.float().round().long().clamp(0, len(self.alphas_cumprod) - 1).cpu()
        alpha_bar = self.alphas_cumprod[index].reshape(-1, *([1] * (x.ndim - 1)))
        x0, _ = predicted_x0_eps(out.float(), x.float(), alpha_bar, self.prediction_type)
        return x0
