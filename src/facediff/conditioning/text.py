"""Text conditions: a CLIP tokenizer built from the training captions, and prompts -> token embeddings.

The tokenizer is CLIP's (byte-level BPE with ``</w>`` word ends, lower-cased, 77 tokens padded with
``<|endoftext|>``; Radford et al. 2021), but its merges are learned from the captions with the ``tokenizers``
library's BPE trainer (Sennrich et al. 2016) using CLIP's own normalizer and pre-tokenizer, so every caption
word is one token while any other text still tokenizes (into bytes). It is a plain ``transformers.CLIPTokenizer``,
saved with ``vocab.json`` / ``merges.txt`` beside ``tokenizer.json``, so diffusers' ``StableDiffusionPipeline``
(and older transformers) load it.

``PromptEncoder`` is what the conditioner calls: prompts -> the (B, L, D) last hidden states of the text
encoder, exactly as ``StableDiffusionPipeline.encode_prompt`` computes them (padding to max_length, no
attention mask), so a prompt gives the same condition here and in plain diffusers.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from facediff.conditioning.kinds import ConditionKind, Grid
from facediff.errors import FacediffError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_tokenizer(captions: Iterable[str], *, vocab_size: int = 1000, max_length: int = 77):
    """A ``CLIPTokenizer`` whose BPE merges are learned from ``captions`` (at most ``vocab_size`` tokens:
    the 2 x 256 byte symbols, the merges, BOS and EOS)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    ref = CLIPTokenizer()  # an empty CLIP tokenizer: its normalizer and pre-tokenizer are CLIP's
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    bpe.normalizer = ref.backend_tokenizer.normalizer
    bpe.pre_tokenizer = ref.backend_tokenizer.pre_tokenizer
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    n_merges = max(0, vocab_size - 2 * len(alphabet) - 2)
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + n_merges, end_of_word_suffix="</w>",
                                  initial_alphabet=alphabet, min_frequency=2, show_progress=False)
    bpe.train_from_iterator(captions, trainer)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
              for m in json.loads(bpe.to_str())["model"]["merges"]]
    vocab: dict[str, int] = {}
    for symbol in alphabet:  # CLIP's layout: bytes, bytes + </w>, merges in rank order, then BOS and EOS
        vocab[symbol] = len(vocab)
    for symbol in alphabet:
        vocab[symbol + "</w>"] = len(vocab)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def save_tokenizer(tokenizer, folder: str | Path) -> Path:
    """``save_pretrained`` plus, for a CLIP tokenizer, ``vocab.json`` / ``merges.txt`` (read by slow tokenizers)."""
    folder = Path(folder)
    tokenizer.save_pretrained(str(folder))
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model.get("type") != "BPE":  # e.g. a pretrained encoder's WordPiece tokenizer: tokenizer.json is all
        return folder
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """(B, L) token ids, padded to the tokenizer's max length and truncated (as StableDiffusionPipeline)."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


class PromptEncoder:
    """prompts -> (B, L, D) token embeddings tau(y) of a text encoder (the null prompt is "")."""

    def __init__(self, tokenizer, text_encoder: nn.Module):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder

    @property
    def width(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        if any(not isinstance(p, str) for p in prompts):
            raise FacediffError(f"prompts must be strings; got {[type(p).__name__ for p in prompts][:3]}")
        from facediff.models.text import encode_tokens

        device = next(self.text_encoder.parameters()).device
        ids = tokenize(self.tokenizer, prompts).to(device)
        return encode_tokens(self.text_encoder, ids, self.tokenizer.pad_token_id).float()


# ------------------------------------------------------------------------------------------------ the kind


class TextKind(ConditionKind):
    """A prompt -> token embeddings on the sequence route (null: the empty prompt, or a negative prompt)."""

    name = "text"
    route = "sequence"
    user_help = "a prompt, e.g. 'a smiling anime girl with purple hair'"
    null_label = "the empty prompt"
    absent = ("this model does not take a prompt; use a text-to-face model (kind t2i, or a Stable Diffusion "
              "folder) or give attributes")

    def __init__(self, prompt_encoder: "PromptEncoder"):
        self.prompt_encoder = prompt_encoder

    @classmethod
    def from_description(cls, description: dict, grid: Grid, **model) -> "TextKind":
        if model.get("prompt_encoder") is None:
            raise FacediffError("a text condition needs the model's tokenizer and text encoder")
        return cls(model["prompt_encoder"])

    @property
    def width(self) -> int:
        return self.prompt_encoder.width

    def parse(self, value, where: str = ""):
        if value is None or isinstance(value, str):
            return value
        raise FacediffError(f"{where or '--prompt'} {value!r}: give a text")

    def encode(self, values, grid: Grid) -> torch.Tensor:
        return self.prompt_encoder([v or "" for v in values])

    def null(self, n: int, grid: Grid, negative=None) -> torch.Tensor:
        rows = list(negative) if negative is not None else [None] * n
        return self.prompt_encoder([v or "" for v in rows])

    def ui_control(self) -> dict:
        return {"control": "prompt", "help": self.user_help}  # and a negative prompt (``null(negative=...)``)

    def dataset_values(self, dataset, rows, *, field: str = "caption", **options) -> list[str]:
        return [str(dataset.labels[int(r)].get(field) or "") for r in rows]
