"""Noise process: parity with diffusers' DDPMScheduler, target round trips, Min-SNR weights."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from facediff.config import DiffusionConfig
from facediff.diffusion.process import NoiseProcess
from facediff.diffusion.schedules import betas, scheduler_config
from facediff.errors import FacediffError
from facediff.sampling.samplers import SAMPLERS, make_scheduler

SCHEDULES = ("linear", "scaled_linear", "cosine")
PREDICTIONS = ("epsilon", "v_prediction", "sample")


def _cfg(schedule: str = "linear", T: int = 1000, pt: str = "epsilon", **kw) -> DiffusionConfig:
    if schedule == "scaled_linear":
        kw.setdefault("beta_start", 0.00085)
        kw.setdefault("beta_end", 0.012)
    return DiffusionConfig(schedule=schedule, num_train_timesteps=T, prediction_type=pt, **kw)


def _timesteps(T: int, n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(T)
    return torch.cat([torch.tensor([0, T - 1, T // 2]), torch.randint(0, T, (n - 3,), generator=g)])


@pytest.mark.parametrize("T", (100, 1000, 10000))
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_betas_and_forward_process_match_diffusers(schedule: str, T: int) -> None:
    cfg = _cfg(schedule, T, "v_prediction")
    ref = DDPMScheduler.from_config(scheduler_config(cfg))
    b = betas(cfg)
    assert b.dtype == torch.float64 and b.shape == (T,)
    assert torch.equal(b, ref.betas.double())  # bit-identical to diffusers (which computes in float32)

    proc = NoiseProcess(cfg)
    assert proc.alphas_cumprod.dtype == torch.float64
    # float64 cumprod vs diffusers' float32 cumprod: relative 1e-4 while alpha_bar is a normal float32
    ab_ref = ref.alphas_cumprod.double()
    normal = ab_ref > 1e-30
    torch.testing.assert_close(proc.alphas_cumprod[normal], ab_ref[normal], rtol=1e-4, atol=0)

    g = torch.Generator().manual_seed(1)
    t = _timesteps(T)
    x0 = torch.rand(len(t), 3, 8, 8, generator=g) * 2 - 1
    eps = torch.randn(len(t), 3, 8, 8, generator=g)
    torch.testing.assert_close(proc.add_noise(x0, eps, t), ref.add_noise(x0, eps, t), atol=5e-5, rtol=1e-5)  # diffusers: float32 1 - alpha_bar near t=0
    torch.testing.assert_close(proc.target(x0, eps, t), ref.get_velocity(x0, eps, t), atol=5e-5, rtol=1e-5)  # diffusers: float32 1 - alpha_bar near t=0


def test_eps_and_x0_targets() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    assert torch.equal(NoiseProcess(_cfg(pt="epsilon")).target(x0, eps, t), eps)
    assert torch.equal(NoiseProcess(_cfg(pt="sample")).target(x0, eps, t), x0)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("pt", PREDICTIONS)
def test_pred_to_x0_eps_round_trip(pt: str, schedule: str) -> None:
    proc = NoiseProcess(_cfg(schedule, 1000, pt))
    g = torch.Generator().manual_seed(2)
    t = _timesteps(1000)
    x0 = torch.randn(len(t), 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(len(t), 3, 4, 4, generator=g, dtype=torch.float64)
    x_t = proc.add_noise(x0, eps, t)
    x0_hat, eps_hat = proc.pred_to_x0_eps(proc.target(x0, eps, t), x_t, t)
    torch.testing.assert_close(x0_hat, x0, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(eps_hat, eps, atol=1e-7, rtol=1e-7)


@pytest.mark.parametrize("pt", PREDICTIONS)
def test_snr_and_min_snr_weights(pt: str) -> None:
    gamma = 5.0
    proc = NoiseProcess(_cfg("cosine", 1000, pt, loss_weighting="min_snr", snr_gamma=gamma))
    t = torch.arange(1000)
    # reference from diffusers' betas, accumulated in float64 (float32 1 - alpha_bar is too coarse at t = 0)
    ab = torch.cumprod(1 - DDPMScheduler.from_config(scheduler_config(proc.cfg)).betas.double(), 0)
    snr = proc.snr(t)
    torch.testing.assert_close(snr, ab / (1 - ab), rtol=1e-12, atol=0)
    expected = {
        "epsilon": torch.minimum(snr, torch.full_like(snr, gamma)) / snr,
        "v_prediction": torch.minimum(snr, torch.full_like(snr, gamma)) / (snr + 1),
        "sample": torch.minimum(snr, torch.full_like(snr, gamma)),
    }[pt]
    w = proc.loss_weight(t)
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=0)
    assert (w > 0).all() and torch.isfinite(w).all()
    none = NoiseProcess(_cfg("cosine", 1000, pt)).loss_weight(t)
    assert torch.equal(none, torch.ones(1000, dtype=torch.float64))


@pytest.mark.parametrize("pt", PREDICTIONS)
def test_min_snr_loss_is_clipped_snr_times_x0_error(pt: str) -> None:
    """Hang et al. 2023: every parameterisation's weighted loss equals min(SNR, gamma) * ||x0 - x0_hat||^2."""
    gamma = 5.0
    proc = NoiseProcess(_cfg("linear", 1000, pt, loss_weighting="min_snr", snr_gamma=gamma))
    g = torch.Generator().manual_seed(3)
    t = _timesteps(1000, 12)
    x0 = torch.randn(len(t), 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(len(t), 3, 4, 4, generator=g, dtype=torch.float64)
    target = proc.target(x0, eps, t)
    pred = target + 0.1 * torch.randn(target.shape, generator=g, dtype=torch.float64)
    x0_hat, _ = proc.pred_to_x0_eps(pred, proc.add_noise(x0, eps, t), t)
    x0_mse = (x0_hat - x0).pow(2).flatten(1).mean(1)
    expected = proc.snr(t).clamp(max=gamma) * x0_mse
    loss = proc.loss(pred, x0, eps, t)
    assert loss.shape == (len(t),) and loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(proc.loss(target, x0, eps, t), torch.zeros(len(t)), atol=1e-10)


def test_sample_timesteps_uniform_and_seeded() -> None:
    proc = NoiseProcess(_cfg("linear", 100))
    t = proc.sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (20000,)
    assert int(t.min()) == 0 and int(t.max()) == 99
    counts = torch.bincount(t, minlength=100).double()
    assert (counts - 200).abs().max() < 70  # ~5 sigma of Binomial(20000, 1/100)
    t2 = proc.sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert torch.equal(t, t2)


def test_scheduler_config_builds_every_sampler_with_same_schedule() -> None:
    cfg = _cfg("cosine", 500, "v_prediction")
    sc = scheduler_config(cfg)
    assert sc["beta_schedule"] == "squaredcos_cap_v2" and sc["clip_sample"] is False
    assert sc["timestep_spacing"] == "trailing"
    ref = betas(cfg).float()
    for name in SAMPLERS:
        s = make_scheduler(name, sc)
        assert s.config.prediction_type == "v_prediction"
        assert torch.equal(s.betas.float(), ref)
        s.set_timesteps(10)
        assert int(round(float(s.timesteps[0]))) == 499  # trailing: start at the noisiest training step


def test_config_errors_are_facediff_errors() -> None:
    with pytest.raises(FacediffError, match="schedule"):
        scheduler_config(DiffusionConfig(schedule="quadratic"))
    with pytest.raises(FacediffError, match="prediction_type"):
        NoiseProcess(DiffusionConfig(prediction_type="score"))
    with pytest.raises(FacediffError, match="loss_weighting"):
        NoiseProcess(DiffusionConfig(loss_weighting="p2"))
    with pytest.raises(FacediffError, match="timestep"):
        NoiseProcess(DiffusionConfig(num_train_timesteps=100)).add_noise(
            torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.tensor([100])
        )
