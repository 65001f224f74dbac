"""Noise schedules beta_1..beta_T as diffusers scheduler config (never stored as weights).

``scheduler_config(cfg)`` is the single source of truth: the training process (``NoiseProcess``) and every
sampler build their schedule from it, and exports write it to ``scheduler/scheduler_config.json``.
``betas(cfg)`` reproduces diffusers' ``DDPMScheduler.__init__`` bit for bit (diffusers computes in float32;
the values are then widened to float64 so that alpha_bar_t = prod_s (1 - beta_s) is accumulated exactly).

Schedules:
- ``linear``: beta_t linear in [beta_start, beta_end] (Ho et al. 2020, "DDPM", sec. 4).
- ``scaled_linear``: sqrt(beta_t) linear (Rombach et al. 2022, latent diffusion / Stable Diffusion).
- ``cosine``: alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) * pi/2), s = 0.008, beta_t capped at 0.999
  (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17); diffusers calls it ``squaredcos_cap_v2``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from facediff.config import DiffusionConfig

# our name (facediff.registry.SCHEDULES) -> diffusers' beta_schedule name; DiffusionConfig checks the choice
_DIFFUSERS_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}

# Inference timesteps are spaced "trailing" (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
# Steps are Flawed", table 2): the first step is always t = T-1, the noisiest training timestep, so that
# x_T ~ N(0, I) matches what the network saw in training even at 5-20 steps ("leading" starts at
# T - T/steps, e.g. t = 900 of 1000 at 10 steps, where the signal is not yet gone). All six diffusers
# samplers we use support it, so the spacing is the same for every sampler.
TIMESTEP_SPACING = "trailing"


def scheduler_config(cfg: DiffusionConfig) -> dict[str, Any]:
    """The diffusers scheduler config for ``cfg`` (accepted by every sampler's ``from_config``).

    ``clip_sample`` is off: samplers return the raw model-space x_0 (clamping is the caller's choice, and
    it would be wrong for latents). Keys a given scheduler class does not know are dropped by the samplers.
    """
    return {
        "num_train_timesteps": int(cfg.num_train_timesteps),
        "beta_schedule": _DIFFUSERS_SCHEDULE[cfg.schedule],
        "beta_start": float(cfg.beta_start),
        "beta_end": float(cfg.beta_end),
        "prediction_type": cfg.prediction_type,
        "clip_sample": False,
        "timestep_spacing": TIMESTEP_SPACING,
        "steps_offset": 0,
    }


def _cosine_betas(T: int, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021 eq. 17: beta_t = min(1 - alpha_bar(t/T) / alpha_bar((t-1)/T), 0.999).

    Same loop and float math as diffusers' ``betas_for_alpha_bar`` (then stored as float32 there).
    """

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    out = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)]
    return torch.tensor(out, dtype=torch.float32)


def betas(cfg: DiffusionConfig) -> torch.Tensor:
    """beta_1..beta_T as float64 (T,), equal to diffusers' ``DDPMScheduler(**scheduler_config(cfg)).betas``."""
    T = int(cfg.num_train_timesteps)
    if cfg.schedule == "linear":
        b = torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float32)
    elif cfg.schedule == "scaled_linear":
        b = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, T, dtype=torch.float32) ** 2
    else:
        b = _cosine_betas(T)
    return b.to(torch.float64)


def alphas_cumprod(cfg: DiffusionConfig) -> torch.Tensor:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s) (Ho et al. 2020, eq. 4), float64 (T,)."""
    return torch.cumprod(1.0 - betas(cfg), dim=0)


def diffusion_config_from_scheduler(sched: dict[str, Any], base: DiffusionConfig) -> DiffusionConfig:
    """[diffusion] of a model trained elsewhere (e.g. a Stable Diffusion base), from its scheduler config:
    T, the beta schedule and range, the prediction type; the loss settings of ``base`` are kept."""
    from dataclasses import replace

    from facediff.errors import FacediffError

    ours = {v: k for k, v in _DIFFUSERS_SCHEDULE.items()}
    name = sched.get("beta_schedule", "linear")
    if sched.get("trained_betas") is not None or name not in ours:
        raise FacediffError(f"scheduler beta_schedule = {name!r}{' with trained_betas' if sched.get('trained_betas') else ''}"
                            f": facediff trains on {', '.join(_DIFFUSERS_SCHEDULE.values())} schedules")
    return replace(base, schedule=ours[name], num_train_timesteps=int(sched.get("num_train_timesteps", 1000)),
                   beta_start=float(sched.get("beta_start", 1e-4)), beta_end=float(sched.get("beta_end", 0.02)),
                   prediction_type=sched.get("prediction_type", "epsilon"))
