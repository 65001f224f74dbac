"""Seed 002 (thesis: attribute-conditional DDPM on CelebA-Dialog 64x64) as recipes.

* ``seed002-baselines``: Table 3.1, "Evaluación de los modelos sin entrenar y de las muestras originales":
  an untrained DDPM (random weights) and the ground truth (real images) on every metric, the empirical
  floor and ceiling of each metric.
* ``seed002-grid``: Table 4.1 / 4.2, the grid GA {no, 4} x T {1e3, 1e4} x Min-SNR-gamma {no, 5} x channels
  {[128,256,512,512], [256,512,768,768]}, 5 epochs each at lr 1e-4, batch 32; the best value of each metric
  with the configuration that reached it. Ours: the same grid, the same wall time per run, smaller U-Nets.

Metric mapping: FID -> FD_oracle (Inception weights cannot be fetched here), MTCNN -> the mean best-face
MTCNN confidence over all images (the figure the thesis reports as "MTCNN %"), Att. Estimator -> accuracy of
the SynthFaces oracle on the requested levels; CLIP-S has no counterpart for an attribute model here.
"""
from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

from facediff.experiments.common import (
    untrained_arm,
    Ctx, arm_seconds, base_config, base_overrides, evaluate_arm, finish, fmt, grid_of, md_table, pick,
    prepare_data, probe, sampling_cost, size_n, steps_for, train_arm)
from facediff.experiments.seed003 import linear_betas

PAPER = "seed 002 (CelebA-Dialog 64px, paper)"
METRICS_002 = "fd,kid,fd_by_condition,attr,faces,diversity,timing"
EVAL_SAMPLER, EVAL_STEPS = "ddim", 25  # DDIM works at T = 1e4 too (DPM-Solver++/Euler overflow in float32 there)
TRAIN_SHARE = 0.65
# Table 3.1 (paper): metric -> (untrained DDPM, SD Nano 2.1, ground truth)
TABLE_3_1 = {"FID": ("387.9992", "339.9721", "0.0"), "MTCNN": ("0.83 %", "20.25 %", "99.91 %"),
             "CLIP-S": ("19.8594", "22.9743", "24.1421"), "Att. Estimator": ("70.60 %", "70.40 %", "82.85 %")}
# Table 4.1 (paper): metric -> (best, T, Min-SNR-gamma, GA, channels)
TABLE_4_1 = {"FID": ("83.4184", "1e+04", "No", "No", "[256,512,768,768]"),
             "MTCNN": ("99.88 %", "1e+03", "5", "No", "[256,512,768,768]"),
             "CLIP-S": ("24.5876", "1e+03", "No", "No", "[256,512,768,768]"),
             "Att. estimator": ("88.20 %", "1e+03", "No", "No", "[256,512,768,768]")}
# Table 4.2 (paper): metric -> (best for [128,256,512,512], best for [256,512,768,768])
TABLE_4_2 = {"FID": ("98.3362", "83.4184"), "MTCNN": ("99.64 %", "99.88 %"), "CLIP-S": ("24.3546", "24.5876"),
             "Att. estimator": ("85.80 %", "88.20 %")}
# ours: metric label -> (key in pick(), higher is better, format)
OURS = {"FID": ("fd_oracle", False, "num"), "MTCNN": ("mtcnn_confidence", True, "pct"),
        "CLIP-S": (None, True, "num"), "Att. estimator": ("attr_accuracy", True, "pct")}
CHANNELS = {"small": (16, 32, 64), "large": (32, 64, 128)}  # thesis: [128,256,512,512] / [256,512,768,768]
TINY_CHANNELS = {"small": (8, 16), "large": (16, 32)}


def _thesis_overrides(ctx: Ctx, data: Path, steps: int, T: int, min_snr: bool, ga: int, ch: str) -> list[str]:
    """An arm of the grid: attribute-conditional eps-prediction DDPM, linear betas scaled to T, batch 32."""
    b0, b1 = linear_betas(T)
    chans = (TINY_CHANNELS if ctx.tiny else CHANNELS)[ch]
    ov = base_overrides(ctx, data, steps) + [
        "model.conditioning=attributes", "diffusion.schedule=linear", "diffusion.prediction_type=epsilon",
        f"diffusion.num_train_timesteps={T}", f"diffusion.beta_start={b0!r}", f"diffusion.beta_end={b1!r}",
        f"diffusion.loss_weighting={'min_snr' if min_snr else 'none'}", "diffusion.snr_gamma=5.0",
        "diffusion.cond_drop_prob=0.1", f"train.grad_accum={ga}", "train.batch_size=32", "train.lr_schedule=constant",
        f"model.block_out_channels=[{','.join(map(str, chans))}]", "model.layers_per_block=1",
        f"model.norm_num_groups={min(8, chans[0])}", "model.attention_head_dim=16"]
    if not ctx.tiny:
        ov += ["train.lr=1e-3", "train.ema_decay=0.995"]
    return ov


def run_grid(ctx: Ctx) -> dict[str, Any]:
    """Table 4.1: 16 short runs, the same wall time each; the best value of each metric and its configuration."""
    data, split = prepare_data(ctx, "human", 64 if ctx.tiny else 4000)
    cfg = base_config(ctx)
    tps = {ch: probe(ctx, cfg, _thesis_overrides(ctx, data, 3, 1000, False, 1, ch), f"channels-{ch}")
           for ch in CHANNELS}
    grid = list(product((1, 4), (1000, 10000), (False, True), ("small", "large")))
    arms = []
    per_arm = arm_seconds(ctx, TRAIN_SHARE, len(grid))  # fixed up front: the same wall time for every run
    for ga, T, snr, ch in grid:
        steps = steps_for(ctx, tps[ch], per_arm, 32, ga)
        name = f"GA{ga}-T{T}-{'minsnr5' if snr else 'nosnr'}-{ch}"
        s = train_arm(ctx, name, cfg, _thesis_overrides(ctx, data, steps, T, snr, ga, ch))
        arms.append({"name": name, "GA": ga, "T": T, "min_snr": 5.0 if snr else None, "channels": ch,
                     "channel_widths": list((TINY_CHANNELS if ctx.tiny else CHANNELS)[ch]), "train": s})
    costs = {ch: 0.0 if ctx.tiny else sampling_cost(next(a["train"]["run"] for a in arms if a["channels"] == ch))
             for ch in CHANNELS}
    n = size_n(ctx, ctx.left_s(), sum(costs[a["channels"]] for a in arms) * EVAL_STEPS)
    for a in arms:
        r = evaluate_arm(ctx, a["name"], a["train"]["run"], data, split, n=n, metrics=METRICS_002,
                         sampler=EVAL_SAMPLER, steps=ctx.steps(EVAL_STEPS))
        a.update(metrics=pick(r), floor=pick(r["floor_real_vs_real"]))
    best = {}
    for label, (key, higher, _) in OURS.items():
        vals = [a for a in arms if key and a["metrics"][key] is not None]
        best[label] = (max if higher else min)(vals, key=lambda a: a["metrics"][key])["name"] if vals else None
    md = _grid_markdown(ctx, arms, best, n)
    res = {"seed": "002", "table": "4.1", "n": n, "sampler": EVAL_SAMPLER, "steps": EVAL_STEPS, "arms": arms,
           "best": best, "probes": {k: v.__dict__ for k, v in tps.items()}}
    return finish(ctx, res, md, {a["name"]: grid_of(ctx, a["name"]) for a in arms},
                  floors={"real vs real": arms[0]["floor"]})


def _cfg_cells(a: dict[str, Any]) -> list[str]:
    return [f"{a['T']:.0e}", "5" if a["min_snr"] else "No", str(a["GA"]) if a["GA"] > 1 else "No",
            f"{a['channels']} {a['channel_widths']}"]


def _grid_markdown(ctx: Ctx, arms: list[dict[str, Any]], best: dict[str, str | None], n: int) -> list[str]:
    by = {a["name"]: a for a in arms}
    ours = ctx.data_label()
    rows = []
    for label, (key, _, kind) in OURS.items():
        rows.append([label, PAPER, *TABLE_4_1[label]])
        b = by.get(best[label]) if best[label] else None
        rows.append([label, ours, fmt(b["metrics"][key], kind) if b else "— (not measured)",
                     *(_cfg_cells(b) if b else ["", "", "", ""])])
    head = ["Metric", "source", "Best", "T", "Min-SNR-γ", "GA", "Channels"]
    t42 = []
    for label, (key, higher, kind) in OURS.items():
        t42.append([label, PAPER, *TABLE_4_2[label]])
        cells = []
        for ch in CHANNELS:
            vals = [a["metrics"][key] for a in arms if a["channels"] == ch and key and a["metrics"][key] is not None]
            cells.append(fmt((max if higher else min)(vals), kind) if vals else "—")
        t42.append([label, ours, *cells])
    full_head = ["run", "T", "Min-SNR-γ", "GA", "Channels", "steps", "FD_oracle ↓", "KID ↓", "MTCNN ↑",
                 "face rate", "Att. estimator ↑", "FD by condition ↓", "diversity"]
    full = []
    for a in arms:
        m = a["metrics"]

        def cell(key: str, kind: str = "num", label: str | None = None) -> str:
            txt = fmt(m[key], kind)
            return f"**{txt}**" if label and best.get(label) == a["name"] else txt

        full.append([a["name"], *_cfg_cells(a), a["train"]["steps"], cell("fd_oracle", label="FID"),
                     cell("kid_oracle"), cell("mtcnn_confidence", "pct", "MTCNN"), cell("faces_rate", "pct"),
                     cell("attr_accuracy", "pct", "Att. estimator"), cell("fd_by_condition"), cell("diversity")])
    fl = arms[0]["floor"]
    full.append(["real vs real (floor)", "", "", "", "", "", fmt(fl["fd_oracle"]), fmt(fl["kid_oracle"]),
                 fmt(fl["mtcnn_confidence"], "pct"), fmt(fl["faces_rate"], "pct"), fmt(fl["attr_accuracy"], "pct"),
                 fmt(fl["fd_by_condition"]), fmt(fl["diversity"])])
    return ["Seed 002, Table 4.1: best result per metric over the grid GA x T x Min-SNR-γ x channels, with the "
            "configuration that reached it.", "", *md_table(head, rows), "",
            "Table 4.2: best per network size (seed: [128,256,512,512] vs [256,512,768,768]; ours: small vs large).",
            "", *md_table(["Metric", "source", "best for small", "best for large"], t42), "",
            f"## All runs ({ours}); best per metric in bold", "", *md_table(full_head, full), "",
            f"n = {n} images per run, {EVAL_SAMPLER} {EVAL_STEPS} steps, guidance 3. Each run gets the same "
            "wall time (the thesis: 5 epochs each), so GA = 4 makes a quarter of the optimizer steps and the large "
            "U-Net sees fewer images. lr 1e-3 (thesis 1e-4: too slow to show anything in minutes). T = 1e4 uses "
            "linear betas scaled by 1000 / T (1e-5..2e-3); unscaled 1e-4..0.02 at T = 1e4 is pure noise for the "
            "last ~90 % of steps. MTCNN = mean best-face confidence over all images (the thesis' \"MTCNN %\"). "
            "CLIP-S has no counterpart for an attribute-conditional model here (no CLIP weights offline)."]


def run_baselines(ctx: Ctx) -> dict[str, Any]:
    """Table 3.1: an untrained DDPM (random weights, 0 steps) and the real images on every metric."""
    from facediff.pipelines.load import DEFAULT_MODEL_DIR

    data, split = prepare_data(ctx, "human", 64 if ctx.tiny else 4000)
    cfg = base_config(ctx)
    untrained = untrained_arm(ctx, "untrained", cfg, base_overrides(ctx, data, 1))
    evals: list[tuple[str, str | Path | None]] = [("untrained", untrained["run"])]
    trained_label = None
    if ctx.model is not None or (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        trained_label = "trained (" + (str(ctx.model) if ctx.model else "bundled default model") + ")"
        evals.append(("trained", ctx.model))
    cost = 0.0 if ctx.tiny else sum(sampling_cost(m) for _, m in evals)
    n = size_n(ctx, ctx.left_s() - 30, cost * EVAL_STEPS)
    arms = []
    for name, model in evals:
        r = evaluate_arm(ctx, name, model, data, split, n=n, metrics=METRICS_002, sampler=EVAL_SAMPLER,
                         steps=ctx.steps(EVAL_STEPS))
        arms.append({"name": name, "model": str(model) if model else "bundled default", "metrics": pick(r),
                     "floor": pick(r["floor_real_vs_real"]), "train": untrained if name == "untrained" else None})
    gt = arms[0]["floor"]
    ours = ctx.data_label()
    cols = [f"{PAPER}: Untrained DDPM", f"{PAPER}: SD Nano 2.1", f"{PAPER}: Ground Truth",
            f"{ours}: untrained DDPM", *([f"{ours}: {trained_label}"] if trained_label else []),
            f"{ours}: ground truth (real vs real)"]
    rows = []
    extra = {"KID": ("kid_oracle", "num"), "face rate (MTCNN)": ("faces_rate", "pct"),
             "FD by condition": ("fd_by_condition", "num"), "diversity": ("diversity", "num")}
    for label, (key, _, kind) in {**OURS, **{k: (v[0], True, v[1]) for k, v in extra.items()}}.items():
        paper = TABLE_3_1.get(label if label != "Att. estimator" else "Att. Estimator", ("", "", ""))
        vals = [fmt(a["metrics"][key], kind) if key else "n/a" for a in arms] + [fmt(gt[key], kind) if key else "n/a"]
        rows.append([label if label != "FID" else "FID → FD_oracle", *paper, *vals])
    md = ["Seed 002, Table 3.1: untrained model vs ground truth on every metric (the empirical floor and ceiling).",
          "", *md_table(["Metric", *cols], rows), "",
          f"n = {n} images, {EVAL_SAMPLER} {EVAL_STEPS} steps, guidance 3. Untrained = the bundled default's "
          "architecture with random weights (0 training steps). Our ground truth compares two disjoint halves of "
          "the real set (the thesis compared the real set with itself, hence its FID of 0). SD Nano 2.1 and CLIP-S "
          "have no counterpart here (no pretrained weights offline)."]
    res = {"seed": "002", "table": "3.1", "n": n, "arms": arms, "ground_truth": gt}
    return finish(ctx, res, md, {a["name"]: grid_of(ctx, a["name"]) for a in arms},
                  floors={"ground truth (real vs real)": gt})
