"""The text recipes that train: lora-style (LoRA style transfer) and seed002-compare (Table 4.4), and their helpers."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from facediff.errors import FacediffError
from facediff.experiments.common import Ctx, config_path, finish, fmt, grid_of, md_table, pick, prepare_data, size_n
from facediff.experiments.text import GUIDANCE, SAMPLER, STEPS, _cost, _synth

PAPER = "seed 002 (CelebA-Dialog 64px, paper)"
# Table 4.4 (paper): metric -> (Conditional DDPM, SD Nano 2.1 + LoRA), after 15 epochs each
TABLE_4_4 = {"FID": ("104.5163", "93.2055"), "MTCNN": ("99.97 %", "99.89 %"), "CLIP-S": ("26.1205", "26.3395"),
             "Att. Estimator": ("86.40 %", "80.40 %")}
# Table 4.3 (paper): best per metric over the SD Nano 2.1 + LoRA grid -> (best, T, Min-SNR-gamma, GA, r)
TABLE_4_3 = {"FID": ("144.8888", "1e+04", "No", "No", "2"), "MTCNN": ("99.97 %", "1e+03", "5", "4", "4"),
             "CLIP-S": ("25.3535", "1e+03", "5", "No", "8"), "Att. estimator": ("72.80 %", "1e+03", "5", "No", "4")}
PAPER_LORA, PAPER_UNET, PAPER_DDPM = 830e3, 865.911e6, 112.10e6  # trainable parameters (Sec. 3.3, Fig. 4.9)
LORA_RANKS = (2, 4, 8)
# Table 4.4 rows: (our label, the paper's row, key of our metrics, format)
ROWS_4_4 = (("FID → FD_oracle ↓", "FID", "fd_oracle", "num"), ("KID (oracle) ↓", None, "kid_oracle", "num"),
            ("MTCNN (mean confidence) ↑", "MTCNN", "mtcnn_confidence", "pct"),
            ("face-detection rate ↑", None, "faces_rate", "pct"), ("CLIP-S ↑", "CLIP-S", "clip_score", "num"),
            ("Att. Estimator ↑", "Att. Estimator", "attr_accuracy", "pct"),
            ("prompt: style ↑", None, "style_accuracy", "pct"),
            ("prompt: hair colour ↑", None, "hair_colour_accuracy", "pct"), ("diversity", None, "diversity", "num"),
            ("seconds / image", None, "seconds_per_image", "num"))


# ------------------------------------------------------------------------------------------- training and scoring arms
def _budget(ctx: Ctx, share: float) -> list[str]:
    """Overrides that size a training arm: ``share`` of the budget (capped by what is left), or 2 tiny steps."""
    if ctx.tiny:
        return ["train.max_steps=2", "train.checkpoint_every=0", "train.mixed_precision=no"]
    minutes = max(0.2, min(share * ctx.budget_minutes, ctx.left_s() / 60 - 1))
    return ["train.max_steps=1000000", f"train.time_budget_minutes={minutes:.3f}", "train.lr_schedule=constant",
            "train.checkpoint_every=0", "train.sample_every=0", "train.log_every=25"]


def _steps(run: Path) -> int:
    return int(json.loads((run / "logs" / "summary.json").read_text())["steps"])


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
