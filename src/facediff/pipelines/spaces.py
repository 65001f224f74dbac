"""Where a diffusion model runs: pixels (the identity encoder) or an autoencoder's latent space.

The same object serves training (``encode``: images -> x_0 of the diffusion) and sampling (``decode``), the
way EDM2 passes an ``encoder`` to its one training loop. Latents are scaled, z = s * E(x), with s = 1/std(z)
over the training latents (Rombach et al. 2022, sec. 4.3.2), stored as the VAE config's ``scaling_factor``
(diffusers' convention).
"""
from __future__ import annotations

import torch
from torch import nn

from facediff.models.autoencoder import decode, encode, latent_channels, vae_downsample


class PixelSpace:
    """x_0 = the image in [-1, 1]."""

    downsample = 1  # latent factor f

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def channels(self, image_channels: int = 3) -> int:
        return image_channels


class LatentSpace:
    """x_0 = s * E(x) of a frozen VQ or KL autoencoder; decode snaps VQ latents to the codebook."""

    def __init__(self, vae: nn.Module, scaling_factor: float | None = None):
        self.vae = vae
        self.scaling_factor = float(scaling_factor if scaling_factor is not None else vae.config.scaling_factor)
        self.downsample = vae_downsample(vae)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return encode(self.vae, x, generator) * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return decode(self.vae, z / self.scaling_factor)

    def channels(self, image_channels: int = 3) -> int:
        return latent_channels(self.vae)
