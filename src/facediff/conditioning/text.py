"""Text conditions: a CLIP tokenizer built from the training captions, and prompts -> token embeddings.

The tokenizer is CLIP's (byte-level BPE with ``</w>`` word ends, lower-cased, 77 tokens padded with
``<|endoftext|>``; Radford et al. 2021), but its merges are learned from the captions with the ``tokenizers``
library's BPE trainer (Sennrich et al. 2016) using CLIP's own normalizer and pre-tokenizer, so every caption
word is one token while any other text still tokenizes (into bytes). It is a plain ``transformers.CLIPTokenizer``,
saved with ``vocab.json`` / ``merges.txt`` beside ``tokenizer.json``, so diffusers' ``StableDiffusionPipeline``
(and older transformers) load it.

``PromptEncoder`` is what the conditioner calls: prompts -> the (B, L, D) last hidden states of the text
encoder, exactly as ``StableDiffusionPipeline.encode_prompt`` computes them (padding to max_length, no
attention mask), so a prompt gives the same condition here and in plain diffusers. For a model that sets
``whole_tokens`` / ``chunk_tokens``, a longer prompt (diffusers cuts it off at L) is encoded as AUTOMATIC1111's
web UI does: split into chunks of up to ``chunk_tokens`` at the last comma / full stop that fits, each encoded
on its own as BOS + chunk + EOS padded to L, the states concatenated (B, k L, D). Rows of different lengths are
tiled to a common one (``tile_states``).
"""
from __future__ import annotations

import functools
import json
import math
import warnings
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

    def __init__(self, tokenizer, text_encoder: nn.Module, chunk_tokens: int | None = None,
                 whole_tokens: int | None = None, negative_words_as_negation: bool = False):
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        # a negative prompt's bare presence words ("glasses", "smile") are read as the prompt's negation ("no
        # glasses"): for models trained on SynthFaces' captions, where each names one level of six
        # (sampling_defaults.json "negative_words_as_negation"; data.captions.negative_as_negation)
        self.negative_words_as_negation = bool(negative_words_as_negation)
        self._specials = list(tokenizer("").input_ids)  # what frames every text: BOS EOS (CLIP), [CLS] [SEP] (BERT)
        length = int(tokenizer.model_max_length) - len(self._specials)
        # a prompt of up to whole_tokens tokens is encoded whole (the span the model's training captions filled,
        # sampling_defaults.json "prompt_whole_tokens"), a longer one in chunks of up to chunk_tokens
        # ("prompt_chunk_tokens"; else whole_tokens). Neither given: diffusers' rule, cut at the tokenizer's length
        self.chunked = whole_tokens is not None or chunk_tokens is not None
        self.max_tokens = length
        self.whole_tokens = min(int(whole_tokens or length), length)
        self.chunk_tokens = min(int(chunk_tokens or self.whole_tokens), self.whole_tokens)

    @property
    def width(self) -> int:
        return int(self.text_encoder.config.hidden_size)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        if any(not isinstance(p, str) for p in prompts):
            raise FacediffError(f"prompts must be strings; got {[type(p).__name__ for p in prompts][:3]}")
        from facediff.models.text import encode_tokens

        tok = self.tokenizer
        device = next(self.text_encoder.parameters()).device
        content = tok(list(prompts), add_special_tokens=False).input_ids
        if not self.chunked or all(len(ids) <= self.whole_tokens for ids in content):  # diffusers' encode_prompt
            for prompt, ids in zip(prompts, content):
                if len(ids) > self.max_tokens:
                    warnings.warn(f"prompt {prompt[:40]!r}...: {len(ids)} tokens; the model reads the first "
                                  f"{self.max_tokens} (its sampling_defaults.json can set prompt_whole_tokens to "
                                  f"read long prompts in chunks)", stacklevel=2)
            return encode_tokens(self.text_encoder, tokenize(tok, prompts).to(device), tok.pad_token_id).float()
        rows = []
        for prompt, ids in zip(prompts, content):
            parts, size = [ids], self.chunk_tokens
            while len(ids) > self.whole_tokens:  # chunks of `size`, grown to the tokenizer's length if need be
                parts = self._split(ids, size)
                if len(parts) <= MAX_CHUNKS or size >= self.max_tokens:
                    break
                size = min(size + 8, self.max_tokens)
            if len(parts) > MAX_CHUNKS:  # diffusers cuts at L tokens with a warning; we at MAX_CHUNKS chunks
                kept = sum(len(c) for c in parts[:MAX_CHUNKS])
                warnings.warn(f"prompt {prompt[:40]!r}...: {len(ids)} tokens; only the first {kept} are read "
                              f"({MAX_CHUNKS} chunks of up to {self.max_tokens})", stacklevel=2)
                parts = parts[:MAX_CHUNKS]
            ids_k = [self._specials[:1] + c + self._specials[1:] for c in parts]  # BOS chunk EOS, like a prompt
            ids_k = [c + [tok.pad_token_id] * (tok.model_max_length - len(c)) for c in ids_k]
            states = encode_tokens(self.text_encoder, torch.tensor(ids_k, device=device), tok.pad_token_id)
            rows.append(states.float().reshape(1, -1, states.shape[-1]))  # (k, L, D) -> (1, k L, D)
        return torch.cat(tile_states(rows))

    def _split(self, ids: list[int], n: int) -> list[list[int]]:
        """Chunks of at most ``n`` ids, each ending at the last break (, . ; :) of its second half
        where there is one (A1111 looks back 20 tokens for a comma), else at the last word end, else at the
        limit."""
        breaks, word_ends = _cut_points(self.tokenizer)
        out = []
        while len(ids) > n:
            cuts = ([i + 1 for i in range(n // 2, n) if ids[i] in breaks]
                    or [i + 1 for i in range(n // 2, n) if ids[i] in word_ends] or [n])
            out.append(ids[:cuts[-1]])
            ids = ids[cuts[-1]:]
        return out + [ids]


@functools.lru_cache(maxsize=8)
def _cut_points(tokenizer) -> tuple[frozenset[int], frozenset[int]]:
    """Ids of , . ; : and of word ends (``</w>``) in ``tokenizer``'s vocabulary, read once per tokenizer (the
    pipeline builds a new ``PromptEncoder`` per call)."""
    vocab = tokenizer.get_vocab()
    return (frozenset(vocab[t] for p in ",.;:" for t in (p, p + "</w>") if t in vocab),
            frozenset(i for t, i in vocab.items() if t.endswith("</w>")))


MAX_CHUNKS = 4  # most chunks of a prompt: rows are tiled to the lcm of their chunk counts, at most 12


def tile_states(states: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Token states (B_i, L_i, D) tiled along the sequence to the lcm of the L_i. Exact for cross-attention:
    repeating every key and value r times leaves softmax(q K^T) V unchanged (each weight is divided by r)."""
    length = math.lcm(*(s.shape[1] for s in states))
    return [s.repeat(1, length // s.shape[1], 1) if s.shape[1] != length else s for s in states]


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

    def read_negatives(self, prompts: list[str | None], negatives: list[str | None]):
        """(prompts, negatives, notes): per image, a negative prompt's bare presence words moved into the prompt
        as their negation when the model asks for it (``PromptEncoder.negative_words_as_negation``)."""
        if not self.prompt_encoder.negative_words_as_negation:
            return prompts, negatives, []
        from facediff.data.captions import NEGATION_PHRASES, negative_as_negation

        out_p, out_n, moved = [], [], []
        for prompt, negative in zip(prompts, negatives):
            if negative:
                prompt, negative, attrs = negative_as_negation(prompt, negative)
                negative = negative or None  # nothing left: plain guidance, no third branch
                moved += [a for a in attrs if a not in moved]
            out_p.append(prompt)
            out_n.append(negative)
        notes = [f"negative prompt: {', '.join(repr(NEGATION_PHRASES[a]) for a in moved)} added to the prompt "
                 "instead (this model's bare 'glasses', 'smile', 'bangs', 'beard' each name one level)"] if moved else []
        return out_p, out_n, notes

    def ui_control(self) -> dict:
        return {"control": "prompt", "help": self.user_help}  # and a negative prompt (``null(negative=...)``)

    def dataset_values(self, dataset, rows, *, field: str = "caption", **options) -> list[str]:
        return [str(dataset.labels[int(r)].get(field) or "") for r in rows]
