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

    names, L = pipe.attributes, pipe.num_levels
    conds = [c for s in seeds for c in attribute_sweep(names, L, s)[0]]  # seed-major, then row a, then level
    all_seeds = [s for s in seeds for _ in range(len(names) * L)]
    images = pipe(seeds=all_seeds, attrs=conds, steps=steps, guidance=resolve_guidance(pipe, guidance),
                  progress=progress).images
    return {**leakage_table(images, conds, names, L, len(seeds)), "images": images}


def leakage_table(images: np.ndarray, conds: list[dict[str, int]], names: tuple[str, ...], L: int,
                  k: int) -> dict[str, Any]:
    """The oracle's readings of k sweep grids (``images`` seed-major, then row a, then level) -> leakage[a][b]
    per level, the swept attribute's own accuracy and ``held``: per (a, b) the spread (max - min over a's
    levels) of b's accuracy against its held level, the population view of the same question."""
    from facediff.metrics.features import OracleFeatures

    A = len(names)
    pred = OracleFeatures().predict(images)
    read = np.stack([pred[a] for a in names], 1).reshape(k, A, L, A)  # (seed, swept a, level, read b)
    held = np.array([[c[b] for b in names] for c in conds]).reshape(k, A, L, A)  # the requested levels
    leakage: dict[str, dict[str, list[float]]] = {}
    spread: dict[str, dict[str, float]] = {}
    own: dict[str, float] = {}
    for i, a in enumerate(names):
        # a's base level: where the next row (which sweeps another attribute) holds it
        base_level = np.array([conds[s * A * L + ((i + 1) % A) * L][a] for s in range(k)])
        at_base = read[np.arange(k), i, base_level]  # (seed, b): the readings at a's base level
        leakage[a] = {b: [float((read[:, i, lvl, j] != at_base[:, j]).mean()) for lvl in range(L)]
                      for j, b in enumerate(names) if j != i}
        acc = (read[:, i] == held[:, i]).mean(0)  # (level, b): b's accuracy as a sits at each level
        spread[a] = {b: float(acc[:, j].max() - acc[:, j].min()) for j, b in enumerate(names) if j != i}
        own[a] = float(np.mean([(read[:, i, lvl, i] == lvl).mean() for lvl in range(L)]))
    worst = max(max(v) for row in leakage.values() for v in row.values())
    return {"leakage": leakage, "own_accuracy": own, "worst": worst, "met": bool(worst <= TARGET),
            "held_spread": spread, "worst_held_spread": max(max(r.values()) for r in spread.values())}


def real_sweep_leakage(names: tuple[str, ...], L: int, seeds: list[int], size: int = 64, space=None,
                       style: str = "mixed") -> dict[str, Any]:
    """The same table for SynthFaces' own sweeps: face ``s`` of the held-out seed 7 rendered with each grid's
    levels (``render_batch`` keeps everything else), so only the named attribute moves. What remains is the
    oracle's noise: the floor of the measure. ``space``: a latent model's autoencoder, to read its round
    trips instead (the floor a latent model can reach)."""
    import torch

    from facediff.conditioning.attributes import attribute_sweep
    from facediff.data.synth import render_batch

    grids = [(s, c) for s in seeds for c in attribute_sweep(names, L, s)[0]]  # seed-major, as the model's
    conds = [c for _, c in grids]
    faces = np.stack([render_batch(7, s, 1, size, style, c)[0].image for s, c in grids])
    if space is not None:
        with torch.no_grad():
            x = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
            rec = torch.cat([space.decode(space.encode(x[i:i + 64])) for i in range(0, len(x), 64)])
        faces = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return leakage_table(faces, conds, names, L, len(seeds))


def run_sweep_isolation(ctx: Ctx) -> dict[str, Any]:
    from facediff.errors import FacediffError
    from facediff.imaging import make_grid, save_png
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(ctx.model)
    if not pipe.conditional or not pipe.attributes:
        raise FacediffError(f"{ctx.model or 'the bundled default model'}: sweep-isolation needs an "
                            "attribute-conditional model")
    k = ctx.n_eval or (2 if ctx.tiny else 64)
    names, L, seeds = pipe.attributes, pipe.num_levels, list(range(k))
    ctx.say(f"{k} sweep grids of {len(names) * L} faces")
    res = sweep_leakage(pipe, seeds, ctx.steps(25), None, ctx.progress)
    ctx.say("the floor: the same grids of real SynthFaces (and their autoencoder round trips)")
    floors = {"real": real_sweep_leakage(names, L, seeds, pipe.sample_size)}
    if pipe.is_latent:
        floors["autoencoder"] = real_sweep_leakage(names, L, seeds, pipe.sample_size, pipe.space)
    rows = []
    for a in names:
        cells = [fmt(max(res["leakage"][a][b]), "pct") + " / " +
                 " / ".join(fmt(max(f["leakage"][a][b]), "pct") for f in floors.values())
                 if b != a else "—" for b in names]
        rows.append([a, fmt(res["own_accuracy"][a], "pct"), *cells])
    floor_names = " / ".join(floors)
    md = [f"{ctx.data_label()}: {k} sweep grids of `{ctx.model or 'the bundled default model'}` (DPM-Solver++ "
          f"{ctx.steps(25)} steps, the model's guidance). Cell (a, b): the largest share, over a's levels, of seeds "
          f"whose oracle reading of b changes when only a moves: model / {floor_names} floor (SynthFaces' own "
          f"grids: face s of seed 7 rendered at each grid's levels, so only a moves and what changes is the "
          f"oracle's noise). Target <= {TARGET:.0%} everywhere: {'met' if res['met'] else 'not met'} (worst "
          f"{fmt(res['worst'], 'pct')}; " + ", ".join(f"{n} floor {fmt(f['worst'], 'pct')}"
                                                     for n, f in floors.items()) + ").", "",
          *md_table(["swept attribute", "its own accuracy", *[f"{b} changes" for b in names]], rows), "",
          f"Held attributes' accuracy spread (max - min over the swept attribute's levels of another attribute's "
          f"accuracy against its held level): model {fmt(res['worst_held_spread'], 'pct')}, " +
          ", ".join(f"{n} {fmt(f['worst_held_spread'], 'pct')}" for n, f in floors.items()) + "."]
    grid_png = ctx.out / "sweep_seed0.png"
    save_png(make_grid(res["images"][:len(names) * L], L, scale=2), grid_png)
    arms = [{"name": a, "metrics": {"own_accuracy": res["own_accuracy"][a], "leakage": res["leakage"][a],
                                    "worst": max(max(v) for v in res["leakage"][a].values()),
                                    "held_spread": res["held_spread"][a],
                                    "floors": {n: {"leakage": f["leakage"][a], "held_spread": f["held_spread"][a]}
                                               for n, f in floors.items()}}} for a in names]
    return finish(ctx, {"seed": "issue 26", "arms": arms, "worst": res["worst"], "met": res["met"],
                        "target": TARGET, "grids": k, "worst_held_spread": res["worst_held_spread"],
                        "floors": {n: {"worst": f["worst"], "worst_held_spread": f["worst_held_spread"]}
                                   for n, f in floors.items()}}, md, {"sweep, seed 0": grid_png})
