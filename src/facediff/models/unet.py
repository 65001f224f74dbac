"""The pixel/latent denoiser: a U-Net assembled from diffusers blocks.

Ho et al. 2020 U-Net (residual blocks + self-attention at chosen resolutions), sinusoidal timestep embedding,
AdaGN conditioning (Dhariwal & Nichol 2021: GroupNorm(h) * (1 + scale) + shift, diffusers'
``resnet_time_scale_shift="scale_shift"``).

* Unconditional models are diffusers ``UNet2DModel`` so plain ``DDPMPipeline`` loads the export.
* Text models (kind t2i) are ``UNet2DConditionModel`` with cross-attention transformer blocks (Rombach et al.
  2022, eq. 3: Attention(Q = W_Q phi(z_t), K = W_K tau(y), V = W_V tau(y)), tau = the text encoder), exactly
  the Stable Diffusion U-Net, so the export is a plain ``StableDiffusionPipeline`` folder.
* Attribute-conditional models are diffusers ``UNet2DConditionModel`` with ``class_embed_type="projection"``:
  the concatenated one-hot attribute vector c (null condition = zeros) goes through an MLP and is added to
  the timestep embedding, which then drives every AdaGN layer. No cross-attention blocks are used, so
  ``encoder_hidden_states`` is None. Plain diffusers loads the export with ``UNet2DConditionModel.from_pretrained``.

This module holds networks only: it never imports the noise process (facediff.diffusion).
"""
from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from torch import nn

from facediff.config import ModelConfig, cond_dim
from facediff.errors import FacediffError


def _block_types(cfg: ModelConfig, sample_size: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Down/up block names: attention at the levels whose feature-map side is in attention_resolutions
    (self-attention; for text models a transformer block with self- and cross-attention, as in Stable Diffusion)."""
    attn = "CrossAttnDownBlock2D" if cfg.conditioning == "text" else "AttnDownBlock2D"
    down, res = [], sample_size
    for level in range(len(cfg.block_out_channels)):
        down.append(attn if res in cfg.attention_resolutions else "DownBlock2D")
        if level < len(cfg.block_out_channels) - 1:
            res //= 2
    up = [name.replace("Down", "Up") for name in reversed(down)]
    return tuple(down), tuple(up)


def build_unet(cfg: ModelConfig, sample_size: int, *, in_channels: int | None = None,
               out_channels: int | None = None, cross_attention_dim: int | None = None,
               class_dim: int | None = None) -> nn.Module:
    """Build the diffusers U-Net described by ``cfg`` for ``sample_size`` x ``sample_size`` inputs.

    ``in_channels`` / ``out_channels`` override cfg.in_channels (latent models: latent channels, plus the
    concatenated sketch channel on the input side); ``cross_attention_dim`` is the text encoder's width D
    (text models only); ``class_dim`` the width of the global condition vector (None: the attribute one-hots
    of ``cfg``; 0: no global condition).
    """
    levels = len(cfg.block_out_channels)
    if sample_size % (2 ** (levels - 1)) != 0:
        raise FacediffError(f"[model] block_out_channels has {levels} levels, so the image side must be divisible "
                            f"by {2 ** (levels - 1)}; got {sample_size}")
    if any(c % cfg.norm_num_groups for c in cfg.block_out_channels):
        raise FacediffError(f"[model] every entry of block_out_channels {list(cfg.block_out_channels)} must be "
                            f"divisible by norm_num_groups={cfg.norm_num_groups}")
    down, up = _block_types(cfg, sample_size)
    common = dict(
        sample_size=sample_size, in_channels=in_channels or cfg.in_channels,
        out_channels=out_channels or cfg.in_channels,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=down, up_block_types=up, norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=cfg.attention_head_dim, resnet_time_scale_shift="scale_shift",
    )
    if class_dim is None:
        class_dim = cond_dim(cfg) if cfg.conditioning == "attributes" else 0
    if cfg.conditioning == "none" and not class_dim:
        return UNet2DModel(**common, dropout=cfg.dropout)
    if cfg.conditioning == "text":  # Stable Diffusion's layout: cross-attention on (B, L, D) token embeddings
        if not cross_attention_dim:
            raise FacediffError("[model] conditioning = 'text' needs the text encoder's width ([text] hidden_size)")
        if not any(name.startswith("CrossAttn") for name in down):
            raise FacediffError(f"[model] attention_resolutions = {list(cfg.attention_resolutions)}: a text model "
                                f"needs cross-attention at one level at least; feature-map sides are "
                                f"{[sample_size // 2 ** i for i in range(levels)]}")
        return UNet2DConditionModel(**common, mid_block_type="UNetMidBlock2DCrossAttn",
                                    cross_attention_dim=cross_attention_dim, dropout=cfg.dropout)
    return UNet2DConditionModel(
        **common, mid_block_type="UNetMidBlock2D", class_embed_type="projection",
        projection_class_embeddings_input_dim=class_dim, cross_attention_dim=cfg.block_out_channels[-1],
        dropout=cfg.dropout,
    )


def unet_call(net: nn.Module, x: torch.Tensor, t: torch.Tensor, *, class_labels: torch.Tensor | None = None,
              encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask: torch.Tensor | None = None,
              concat: torch.Tensor | None = None) -> torch.Tensor:
    """f(x_t, t, **condition): the prediction (eps / v / x0, as trained) for noisy input x at timesteps t.

    The keywords are the fields of ``facediff.conditioning.Condition``: ``class_labels`` (B, A*L) attribute
    one-hots drive AdaGN through the class embedding (None = the null condition, zeros);
    ``encoder_hidden_states`` (B, L, D) feed cross-attention; ``concat`` (B, C, h, w) maps are concatenated
    to x_t (latent-diffusion "concat" conditioning, Rombach et al. 2022) and must be present for a model
    trained with them (zeros = the null sketch).
    """
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if concat is not None:
        x = torch.cat([x, concat.to(x.dtype)], dim=1)
    inner = net.module if hasattr(net, "module") else net  # unwrap DDP
    if isinstance(inner, UNet2DConditionModel):
        if class_labels is None and inner.config.class_embed_type is not None:
            class_labels = torch.zeros(x.shape[0], inner.config.projection_class_embeddings_input_dim,
                                       device=x.device, dtype=x.dtype)
        return net(x, t, encoder_hidden_states=encoder_hidden_states, class_labels=None if class_labels is None
                   else class_labels.to(x.dtype), encoder_attention_mask=encoder_attention_mask).sample
    return net(x, t).sample
