"""Text-to-face recipes: seed 004's prompt steering, LoRA style transfer and seed 002's Table 4.4.

* ``seed004-hair`` (samples ``--model``, default the bundled text model; 15 min): captions of SynthFaces rows
  the model never saw (age <= 3: age does not force the hair colour) rewritten so that ONLY the hair phrase
  changes: every colour the oracle knows that the training data has for the style, each other haircut; one
  seed per base. Scored: the oracle's hair-colour head per colour, and (it has no hair-length head) what else
  changes between variants of one seed + base, beside the same prompt under another seed.
* ``lora-style`` (40 min): a human-style text model (KL autoencoder + t2i trained here on human SynthFaces,
  or ``--model`` an SD-format folder), then LoRA r = 2, 4, 8 (alpha = r, Min-SNR-5 as seed 002's LoRA) on 400
  captioned anime SynthFaces (``--data``: the target-style set). Before / after on held-out captions of other
  anime rows: style accuracy (the oracle says anime), FD_oracle to the anime set, attribute accuracy over the
  attributes the prompts name, trainable parameters and their share of the U-Net (seed 002: 830K of 865.9M).
* ``seed002-compare`` (45 min): Table 4.4 on human SynthFaces: the attribute-conditional DDPM of seed002-grid
  in the thesis' final configuration (T = 1e3, no Min-SNR, no GA, the large U-Net) vs the text model (t2i)
  trained from scratch on the captions (+ LoRA r = 4 of it, the thesis' choice, when the budget is >= 20 min).

Budgets: no probe runs; each training arm gets a fixed share of the budget as ``train.time_budget_minutes``
(the loop stops there and exports; ``max_steps`` is only a cap), and the images per evaluated arm fill what
is left at the sampling cost measured on the trained model. Tiny mode: tiny-kl + tiny-t2i, 2 steps per run.

This module holds seed004-hair and what the three share; lora-style and seed002-compare, which train, are in
``text_lora.py``.
"""
from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from facediff.errors import FacediffError
from facediff.experiments.common import Ctx, finish, fmt, md_table, prepare_data

SEED004 = "seed 004 claim (SD fine-tuned on 52 000 faces, paper)"
SEED004_QUOTES = (  # (original, translation)
    ("Некоторые настройки можно дополнительно прописать, используя соответствующие подсказки, такие как "
     "“фиолетовые волосы”, “короткая стрижка” (Рисунок 2).",
     "Some settings can be added with the corresponding prompts, such as \"purple hair\", \"short haircut\" "
     "(Figure 2)."),
    ("Модель V1 была улучшена с помощью дополнительного ввода данных, например, об цвете волос",
     "Model V1 was improved with additional input data, e.g. about hair colour."))
LENGTH_WORD = {"short": "short", "medium": "medium-length", "long": "long"}  # the haircut words asked
SAMPLER, STEPS, GUIDANCE = "dpmpp", 20, 3.0


# ------------------------------------------------------------------------------------------- shared parts
def _cost(model: str | Path | None) -> float:
    """Seconds per image per sampler step (8 images, 2 steps, after a warm-up call)."""
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(model, text=True)
    kw: dict[str, Any] = dict(seeds=list(range(8)), sampler=SAMPLER, steps=2, guidance=GUIDANCE)
    if pipe.takes_text:
        kw["prompt"] = ["a photo of a young woman with long brown hair"] * 8
    elif pipe.conditional:
        kw["attrs"] = [{a: 0 for a in pipe.attributes}] * 8
    pipe(**kw)
    t = time.time()
    pipe(**kw)
    return (time.time() - t) / 16


def _synth(path: Path, n: int, size: int, style: str, seed: int) -> Path:
    from facediff.data.synth import write_synth

    return path if (path / "manifest.json").is_file() else write_synth(path, n=n, size=size, style=style, seed=seed,
                                                                       overwrite=True)


# ------------------------------------------------------------------------------------------- seed004-hair
def _hair_patterns() -> tuple[re.Pattern, ...]:
    """'<length> <colour> hair' and 'hair is <length> and <colour>' (both SynthFaces template sets)."""
    from facediff.data.synth import HAIR_COLOURS
    from facediff.data.synth_text import HAIR_LENGTH_WORDS, HAIR_LENGTH_WORDS_HELDOUT

    alt = lambda words: "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))  # noqa: E731
    col = alt([c for cs in HAIR_COLOURS.values() for c in cs] + ["greying"])
    ln = alt([w for t in (HAIR_LENGTH_WORDS, HAIR_LENGTH_WORDS_HELDOUT) for ws in t.values() for w in ws])
    return (re.compile(rf"(?<![\w-])(?P<len>{ln})(?P<sep>\s+)(?P<col>{col})(?=\s+hair\b)", re.I),
            re.compile(rf"(?<![\w-])hair\s+is\s+(?P<len>{ln})(?P<sep>\s+and\s+)(?P<col>{col})\b", re.I))


def hair_variant(caption: str, *, colour: str | None = None, length: str | None = None) -> str | None:
    """``caption`` with only its hair colour and / or length word replaced (None: it has no hair phrase)."""
    for pattern in _hair_patterns():
        m = pattern.search(caption)
        if m is not None:
            ln, cl = m.group("len"), colour or m.group("col")
            if length is not None:
                ln = LENGTH_WORD[length].capitalize() if ln[:1].isupper() else LENGTH_WORD[length]
            return caption[:m.start("len")] + ln + m.group("sep") + cl + caption[m.end("col"):]
    return None


def _training_colours(pipe, known: tuple[str, ...]) -> dict[str, list[str]]:
    """Style -> the hair colours of the model's training data (its labels, or what its captions name, when the
    data set is here; else the SynthFaces palettes of its style) that the oracle knows (all without a head)."""
    from facediff.data.captions import parse_caption
    from facediff.data.prepared import PreparedDataset
    from facediff.data.synth import HAIR_COLOURS

    data = (pipe.training_config or {}).get("data", {})
    seen: dict[str, set[str]] = {}
    if data.get("path") and (Path(data["path"]) / "manifest.json").is_file():
        for lab in PreparedDataset(data["path"], split=data.get("split") or None).labels:
            pc = parse_caption(lab.get("caption") or "") if not lab.get("hair_colour") else None
            colour = lab.get("hair_colour") or pc.hair_colour
            if colour:
                seen.setdefault(lab.get("style") or (pc and pc.style) or "human", set()).add(colour)
    else:
        style = data.get("synth_style", "mixed")
        seen = {s: set(HAIR_COLOURS[s]) | set(HAIR_COLOURS["aged"])
                for s in (("human", "anime") if style == "mixed" else (style,))}
    order = dict.fromkeys(c for cs in HAIR_COLOURS.values() for c in cs)
    return {s: [c for c in order if c in cs and (not known or c in known)] for s, cs in seen.items()}


def _bases(ctx: Ctx, pipe, colours: dict[str, list[str]], per_style: int) -> list[dict[str, Any]]:
    """Held-out rows (another SynthFaces seed, or --data's val split) whose caption has a hair phrase, age <= 3
    and a colour of ``colours``: the caption is then its own colour's variant, the reference."""
    from facediff.data.captions import parse_caption
    from facediff.data.prepared import PreparedDataset

    if ctx.data is not None:
        path, split = prepare_data(ctx, "mixed", 0)
    else:
        seed = int(((pipe.training_config or {}).get("data") or {}).get("synth_seed", 0)) + 1000
        style = "mixed" if len(colours) > 1 else next(iter(colours))
        path, split = _synth(ctx.out / "data", max(64, 6 * per_style * len(colours)), pipe.sample_size, style,
                             seed), None
    ds = PreparedDataset(path, split=split)
    out, count = [], Counter()
    for i, lab in enumerate(ds.labels):
        cap = lab.get("caption") or ""
        pc = parse_caption(cap)
        style = lab.get("style") or pc.style
        if (pc.hair_colour in colours.get(style, ()) and pc.hair_length and count[style] < per_style
                and pc.attributes.get("age", 0) <= 3 and hair_variant(cap, colour=pc.hair_colour) == cap):
            out.append({"row": i, "caption": cap, "style": style, "colour": pc.hair_colour,
                        "length": pc.hair_length, "image": ds.images([i])[0]})
            count[style] += 1
    if not out:
        raise FacediffError(f"{path}: no caption with a '<length> <colour> hair' phrase to vary")
    return out


def _changes(pred: dict[str, np.ndarray], feats: np.ndarray, pairs: list[tuple[int, int]],
             attrs: list[str]) -> dict[str, Any]:
    """What changes between the images of (variant, reference) pairs: share of attribute predictions kept,
    mean oracle-feature distance, share whose predicted hair colour is kept."""
    if not pairs:
        return {"pairs": 0, "same_attributes": None, "feature_distance": None, "hair_colour_kept": None}
    i, j = np.array(pairs).T
    kept = pred["hair_colour"][i] == pred["hair_colour"][j] if "hair_colour" in pred else None
    return {"pairs": len(pairs), "same_attributes": float(np.mean([pred[a][i] == pred[a][j] for a in attrs])),
            "feature_distance": float(np.linalg.norm(feats[i] - feats[j], axis=1).mean()),
            "hair_colour_kept": None if kept is None else float(kept.mean())}


def _hair_jobs(bases: list[dict[str, Any]], colours: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The prompts sampled: per base its colour variants, its haircut variants and its own caption under
    another seed (every variant of a base has the base's seed)."""
    jobs = []
    for b, base in enumerate(bases):
        vs = [("colour", c, hair_variant(base["caption"], colour=c)) for c in colours[base["style"]]]
        vs += [("length", ln, hair_variant(base["caption"], length=ln)) for ln in LENGTH_WORD if ln != base["length"]]
        jobs += [{"base": b, "kind": k, "value": v, "prompt": p, "seed": 1000 + b} for k, v, p in vs]
        jobs.append({"base": b, "kind": "seed", "value": "another seed", "prompt": base["caption"], "seed": 501000 + b})
    return jobs


def _colour_table(ctx: Ctx, colours: dict[str, list[str]], bases: list[dict[str, Any]], jobs: list[dict[str, Any]],
                  images: np.ndarray, pred: dict[str, np.ndarray], hair_colours, colour_idx: list[int],
                  changes) -> tuple[list[dict[str, Any]], list[list[Any]], dict[str, Any]]:
    """(arms, table rows, grids) of the colour variants: per style and colour the oracle's accuracy, its most
    common wrong colour and what else is kept; one grid per style (8 bases x its colours)."""
    from facediff.imaging import make_grid, save_png

    arms, rows, grids = [], [], {}
    for s, cs in sorted(colours.items()):
        for c in cs:
            sel = [i for i in colour_idx if jobs[i]["value"] == c and bases[jobs[i]["base"]]["style"] == s]
            if not sel:
                continue
            hits, wrong = None, "n/a (the oracle has no hair-colour head)"
            if "hair_colour" in pred:
                got = [hair_colours[int(pred["hair_colour"][i])] for i in sel]
                hits, top = float(np.mean([g == c for g in got])), Counter(g for g in got if g != c).most_common(1)
                wrong = f"{top[0][0]} ({top[0][1]}/{len(sel)})" if top else "—"
            ch = changes(lambda j: j["kind"] == "colour" and j["value"] == c and bases[j["base"]]["style"] == s)
            rows.append([s, c + (" (SynthFaces: age 4-5 only)" if c in ("grey", "white") else ""), len(sel),
                         fmt(hits, "pct"), wrong, fmt(ch["same_attributes"], "pct")])
            arms.append({"name": f"{s} {c}", "style": s, "colour": c, "metrics": {**ch, "n": len(sel),
                                                                                  "accuracy": hits}})
        first = [b for b, base in enumerate(bases) if base["style"] == s][:8]  # grid: 8 bases x the colours
        tiles = [images[i] for i in colour_idx if jobs[i]["base"] in first]
        if tiles:
            grids[f"{s}: columns {', '.join(cs)}"] = save_png(make_grid(
                np.stack(tiles), len(cs), scale=max(1, 64 // images.shape[1])), ctx.out / "grids" / f"{s}.png")
    return arms, rows, grids


def _hair_markdown(ctx: Ctx, pipe, bases: list[dict[str, Any]], rows: list[list[Any]], len_rows: list[list[Any]],
                   inv: list[list[Any]], acc: dict[str, Any] | None, floor: dict[str, Any]) -> list[str]:
    """results.md of seed004-hair: the claim quoted, the colour table, the haircut table, what else changes."""
    quotes = [f"> {ru}\n>\n> ({en})\n" for ru, en in SEED004_QUOTES]
    return ["Seed 004 (Stable Diffusion fine-tuned on faces) claims that prompts steer hair colour and haircut; it "
            "publishes no numbers for it (its only figures are the data set size, 52 000 faces, and SD's tensor "
            f"sizes). {SEED004}:", "", *quotes, "",
            f"## Hair colour: prompts that differ only in the colour (ours: {pipe.model_dir}, {len(bases)} bases)",
            "",
            *md_table(["style", "colour asked", "n", "oracle accuracy", "most common wrong colour",
                       "other attributes kept"], rows), "",
            f"Overall {fmt((acc or {}).get('accuracy'), 'pct')}; the oracle on the real images of the base rows "
            f"(their own captions): {fmt((floor.get('hair_colour') or {}).get('accuracy'), 'pct')}.", "",
            "## Haircut: the oracle has no hair-length head; what else changes when only the haircut changes", "",
            *md_table(["haircut asked", "pairs", "attribute predictions kept", "oracle-feature distance",
                       "hair colour kept"], len_rows), "",
            "## What else changes, vs. the base's own caption under the same seed", "",
            *md_table(["variants", "pairs", "attribute predictions kept", "mean oracle-feature distance"], inv), "",
            f"{ctx.steps(STEPS)} {SAMPLER} steps, guidance {GUIDANCE}. Bases: captions of "
            f"{'--data ' + str(ctx.data) if ctx.data else 'SynthFaces rows the model never trained on'}, "
            "age <= 3 (older SynthFaces are grey or white); each colour is asked on the bases of "
            "its own style (the combinations the training data has). A variant that changes nothing else keeps "
            "100 % of the attribute predictions, at a feature distance far below another seed's."]


def run_hair(ctx: Ctx) -> dict[str, Any]:
    """Seed 004: prompts that differ only in hair colour or haircut, on ``ctx.model`` (None = bundled text model)."""
    from facediff.metrics.features import OracleFeatures
    from facediff.metrics.prompts import prompt_accuracy
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(ctx.model, text=True)
    if not pipe.takes_text:
        raise FacediffError(f"--model {ctx.model}: seed004-hair needs a text-to-face model (it has no text encoder)")
    oracle = OracleFeatures()
    ocfg = oracle.model.config
    colours = _training_colours(pipe, tuple(ocfg.hair_colours))
    if not any(colours.values()):
        raise FacediffError(f"--model {pipe.model_dir}: its training data names no hair colour the oracle knows; "
                            "seed004-hair needs a model trained on captions with hair colours (e.g. SynthFaces)")
    per_set = sum(len(cs) + 3 for cs in colours.values())  # images of one base per style: + 2 haircuts + a seed
    if ctx.tiny or ctx.n_eval:
        per_style = 2 if ctx.tiny else max(1, ctx.n_eval // len(colours))
    else:
        per_style = max(2, min(64, int(ctx.left_s() * 0.8 / (1.2 * _cost(ctx.model) * STEPS * per_set))))
    bases = _bases(ctx, pipe, colours, per_style)
    jobs = _hair_jobs(bases, colours)
    ctx.say(f"sampling {len(jobs)} images for {len(bases)} base descriptions")
    images = pipe(seeds=[j["seed"] for j in jobs], prompt=[j["prompt"] for j in jobs], sampler=SAMPLER,
                  steps=ctx.steps(STEPS), guidance=GUIDANCE, progress=ctx.progress).images
    feats, pred, attrs = oracle(images), oracle.predict(images), list(ocfg.attributes)
    ref = {j["base"]: i for i, j in enumerate(jobs)  # the base's own caption: the variant of its own colour
           if j["kind"] == "colour" and j["value"] == bases[j["base"]]["colour"]}

    def changes(keep) -> dict[str, Any]:  # variants chosen by keep(job) vs their base's own caption, same seed
        return _changes(pred, feats, [(i, ref[j["base"]]) for i, j in enumerate(jobs)
                                      if keep(j) and i != ref[j["base"]]], attrs)

    colour_idx = [i for i, j in enumerate(jobs) if j["kind"] == "colour"]
    acc = prompt_accuracy(images[colour_idx], [jobs[i]["prompt"] for i in colour_idx], oracle).get("hair_colour")
    floor = prompt_accuracy(np.stack([b["image"] for b in bases]), [b["caption"] for b in bases], oracle)
    arms, rows, grids = _colour_table(ctx, colours, bases, jobs, images, pred, ocfg.hair_colours, colour_idx, changes)
    len_rows = []
    for ln in LENGTH_WORD:
        ch = changes(lambda j: j["kind"] == "length" and j["value"] == ln)
        len_rows.append([ln, ch["pairs"], fmt(ch["same_attributes"], "pct"), fmt(ch["feature_distance"]),
                         fmt(ch["hair_colour_kept"], "pct")])
        arms.append({"name": f"length {ln}", "length": ln, "metrics": ch})
    fams = {"colour variants": changes(lambda j: j["kind"] == "colour"),
            "haircut variants": changes(lambda j: j["kind"] == "length"),
            "same prompt, another seed": changes(lambda j: j["kind"] == "seed")}
    inv = [[k, v["pairs"], fmt(v["same_attributes"], "pct"), fmt(v["feature_distance"])] for k, v in fams.items()]
    md = _hair_markdown(ctx, pipe, bases, rows, len_rows, inv, acc, floor)
    res = {"seed": "004", "model": str(pipe.model_dir), "prompts": jobs, "hair_colour": acc, "floor_real": floor,
           "bases": [{k: v for k, v in b.items() if k != "image"} for b in bases], "variants": fams, "arms": arms}
    return finish(ctx, res, md, grids)
