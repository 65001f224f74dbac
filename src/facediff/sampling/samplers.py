"""Samplers as plain functions over a ``denoise(x, t) -> model output`` callable, on diffusers' schedulers.

- ddpm:  ancestral sampling (Ho et al. 2020, algorithm 2; strided posterior for steps < T)   DDPMScheduler
- ddim:  Song et al. 2021, eq. 12, ``eta`` interpolates deterministic (0) .. DDPM-like (1)     DDIMScheduler
- dpmpp: DPM-Solver++(2M) (Lu et al. 2022)                                                  DPMSolverMultistepScheduler
- euler: Euler ODE step in sigma space (Karras et al. 2022, algorithm 1 without churn)     EulerDiscreteScheduler
- heun:  Heun 2nd-order ODE step (Karras et al. 2022, algorithm 1), first interval Euler     HeunDiscreteScheduler
- unipc: UniPC-2 predictor-corrector (Zhao et al. 2023)                                     UniPCMultistepScheduler

Reproducibility: image i draws its initial noise and then every per-step noise from its own
``torch.Generator(generator_device).manual_seed(seeds[i])`` (diffusers' ``randn_tensor`` takes a list of
generators, one per batch row), so image i is the same whatever the batch it is sampled in.
The whole update runs in float32; only the ``denoise`` call sees ``dtype``.
``callback(done, total, t, x)`` after every step reports progress and may return True to stop early (the
pipeline's interrupt flag); samplers know nothing about networks, conditions or faces.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from facediff.diffusion.process import predicted_x0_eps
from facediff.errors import FacediffError
from facediff.registry import INIT_NOISE, SAMPLERS, check_choice

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # denoise(x_t, t) -> prediction
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], "bool | None"]  # (done, total, t, x) -> True: stop

_SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddpm": (DDPMScheduler, {"variance_type": "fixed_small"}),  # sigma_t^2 = beta~_t (Ho et al. eq. 7)
    "ddim": (DDIMScheduler, {"set_alpha_to_one": True}),  # last step lands on alpha_bar = 1, i.e. x_0
    "dpmpp": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": (EulerDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def make_scheduler(sampler: str, scheduler_config: dict[str, Any]) -> Any:
    """The diffusers scheduler for ``sampler``, built with ``from_config`` from the shared config.

    Keys the class does not take (e.g. ``clip_sample`` for Euler, ``_class_name`` of an exported config)
    are dropped so diffusers does not warn about them.
    """
    check_choice("sampler", sampler, SAMPLERS)
    cls, extra = _SCHEDULERS[sampler]
    accepted = set(inspect.signature(cls.__init__).parameters)
    cfg = {k: v for k, v in {**scheduler_config, **extra}.items() if k in accepted}
    return cls.from_config(cfg)


def _timestep_batch(t: torch.Tensor, batch: int, device: torch.device | str) -> torch.Tensor:
    """Scheduler timestep -> (B,) tensor; integer-valued float timesteps (Euler/Heun) become int64."""
    t = torch.as_tensor(t, device=device)
    if t.is_floating_point() and torch.equal(t, t.round()):
        t = t.long()
    return t.reshape(1).expand(batch)


def _heun_euler_first_step(
    scheduler: HeunDiscreteScheduler, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, HeunDiscreteScheduler]:
    """Take Heun's first interval sigma_0 -> sigma_1 as one Euler step, then hand over to diffusers' Heun.

    Hand-written: from the terminal sigma of a cosine schedule (~2e4 at T = 1000) or a long linear one, the
    trapezoid correction of the first interval multiplies a tiny derivative error by sigma_0 and the
    sample blows up; the Euler step x + (sigma_1 - sigma_0) (x - x0_hat) / sigma_0 = x0_hat + sigma_1 eps_hat
    (Karras et al. 2022, eq. 5; identical to a DDIM step) is exact while x0_hat barely depends on x_t.
    The remaining intervals are diffusers' HeunDiscreteScheduler on the same timesteps.
    """
    unique_t = [scheduler.timesteps[0]] + list(scheduler.timesteps[1::2])  # Heun repeats interior timesteps
    sigma0, sigma1 = float(scheduler.sigmas[0]), float(scheduler.sigmas[1])
    out = model(x / (sigma0**2 + 1) ** 0.5, unique_t[0])
    # in VP terms x_t = x / sqrt(sigma^2 + 1) and alpha_bar = 1 / (sigma^2 + 1) (Karras et al. 2022, table 1)
    x0, _ = predicted_x0_eps(out, x / (sigma0**2 + 1) ** 0.5, 1.0 / (sigma0**2 + 1), scheduler.config.prediction_type)
    x = x0 + (sigma1 / sigma0) * (x - x0)
    rest = HeunDiscreteScheduler.from_config(scheduler.config)
    rest.set_timesteps(timesteps=[float(t) for t in unique_t[1:]], device=scheduler.timesteps.device)
    return x, rest


def _check_arguments(shape: tuple[int, ...], sampler: str, init_noise: str, seeds: Sequence[int], steps: int,
                     eta: float, scheduler_config: dict[str, Any]) -> int:
    """One-line errors for arguments ``sample`` cannot run with; T, the model's num_train_timesteps."""
    if len(shape) < 2:
        raise FacediffError(f"sample: shape {shape} must be (batch, channels, ...)")
    check_choice("sampler", sampler, SAMPLERS)
    check_choice("init_noise", init_noise, INIT_NOISE)
    if len(seeds) != shape[0]:
        raise FacediffError(f"sample: {len(seeds)} seeds for a batch of {shape[0]}; give one seed per image")
    T = int(scheduler_config["num_train_timesteps"])
    if not 1 <= int(steps) <= T:
        raise FacediffError(f"steps = {steps}: choose 1..{T} (the model's num_train_timesteps)")
    if not eta >= 0 or eta == float("inf"):
        raise FacediffError(f"eta = {eta}: must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like)")
    return T


def _set_up_scheduler(sampler: str, scheduler_config: dict[str, Any], steps: int, eta: float, step_noise: bool,
                      device: torch.device | str, T: int) -> tuple[Any, str, float]:
    """(scheduler with its ``steps`` timesteps set, the sampler that runs, its eta): DDPM without step noise
    runs as DDIM with eta = 1 and zero variance noise."""
    scheduler = make_scheduler(sampler, scheduler_config)
    if sampler not in ("ddpm", "ddim"):
        # sigma-space samplers use sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) in diffusers' float32
        ab = scheduler.alphas_cumprod
        if not torch.isfinite((1 - ab) / ab).all():
            raise FacediffError(
                f"the schedule ({scheduler_config.get('beta_schedule')}, T = {T}) reaches alpha_bar_T = "
                f"{float(ab.double().min()):.1e}, beyond float32 for the {sampler} sampler: use ddpm or ddim, "
                "or less total noise (e.g. beta_start and beta_end scaled by 1000 / T)"
            )
    scheduler.set_timesteps(int(steps), device=device)
    if sampler == "ddpm" and not step_noise:
        # the posterior mean mu~_t(x_t, x0_hat) of q(x_t' | x_t, x0) (Ho et al. 2020, eq. 7) is DDIM's step
        # with eta = 1 and zero variance noise (Song et al. 2021, sec. 4.1): same timesteps, same alpha_bar
        scheduler = make_scheduler("ddim", scheduler_config)
        scheduler.set_timesteps(int(steps), device=device)
        sampler, eta = "ddim", 1.0
    return scheduler, sampler, eta


def _draw_x_T(shape: tuple[int, ...], init_noise: str, generators: list[torch.Generator],
              device: torch.device | str, generator_device: torch.device | str, latents: torch.Tensor | None,
              init_noise_sigma: float) -> torch.Tensor:
    """x_T (float32, times the scheduler's ``init_noise_sigma``) from the per-image generators, or ``latents``."""
    if init_noise == "normal":
        x = randn_tensor(shape, generator=generators, device=torch.device(device), dtype=torch.float32)
    elif init_noise == "zero":
        x = torch.zeros(shape, device=device, dtype=torch.float32)
    else:  # one N(0,1) value per image and channel, broadcast over the spatial axes
        const_shape = (1, shape[1]) + (1,) * (len(shape) - 2)
        x = torch.cat(
            [torch.randn(const_shape, generator=g, device=generator_device, dtype=torch.float32) for g in generators]
        ).to(device).expand(shape).contiguous()
    if latents is not None:  # drawn above all the same, so that the generators' later draws do not shift
        if tuple(latents.shape) != shape:
            raise FacediffError(f"sample: latents of shape {tuple(latents.shape)} for a canvas of {shape}")
        x = latents.to(device=device, dtype=torch.float32)
    return x * float(init_noise_sigma)  # Euler/Heun: sqrt(sigma_max^2 + 1); VP samplers: 1


def _step_loop(scheduler: Any, model: Denoise, x: torch.Tensor, *, sampler: str, steps: int, eta: float,
               step_noise: bool, generators: list[torch.Generator], callback: StepCallback | None) -> torch.Tensor:
    """The sampler's updates x_t -> x_t' over the scheduler's timesteps (Heun: its first interval as an Euler
    step), each followed by ``callback``; x when the timesteps run out or the callback says stop."""
    done, total = 0, len(scheduler.timesteps)
    if sampler == "heun" and steps > 1:
        t_first = scheduler.timesteps[0]
        x, scheduler = _heun_euler_first_step(scheduler, model, x)
        done = 1
        total = 1 + len(scheduler.timesteps)
        if callback is not None and callback(done, total, t_first, x):
            return x

    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)  # Euler/Heun: x / sqrt(sigma^2 + 1); identity otherwise
        out = model(x_in, t)
        if sampler == "ddpm":
            x = scheduler.step(out, t, x, generator=generators).prev_sample
        elif sampler == "ddim":
            if step_noise or eta == 0:
                x = scheduler.step(out, t, x, eta=float(eta), generator=generators).prev_sample
            else:  # zero variance noise: x_{t'} is the mean of DDIM's q_sigma(x_{t'} | x_t, x0_hat)
                x = scheduler.step(out, t, x, eta=float(eta), variance_noise=torch.zeros_like(x)).prev_sample
        else:  # deterministic ODE samplers; the generators only reach the steps that take them
            kwargs = {"generator": generators} if takes_generator else {}
            x = scheduler.step(out, t, x, **kwargs).prev_sample
        x = x.to(torch.float32)
        done += 1
        if callback is not None and callback(done, total, t, x):
            break
    return x


def sample(
    denoise: Denoise,
    shape: Sequence[int],
    *,
    scheduler_config: dict[str, Any],
    sampler: str = "dpmpp",
    steps: int = 20,
    seeds: Sequence[int],
    eta: float = 0.0,
    init_noise: str = "normal",
    step_noise: bool = True,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    callback: StepCallback | None = None,
    generator_device: torch.device | str = "cpu",
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``sampler`` for ``steps`` steps from x_T and return the raw model-space x_0 (float32, unclamped).

    ``denoise(x, t)`` gets x (B, C, H, W) in ``dtype`` (already ``scale_model_input``-ed for Euler/Heun)
    and t (B,) training timesteps (int64; float32 only for a non-integer Euler/Heun timestep) and returns
    the prediction of the type in ``scheduler_config['prediction_type']``.
    ``eta`` is DDIM's eta (other samplers ignore it). Seed 003 ablations: ``init_noise`` "zero" starts from
    x_T = 0, "constant" from x_T filled per image and channel with one N(0, 1) draw of that image's seed;
    ``step_noise=False`` makes DDPM / DDIM(eta > 0) steps return the posterior mean without added noise.
    ``callback(done, total, t, x)`` is called after each network call's update (done = 1..total; Heun makes
    2 * steps - 2 network calls: its first interval is an Euler step, see ``_heun_euler_first_step``); when
    it returns True the current x is returned at once.
    ``latents`` (diffusers' name): a standard-normal x_T of ``shape`` to start from instead of the seeds'
    draw (the seeds still drive every later noise draw, exactly as without it).
    """
    shape = tuple(int(s) for s in shape)
    T = _check_arguments(shape, sampler, init_noise, seeds, steps, eta, scheduler_config)
    scheduler, sampler, eta = _set_up_scheduler(sampler, scheduler_config, steps, eta, step_noise, device, T)
    generators = [torch.Generator(generator_device).manual_seed(int(s)) for s in seeds]
    B = shape[0]
    x = _draw_x_T(shape, init_noise, generators, device, generator_device, latents, scheduler.init_noise_sigma)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = denoise(x.to(dtype), _timestep_batch(t, B, x.device)).to(torch.float32)
        if out.shape != x.shape:
            raise FacediffError(f"denoise returned shape {tuple(out.shape)} for input {tuple(x.shape)}")
        return out

    return _step_loop(scheduler, model, x, sampler=sampler, steps=steps, eta=eta, step_noise=step_noise,
                      generators=generators, callback=callback)
