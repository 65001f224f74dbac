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
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from facediff.errors import FacediffError
from facediff.experiments.common import Ctx, config_path, finish, fmt, grid_of, md_table, pick, prepare_data, size_n

PAPER = "seed 002 (CelebA-Dialog 64px, paper)"
# Table 4.4 (paper): metric -> (Conditional DDPM, SD Nano 2.1 + LoRA), after 15 epochs each
TABLE_4_4 = {"FID": ("104.5163", "93.2055"), "MTCNN": ("99.97 %", "99.89 %"), "CLIP-S": ("26.1205", "26.3395"),
             "Att. Estimator": ("86.40 %", "80.40 %")}
# Table 4.3 (paper): best per metric over the SD Nano 2.1 + LoRA grid -> (best, T, Min-SNR-gamma, GA, r)
TABLE_4_3 = {"FID": ("144.8888", "1e+04", "No", "No", "2"), "MTCNN": ("99.97 %", "1e+03", "5", "4", "4"),
             "CLIP-S": ("25.3535", "1e+03", "5", "No", "8"), "Att. estimator": ("72.80 %", "1e+03", "5", "No", "4")}
PAPER_LORA, PAPER_UNET, PAPER_DDPM = 830e3, 865.911e6, 112.10e6  # trainable parameters (Sec. 3.3, Fig. 4.9)
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
LORA_RANKS = (2, 4, 8)
# Table 4.4 rows: (our label, the paper's row, key of our metrics, format)
ROWS_4_4 = (("FID → FD_oracle ↓", "FID", "fd_oracle", "num"), ("KID (oracle) ↓", None, "kid_oracle", "num"),
            ("MTCNN (mean confidence) ↑", "MTCNN", "mtcnn_confidence", "pct"),
            ("face-detection rate ↑", None, "faces_rate", "pct"), ("CLIP-S ↑", "CLIP-S", "clip_score", "num"),
            ("Att. Estimator ↑", "Att. Estimator", "attr_accuracy", "pct"),
            ("prompt: style ↑", None, "style_accuracy", "pct"),
            ("prompt: hair colour ↑", None, "hair_colour_accuracy", "pct"), ("diversity", None, "diversity", "num"),
            ("seconds / image", None, "seconds_per_image", "num"))


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


def _budget(ctx: Ctx, share: float) -> list[str]:
    """Overrides that size a training arm: ``share`` of the budget (capped by what is left), or 2 tiny steps."""
    if ctx.tiny:
        return ["train.max_steps=2", "train.checkpoint_every=0", "train.mixed_precision=no"]
    minutes = max(0.2, min(share * ctx.budget_minutes, ctx.left_s() / 60 - 1))
    return ["train.max_steps=1000000", f"train.time_budget_minutes={minutes:.3f}", "train.lr_schedule=constant",
            "train.checkpoint_every=0", "train.sample_every=0", "train.log_every=25"]


def _steps(run: Path) -> int:
    return int(json.loads((run / "logs" / "summary.json").read_text())["steps"])


def _synth(path: Path, n: int, size: int, style: str, seed: int) -> Path:
    from facediff.data.synth import write_synth

    return path if (path / "manifest.json").is_file() else write_synth(path, n=n, size=size, style=style, seed=seed,
                                                                       overwrite=True)


def train_text_model(ctx: Ctx, data: Path, name: str, ae_share: float, t2i_share: float) -> Path:
    """KL autoencoder + text-to-face latent model (t2i) on ``data`` at ctx.size into out/runs (a finished run is
    reused); the t2i run."""
    from facediff.training.run import train

    ae, run = ctx.out / "runs" / f"{name}-kl", ctx.out / "runs" / name
    common = [f"data.path={data}", f"data.size={ctx.size}", "data.split=train"]
    if not (ae / "export" / "vae" / "config.json").is_file():
        ctx.say(f"training the autoencoder of {name}")
        extra = ["autoencoder.disc_start=2"] if ctx.tiny else ["autoencoder.eval_every=0", "autoencoder.eval_n=64"]
        train("autoencoder", config_path("tiny-kl" if ctx.tiny else "kl-f4-64"), ae,
              overrides=common + _budget(ctx, ae_share) + extra, progress=ctx.progress)
    if not (run / "export" / "model_index.json").is_file():
        ctx.say(f"training the text model {name}")
        extra = ["train.sample_steps=1"] if ctx.tiny else ["train.ema_decay=0.995", "train.warmup_steps=50",
                                                           "train.sample_steps=10"]
        train("t2i", config_path("tiny-t2i" if ctx.tiny else "t2i-64"), run, progress=ctx.progress,
              overrides=common + [f"latent.autoencoder={ae}"] + _budget(ctx, t2i_share) + extra)
    return run


def train_lora(ctx: Ctx, base: str | Path, data: Path, name: str, rank: int, share: float) -> dict[str, Any]:
    """LoRA (alpha = r, Min-SNR-5) of ``base`` on ``data``'s captions into out/runs/NAME (a finished run is
    reused): its steps and parameter counts."""
    import shutil

    from facediff.models.lora import lora_parameter_count
    from facediff.pipelines.load import load_pipeline
    from facediff.training.run import train

    run, t = ctx.out / "runs" / name, time.time()
    if not (run / "export" / "lora_config.json").is_file() or not (run / "logs" / "summary.json").is_file():
        shutil.rmtree(run, ignore_errors=True)
        ctx.say(f"training {name}")
        train("lora", None, run, progress=ctx.progress, overrides=[
            f"lora.base={base}", f"data.path={data}", "data.split=train", f"lora.rank={rank}", f"lora.alpha={rank}",
            "diffusion.loss_weighting=min_snr", "diffusion.snr_gamma=5.0", "train.lr=1e-3",
            f"train.batch_size={8 if ctx.tiny else 32}", f"train.warmup_steps={0 if ctx.tiny else 20}",
            f"train.sample_steps={1 if ctx.tiny else 10}", *_budget(ctx, share)])
    summary = json.loads((run / "logs" / "summary.json").read_text())
    unet = load_pipeline(run).unet  # base + the run's adapters
    lora = lora_parameter_count(unet)
    frozen = sum(p.numel() for p in unet.parameters()) - lora
    return {"run": str(run), "steps": summary["steps"], "rank": rank, "alpha": float(rank),
            "seconds": round(time.time() - t, 1), "lora_parameters": lora, "unet_parameters": frozen,
            "trainable_parameters": int(summary["trainable_parameters"]), "share_of_unet": lora / frozen}


def _evaluate(ctx: Ctx, name: str, model: str | Path, data: Path, split: str | None, n: int, *,
              metrics: str = "fd,kid,attr,prompt,clip", prompts: str = "caption") -> dict[str, Any]:
    """evaluate() into out/evals/NAME; the headline numbers of the arm and of the real-vs-real floor."""
    from facediff.evaluation.evaluate import evaluate

    ctx.say(f"evaluating {name} (n = {n})")
    r = evaluate(model, data, metrics=metrics, n=n, sampler=SAMPLER, steps=ctx.steps(STEPS), guidance=GUIDANCE,
                 split=split, prompts=prompts, out=ctx.out / "evals" / name, progress=ctx.progress)

    def headline(r: dict[str, Any]) -> dict[str, Any]:
        p = r.get("prompt") or {}
        return {**pick(r), "style_accuracy": (p.get("style") or {}).get("accuracy"),
                "hair_colour_accuracy": (p.get("hair_colour") or {}).get("accuracy"),
                "clip_score": (r.get("clip") or {}).get("clip_score")}

    return {"metrics": headline(r), "floor": headline(r["floor_real_vs_real"])}


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


def run_hair(ctx: Ctx) -> dict[str, Any]:
    """Seed 004: prompts that differ only in hair colour or haircut, on ``ctx.model`` (None = bundled text model)."""
    from facediff.imaging import make_grid, save_png
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
    jobs = []  # every variant of a base has the base's seed
    for b, base in enumerate(bases):
        vs = [("colour", c, hair_variant(base["caption"], colour=c)) for c in colours[base["style"]]]
        vs += [("length", ln, hair_variant(base["caption"], length=ln)) for ln in LENGTH_WORD if ln != base["length"]]
        jobs += [{"base": b, "kind": k, "value": v, "prompt": p, "seed": 1000 + b} for k, v, p in vs]
        jobs.append({"base": b, "kind": "seed", "value": "another seed", "prompt": base["caption"], "seed": 501000 + b})
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
    arms, rows, grids = [], [], {}
    for s, cs in sorted(colours.items()):
        for c in cs:
            sel = [i for i in colour_idx if jobs[i]["value"] == c and bases[jobs[i]["base"]]["style"] == s]
            if not sel:
                continue
            hits, wrong = None, "n/a (the oracle has no hair-colour head)"
            if "hair_colour" in pred:
                got = [ocfg.hair_colours[int(pred["hair_colour"][i])] for i in sel]
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
    quotes = [f"> {ru}\n>\n> ({en})\n" for ru, en in SEED004_QUOTES]
    md = ["Seed 004 (Stable Diffusion fine-tuned on faces) claims that prompts steer hair colour and haircut; it "
          "publishes no numbers for it (its only figures are the data set size, 52 000 faces, and SD's tensor "
          f"sizes). {SEED004}:", "", *quotes, "",
          f"## Hair colour: prompts that differ only in the colour (ours: {pipe.model_dir}, {len(bases)} bases)", "",
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
    res = {"seed": "004", "model": str(pipe.model_dir), "prompts": jobs, "hair_colour": acc, "floor_real": floor,
           "bases": [{k: v for k, v in b.items() if k != "image"} for b in bases], "variants": fams, "arms": arms}
    return finish(ctx, res, md, grids)


# ------------------------------------------------------------------------------------------- lora-style
def run_lora_style(ctx: Ctx) -> dict[str, Any]:
    """Human-style text model -> LoRA r = 2 / 4 / 8 on anime faces; before / after on held-out anime prompts."""
    from facediff.pipelines.load import load_pipeline

    if ctx.model is not None:  # a given SD-format base; its resolution is the recipe's
        pipe = load_pipeline(ctx.model)
        if not pipe.takes_text or pipe.vae is None:
            raise FacediffError(f"--model {ctx.model}: lora-style needs a Stable-Diffusion-format text-to-image "
                                "model (text encoder + VAE) as its base")
        ctx.size = pipe.sample_size
        base, info, lora_share = str(ctx.model), {"model": str(ctx.model), "trained_here": False}, 0.6
    else:
        human = _synth(ctx.out / "data-human", 64 if ctx.tiny else 4000, ctx.size, "human", 0)
        run = train_text_model(ctx, human, "base-t2i", 0.1, 0.3)
        base, info, lora_share = str(run / "export"), {"model": str(run), "trained_here": True,
                                                       "steps": _steps(run)}, 0.3
    if ctx.data is not None:
        anime, split = prepare_data(ctx, "anime", 0)
        ev_data, ev_split = anime, split
    else:
        anime = _synth(ctx.out / "data-anime", 64 if ctx.tiny else 400, ctx.size, "anime", 0)
        ev_data, ev_split = _synth(ctx.out / "data-anime-eval", 64 if ctx.tiny else 1024, ctx.size, "anime", 1), None
    share = min(lora_share, ctx.left_s() / 60 / ctx.budget_minutes - 0.3) / len(LORA_RANKS)  # the same for each
    loras = [train_lora(ctx, base, anime, f"lora-r{r}", r, share) for r in LORA_RANKS]
    n = size_n(ctx, ctx.left_s() - 30, 0.0 if ctx.tiny else _cost(base) * STEPS * (1 + len(loras)), hi=512)
    arms = []
    for name, model, t in [("base", base, info)] + [(f"lora-r{t['rank']}", t["run"], t) for t in loras]:
        r = _evaluate(ctx, name, model, ev_data, ev_split, n, prompts="caption_heldout")
        r["metrics"].update(trainable_parameters=t.get("trainable_parameters"), share_of_unet=t.get("share_of_unet"))
        arms.append({"name": name if t is not info else "base (before LoRA)", "eval": name, "rank": t.get("rank"),
                     "train": t, **r})
    floor = arms[0]["floor"]
    rows = [[a["name"], fmt(a["rank"]), fmt(a["train"].get("alpha")), fmt(a["train"].get("steps")),
             fmt(a["metrics"]["trainable_parameters"]), fmt(a["metrics"]["share_of_unet"], "pct"),
             *[fmt(m[k], kind) for k, kind in (("style_accuracy", "pct"), ("fd_oracle", "num"), ("kid_oracle", "num"),
                                               ("attr_accuracy", "pct"), ("hair_colour_accuracy", "pct"))]]
            for a in arms + [{"name": "real anime images (floor)", "rank": None, "train": {}, "metrics": {
                **floor, "trainable_parameters": None, "share_of_unet": None}}] for m in [a["metrics"]]]
    rows.append([f"{PAPER}: SD Nano 2.1 + LoRA", "2 / 4 / 8", "= r", "5 epochs", "830K",
                 fmt(PAPER_LORA / PAPER_UNET, "pct"), "n/a", "", "", "", ""])
    where = f"--model {ctx.model}" if ctx.model else "trained here on human SynthFaces"
    md = [f"LoRA style transfer: a human-style text model ({where}) fine-tuned with LoRA on captioned anime faces; "
          "before / after on held-out captions of other anime rows.", "",
          f"## LoRA rank: {ctx.data_label()}; the last row is the thesis' (CelebA-Dialog faces, no style change)", "",
          *md_table(["arm", "r", "alpha", "steps", "trainable params", "share of U-Net", "style = anime ↑",
                     "FD_oracle ↓", "KID ↓", "Att. estimator ↑", "hair colour ↑"], rows), "",
          "Seed 002, Table 4.3 (paper, CelebA-Dialog 64px): the best SD Nano 2.1 + LoRA result per metric and its "
          "configuration (no per-rank table is published).", "",
          *md_table(["Metric", "Best", "T", "Min-SNR-γ", "GA", "r"], [[k, *v] for k, v in TABLE_4_3.items()]), "",
          f"n = {n} images per arm, prompts = held-out paraphrase captions, {ctx.steps(STEPS)} {SAMPLER} steps, "
          f"guidance {GUIDANCE}. style = anime: the oracle's style head (every prompt asks for anime). Trainable: "
          "LoRA A and B on the U-Net's to_q / to_k / to_v / to_out.0, the attention projections the thesis adapted "
          "(830K of 865.9M)."]
    res = {"seed": "002 Sec. 3.3 / Table 4.3", "base": info, "n": n, "arms": arms}
    return finish(ctx, res, md, {a["name"]: grid_of(ctx, a["eval"]) for a in arms}, floors={"real anime": floor})


# ------------------------------------------------------------------------------------------- seed002-compare
def run_compare(ctx: Ctx) -> dict[str, Any]:
    """Table 4.4: attribute-conditional DDPM vs text model (+ LoRA of it) on human SynthFaces, every metric."""
    from facediff.experiments.common import base_config, train_arm
    from facediff.experiments.seed002 import _thesis_overrides
    from facediff.pipelines.load import load_pipeline

    data, split = prepare_data(ctx, "human", 64 if ctx.tiny else 4000)
    with_lora = ctx.tiny or ctx.budget_minutes >= 20
    ov = _thesis_overrides(ctx, data, 2 if ctx.tiny else 1000000, 1000, False, 1, "large")
    ddpm = train_arm(ctx, "attribute-ddpm", base_config(ctx), ov + ([] if ctx.tiny else [
        f"train.time_budget_minutes={0.25 * ctx.budget_minutes:.3f}", "train.log_every=25"]))
    t2i = train_text_model(ctx, data, "t2i", 0.08, 0.22 if with_lora else 0.3)
    models = [("attribute DDPM", "attribute-ddpm", ddpm["run"], {k: ddpm[k] for k in ("run", "steps", "seconds")}),
              ("text model (t2i)", "t2i", str(t2i), {"run": str(t2i), "steps": _steps(t2i)})]
    if with_lora:
        lo = train_lora(ctx, t2i / "export", data, "t2i-lora-r4", 4, 0.1)
        models.append(("t2i + LoRA r=4", "t2i-lora-r4", lo["run"], lo))
    for _, _, model, t in models:  # the whole U-Net (+ the t2i text encoder, trained jointly), except with LoRA
        if "trainable_parameters" not in t:
            pipe = load_pipeline(model)
            joint = pipe.takes_text and ((pipe.training_config or {}).get("text") or {}).get("train_encoder")
            t["trainable_parameters"] = sum(p.numel() for m in (pipe.unet, pipe.text_encoder if joint else None)
                                            if m is not None for p in m.parameters())
    n = size_n(ctx, ctx.left_s() - 30, 0.0 if ctx.tiny else sum(_cost(m[2]) for m in models) * STEPS, hi=512)
    arms = []
    for name, key, model, t in models:
        r = _evaluate(ctx, key, model, data, split, n, metrics="fd,kid,attr,prompt,faces,clip,diversity,timing")
        r["metrics"]["trainable_parameters"] = t["trainable_parameters"]
        arms.append({"name": name, "eval": key, "train": t, **r})
    floor = arms[1]["floor"]  # the text arm's: the same real images, with their captions' prompt scores
    rows = []
    for label, paper, key, kind in ROWS_4_4:
        na = {"clip_score": "n/a (no --clip weights)", "style_accuracy": "n/a (no prompt)",
              "hair_colour_accuracy": "n/a (no prompt)"}.get(key)
        cells = [na if a["metrics"][key] is None and na else fmt(a["metrics"][key], kind) for a in arms]
        rows.append([label, *TABLE_4_4.get(paper, ("", "")), *cells, "n/a" if na and "clip" in key else
                     fmt(floor.get(key), kind)])
    rows.append(["trainable parameters", f"{PAPER_DDPM / 1e6:.2f}M", "830K",
                 *[fmt(a["metrics"]["trainable_parameters"]) for a in arms], ""])
    rows.append(["training steps", "15 epochs", "15 epochs", *[fmt(a["train"]["steps"]) for a in arms], ""])
    head = ["Metric", f"{PAPER}: Conditional DDPM", f"{PAPER}: SD Nano 2.1 + LoRA",
            *[f"{ctx.data_label()}: {a['name']}" for a in arms], "ours: real vs real (floor)"]
    md = ["Seed 002, Table 4.4 (\"Resultados obtenidos al final del entrenamiento de cada modelo\"): the "
          "attribute-conditional model vs the text-conditioned one, every metric.", "", *md_table(head, rows), "",
          "The paper's columns are the thesis' numbers (CelebA-Dialog 64px, Inception FID, CLIP ViT, a 112M-parameter "
          "DDPM and SD Nano 2.1 (865.9M) + LoRA, 15 epochs on a GPU): a different data set and models, for scale "
          f"only. Ours: n = {n} images per arm under the conditions of validation rows, {ctx.steps(STEPS)} {SAMPLER} "
          f"steps, guidance {GUIDANCE}. Attribute accuracy: the DDPM on the requested levels of all five attributes, "
          "the text models on the attributes each caption names (SynthFaces captions name all five). The thesis' SD "
          "was pretrained on other data; our text model is trained from scratch on the same faces and its LoRA "
          "continues on them. MTCNN = mean best-face confidence (the thesis' \"MTCNN %\"). CLIP-S needs CLIP weights "
          "(none offline here)."]
    res = {"seed": "002", "table": "4.4", "n": n, "arms": arms, "floor": floor, "with_lora": with_lora}
    return finish(ctx, res, md, {a["name"]: grid_of(ctx, a["eval"]) for a in arms}, floors={"real vs real": floor})
