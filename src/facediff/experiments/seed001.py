"""Seed 001 (MultiDiffusion region composition, Bar-Tal et al. 2023) as the recipe ``seed001``: a group photo.

Seed 001 shows pictures only: regions bound to prompts "mostly" appear where asked, small regions are
sometimes neglected or spill over, bootstrapping helps adherence and too much of it hurts overall quality.
We measure that on a face model: four faces in a 2x2 layout (each box the model's native size, the canvas
twice as large), each face with its own attribute levels (prompts built from the same levels for a text
model), and score every region's crop with the SynthFaces oracle:

* per-region attribute accuracy (requested level = the oracle's estimate), with bootstrapping k = 0, 20 %
  and 40 % of the steps, against plain (unfused) sampling of the same conditions at the native size;
* leakage: over (region, neighbour, attribute) triples where a region and the region beside it asked for
  different levels, how often the region shows its neighbour's level. For plain sampling the same count is
  the chance of showing the other level without any neighbour: the floor leakage is measured against.

Levels are 0 or the top level per attribute (clear contrasts), drawn at random per region.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from facediff.errors import FacediffError
from facediff.experiments.common import Ctx, finish, fmt, md_table

BOOTSTRAP = (0.0, 0.2, 0.4)  # fractions of the steps (seed 001 / the paper: 20 %)
STEPS = 20  # DDIM steps, as in the reference implementation's sampler
GUIDANCE = 3.0
NEIGHBOURS = {0: (1, 2), 1: (0, 3), 2: (0, 3), 3: (1, 2)}  # 2x2 grid, row-major: regions sharing an edge


def _conditions(rng: np.random.Generator, n: int, attributes: tuple[str, ...], top: int) -> list[list[dict]]:
    """n compositions x 4 regions of {attribute: 0 or top}."""
    return [[{a: int(rng.integers(2)) * top for a in attributes} for _ in range(4)] for _ in range(n)]


def _prompts(conds: list[list[dict]], rng: np.random.Generator) -> list[list[str]]:
    from facediff.data.synth_text import HAIR_LENGTH_WORDS, caption

    out = []
    for comp in conds:
        row = []
        for c in comp:
            levels = {a: c.get(a, 0) for a in ("bangs", "eyeglasses", "beard", "smiling", "age")}
            gender = "male" if levels["beard"] > 0 else str(rng.choice(["female", "male"]))
            row.append(caption(style="human", gender=gender, attributes=levels, hair_colour="brown",
                               hair_length=str(rng.choice(sorted(HAIR_LENGTH_WORDS))), rng=rng))
        out.append(row)
    return out


def _score(pred: dict[str, np.ndarray], conds: list[list[dict]], attributes: tuple[str, ...]) -> dict[str, Any]:
    """pred[a]: (n * 4,) estimated levels, composition-major; accuracy per region and leakage to neighbours."""
    hits, leaks, per_attr = [], [], {a: [] for a in attributes}
    for i, comp in enumerate(conds):
        for r, c in enumerate(comp):
            for a in attributes:
                got = int(pred[a][4 * i + r])
                hits.append(got == c[a])
                per_attr[a].append(got == c[a])
                for q in NEIGHBOURS[r]:
                    if comp[q][a] != c[a]:
                        leaks.append(got == comp[q][a])
    exact = [all(int(pred[a][4 * i + r]) == c[a] for a in attributes) for i, comp in enumerate(conds)
             for r, c in enumerate(comp)]
    return {"accuracy": float(np.mean(hits)), "exact_match": float(np.mean(exact)),
            "leakage": float(np.mean(leaks)) if leaks else None, "leak_pairs": len(leaks),
            "per_attribute": {a: float(np.mean(v)) for a, v in per_attr.items()}}


def _group_metrics(images: np.ndarray, side: int, every_px: int) -> dict[str, Any]:
    """Issue 26's composition checks on whole photos: MTCNN finds exactly the 4 intended faces (no ghost face
    between them, none missing), and the gradient across the window borders that run through faces (every
    ``every_px``, leaving out the borders between faces) over the gradient elsewhere. Arms without window borders
    inside the faces (plain sampling, aligned views) are measured on the same lines (half a face): the faces'
    own gradient there, the level a seamless composition shows."""
    from facediff.metrics.faces import face_detection
    from facediff.metrics.image import seam_ratio

    counts = np.array([p["faces"] for p in face_detection(images, upscale_to=5 * side // 2)["per_image"]])
    return {"faces_exact": float((counts == 4).mean()), "faces_extra": float((counts > 4).mean()),
            "faces_mean": float(counts.mean()),
            "seam_ratio": seam_ratio(images, every_px, skip_every=side)}


def _crops(images: np.ndarray, side: int) -> np.ndarray:
    """(n, 2s, 2s, 3) canvases -> (n * 4, s, s, 3) region crops, row-major per canvas."""
    return np.stack([im[y:y + side, x:x + side] for im in images for y in (0, side) for x in (0, side)])


def run_seed001(ctx: Ctx) -> dict[str, Any]:
    """The group photo on ``ctx.model`` (None = the bundled attribute model)."""
    from facediff.imaging import make_grid, save_png
    from facediff.metrics.features import OracleFeatures
    from facediff.pipelines.compose import Layout, Region, compose, overlay_masks
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(ctx.model)
    oracle = OracleFeatures()
    attributes, top = _scored_attributes(ctx, pipe, oracle)
    side = pipe.sample_size
    steps = ctx.steps(STEPS)
    rng = np.random.default_rng(0)

    def layout(conds: list[list[dict]], k: float, stride: int | None = None, weights: str = "uniform") -> Layout:
        prompts = _prompts(conds, np.random.default_rng(1)) if pipe.takes_text else None
        regions = []
        for r in range(4):
            box = ((r % 2) * side, (r // 2) * side, (r % 2 + 1) * side, (r // 2 + 1) * side)
            if prompts is not None:
                regions.append(Region(name=f"face {r + 1}", box=box, prompt=[p[r] for p in prompts]))
            else:
                regions.append(Region(name=f"face {r + 1}", box=box, attrs=[c[r] for c in conds]))
        return Layout(width=2 * side, height=2 * side, regions=regions, steps=steps, sampler="ddim",
                      guidance=GUIDANCE, seed=0, bootstrap=k, stride=stride, window_weights=weights)

    # size n by the budget: time one composition first (it is kept as the first of the k = 0 arm's images)
    if ctx.tiny or ctx.n_eval:
        n = 1 if ctx.tiny else max(1, ctx.n_eval // 4)
    else:
        t0 = time.time()
        compose(pipe, layout(_conditions(np.random.default_rng(99), 1, attributes, top), 0.0), n=1)
        per = time.time() - t0
        n = int(max(2, min(64, ctx.left_s() * 0.85 / (per * (len(BOOTSTRAP) + 1.7)))))
    conds = _conditions(rng, n, attributes, top)
    ctx.say(f"{n} group photos x {len(BOOTSTRAP)} bootstrapping settings + plain sampling, {steps} DDIM steps")
    real = _real_tiles(n, side)
    plain_arm, plain_grid = _plain_arm(ctx, pipe, oracle, conds, attributes, steps)
    arms, grids = [plain_arm], {"plain: the four faces of a photo, each sampled alone": plain_grid}
    # the k arms use the default views (half-window stride, Hann weights), then k = 20 % with the paper's
    # uniform weights; the last arm aligns the views with the faces
    for k, stride, weights in [*((k, None, "hann") for k in BOOTSTRAP), (BOOTSTRAP[1], None, "uniform"),
                               (0.0, side, "hann")]:
        t0 = time.time()
        res = compose(pipe, layout(conds, k, stride, weights), n=n, progress=ctx.progress)
        score = {**_score(oracle.predict(_crops(res.images, side)), conds, attributes),
                 **_group_metrics(res.images, side, max(1, side // 2))}
        name = "MultiDiffusion, views aligned to the faces (stride = window)" if stride is not None else \
            f"MultiDiffusion, k = {round(k * 100)} % ({int(round(k * steps))} steps)" + \
            (", uniform window weights (the paper)" if weights == "uniform" else "")
        arms.append({"name": name, "k": k, "window_weights": weights, "views": res.views, "paths": res.paths,
                     "metrics": {**score, "seconds_per_photo": (time.time() - t0) / n}})
        grids[name] = save_png(make_grid(res.images[:8], 4, scale=2), ctx.out / (
            "aligned.png" if stride is not None else f"k{round(k * 100)}{'-uniform' * (weights == 'uniform')}.png"))
        if k == BOOTSTRAP[1] and stride is None and weights == "hann":
            over = np.stack([overlay_masks(im, res.masks) for im in res.images[:4]])
            grids["the layout: region masks over the k = 20 % photos"] = save_png(make_grid(over, 4, scale=2),
                                                                                  ctx.out / "masks.png")
    md = _summary(ctx, pipe, arms, attributes, n=n, side=side, steps=steps, top=top)
    md += ["", f"The detector's own floor: on {n} tiles of four real SynthFaces faces side by side (seed 7, {side} px "
               f"each), MTCNN finds exactly 4 faces in {fmt(real['faces_exact'], 'pct')} (more than 4 in "
               f"{fmt(real['faces_extra'], 'pct')}; {real['faces_mean']:.2f} faces a tile on average): it misses "
               "some drawn faces in real pictures too."]
    return finish(ctx, {"seed": "001", "arms": arms, "real": real, "n": n, "steps": steps,
                        "attributes": list(attributes), "model": str(pipe.model_dir)}, md, grids)


def _real_tiles(n: int, side: int) -> dict[str, Any]:
    """The face-count floor: ``n`` tiles of four real SynthFaces faces (held-out seed 7) side by side, counted
    as the photos are."""
    from facediff.data.synth import render_batch
    from facediff.imaging import make_grid

    faces = np.stack([f.image for f in render_batch(7, 0, 4 * n, side, "mixed")])
    tiles = np.stack([make_grid(faces[4 * i:4 * i + 4], 2, pad=0) for i in range(n)])
    return {"n": n, **_group_metrics(tiles, side, max(1, side // 2))}


def _scored_attributes(ctx: Ctx, pipe, oracle) -> tuple[tuple[str, ...], int]:
    """(the attributes both the model and the oracle know, the top level): what each region is given."""
    ocfg = oracle.model.config
    if pipe.conditional:
        attributes, top = tuple(a for a in pipe.attributes if a in ocfg.attributes), pipe.num_levels - 1
    elif pipe.takes_text:
        attributes, top = tuple(ocfg.attributes), int(ocfg.num_levels) - 1
    else:
        raise FacediffError(f"--model {ctx.model}: seed001 needs an attribute-conditional or text-to-face model "
                            "(an unconditional model has nothing to put in the regions)")
    if not attributes:
        raise FacediffError(f"--model {ctx.model}: none of its attributes is one the oracle scores")
    return attributes, top


def _plain_arm(ctx: Ctx, pipe, oracle, conds: list[list[dict]], attributes: tuple[str, ...],
               steps: int) -> tuple[dict[str, Any], Path]:
    """The floor: every face of every photo sampled alone at the native size; (the arm, its saved grid)."""
    from facediff.imaging import make_grid, save_png

    n = len(conds)
    t0 = time.time()
    flat = [c for comp in conds for c in comp]
    if pipe.takes_text:
        flat_prompts = [p for row in _prompts(conds, np.random.default_rng(1)) for p in row]
        plain = pipe(seeds=[1000 + i for i in range(len(flat))], prompt=flat_prompts, guidance=GUIDANCE,
                     sampler="ddim", steps=steps, progress=ctx.progress).images
    else:
        plain = pipe(seeds=[1000 + i for i in range(len(flat))], attrs=flat, guidance=GUIDANCE, sampler="ddim",
                     steps=steps, progress=ctx.progress).images
    score = _score(oracle.predict(plain), conds, attributes)
    tiles = np.stack([make_grid(plain[4 * i:4 * i + 4], 2, pad=0) for i in range(n)])  # the faces side by side
    arm = {"name": "plain (unfused, native size)", "k": None,
           "metrics": {**score, **_group_metrics(tiles, pipe.sample_size, max(1, pipe.sample_size // 2)),
                       "seconds_per_photo": (time.time() - t0) / n}}
    return arm, save_png(make_grid(tiles[:8], 4, scale=2), ctx.out / "plain.png")


def _summary(ctx: Ctx, pipe, arms: list[dict[str, Any]], attributes: tuple[str, ...], *, n: int, side: int,
             steps: int, top: int) -> list[str]:
    """The markdown of the experiment: the arms' table and how to read it."""
    head = ["arm", "attribute accuracy ↑", "all attributes right ↑", "leakage ↓ (shows the neighbour's level)",
            *attributes, "MTCNN: exactly 4 faces ↑", "more than 4 (ghosts) ↓", "seam ratio ↓", "s / photo"]
    rows = [[a["name"], fmt(a["metrics"]["accuracy"], "pct"), fmt(a["metrics"]["exact_match"], "pct"),
             fmt(a["metrics"]["leakage"], "pct"), *(fmt(a["metrics"]["per_attribute"][x], "pct") for x in attributes),
             fmt(a["metrics"]["faces_exact"], "pct"), fmt(a["metrics"]["faces_extra"], "pct"),
             fmt(a["metrics"]["seam_ratio"]), fmt(a["metrics"]["seconds_per_photo"])] for a in arms]
    what = "prompts built from the levels" if pipe.takes_text else "attribute levels"
    md = ["Seed 001 (MultiDiffusion) shows pictures only: regions follow their prompts \"mostly\", small ones are "
          "sometimes neglected or spill over, bootstrapping improves adherence, too much of it lowers quality.", "",
          f"## {ctx.data_label()}: group photo, 2x2 faces of {side} px on a {2 * side} px canvas", "",
          *md_table(head, rows), "",
          f"Model: {pipe.model_dir}. {n} photos = {4 * n} faces per arm, each face with its own {what} (every "
          f"attribute at 0 or {top}, at random); {steps} DDIM steps, guidance {GUIDANCE}; views of {side} px at "
          f"the default stride (half a window), weighted by a Hann window (a cross-fade over each overlap) unless the "
          f"arm says uniform (the paper's eq. 5). Accuracy: the oracle's estimate of a region's crop equals the "
          f"requested level (chance {100 / (top + 1):.0f} %). Leakage: over the {arms[1]['metrics']['leak_pairs']} "
          "(region, neighbour, attribute) triples whose levels differ, the share where the region shows the "
          "neighbour's level; for plain sampling this is the rate of showing that level with no neighbour at all. "
          "MTCNN counts the faces of each whole photo (the plain arm: its four faces side by side); the seam ratio "
          "is the mean gradient across the window borders that run through a face over the mean gradient elsewhere "
          "(issue 26: <= 1.2); the plain and aligned arms have no window border there and are measured on the same "
          "lines: the faces' own gradient, what a seamless composition shows.", "",
          "A face model draws one centred face per window: with the default views (stride = half a window) the "
          "windows that straddle two boxes draw a face across the boundary, fused with the faces of the aligned "
          "windows; views aligned to the faces (stride = the window) give each face a window of its own: each "
          "pixel is seen by one window, so nothing is fused and each face is an independent sample from its part "
          "of the canvas noise (the plain arm's quality, in one image)."]
    return md
