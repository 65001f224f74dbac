"""The seeds' tables as named recipes: ``facediff experiment NAME [--data DIR] [--budget-minutes M] --out DIR``.

Every recipe writes ``OUT/results.json``, ``OUT/results.md`` (tables laid out like the seed's, the seed's
published numbers labelled "seed 00X (..., paper)" beside ours) and ``OUT/report.html`` (with sample grids),
and splits its wall-clock budget evenly across its arms. Default budgets are sized for about 30 minutes on
2 CPU cores at 32x32; ``budget_minutes`` scales them (more minutes: more training steps and more images).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from facediff.errors import FacediffError
from facediff.experiments.common import Ctx, finish, fmt, md_table
from facediff.progress import Progress
from facediff.registry import RECIPES as RECIPE_INFO
from facediff.registry import RecipeInfo


@dataclass(frozen=True)
class Recipe:
    """One experiment: its entry in ``facediff.registry.RECIPES`` and the function that runs it."""

    name: str  # the CLI name
    info: RecipeInfo  # seed, summary, default budget, whether it trains
    run: Callable[[Ctx], dict[str, Any]]  # the recipe

    @property
    def budget_minutes(self) -> float:
        return self.info.budget_minutes

    @property
    def summary(self) -> str:
        return self.info.summary

    @property
    def trains(self) -> bool:
        return self.info.trains


def _run_oracle(ctx: Ctx) -> dict[str, Any]:
    """Train the SynthFaces oracle (seed 002's attribute estimator, Sec. 3.2) within the budget into OUT/oracle."""
    from facediff.experiments import oracle

    if ctx.data is not None:
        from facediff.data.prepared import PreparedDataset

        PreparedDataset(ctx.data)  # a clear error for a wrong --data before the budget starts running
    m = oracle.train_oracle(ctx.out / "oracle", budget_minutes=max(0.1, ctx.left_s() / 60), size=ctx.size,
                            data_dir=ctx.data, work_dir=ctx.out / "work")
    held = m.get("heldout") or m["val"]
    rows = [[a, fmt(r["accuracy"], "pct"), fmt((m["val"]["per_attribute"].get(a) or {}).get("accuracy"), "pct"), ""]
            for a, r in held["per_attribute"].items()]
    rows.append(["mean", fmt(held["mean_accuracy"], "pct"), fmt(m["val"]["mean_accuracy"], "pct"),
                 "82.85 % (estimator on real validation images, Table 3.1 \"Ground Truth\")"])
    md = ["The attribute estimator of seed 002 (Sec. 3.2) trained on SynthFaces, where its labels are exact: the "
          "oracle behind FD_oracle, KID, diversity and attribute accuracy.", "",
          *md_table(["attribute", f"{ctx.data_label()}: held-out accuracy", "ours: validation accuracy",
                     "seed 002 (CelebA-Dialog, paper)"], rows), "",
          f"Held-out: {m.get('heldout_source', 'the validation split')}. Steps: {m['steps']}. "
          f"Weights in {ctx.out / 'oracle'}; copy them to src/facediff/assets/oracle to bundle them."]
    per_size = m.get("heldout_per_render_size") or {}
    if per_size:  # the faces are drawn at several sizes and read at one: each size alone
        names = list(next(iter(per_size.values()))["per_attribute"])
        md += ["", "Held-out accuracy of faces drawn at each size alone (read at "
               f"{m['size']} px through the toolkit's resize):", "",
               *md_table(["drawn at", *names, "mean"],
                         [[k, *(fmt(v["per_attribute"][a], "pct") for a in names), fmt(v["mean_accuracy"], "pct")]
                          for k, v in per_size.items()])]
    arms = [{"name": a, "metrics": {"heldout_accuracy": r["accuracy"]}} for a, r in held["per_attribute"].items()]
    return finish(ctx, {"seed": "002", "arms": arms, "oracle": str(ctx.out / "oracle"),
                        "metrics": {k: v for k, v in m.items() if k != "curve"}}, md, {})


def _recipes() -> dict[str, Recipe]:
    from facediff.experiments import (default_models, sampler_sweep, seed000, seed001, seed002, seed003,
                                      sweep_isolation, text, text_lora, understanding)

    runs = {"seed003-timesteps": seed003.run_timesteps, "seed003-noise": seed003.run_noise,
            "seed002-grid": seed002.run_grid, "seed002-baselines": seed002.run_baselines,
            "sampler-sweep": sampler_sweep.run_sweep, "seed000": seed000.run_seed000, "oracle": _run_oracle,
            "seed001": seed001.run_seed001, "seed004-hair": text.run_hair, "lora-style": text_lora.run_lora_style,
            "seed002-compare": text_lora.run_compare,
            "text-understanding": understanding.run_understanding,
            "default-models": default_models.run_default_models,
            "sweep-isolation": sweep_isolation.run_sweep_isolation}
    if set(runs) != set(RECIPE_INFO):
        raise RuntimeError(f"facediff.registry.RECIPES and the recipe functions disagree: {sorted(set(runs) ^ set(RECIPE_INFO))}")
    return {name: Recipe(name, RECIPE_INFO[name], runs[name]) for name in RECIPE_INFO}


RECIPES: dict[str, Recipe] = _recipes()


def run_experiment(name: str, out: str | Path, *, data: str | Path | None = None,
                   budget_minutes: float | None = None, size: int = 32, model: str | Path | None = None,
                   n_eval: int | None = None, progress: Progress | None = None, tiny: bool = False) -> dict[str, Any]:
    """Run recipe ``name`` into ``out``; returns its results dict (also written to OUT/results.json).

    ``data``: a prepared data set (default: SynthFaces rendered into OUT/data). ``budget_minutes``: the
    wall-clock budget (default: the recipe's). ``model``: the model of the sampling-only recipes (None = the
    bundled default), the trained model of seed002-baselines, the SD-format base of lora-style
    (``RecipeInfo.model_optional``). ``n_eval``: images per evaluated arm (default: sized by the budget). ``tiny``:
    smoke-test mode (tiny configs, 2 training steps, no throughput probes) for tests.
    """
    if name not in RECIPES:
        raise FacediffError(f"unknown experiment {name!r} (known: {', '.join(RECIPES)})")
    recipe = RECIPES[name]
    if size not in ((16, 32, 64) if tiny else (32, 64)):
        raise FacediffError(f"--size {size}: choose 32 or 64")
    if budget_minutes is not None and not 0 < budget_minutes < float("inf"):
        raise FacediffError(f"--budget-minutes {budget_minutes}: must be a positive number of minutes")
    if data is not None and not Path(data).is_dir():
        raise FacediffError(f"--data {data}: no such directory (a prepared data set from `facediff data prepare`)")
    if model is not None and recipe.trains and not recipe.info.model_optional:
        raise FacediffError(f"--model: experiment {name!r} trains its own models; drop --model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(name=name, out=out, budget_minutes=float(budget_minutes or recipe.budget_minutes), size=size,
              data=Path(data) if data is not None else None, model=str(model) if model is not None else None,
              n_eval=n_eval, progress=progress, tiny=tiny)
    return recipe.run(ctx)
