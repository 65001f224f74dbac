"""Does an image show what its prompt asks for? Oracle scores of text-to-face models.

Each prompt is parsed (``facediff.data.captions.parse_caption``) into the attribute levels, hair colour and
style it names; the oracle (the SynthFaces attribute estimator, with its style and hair-colour heads) reads the
same facts off the generated image. Attribute accuracy counts only the attributes a prompt names (the rest are
don't-care, -1), as seed 002 scores its attribute-conditional model; hair colour and style are scored on the
prompts that name them, hair colour also per colour (seed 004's claim that prompts steer hair colour).
This is the score used in place of CLIP-S when no CLIP weights are available. ``per_prompt_agreement`` gives
the same agreement per prompt and property over the prompt's own images (``facediff eval --prompts FILE.txt``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from facediff.config import ATTRIBUTES
from facediff.data.captions import ParsedCaption, parse_caption


def prompt_levels(prompts: Sequence[str], attributes: Sequence[str] = ATTRIBUTES) -> np.ndarray:
    """int64 (n, A): the level each prompt names per attribute, -1 where it names none."""
    parsed = [parse_caption(p) for p in prompts]
    return np.array([[pc.attributes.get(a, -1) for a in attributes] for pc in parsed], dtype=np.int64).reshape(
        len(parsed), len(attributes))


def _head_accuracy(wanted: list[str | None], got: np.ndarray, classes: Sequence[str]) -> dict[str, Any] | None:
    """Accuracy of an oracle head over the prompts that name a value it knows; per-value table."""
    rows = [(i, w) for i, w in enumerate(wanted) if w is not None and w in classes]
    if not rows:
        return None
    hits = np.array([classes[int(got[i])] == w for i, w in rows])
    per: dict[str, dict[str, float | int]] = {}
    for value in sorted({w for _, w in rows}):
        sel = np.array([w == value for _, w in rows])
        per[value] = {"n": int(sel.sum()), "accuracy": float(hits[sel].mean())}
    return {"n": len(rows), "accuracy": float(hits.mean()), "per_value": per}


def prompt_accuracy(images: Any, prompts: Sequence[str], extractor,
                    predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Oracle agreement of ``images`` with their ``prompts``: {"attr": attribute accuracy over the named
    attributes, "hair_colour": {...} | None, "style": {...} | None}. ``extractor``: an ``OracleFeatures``;
    ``predictions``: its ``predict(images)`` when already computed."""
    pred = extractor.predict(images) if predictions is None else predictions
    return accuracy_from_parsed([parse_caption(p) for p in prompts], pred, extractor.model.config)


def accuracy_from_parsed(parsed: Sequence[ParsedCaption], pred: dict[str, np.ndarray], cfg) -> dict[str, Any]:
    """``prompt_accuracy`` from what each image was asked for (``parsed``, one per image) and the oracle's
    arg-max classes ``pred``; ``cfg``: the oracle's ``EstimatorConfig``."""
    from facediff.metrics.attributes import accuracy_from_predictions

    out: dict[str, Any] = {}
    levels = np.array([[pc.attributes.get(a, -1) for a in cfg.attributes] for pc in parsed], dtype=np.int64)
    if (levels >= 0).any():
        predicted = np.stack([pred[a] for a in cfg.attributes], 1)
        out["attr"] = accuracy_from_predictions(levels, predicted, cfg.attributes, cfg.num_levels)
    out["hair_colour"] = (_head_accuracy([pc.hair_colour for pc in parsed], pred["hair_colour"], cfg.hair_colours)
                          if "hair_colour" in pred else None)
    out["style"] = (_head_accuracy([pc.style for pc in parsed], pred["style"], cfg.styles)
                    if "style" in pred else None)
    return out


def named_properties(wanted: ParsedCaption, cfg) -> dict[str, int | str]:
    """What ``wanted`` names that the oracle ``cfg`` has a head for, in head order: attribute levels, then
    hair colour and style as class names. Hair length and unknown colours are not read: left out."""
    out: dict[str, int | str] = {a: int(wanted.attributes[a]) for a in cfg.attributes if a in wanted.attributes}
    if wanted.hair_colour is not None and wanted.hair_colour in cfg.hair_colours:
        out["hair_colour"] = wanted.hair_colour
    if wanted.style is not None and wanted.style in cfg.styles:
        out["style"] = wanted.style
    return out


def readings(pred: dict[str, np.ndarray], cfg) -> dict[str, list[int | str]]:
    """The oracle's reading per head and image: attribute levels as ints, style / hair colour as names."""
    classes = {"style": cfg.styles, "hair_colour": cfg.hair_colours}
    return {k: [classes[k][int(v)] if k in classes else int(v) for v in vals] for k, vals in pred.items()}


def per_prompt_agreement(wanted: Sequence[ParsedCaption], groups: Sequence[Sequence[int]],
                         pred: dict[str, np.ndarray], cfg) -> list[dict[str, Any]]:
    """For prompt i and its images ``groups[i]``: what it names ("names"), per named property the share of
    its images where the oracle reads that value ("agreement") and the readings ("read"), and "mean", the
    mean share over the named properties (None when it names nothing the oracle reads)."""
    read = readings(pred, cfg)
    rows = []
    for pc, idx in zip(wanted, groups):
        names = named_properties(pc, cfg)
        got = {k: [read[k][i] for i in idx] for k in names}
        agree = {k: float(np.mean([g == v for g in got[k]])) for k, v in names.items()}
        rows.append({"names": names, "agreement": agree, "read": got,
                     "mean": float(np.mean(list(agree.values()))) if agree else None})
    return rows
