"""Recipe ``sampler-sweep``: quality per network evaluation of the samplers on one trained model.

Seed 002 (Sec. 2.1) samples with Ho et al.'s ancestral DDPM, T = 1000 network evaluations per image, and
names that cost as the main drawback of diffusion models. Here the same model is sampled with DDPM at 1000
steps and with DDIM (Song et al. 2021), DPM-Solver++(2M) (Lu et al. 2022) and UniPC (Zhao et al. 2023) at
10 / 20 / 50 steps, with the same seeds and conditions, and scored with FD_oracle and attribute accuracy.
Goal: 20-step DPM-Solver++ within 10 % of 1000-step DDPM's FD_oracle.
"""
from __future__ import annotations

from typing import Any

from facediff.errors import FacediffError
from facediff.experiments.common import (
    Ctx, evaluate_arm, finish, fmt, grid_of, md_table, pick, prepare_data, sampling_cost, size_n)

REFERENCE = ("ddpm", 1000)
FAST = tuple((s, k) for s in ("ddim", "dpmpp", "unipc") for k in (10, 20, 50))
GOAL = ("dpmpp", 20, 0.10)  # sampler, steps, allowed relative FD_oracle excess over the reference
METRICS_SWEEP = "fd,kid,fd_by_condition,attr,diversity,timing"
SEED_NOTE = "seed 002 (paper): ancestral DDPM, T = 1000 NFE/image (Sec. 2.1); no sampler comparison published"


def run_sweep(ctx: Ctx) -> dict[str, Any]:
    """DDPM-1000 vs DDIM / DPM-Solver++ / UniPC at 10, 20, 50 steps on ``ctx.model`` (None = bundled default)."""
    from facediff.pipelines.load import load_pipeline

    bundle = load_pipeline(ctx.model)
    T = int(bundle.scheduler.config["num_train_timesteps"])
    data, split = prepare_data(ctx, "human" if bundle.conditional else "anime", 64 if ctx.tiny else 4000)
    spec = [(REFERENCE[0], min(REFERENCE[1], T))] + [(s, min(k, T)) for s, k in FAST]
    cost = 0.0 if ctx.tiny else sampling_cost(ctx.model, "ddim")
    n = size_n(ctx, ctx.left_s() - 30, cost * sum(k for _, k in spec), lo=16, hi=256)
    arms = []
    for sampler, steps in spec:
        name = f"{sampler}-{steps}"
        try:
            r = evaluate_arm(ctx, name, ctx.model, data, split, n=n, metrics=METRICS_SWEEP, sampler=sampler,
                             steps=steps)
        except FacediffError as e:  # e.g. DPM-Solver++ on a schedule beyond float32 (T = 1e4, linear betas)
            arms.append({"name": name, "sampler": sampler, "steps": steps, "error": str(e),
                         "metrics": pick({}), "floor": None})
            continue
        arms.append({"name": name, "sampler": sampler, "steps": steps, "metrics": pick(r),
                     "floor": pick(r["floor_real_vs_real"])})
    ref = arms[0]["metrics"]["fd_oracle"]
    for a in arms:
        fd = a["metrics"]["fd_oracle"]
        a["fd_vs_reference"] = fd / ref if fd is not None and ref else None
    goal_arm = next((a for a in arms if (a["sampler"], a["steps"]) == (GOAL[0], min(GOAL[1], T))), None)
    ratio = goal_arm["fd_vs_reference"] if goal_arm else None
    goal = {"sampler": GOAL[0], "steps": GOAL[1], "tolerance": GOAL[2], "fd_ratio": ratio,
            "met": None if ratio is None else bool(ratio <= 1 + GOAL[2])}
    floor = next((a["floor"] for a in arms if a["floor"]), pick({}))
    cfg_x = 2 if bundle.conditional else 1
    head = ["sampler", "steps", "NFE / image", "FD_oracle ↓", "FD / FD(DDPM-1000)", "KID ↓", "Att. accuracy ↑",
            "FD by condition ↓", "diversity", "s / image"]
    rows = [[a["sampler"], a["steps"], a["steps"] * cfg_x, fmt(a["metrics"]["fd_oracle"]),
             fmt(a["fd_vs_reference"]), fmt(a["metrics"]["kid_oracle"]), fmt(a["metrics"]["attr_accuracy"], "pct"),
             fmt(a["metrics"]["fd_by_condition"]), fmt(a["metrics"]["diversity"]),
             a.get("error") or fmt(a["metrics"]["seconds_per_image"])] for a in arms]
    rows.append(["real vs real (floor)", "", "", fmt(floor["fd_oracle"]), "", fmt(floor["kid_oracle"]),
                 fmt(floor["attr_accuracy"], "pct"), fmt(floor["fd_by_condition"]), fmt(floor["diversity"]), ""])
    verdict = ("not measured" if goal["met"] is None else
               f"{'met' if goal['met'] else 'NOT met'} (ratio {ratio:.3f})")
    md = [f"Samplers on one model ({bundle.model_dir}): FD_oracle and attribute accuracy against network evaluations.",
          "", f"Reference: {SEED_NOTE}.", "", f"## {ctx.data_label()}", "", *md_table(head, rows), "",
          f"n = {n} images per arm (the same n, seeds and conditions in every arm, so FD values are comparable; "
          f"FD at small n is biased upward, compare rows, not papers). NFE counts guidance's conditional + "
          f"unconditional pass{' (x2)' if cfg_x == 2 else ''}; guidance 3.",
          f"Goal: {GOAL[0]} {GOAL[1]} steps within {GOAL[2]:.0%} of DDPM-{min(REFERENCE[1], T)}'s FD_oracle: {verdict}."]
    res = {"n": n, "model": str(bundle.model_dir), "arms": arms, "goal": goal}
    return finish(ctx, res, md, {a["name"]: grid_of(ctx, a["name"]) for a in arms}, floors={"real vs real": floor})
