"""Tiny, deterministic Stable-Diffusion pipelines built in code (no downloads), for LoRA and text-to-face tests.

``build_tiny_sd(geometry, tmp_path)`` returns a ``diffusers.StableDiffusionPipeline`` whose parts have 2k-52k
parameters each, so a 2-step call takes ~0.1 s on one CPU thread. The two geometries differ in
everything that LoRA code could wrongly hard-code:

* "f8-v":   8x VAE (4 blocks), 32 px, 4 latent channels, scaling 0.18215, cross-attention width 16,
  U-Net (8, 16) CrossAttnDown + Down, 1 layer per block, v-prediction, DDIM.
* "f4-eps": 4x VAE (3 blocks), 16 px, 3 latent channels, scaling 0.5, cross-attention width 8,
  U-Net (4, 8) Down + CrossAttnDown, 2 layers per block, epsilon prediction, DDPM.
"""
from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

GEOMETRIES = ("f8-v", "f4-eps")
MAX_TOKENS = 16


@dataclass(frozen=True)
class _Geometry:
    vae_blocks: tuple[int, ...]   # len - 1 downsamplings: 4 blocks = 8x, 3 blocks = 4x
    vae_groups: int
    image_size: int
    latent_channels: int
    scaling_factor: float
    cross_attention_dim: int
    unet_blocks: tuple[int, ...]
    unet_groups: int
    head_dim: int
    layers_per_block: int
    down: tuple[str, ...]
    up: tuple[str, ...]
    prediction_type: str
    scheduler: type


_GEOMETRY = {
    "f8-v": _Geometry((4, 4, 8, 8), 2, 32, 4, 0.18215, 16, (8, 16), 4, 4, 1,
                      ("CrossAttnDownBlock2D", "DownBlock2D"), ("UpBlock2D", "CrossAttnUpBlock2D"),
                      "v_prediction", DDIMScheduler),
    "f4-eps": _Geometry((4, 8, 8), 4, 16, 3, 0.5, 8, (4, 8), 2, 2, 2,
                        ("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D"),
                        "epsilon", DDPMScheduler),
}


def image_size(geometry: str) -> int:
    """Pixel side of the images ``geometry``'s pipeline generates."""
    return _GEOMETRY[geometry].image_size


def write_tokenizer(directory: Path) -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer (vocab.json + empty merges.txt) that tokenizes any lowercase prompt."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=MAX_TOKENS)


def build_text_encoder(hidden_size: int, tokenizer: CLIPTokenizer, *, seed: int = 2) -> CLIPTextModel:
    """A 2-layer CLIP text encoder whose width is the U-Net's cross_attention_dim."""
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(hidden_size=hidden_size, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(tokenizer), max_position_embeddings=MAX_TOKENS,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(cfg).eval()


def build_unet(geometry: str, *, seed: int = 0, **overrides) -> UNet2DConditionModel:
    """The geometry's latent U-Net (fresh weights, same for the same seed); ``overrides`` are extra config keys."""
    g = _GEOMETRY[geometry]
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=g.image_size // 2 ** (len(g.vae_blocks) - 1), in_channels=g.latent_channels,
        out_channels=g.latent_channels, block_out_channels=g.unet_blocks, layers_per_block=g.layers_per_block,
        cross_attention_dim=g.cross_attention_dim, norm_num_groups=g.unet_groups, attention_head_dim=g.head_dim,
        down_block_types=g.down, up_block_types=g.up, **overrides,
    ).eval()


def build_tiny_sd(geometry: str, tmp_path: Path) -> StableDiffusionPipeline:
    """A deterministic tiny ``StableDiffusionPipeline`` of ``geometry`` ("f8-v" or "f4-eps").

    The tokenizer files are written under ``tmp_path / "tokenizer"``; two builds give identical weights.
    """
    if geometry not in _GEOMETRY:
        raise ValueError(f"unknown geometry {geometry!r}; choose one of {GEOMETRIES}")
    g = _GEOMETRY[geometry]
    tokenizer = write_tokenizer(Path(tmp_path) / "tokenizer")
    torch.manual_seed(1)
    n = len(g.vae_blocks)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=g.latent_channels, block_out_channels=g.vae_blocks,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1, norm_num_groups=g.vae_groups, sample_size=g.image_size,
        scaling_factor=g.scaling_factor,
    ).eval()
    scheduler = g.scheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                            beta_schedule="scaled_linear", prediction_type=g.prediction_type, clip_sample=False,
                            steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=build_text_encoder(g.cross_attention_dim, tokenizer), tokenizer=tokenizer,
        unet=build_unet(geometry), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: StableDiffusionPipeline, prompt: str = "a smiling face", *, seed: int = 0):
    """Two-step ``output_type="np"`` images for ``prompt`` with a fixed generator (comparable across pipelines)."""
    size = pipe.vae.config.sample_size
    with torch.no_grad():
        return pipe(prompt, num_inference_steps=2, guidance_scale=3.0, height=size, width=size,
                    generator=torch.Generator().manual_seed(seed), output_type="np").images
