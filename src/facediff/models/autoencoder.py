"""Autoencoders for latent diffusion: VQ (VQ-VAE / VQGAN) and KL, built from diffusers blocks.

* **VQ** — ``diffusers.VQModel`` (van den Oord et al. 2017, "Neural discrete representation learning";
  Esser et al. 2021, "Taming transformers"): encoder E, codebook {e_k}, k = 1..K, decoder G.
* **KL** — ``diffusers.AutoencoderKL`` (Rombach et al. 2022, "High-resolution image synthesis with latent
  diffusion models", Sec. 3 and App. G): E outputs a diagonal Gaussian q(z|x), regularised by a small KL.

Both are plain diffusers classes, so an exported ``vae/`` folder loads with ``VQModel.from_pretrained`` /
``AutoencoderKL.from_pretrained``. The spatial downsampling factor is f = 2 ** (levels - 1).

Latent space. For VQ, :func:`encode` returns the **continuous pre-quantisation** latent z_e = E(x) (after
``quant_conv``) and :func:`decode` quantises it (nearest code) before G — the convention of Rombach et al.
2022 (Sec. 3: "the quantization layer is absorbed by the decoder") and of diffusers' ``VQModel.decode``, so
a latent diffusion model diffuses in a continuous space and its samples are snapped to the codebook when
decoded. For KL, :func:`encode` returns the posterior mean (or a sample given a generator).

Also here: codebook statistics (usage, perplexity), dead-code restart, and the PatchGAN discriminator
(Isola et al. 2017, "Image-to-image translation with conditional adversarial networks", the 70x70
``NLayerDiscriminator`` that Esser et al. 2021 use).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, VQModel
from torch import nn

from facediff.config import AutoencoderConfig
from facediff.errors import FacediffError

Autoencoder = VQModel | AutoencoderKL


def downsample_factor(cfg: AutoencoderConfig) -> int:
    """f = 2 ** (levels - 1): each level but the last halves H and W (DownEncoderBlock2D)."""
    return 2 ** (len(cfg.block_out_channels) - 1)


def check_config(cfg: AutoencoderConfig, sample_size: int) -> None:
    """Raise a one-line FacediffError for an [autoencoder] section that cannot build or train."""
    if not cfg.block_out_channels:
        raise FacediffError("[autoencoder] block_out_channels must list at least one level")
    bad = [c for c in cfg.block_out_channels if c % cfg.norm_num_groups]
    if bad:
        raise FacediffError(f"[autoencoder] norm_num_groups = {cfg.norm_num_groups} does not divide channels "
                            f"{bad}; pick a divisor of every block_out_channels entry")
    f = downsample_factor(cfg)
    if sample_size % f:
        raise FacediffError(f"[data] size = {sample_size} is not divisible by the downsampling factor f = {f} "
                            f"({len(cfg.block_out_channels)} levels); change [data] size or the levels")
    if cfg.kind == "vq" and (cfg.num_vq_embeddings < 2 or cfg.vq_embed_dim < 1):
        raise FacediffError("[autoencoder] num_vq_embeddings must be >= 2 and vq_embed_dim >= 1")
    if cfg.latent_channels < 1:
        raise FacediffError("[autoencoder] latent_channels must be >= 1")


def build_autoencoder(cfg: AutoencoderConfig, sample_size: int) -> Autoencoder:
    """A VQModel (kind vq) or AutoencoderKL (kind kl) with len(block_out_channels) levels."""
    check_config(cfg, sample_size)
    levels = len(cfg.block_out_channels)
    common = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                  up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(cfg.block_out_channels),
                  layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                  norm_num_groups=cfg.norm_num_groups, sample_size=sample_size)
    if cfg.kind == "vq":
        ae: Autoencoder = VQModel(**common, num_vq_embeddings=cfg.num_vq_embeddings, vq_embed_dim=cfg.vq_embed_dim)
        # Codebook init as van den Oord's reference code: U(-1/K, 1/K) (diffusers' default); dead-code
        # restart then moves unused codes onto encoder outputs.
    else:
        ae = AutoencoderKL(**common)
    return ae


def is_vq(ae: nn.Module) -> bool:
    return isinstance(ae, VQModel)


def latent_channels(ae: Autoencoder) -> int:
    """Channels of the latent z that :func:`encode` returns (vq_embed_dim for VQ, latent_channels for KL)."""
    if is_vq(ae):
        return int(ae.config.vq_embed_dim or ae.config.latent_channels)
    return int(ae.config.latent_channels)


def codebook(ae: VQModel) -> torch.Tensor:
    """The codebook {e_k} as a (K, D) parameter."""
    return ae.quantize.embedding.weight


def encode(ae: Autoencoder, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x in [-1, 1] (B, 3, H, W) -> z (B, C, H/f, W/f).

    VQ: the continuous pre-quantisation latent z_e(x) (quantised later, in :func:`decode`).
    KL: the posterior mean, or a sample z ~ q(z|x) when ``generator`` is given.
    """
    if is_vq(ae):
        return ae.encode(x).latents
    dist = ae.encode(x).latent_dist
    return dist.sample(generator) if generator is not None else dist.mean


def quantize(ae: VQModel, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest-code quantisation (van den Oord 2017, eq. 1-2): returns (z_q, e, indices).

    z_q = z + sg[e - z] carries the straight-through gradient to E; e = e_k(z) the selected codes (with
    gradient to the codebook); indices (B, H, W).
    """
    b, c, h, w = z.shape
    emb = codebook(ae)
    with torch.no_grad(), torch.autocast(z.device.type, enabled=False):  # distances in fp32 under mixed precision
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, c).float()
        e32 = emb.detach().float()
        # ||z - e_k||^2 = ||z||^2 - 2 z.e_k + ||e_k||^2, argmin over k
        idx = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e32.t() + e32.pow(2).sum(1)[None]).argmin(1)
    e = F.embedding(idx, emb).view(b, h, w, c).permute(0, 3, 1, 2).to(z.dtype)
    z_q = z + (e - z).detach()
    return z_q, e, idx.view(b, h, w)


def vq_loss(z: torch.Tensor, e: torch.Tensor, beta: float) -> torch.Tensor:
    """||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 (van den Oord 2017, eq. 3: codebook + commitment)."""
    return F.mse_loss(e, z.detach()) + beta * F.mse_loss(z, e.detach())


def decode(ae: Autoencoder, z: torch.Tensor, *, quantize_latents: bool = True) -> torch.Tensor:
    """z -> x_hat in about [-1, 1]. VQ latents are snapped to the nearest code first (unless told not to)."""
    if is_vq(ae):
        return ae.decode(z, force_not_quantize=not quantize_latents).sample
    return ae.decode(z).sample


def reconstruct(ae: Autoencoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Deterministic reconstruction decode(encode(x)) and the VQ code indices (None for KL)."""
    z = encode(ae, x)
    if is_vq(ae):
        z_q, _, idx = quantize(ae, z)
        return decode(ae, z_q, quantize_latents=False), idx
    return decode(ae, z), None


# ------------------------------------------------------------------------------------ codebook statistics
def codebook_stats(counts: torch.Tensor) -> dict[str, float]:
    """From per-code counts n_k: usage = |{k: n_k > 0}| / K and perplexity = exp(-sum_k p_k log p_k).

    Perplexity is the effective number of codes in use: K for a uniform assignment, 1 for a single code.
    """
    counts = counts.double().flatten()
    total = counts.sum()
    if total <= 0:
        return {"codebook_usage": 0.0, "perplexity": 0.0}
    p = counts / total
    ent = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).double().mean()), "perplexity": float(math.exp(float(ent)))}


def code_counts(indices: torch.Tensor, k: int) -> torch.Tensor:
    """Histogram (K,) of code indices."""
    return torch.bincount(indices.flatten().long(), minlength=k).to(torch.float64)


class CodeUsage(nn.Module):
    """Code-use counts since the last dead-code restart (a buffer, so it is checkpointed with the run)."""

    def __init__(self, k: int):
        super().__init__()
        self.register_buffer("counts", torch.zeros(k, dtype=torch.float64))

    def update(self, indices: torch.Tensor) -> None:
        self.counts += code_counts(indices.detach().cpu(), len(self.counts)).to(self.counts.device)

    def reset(self) -> None:
        self.counts.zero_()


@torch.no_grad()
def restart_dead_codes(ae: VQModel, dead: torch.Tensor, z: torch.Tensor, generator: torch.Generator) -> int:
    """Re-initialise dead codes to random encoder outputs of the batch (Dhariwal et al. 2020, "Jukebox",
    Sec. 3.3 "random restarts"; Zeghidour et al. 2021, "SoundStream"). ``dead``: bool (K,); ``z``: (B, D, h, w)
    pre-quantisation latents. Returns how many codes were revived."""
    n = int(dead.sum())
    if n == 0:
        return 0
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float().cpu()
    pick = torch.randint(0, len(flat), (n,), generator=generator)
    new = flat[pick] + 1e-3 * flat.std() * torch.randn(n, flat.shape[1], generator=generator)
    emb = codebook(ae)
    emb.data[dead.to(emb.device)] = new.to(emb.device, emb.dtype)
    return n


# ------------------------------------------------------------------------------------ PatchGAN
class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017, App. 6.1.2; as in Esser et al. 2021): C64-C128-C256-C512
    style 4x4 convolutions, stride 2 then 1, BatchNorm, LeakyReLU(0.2); outputs one logit per patch.

    ``n_layers`` stride-2 stages (3 gives the 70x70 receptive field); :func:`disc_layers` picks it so that
    small images still give a >= 2x2 logit map.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for i in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # init of Isola et al.: N(0, 0.02) convs, N(1, 0.02) BatchNorm scales
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def disc_layers(size: int) -> int:
    """Stride-2 stages for ``size`` px inputs: 3 at >= 64 px (70x70 PatchGAN), fewer for tiny images."""
    return 3 if size >= 64 else 2 if size >= 16 else 1


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D = 1/2 (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))]) (hinge GAN, Lim & Ye 2017; Esser 2021)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """L_GAN for the generator: -E[D(x_hat)]."""
    return -logits_fake.mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        delta: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """Esser et al. 2021, eq. 7: lambda = ||grad_{G_L}[L_rec]|| / (||grad_{G_L}[L_GAN]|| + delta),
    G_L the decoder's last layer; detached, clamped to [0, max_weight]."""
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    lam = g_rec.norm() / (g_gan.norm() + delta)
    return lam.clamp(0.0, max_weight).detach()


def last_layer(ae: Autoencoder) -> torch.Tensor:
    """G_L of eq. 7: the weight of the decoder's output convolution."""
    return ae.decoder.conv_out.weight


def vae_downsample(ae: Autoencoder) -> int:
    """f of a built or loaded autoencoder: 2 ** (levels - 1)."""
    return 2 ** (len(ae.config.block_out_channels) - 1)


def load_vae(folder: str | Path, device: str | torch.device = "cpu") -> Autoencoder:
    """A diffusers ``vae/`` folder (VQModel or AutoencoderKL, by its config's ``_class_name``), safetensors only."""
    import json

    folder = Path(folder)
    cfg_file = folder / "config.json"
    try:
        name = json.loads(cfg_file.read_text()).get("_class_name")
    except (OSError, ValueError):
        raise FacediffError(f"{cfg_file}: missing or not valid JSON; re-export the autoencoder") from None
    classes = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}
    if name not in classes:
        raise FacediffError(f"{cfg_file}: _class_name = {name!r} is not an autoencoder (VQModel or AutoencoderKL)")
    if not (folder / "diffusion_pytorch_model.safetensors").is_file():
        raise FacediffError(f"{folder} has no diffusion_pytorch_model.safetensors (facediff loads safetensors only)")
    return classes[name].from_pretrained(folder, use_safetensors=True).to(device).eval()
