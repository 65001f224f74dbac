"""Text-to-face training parts for the one diffusion task: captions -> token ids, the new text model (kind t2i)
and a Stable-Diffusion-format base with LoRA adapters or full fine-tuning (kind lora).

Both kinds train f(z_t, t, tau(y)) on latents z = s E(x) with the loss of ``DiffusionTask``; they differ in
where the U-Net, text encoder tau, VAE and tokenizer come from:
* t2i: a tokenizer learned from the training captions, a CLIP text encoder and a cross-attention U-Net built
  from [text] and [model], on a facediff autoencoder ([latent] autoencoder), all trained from scratch
  (the text encoder jointly unless [text] train_encoder = false);
* lora: every component loaded from [lora] base (any SD 1.x / 2.x folder or hub id, ours included) and
  frozen; LoRA adapters (Hu et al. 2021) on the U-Net's [lora] targets (+ the text encoder's attention when
  text_encoder_rank > 0), or every U-Net weight with [lora] full. The noise schedule, prediction type,
  resolution, latent channels and scaling factor are read from the base's configs, never assumed.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facediff.conditioning.text import build_tokenizer, save_tokenizer, tokenize
from facediff.config import RunConfig
from facediff.diffusion.schedules import diffusion_config_from_scheduler
from facediff.errors import FacediffError
from facediff.models.text import (
    TextConditionedUNet, build_text_encoder, load_pretrained_encoder, load_pretrained_tokenizer)
from facediff.models.unet import build_unet


CACHE_BYTES = 4e9  # largest cache of encoded captions kept in memory (fp32 states of a frozen text encoder)


class Captions:
    """The caption of every training image as token ids; kohya's shuffle_caption / keep_tokens per step, or
    ([text] caption_mode = "free") a free-phrased caption drawn from the image's labels per step."""

    def __init__(self, captions: list[str], tokenizer, cfg: RunConfig, labels: list[dict] | None = None):
        if not any(captions):
            raise FacediffError(f"[text] caption_field = {cfg.text.caption_field!r}: no image of the data set has a "
                                "caption; prepare it with captions (labels.jsonl 'caption', metadata.jsonl 'text' or "
                                "IMAGE.txt sidecars)")
        self.captions, self.tokenizer, self.text_cfg = captions, tokenizer, cfg.text
        self.labels = labels if cfg.text.caption_mode == "free" else None
        fixed = not (cfg.text.shuffle_caption or self.labels is not None)
        self.ids = tokenize(tokenizer, captions) if fixed else None  # (N, L), tokenized once
        self.null_ids = tokenize(tokenizer, [""])[0]  # the empty prompt: the classifier-free-guidance null
        self.states = self.null_state = None  # encode_all: (N, L, D) and (L, D) states of a frozen encoder

    @torch.no_grad()
    def encode_all(self, text_encoder: nn.Module, max_bytes: float = CACHE_BYTES, chunk: int = 64,
                   on_chunk=None) -> bool:
        """Encode every caption once (a FROZEN encoder and fixed captions: the same tau(y) every epoch), in
        fixed chunks so that a resumed run gets the same states; False (nothing cached) when the captions are
        shuffled per step, the encoder trains, or the states would exceed ``max_bytes``. Saves the encoder's
        forward at every step: for all-MiniLM-L6-v2 (22.7M parameters, 72 tokens) that forward costs about
        as much as the U-Net's training step here."""
        from facediff.models.text import encode_tokens

        if self.ids is None or any(p.requires_grad for p in text_encoder.parameters()):
            return False
        n, length = self.ids.shape
        if n * length * int(text_encoder.config.hidden_size) * 4 > max_bytes:
            return False
        pad = self.tokenizer.pad_token_id
        device = next(text_encoder.parameters()).device
        states = []
        for i in range(0, n, chunk):
            states.append(encode_tokens(text_encoder, self.ids[i:i + chunk].to(device), pad).float().cpu())
            if on_chunk is not None:
                on_chunk(min(n, i + chunk), n)
        self.states = torch.cat(states)
        self.null_state = encode_tokens(text_encoder, self.null_ids[None].to(device), pad).float().cpu()[0]
        return True

    def hidden_states(self, idx: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """(B, L, D) cached tau(y) of images ``idx``; rows with ``drop`` get the empty prompt's."""
        return torch.where(drop[:, None, None], self.null_state[None], self.states[idx])

    def batch(self, idx: torch.Tensor, drop: torch.Tensor, seed: int, step: int) -> torch.Tensor:
        """(B, L) token ids of images ``idx`` at optimizer step ``step``; rows with ``drop`` get the empty prompt.
        A shuffled caption depends on (seed, step, image) only, not on the batch layout."""
        if self.ids is not None:
            ids = self.ids[idx]
        elif self.labels is not None:
            from facediff.data.free_text import free_caption

            loose = self.text_cfg.loose_words
            ids = tokenize(self.tokenizer, [free_caption(self.labels[int(i)], np.random.default_rng([seed, step, int(i)]),
                                                         loose) for i in idx])
        else:
            from facediff.data.captions import shuffle_caption

            texts = [shuffle_caption(self.captions[int(i)], keep_tokens=self.text_cfg.keep_tokens,
                                     rng=np.random.default_rng([seed, step, int(i)])) for i in idx]
            ids = tokenize(self.tokenizer, texts)
        return torch.where(drop[:, None], self.null_ids[None], ids)


def free_captions_sample(labels: list[dict], per_image: int = 2, max_images: int = 8192,
                         loose: float = 0.0) -> list[str]:
    """Free-phrased captions of (up to ``max_images`` of) the labels rows: what a caption_mode = "free" run's
    tokenizer learns its vocabulary from, beside the fixed captions (``loose``: [text] loose_words)."""
    from facediff.data.free_text import free_caption

    rng = np.random.default_rng(0)
    return [free_caption(row, rng, loose) for row in labels[:max_images] for _ in range(per_image)]


def tokenizer_for_run(cfg: RunConfig, captions: list[str], out: Path):
    """The run's tokenizer: learned from the captions once (or a pretrained encoder's own) and kept in
    ``out/state/tokenizer`` (a resumed run reuses it, so token ids never change under a checkpoint)."""
    from transformers import AutoTokenizer, CLIPTokenizer

    folder = out / "state" / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        if cfg.text.encoder == "clip":
            return CLIPTokenizer.from_pretrained(str(folder))
        tok = AutoTokenizer.from_pretrained(str(folder))
        tok.model_max_length = cfg.text.max_length
        return tok
    if cfg.text.encoder != "clip":
        tok = load_pretrained_tokenizer(cfg.text.encoder, cfg.text.max_length)
    else:
        tok = build_tokenizer([c for c in captions if c], vocab_size=cfg.text.vocab_size,
                              max_length=cfg.text.max_length)
    save_tokenizer(tok, folder)
    return tok


def build_text_model(cfg: RunConfig, tokenizer, latent_channels: int, latent_size: int) -> TextConditionedUNet:
    """kind t2i: a new CLIP text encoder (or the frozen pretrained one of [text] encoder) + a cross-attention
    U-Net over its width (seeded by [train] seed)."""
    if cfg.text.encoder != "clip":
        _, text_encoder = load_pretrained_encoder(cfg.text.encoder, cfg.text.max_length)  # frozen
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
    if cfg.text.encoder == "clip":
        text_encoder = build_text_encoder(cfg.text, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        text_encoder.requires_grad_(cfg.text.train_encoder)
    unet = build_unet(cfg.model, latent_size, in_channels=latent_channels, out_channels=latent_channels,
                      cross_attention_dim=int(text_encoder.config.hidden_size))
    return TextConditionedUNet(unet, text_encoder, tokenizer.pad_token_id)


def load_base(cfg: RunConfig):
    """kind lora: the base pipeline's components and ``cfg`` with [diffusion] and [data] size resolved from the
    base's scheduler, U-Net and VAE configs."""
    from facediff.pipelines.load import load_pipeline

    if not cfg.lora.base:
        raise FacediffError("[lora] base is empty: pass --base SD_DIR_OR_HUB_ID (a Stable-Diffusion-format pipeline)")
    pipe = load_pipeline(cfg.lora.base)
    if not pipe.takes_text or pipe.vae is None:
        raise FacediffError(f"--base {cfg.lora.base}: not a text-to-image latent model (it has no "
                            f"{'text encoder' if not pipe.takes_text else 'VAE'}); LoRA needs an SD-format pipeline")
    size = cfg.lora.resolution or pipe.sample_size
    if size % pipe.space.downsample:
        raise FacediffError(f"[lora] resolution = {size}: must be divisible by the base VAE's factor "
                            f"{pipe.space.downsample}")
    diffusion = diffusion_config_from_scheduler(dict(pipe.scheduler.config), cfg.diffusion)
    cfg = replace(cfg, diffusion=diffusion, data=replace(cfg.data, size=size))
    return pipe, cfg


def adapt_base(cfg: RunConfig, pipe) -> tuple[TextConditionedUNet, int]:
    """Freeze the base; LoRA on the U-Net (+ text encoder), or the whole U-Net with [lora] full. Returns the
    training module and its trainable parameter count."""
    from facediff.models.lora import TEXT_TARGETS, add_lora

    lc = cfg.lora
    unet, text_encoder = pipe.unet, pipe.text_encoder
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    torch.manual_seed(cfg.train.seed)  # identical adapter initialisation on every process
    if lc.full:
        unet.requires_grad_(True)
    else:
        add_lora(unet, rank=lc.rank, alpha=lc.alpha, targets=lc.targets)
    if lc.text_encoder_rank:
        add_lora(text_encoder, rank=lc.text_encoder_rank, alpha=lc.alpha * lc.text_encoder_rank / lc.rank,
                 targets=TEXT_TARGETS)
    if lc.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if lc.text_encoder_rank:
            enable = getattr(text_encoder, "activation_checkpointing_enable", None)  # transformers >= 5.x's name
            (enable or text_encoder.gradient_checkpointing_enable)()
    model = TextConditionedUNet(unet, text_encoder, pipe.tokenizer.pad_token_id)
    return model, sum(p.numel() for p in model.parameters() if p.requires_grad)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


LORA_CONFIG = "lora_config.json"  # beside the adapter files: the base and the adapter settings


def _base_model_version(text_encoder: nn.Module) -> str:
    """kohya's ss_base_model_version: SD 1.x has a 768-wide CLIP text encoder, SD 2.x a 1024-wide OpenCLIP."""
    width = int(text_encoder.config.hidden_size)
    return {768: "sd_v1", 1024: "sd_v2"}.get(width, f"facediff_text{width}")


def export_lora(cfg: RunConfig, pipe, out: Path) -> Path:
    """A LoRA run's export: ``pytorch_lora_weights.safetensors`` (diffusers' keys + adapter config, for
    ``pipe.load_lora_weights``), ``kohya_lora.safetensors`` (kohya sd-scripts keys + ss_* metadata, for
    kohya-compatible UIs) and ``lora_config.json`` (base, rank, alpha, targets), swapped in when complete."""
    import json

    from facediff.config import to_dict
    from facediff.fsutil import replace_folder
    from facediff.models.lora import save_kohya, save_lora
    from facediff.pipelines.facediff import TRAINING_CONFIG

    text_encoder = pipe.text_encoder if cfg.lora.text_encoder_rank else None
    with replace_folder(out, "the export") as tmp:
        save_lora(tmp, pipe.unet, text_encoder)
        save_kohya(tmp / "kohya_lora.safetensors", pipe.unet, text_encoder,
                   base_model_version=_base_model_version(pipe.text_encoder))
        lc = cfg.lora
        base = str(Path(lc.base).resolve()) if Path(lc.base).exists() else lc.base  # a folder: from anywhere
        (tmp / LORA_CONFIG).write_text(json.dumps({"base": base, "rank": lc.rank, "alpha": lc.alpha,
                                                   "targets": list(lc.targets),
                                                   "text_encoder_rank": lc.text_encoder_rank}, indent=1))
        (tmp / TRAINING_CONFIG).write_text(json.dumps(to_dict(cfg), indent=1))
    return out
