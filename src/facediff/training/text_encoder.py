"""Pretrain the text encoder tau(y) of a text-to-face model on what captions say, before the U-Net sees it.

Stable Diffusion's U-Net learns from a text encoder that already knows language (CLIP, pretrained on 400M
image-text pairs; Rombach et al. 2022 sec. 3.3). Ours cannot be downloaded here, and one trained jointly with the
U-Net from nothing learns words only through the denoising loss: slowly, and never negation, for "not smiling"
changes the pixels of only the few images that say it. SynthFaces knows the exact facts behind every caption, so
the encoder is taught them directly: a new free-phrased caption per labels row and step (``data/free_text.py``:
sentences, phrases, tag lists, partial descriptions, negation, ages as numbers, or the empty prompt), and, for
each fact, a classifier over what the caption says of it: its level / colour / length / style / gender, or
"unnamed" (class 0). A fact the caption leaves out must read as unnamed, so the states tell "a man, clean-shaven"
(beard 0) from "a man" (beard open) from "beard" alone, which is what diversity and negative prompts need.

Each classifier reads the per-token states the way the U-Net will, through one attention query over the tokens
(padding masked): the facts are where cross-attention can find them. The encoder is a plain CLIPTextModel saved
with its tokenizer (``OUT/text_encoder``), which a t2i run takes frozen with ``--set text.encoder=OUT/text_encoder``
(and which a StableDiffusionPipeline loads as it loads CLIP's). Validation: free captions of held-out rows, and
the SynthFaces held-out templates (``caption_heldout``), phrasings this training never writes.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from facediff.config import ATTRIBUTES, RunConfig, TextConfig
from facediff.data.captions import parse_caption
from facediff.data.free_text import free_caption
from facediff.data.synth import HAIR_COLOURS
from facediff.data.synth_text import HAIR_LENGTH_WORDS
from facediff.errors import FacediffError
from facediff.progress import Progress
from facediff.training.loop import Task, train_loop

UNNAMED = "unnamed"  # class 0 of every fact: the caption does not say
#: fact -> its classes after "unnamed" (the SynthFaces vocabulary of each fact).
FACTS: dict[str, tuple[str, ...]] = {
    **{a: tuple(str(level) for level in range(6)) for a in ATTRIBUTES},
    "hair_colour": tuple(dict.fromkeys(c for names in HAIR_COLOURS.values() for c in names)),
    "hair_length": tuple(HAIR_LENGTH_WORDS),
    "style": ("human", "anime"),
    "gender": ("female", "male"),
}
_FEMALE = re.compile(r"\b(?:1girl|girls?|wom[ae]n|female|lady|she|her|grandmother|grandma|mother)\b")
_MALE = re.compile(r"\b(?:1boy|boys?|m[ae]n|male|guy|he|his|grandfather|grandpa|father)\b")
EMPTY_P = 0.05  # share of training captions that are the empty prompt (every fact unnamed)


def caption_targets(text: str) -> dict[str, int]:
    """Class index per fact of what ``text`` says (0 = unnamed): the caption parser's reading, and the gender a
    subject word names (both or none: unnamed)."""
    parsed = parse_caption(text)
    said: dict[str, str | None] = {a: (str(parsed.attributes[a]) if a in parsed.attributes else None)
                                   for a in ATTRIBUTES}
    said.update(hair_colour=parsed.hair_colour, hair_length=parsed.hair_length, style=parsed.style)
    low = text.lower()
    female, male = bool(_FEMALE.search(low)), bool(_MALE.search(low))
    said["gender"] = "female" if female and not male else "male" if male and not female else None
    return {f: (classes.index(said[f]) + 1 if said[f] in classes else 0) for f, classes in FACTS.items()}


class CaptionProbe(nn.Module):
    """The text encoder and, per fact, one attention query over its token states + a linear classifier."""

    def __init__(self, encoder: nn.Module, pad_token_id: int):
        super().__init__()
        width = int(encoder.config.hidden_size)
        self.encoder, self.pad_token_id = encoder, pad_token_id
        self.queries = nn.Parameter(torch.randn(len(FACTS), width) / width ** 0.5)
        self.heads = nn.ModuleDict({f: nn.Linear(width, len(c) + 1) for f, c in FACTS.items()})

    def forward(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        from facediff.models.text import encode_tokens

        states = encode_tokens(self.encoder, input_ids, self.pad_token_id)  # (B, L, D), as the U-Net reads them
        scores = torch.einsum("bld,fd->bfl", states, self.queries) / states.shape[-1] ** 0.5
        pad = (input_ids == self.pad_token_id)
        pad[:, 0] = False  # BOS is never padding (and the empty prompt keeps one token to attend to)
        pooled = torch.einsum("bfl,bld->bfd", scores.masked_fill(pad[:, None], -1e4).softmax(-1), states)
        return {f: head(pooled[:, i]) for i, (f, head) in enumerate(self.heads.items())}


def _accuracy(logits: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, float]:
    """Exact-class accuracy over the facts the captions name, and over those they leave unnamed."""
    named = torch.stack([(logits[f].argmax(-1) == y[f])[y[f] > 0].float().sum() for f in FACTS]).sum()
    n_named = sum(int((y[f] > 0).sum()) for f in FACTS)
    open_ = torch.stack([(logits[f].argmax(-1) == 0)[y[f] == 0].float().sum() for f in FACTS]).sum()
    n_open = sum(int((y[f] == 0).sum()) for f in FACTS)  # none in the held-out templates: they name every fact
    return {"named": float(named) / max(1, n_named), "unnamed": float(open_) / max(1, n_open)}


class TextEncoderTask(Task):
    """Cross-entropy of every fact's classifier on free captions drawn per row and step."""

    def __init__(self, cfg: RunConfig, out: Path, eval_every: int):
        self.cfg, self.out, self.eval_every = cfg, Path(out), eval_every
        self.name = "train text encoder"
        self.curve: list[dict[str, Any]] = []

    def build(self, acc: Accelerator, data_path: Path) -> None:
        from facediff.data.prepared import PreparedDataset
        from facediff.data.synth_text import caption_heldout
        from facediff.models.text import build_text_encoder
        from facediff.training.text import free_captions_sample, tokenizer_for_run

        labels = PreparedDataset(data_path).labels
        need = ("attributes", "gender", "style", "hair_colour", "hair_length")
        rows = [r for r in labels if all(k in r for k in need)]
        if len(rows) < 20:
            raise FacediffError(f"--data {data_path}: {len(rows)} labels rows with {', '.join(need)}; the text "
                                "encoder learns from SynthFaces labels (facediff data synth)")
        idx = np.arange(len(rows))
        self.train_rows = [rows[i] for i in idx[idx % 10 != 0]]
        val_rows = [rows[i] for i in idx[idx % 10 == 0]]
        rng = np.random.default_rng(1)
        val_texts = {"free": [free_caption(r, rng) for r in val_rows],
                     "heldout_templates": [caption_heldout(style=r["style"], gender=r["gender"],
                                                           attributes=r["attributes"], hair_colour=r["hair_colour"],
                                                           hair_length=r["hair_length"], rng=rng) for r in val_rows],
                     # the parser's other words ("a kid", "unsmiling"): read right only if [text] loose_words taught them
                     "loose_words": [free_caption(r, np.random.default_rng([2, i]), 1.0)
                                     for i, r in enumerate(val_rows)]}
        self.loose = self.cfg.text.loose_words
        vocab_text = [r.get("caption", "") for r in self.train_rows] + free_captions_sample(self.train_rows,
                                                                                            loose=self.loose)
        self.tokenizer = tokenizer_for_run(self.cfg, vocab_text, self.out)
        tc = self.cfg.text
        torch.manual_seed(self.cfg.train.seed)
        encoder = build_text_encoder(tc, vocab_size=len(self.tokenizer), bos_token_id=self.tokenizer.bos_token_id,
                                     eos_token_id=self.tokenizer.eos_token_id, pad_token_id=self.tokenizer.pad_token_id)
        self.model = CaptionProbe(encoder, self.tokenizer.pad_token_id)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.cfg.train.lr, weight_decay=0.01)
        self.device = acc.device
        # the held-out captions as (token ids, targets) chunks, tokenized and parsed once for every evaluation
        self.val = {name: [self._batch(texts[i:i + 256]) for i in range(0, len(texts), 256)]
                    for name, texts in val_texts.items()}
        self.last_eval: tuple[int, dict[str, dict[str, float]]] | None = None  # (step, evaluate()) of after_step

    def prepare(self, acc: Accelerator) -> None:
        self.raw = acc.unwrap_model(self.model)

    def _batch(self, texts: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Token ids padded to the batch's longest caption, not to max_length: the causal encoder gives every
        real token the same state either way (no token sees the padding after it), at a fraction of the cost."""
        targets = [caption_targets(t) for t in texts]
        y = {f: torch.tensor([t[f] for t in targets], device=self.device) for f in FACTS}
        ids = self.tokenizer(texts, padding="longest", max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
        return ids.to(self.device), y

    def losses(self, step: int, micro: int, rank: int, world: int):
        tc = self.cfg.train
        n = len(self.train_rows)
        start = ((step * tc.grad_accum + micro) * world + rank) * tc.batch_size
        texts = []
        for k in range(start, start + tc.batch_size):
            rng = np.random.default_rng([tc.seed, step, k])
            texts.append("" if rng.random() < EMPTY_P else free_caption(self.train_rows[int(rng.integers(n))], rng,
                                                                          self.loose))
        ids, y = self._batch(texts)
        logits = self.model(ids)
        loss = sum(F.cross_entropy(logits[f], y[f]) for f in FACTS) / len(FACTS)
        return [loss], {"named_acc": _accuracy(logits, y)["named"]}, len(texts)

    @torch.no_grad()
    def evaluate(self) -> dict[str, dict[str, float]]:
        self.raw.eval()
        out = {}
        for name, parts in self.val.items():
            logits = [self.raw(ids) for ids, _ in parts]
            cat = lambda key_rows: {f: torch.cat([r[f] for r in key_rows]) for f in FACTS}  # noqa: E731
            out[name] = _accuracy(cat(logits), cat([y for _, y in parts]))
        self.raw.train()
        return out

    def after_step(self, step: int, acc: Accelerator) -> dict[str, Any]:
        if step % self.eval_every and step != self.cfg.train.max_steps:
            return {}
        ev = self.evaluate()
        self.last_eval = (step, ev)
        self.curve.append({"step": step, **{f"{k}_{m}": v for k, r in ev.items() for m, v in r.items()}})
        return {"val_free_named": ev["free"]["named"], "val_heldout_named": ev["heldout_templates"]["named"],
                "val_loose_named": ev["loose_words"]["named"]}

    def state(self) -> dict[str, Any]:
        return {"curve": self.curve}

    def load_state(self, state: dict[str, Any]) -> None:
        self.curve = list(state.get("curve", []))

    def finish(self, step: int, ema_model: nn.Module | None) -> dict[str, Any]:
        from facediff.conditioning.text import save_tokenizer
        from facediff.pipelines.load import quiet_hf

        ev = self.last_eval[1] if self.last_eval and self.last_eval[0] == step else self.evaluate()
        folder = self.out / "text_encoder"
        encoder = self.raw.encoder.cpu()  # used without a padding mask, as SD uses CLIP: it is causal
        with quiet_hf():  # no "Writing model shards" bar after our own progress line
            encoder.save_pretrained(str(folder), safe_serialization=True)
        save_tokenizer(self.tokenizer, folder)
        metrics = {"steps": step, "batch_size": self.cfg.train.batch_size, "lr": self.cfg.train.lr,
                   "data": self.cfg.data.path, "train_rows": len(self.train_rows), "facts": list(FACTS),
                   "val": ev, "curve": self.curve}
        (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {"metrics": metrics}


def train_text_encoder(data_dir: str | Path, out_dir: str | Path, *, text: TextConfig | None = None,
                       steps: int = 3000, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                       eval_every: int = 250, time_budget_s: float | None = None, resume: bool = False,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Pretrain a CLIP text encoder (``text``: its [text] fields; default the t2i-64 preset's) on free captions
    of ``data_dir``'s SynthFaces labels, in the one training loop. Writes the run and ``out_dir/text_encoder``
    (config.json + model.safetensors + tokenizer) and ``out_dir/metrics.json``; returns the metrics."""
    from facediff.config import ConfigError, DataConfig, TrainConfig, load_config

    if eval_every < 1:
        raise FacediffError(f"train text-encoder: eval_every = {eval_every} must be at least 1")
    if not (Path(data_dir) / "manifest.json").is_file():
        raise FacediffError(f"--data {data_dir}: not a prepared data set (no manifest.json); make one with "
                            "facediff data synth")
    try:
        cfg = RunConfig(kind="text_encoder", data=DataConfig(path=str(data_dir), split=""),
                        text=text or load_config("t2i-64").text,
                        train=TrainConfig(batch_size=batch_size, max_steps=steps, lr=lr,
                                          warmup_steps=min(200, steps // 10), lr_schedule="cosine",
                                          checkpoint_every=eval_every, log_every=max(1, min(50, eval_every)),
                                          time_budget_minutes=(time_budget_s or 0.0) / 60, seed=seed,
                                          mixed_precision="no"))
    except ConfigError as e:
        raise FacediffError(f"train text-encoder: {e}") from None
    task = TextEncoderTask(cfg, Path(out_dir), eval_every)
    summary = train_loop(task, cfg, out_dir, resume=resume, progress=progress)
    return summary.get("metrics", summary)
