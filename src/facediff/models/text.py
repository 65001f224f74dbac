"""The text encoder tau(y) of a text-to-face model: a CLIP text transformer built from a config.

Stable Diffusion conditions its U-Net on the per-token hidden states of CLIP's text transformer (Radford et
al. 2021; Rombach et al. 2022 sec. 3.3). Pretrained CLIP weights cannot be fetched on the machines this
toolkit is built for, so a small model trains from scratch, jointly with the U-Net, on the captions; it is a
plain ``transformers.CLIPTextModel`` so ``StableDiffusionPipeline`` loads it like the real one.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from facediff.config import TextConfig
from facediff.errors import FacediffError


def build_text_encoder(cfg: TextConfig, *, vocab_size: int, bos_token_id: int, eos_token_id: int,
                       pad_token_id: int) -> CLIPTextModel:
    """A CLIP text transformer of width ``cfg.hidden_size`` over a tokenizer of ``vocab_size`` tokens."""
    if cfg.hidden_size % cfg.num_heads:
        raise FacediffError(f"[text] hidden_size = {cfg.hidden_size} must be divisible by num_heads = {cfg.num_heads}")
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=cfg.hidden_size,
                            intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
                            num_attention_heads=cfg.num_heads, max_position_embeddings=cfg.max_length,
                            bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                            hidden_act="quick_gelu", projection_dim=cfg.hidden_size)
    return CLIPTextModel(config)


class TextConditionedUNet(nn.Module):
    """U-Net + text encoder as ONE module for training, so that the loop's optimizer, EMA, gradient clipping
    and DDP wrap both: f(x_t, t, tau(y)). Sampling uses the two parts separately (the pipeline encodes the
    prompts once per call)."""

    def __init__(self, unet: nn.Module, text_encoder: nn.Module):
        super().__init__()
        self.unet, self.text_encoder = unet, text_encoder

    def forward(self, x: torch.Tensor, t: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        tokens = self.text_encoder(input_ids)[0]  # (B, L, D) last hidden states, as StableDiffusionPipeline
        return self.unet(x, t, encoder_hidden_states=tokens.to(x.dtype)).sample
