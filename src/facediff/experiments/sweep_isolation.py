"""Recipe ``sweep-isolation``: does moving one attribute change only that attribute? (issue 26, section 4)

``facediff sample --sweep`` draws a grid whose row r moves attribute r over its levels while the other
attributes keep base levels and every tile keeps the seed (``conditioning.attributes.attribute_sweep``). This
recipe draws that grid for K seeds (K x A x L faces) and lets the oracle read every attribute of every face.
For a swept attribute a and another attribute b, the *leakage* at level l is the share of seeds whose oracle
reading of b differs between the tile at a = l and the tile at a's base level: the pairs share the seed and
every other condition, so a change of b is caused by moving a (plus the oracle's own noise on near-identical
faces). Target: <= 3 % for every (a, b, l). The swept attribute's own accuracy is reported beside it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from facediff.experiments.common import Ctx, finish, fmt, md_table

TARGET = 0.03  # issue 26: the other attributes stay within 3 points as one sweeps


def sweep_leakage(pipe, seeds: list[int], steps: int, guidance: float | None, progress=None) -> dict[str, Any]:
    """Leakage table of ``pipe`` over the sweep grids of ``seeds`` (module docstring)."""
    from facediff.conditioning.attributes import attribute_sweep
    from facediff.pipelines.load import resolve_guidance
    from facediff.metrics.features import OracleFeatures

    names, L, A = pipe.attributes, pipe.num_levels, len(pipe.attributes)
    conds = [c for s in seeds for c in attribute_sweep(names, L, s)[0]]  # seed-major, then row a, then level
    all_seeds = [s for s in seeds for _ in range(A * L)]
    images = pipe(seeds=all_seeds, attrs=conds, steps=steps, guidance=resolve_guidance(pipe, guidance),
                  progress=progress).images
    oracle = OracleFeatures()
    pred = oracle.predict(images)
    read = np.stack([pred[a] for a in names], 1).reshape(len(seeds), A, L, A)  # (seed, swept a, level, read b)
    leakage: dict[str, dict[str, list[float]]] = {}
    own: dict[str, float] = {}
    for i, a in enumerate(names):
        # a's base level: where the next row (which sweeps another attribute) holds it
        base_level = np.array([conds[k * A * L + ((i + 1) % A) * L][a] for k in range(len(seeds))])
        at_base = read[np.arange(len(seeds)), i, base_level]  # (seed, b): the readings at a's base level
        leakage[a] = {b: [float((read[:, i, lvl, j] != at_base[:, j]).mean()) for lvl in range(L)]
                      for j, b in enumerate(names) if j != i}
        own[a] = float(np.mean([(read[:, i, lvl, i] == lvl).mean() for lvl in range(L)]))
    worst = max(max(v) for row in leakage.values() for v in row.values())
    return {"leakage": leakage, "own_accuracy": own, "worst": worst, "met": bool(worst <= TARGET),
            "images": images}


def run_sweep_isolation(ctx: Ctx) -> dict[str, Any]:
    from facediff.errors import FacediffError
    from facediff.imaging import make_grid, save_png
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(ctx.model)
    if not pipe.conditional or not pipe.attributes:
        raise FacediffError(f"{ctx.model or 'the bundled default model'}: sweep-isolation needs an "
                            "attribute-conditional model")
    k = ctx.n_eval or (2 if ctx.tiny else 64)
    ctx.say(f"{k} sweep grids of {len(pipe.attributes) * pipe.num_levels} faces")
    res = sweep_leakage(pipe, list(range(k)), ctx.steps(25), None, ctx.progress)
    names = pipe.attributes
    rows = []
    for a in names:
        cells = [fmt(max(res["leakage"][a][b]), "pct") if b != a else "—" for b in names]
        rows.append([a, fmt(res["own_accuracy"][a], "pct"), *cells])
    md = [f"{ctx.data_label()}: {k} sweep grids of `{ctx.model or 'the bundled default model'}` (DPM-Solver++ "
          f"{ctx.steps(25)} steps, the model's guidance). Cell (a, b): the largest share, over a's levels, of seeds "
          f"whose oracle reading of b changes when only a moves. Target <= {TARGET:.0%} everywhere: "
          f"{'met' if res['met'] else 'not met'} (worst {fmt(res['worst'], 'pct')}).", "",
          *md_table(["swept attribute", "its own accuracy", *[f"{b} changes" for b in names]], rows)]
    grid_png = ctx.out / "sweep_seed0.png"
    save_png(make_grid(res["images"][:len(names) * pipe.num_levels], pipe.num_levels, scale=2), grid_png)
    arms = [{"name": a, "metrics": {"own_accuracy": res["own_accuracy"][a], "leakage": res["leakage"][a],
                                    "worst": max(max(v) for v in res["leakage"][a].values())}} for a in names]
    return finish(ctx, {"seed": "issue 26", "arms": arms, "worst": res["worst"], "met": res["met"],
                        "target": TARGET, "grids": k}, md, {"sweep, seed 0": grid_png})
