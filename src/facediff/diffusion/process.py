"""The forward (noising) process, training targets and loss weighting; no networks.

Notation (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"):
  beta_t            noise schedule, t = 0..T-1 here (the paper's 1..T, shifted as in diffusers)
  alpha_bar_t       prod_{s<=t} (1 - beta_s)
  q(x_t | x_0)      N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)                         (eq. 4)
  x_t               sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,  eps ~ N(0, I)
  SNR(t)            alpha_bar_t / (1 - alpha_bar_t)                     (Kingma et al. 2021, "VDM")
  v                 sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0  (Salimans & Ho 2022, sec. 4)

Coefficients are gathered from float64 alpha_bar_t on the CPU (no float64 on MPS) and cast to the
tensor's device and dtype, as diffusers does.
"""
from __future__ import annotations

import torch

from facediff.config import DiffusionConfig
from facediff.diffusion.schedules import alphas_cumprod, betas, scheduler_config
from facediff.errors import FacediffError



def predicted_x0_eps(pred: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor | float,
                     prediction_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) from a network prediction at x_t, with alpha_bar_t broadcastable against x_t.

    eps:  x0 = (x_t - sqrt(1-ab) eps) / sqrt(ab)                                     (Ho et al. 2020, eq. 15)
    v:    x0 = sqrt(ab) x_t - sqrt(1-ab) v,  eps = sqrt(1-ab) x_t + sqrt(ab) v       (Salimans & Ho 2022)
    x0:   eps = (x_t - sqrt(ab) x0) / sqrt(1-ab)
    """
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
    a = ab.sqrt().to(device=x_t.device, dtype=x_t.dtype)
    s = (1.0 - ab).sqrt().to(device=x_t.device, dtype=x_t.dtype)
    if prediction_type == "epsilon":
        return (x_t - s * pred) / a, pred
    if prediction_type == "sample":
        return pred, (x_t - a * pred) / s
    return a * x_t - s * pred, s * x_t + a * pred


def _bcast(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 coefficient -> like's device/dtype, shaped (B, 1, 1, ...) for broadcasting."""
    return coef.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


class NoiseProcess:
    """q(x_t | x_0), the network target for a prediction type, and (Min-SNR-)weighted MSE."""

    def __init__(self, cfg: DiffusionConfig) -> None:
        self.cfg = cfg
        self.num_train_timesteps: int = int(cfg.num_train_timesteps)  # T
        self.prediction_type: str = cfg.prediction_type
        self.betas: torch.Tensor = betas(cfg)  # beta_t, float64 (T,)
        self.alphas_cumprod: torch.Tensor = alphas_cumprod(cfg)  # alpha_bar_t, float64 (T,)
        self.scheduler_config: dict = scheduler_config(cfg)

    # -- helpers -------------------------------------------------------------------------------------
    def _alpha_bar(self, t: torch.Tensor | int) -> torch.Tensor:
        """alpha_bar_t for integer timesteps t (any shape), float64 on the CPU."""
        t = torch.as_tensor(t).detach().to("cpu")
        if t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise FacediffError("NoiseProcess: timesteps must be integers in [0, T)")
            t = t.long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_train_timesteps):
            raise FacediffError(
                f"NoiseProcess: timestep out of range [0, {self.num_train_timesteps}) (got {int(t.min())}..{int(t.max())})"
            )
        return self.alphas_cumprod[t.long()]

    def _coefs(self, t: torch.Tensor | int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)), broadcastable against ``like``."""
        ab = self._alpha_bar(t).reshape(-1)
        return _bcast(ab.sqrt(), like), _bcast((1.0 - ab).sqrt(), like)

    # -- forward process -----------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps  (Ho et al. 2020, eq. 4)."""
        a, s = self._coefs(t, x0)
        return a * x0 + s * eps

    def target(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network learns to predict: eps, v (Salimans & Ho 2022) or x_0."""
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "sample":
            return x0
        a, s = self._coefs(t, x0)
        return a * eps - s * x0  # v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0

    def pred_to_x0_eps(
        self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat) from a prediction of this process's type at x_t (``predicted_x0_eps``)."""
        ab = self._alpha_bar(t).reshape(-1, *([1] * (x_t.ndim - 1)))
        return predicted_x0_eps(pred, x_t, ab, self.prediction_type)

    # -- loss ----------------------------------------------------------------------------------------
    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """SNR(t) = alpha_bar_t / (1 - alpha_bar_t), float64 on t's device (CPU for MPS)."""
        ab = self._alpha_bar(t)
        out = ab / (1.0 - ab)
        t = torch.as_tensor(t)
        return out if t.device.type == "mps" else out.to(t.device)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Per-timestep MSE weight, float64 (B,).

        Min-SNR-gamma (Hang et al. 2023, eq. 8 and sec. 3.4): the x_0-MSE weight min(SNR, gamma) rewritten
        for the network's target, since ||eps - eps_hat||^2 = SNR ||x0 - x0_hat||^2 and
        ||v - v_hat||^2 = (SNR + 1) ||x0 - x0_hat||^2:
          eps: min(SNR, gamma) / SNR = min(1, gamma / SNR)    v: min(SNR, gamma) / (SNR + 1)    x0: min(SNR, gamma)
        """
        snr = self._alpha_bar(t).reshape(-1)
        snr = snr / (1.0 - snr)
        if self.cfg.loss_weighting == "none":
            w = torch.ones_like(snr)
        else:
            g = float(self.cfg.snr_gamma)
            clipped = snr.clamp(max=g)  # min(SNR, gamma)
            if self.prediction_type == "epsilon":
                w = (g / snr).clamp(max=1.0)  # stable as SNR -> 0 (no 0/0)
            elif self.prediction_type == "v_prediction":
                w = clipped / (snr + 1.0)
            else:
                w = clipped
        t = torch.as_tensor(t)
        return w if t.device.type == "mps" else w.to(t.device)

    def loss(self, pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample weighted MSE (B,) in float32: w(t) * mean over pixels of (pred - target)^2."""
        target = self.target(x0.float(), eps.float(), t)
        mse = (pred.float() - target).pow(2).flatten(1).mean(dim=1)
        return mse * self.loss_weight(t).to(device=mse.device, dtype=mse.dtype)

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """t ~ Uniform{0, ..., T-1}, long (n,) on the generator's device (Ho et al. 2020, algorithm 1)."""
        device = generator.device if generator is not None else torch.device("cpu")
        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator, device=device)
