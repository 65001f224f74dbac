"""Does a text model understand people, not templates? ``facediff experiment text-understanding [--model DIR]``.

Four measurements on a text-to-face model (the bundled one by default), each against what real SynthFaces
show, all read by the oracle:

1. **Free phrasing**: prompts written by :func:`facediff.data.free_text.free_caption` (tag lists, partial
   descriptions, negation, numbers), the same with the prompt parser's other words ("a kid", "grandma",
   "spectacles"; ``loose`` = 1) and SynthFaces' held-out paraphrase templates (never in training), from rows of
   a held-out SynthFaces seed: the oracle's agreement with every property each prompt names.
2. **Negation**: "a photo of a man, not wearing glasses" against "... with glasses": the share of images
   without the attribute (oracle level 0) when it is negated, with it when it is named, and with it when the
   prompt leaves it open.
3. **Negative prompt**: the same prompts and seeds with and without ``negative_prompt="beard"`` (and
   "glasses", "smile", "bangs"): the share of images showing the attribute, as the model reads the negative
   prompt and, for a model that reads bare presence words as negations (``negative_words_as_negation``), also
   as written (guidance away from the word's one level).
4. **Diversity**: 16 faces of a prompt naming only style, gender and age group; the mean pairwise distance of
   their oracle features against that of real held-out faces with the same style, gender and age group
   (ratio 1.0: as varied as the data; the issue's bar is 0.9).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from facediff.errors import FacediffError
from facediff.experiments.common import Ctx, finish, fmt, md_table

SAMPLER, STEPS, GUIDANCE = "dpmpp", 20, 3.0
HELDOUT_SEED = 7  # the SynthFaces seed of the held-out rows (training sets use seed 0)
# attribute -> (negated phrases, the positive phrase); subjects for which the attribute is plausible
NEGATION: dict[str, tuple[tuple[str, ...], str]] = {
    "eyeglasses": (("not wearing glasses", "without glasses", "no glasses"), "glasses"),
    "beard": (("clean-shaven", "without a beard", "no beard"), "a full beard"),
    "smiling": (("not smiling", "a neutral expression"), "a big smile"),
    "bangs": (("a bare forehead", "no bangs"), "full bangs"),
}
SUBJECTS = {"eyeglasses": ("a photo of a man", "a photo of a woman", "an anime drawing of a girl"),
            "beard": ("a photo of a man", "a photo of an older man", "an anime drawing of a man"),
            "smiling": ("a photo of a woman", "a photo of a man", "an anime drawing of a girl"),
            "bangs": ("a photo of a woman", "a photo of a girl", "an anime drawing of a girl")}
# attribute -> (the negative prompt, subjects that often show the attribute when the prompt leaves it open)
NEGATIVE_PROMPTS = {"beard": ("beard", ("a photo of an older man", "a photo of a middle-aged man")),
                    "eyeglasses": ("glasses", ("a photo of an elderly woman", "a photo of a man")),
                    "smiling": ("smile", ("a photo of a woman", "a photo of a man", "an anime drawing of a girl")),
                    "bangs": ("bangs", ("a photo of a woman", "a photo of a girl", "an anime drawing of a girl"))}
_AGE_NOUNS = ("little {k}", "teenage {k}", "young {a}", "middle-aged {a}", "older {a}", "elderly {a}")


def _sample(pipe, ctx: Ctx, prompts: list[str], seeds: list[int], negative: str | None = None) -> np.ndarray:
    return pipe(seeds=seeds, prompt=prompts, negative_prompt=negative, sampler=SAMPLER, steps=ctx.steps(STEPS),
                guidance=GUIDANCE, progress=ctx.progress).images


def _heldout(ctx: Ctx, size: int, n: int):
    from facediff.data.prepared import PreparedDataset
    from facediff.data.synth import write_synth

    path = ctx.out / "data"
    if not (path / "manifest.json").is_file():
        write_synth(path, n=n, size=size, style="mixed", seed=HELDOUT_SEED, overwrite=True)
    return PreparedDataset(path)


def _free_phrasing(pipe, ctx: Ctx, oracle, rows: list[dict]) -> dict[str, Any]:
    from facediff.data.free_text import free_caption
    from facediff.metrics.prompts import prompt_accuracy

    out = {}
    for name, prompts in (("free", [free_caption(r, np.random.default_rng([HELDOUT_SEED, i]))
                                    for i, r in enumerate(rows)]),
                          # the same rows, every fact that has one said with the parser's other words ("a kid",
                          # "grandma", "spectacles", "gray hair"): a model trained with [text] loose_words = 0 never
                          # saw them
                          ("loose_words", [free_caption(r, np.random.default_rng([HELDOUT_SEED, i]), 1.0)
                                           for i, r in enumerate(rows)]),
                          ("heldout_templates", [r["caption_heldout"] for r in rows])):
        acc = prompt_accuracy(_sample(pipe, ctx, prompts, list(range(len(prompts)))), prompts, oracle)
        out[name] = {"prompts": prompts[:8], "attr": acc.get("attr"), "hair_colour": acc.get("hair_colour"),
                     "style": acc.get("style")}
    return out


def _with(subject: str, phrase: str) -> str:
    """'a photo of a man, not wearing glasses' / 'a photo of a man with no glasses'."""
    return f"{subject}, {phrase}" if phrase.startswith(("not ", "without", "clean-shaven")) else f"{subject} with {phrase}"


def _negation(pipe, ctx: Ctx, oracle, per: int) -> dict[str, Any]:
    out = {}
    for attr, (negated, positive) in NEGATION.items():
        subjects = SUBJECTS[attr]
        arms = {"negated": [_with(subjects[i % len(subjects)], negated[i % len(negated)]) for i in range(per)],
                "named": [f"{subjects[i % len(subjects)]} with {positive}" for i in range(per)],
                "open": [subjects[i % len(subjects)] for i in range(per)]}
        res = {}
        for arm, prompts in arms.items():
            level = oracle.predict(_sample(pipe, ctx, prompts, list(range(per))))[attr]
            res[arm] = {"with_attribute": float((level > 0).mean()), "example": prompts[0]}
        out[attr] = res
    return out


def _negative_prompt(pipe, ctx: Ctx, oracle, per: int) -> dict[str, Any]:
    out = {}
    reads = bool(getattr(pipe, "negative_words_as_negation", False))
    for attr, (word, subjects) in NEGATIVE_PROMPTS.items():
        prompts = [subjects[i % len(subjects)] for i in range(per)]

        def rate(negative: str | None) -> float:
            return float((oracle.predict(_sample(pipe, ctx, prompts, list(range(per)), negative=negative))[attr] > 0).mean())

        out[attr] = {"negative_prompt": word, "prompts": list(subjects), "with_attribute": rate(None),
                     "with_attribute_negative": rate(word), "read_as_negation": reads}
        if reads:  # the same negative prompt as written: guidance away from the word's one level
            pipe.negative_words_as_negation = False
            try:
                out[attr]["with_attribute_negative_as_written"] = rate(word)
            finally:
                pipe.negative_words_as_negation = True
    return out


def _spread(feats: np.ndarray) -> float:
    """Mean pairwise Euclidean distance of oracle feature vectors."""
    d = np.linalg.norm(feats[:, None] - feats[None], axis=-1)
    return float(d[np.triu_indices(len(feats), 1)].mean())


def _diversity(pipe, ctx: Ctx, oracle, ds, k: int) -> dict[str, Any]:
    groups: dict[tuple, list[int]] = {}
    for i, lab in enumerate(ds.labels):
        groups.setdefault((lab["style"], lab["gender"], int(lab["attributes"]["age"])), []).append(i)
    ranked = sorted((g for g, idx in groups.items() if len(idx) >= k), key=lambda g: -len(groups[g]))[:6]
    if not ranked:
        raise FacediffError(f"{ctx.out / 'data'}: no style / gender / age group has {k} held-out faces; use a larger --n")
    rows = []
    for style, gender, age in ranked:
        kid, adult = ("girl", "woman") if gender == "female" else ("boy", "man")
        noun = _AGE_NOUNS[age].format(k=kid, a=adult)
        art = "an" if noun[0] in "aeiou" else "a"
        prompt = f"a photo of {art} {noun}" if style == "human" else f"an anime drawing of {art} {noun}"
        gen = _spread(oracle(_sample(pipe, ctx, [prompt] * k, list(range(k)))))
        real = _spread(oracle(ds.images(groups[(style, gender, age)][:k])))
        rows.append({"prompt": prompt, "generated_spread": gen, "real_spread": real, "ratio": gen / real})
    return {"per_prompt": rows, "mean_ratio": float(np.mean([r["ratio"] for r in rows]))}


def run_understanding(ctx: Ctx) -> dict[str, Any]:
    """The four measurements above on ``ctx.model`` (None: the bundled text model)."""
    from facediff.metrics.features import OracleFeatures
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(ctx.model, text=True)
    if not pipe.takes_text:
        raise FacediffError(f"--model {ctx.model}: text-understanding needs a text-to-face model (no text encoder)")
    oracle = OracleFeatures()
    n = 8 if ctx.tiny else (ctx.n_eval or 256)
    per, k = (4, 4) if ctx.tiny else (max(12, n // 8), 16)
    ds = _heldout(ctx, pipe.sample_size, max(64 if ctx.tiny else 2048, n))
    rows = ds.labels[:n]
    ctx.say(f"free phrasing: {3 * n} images")
    free = _free_phrasing(pipe, ctx, oracle, rows)
    ctx.say(f"negation: {3 * per * len(NEGATION)} images")
    negation = _negation(pipe, ctx, oracle, per)
    negative = _negative_prompt(pipe, ctx, oracle, per)
    ctx.say("diversity")
    diversity = _diversity(pipe, ctx, oracle, ds, k)
    res = {"model": str(pipe.model_dir), "sampler": SAMPLER, "steps": STEPS, "guidance": GUIDANCE, "n": n,
           "free_phrasing": free, "negation": negation, "negative_prompt": negative, "diversity": diversity,
           "arms": [{"name": name, "metrics": {"attr_accuracy": (v["attr"] or {}).get("accuracy")}}
                    for name, v in free.items()]}
    return finish(ctx, res, _markdown(res), {})


def _markdown(res: dict[str, Any]) -> list[str]:
    def acc(v, key):
        return fmt(((v.get(key) or {}).get("accuracy")), "pct")

    free = [[name, acc(v, "attr"), acc(v, "hair_colour"), acc(v, "style"), v["prompts"][0]]
            for name, v in res["free_phrasing"].items()]
    neg = [[a, v["negated"]["example"], fmt(1 - v["negated"]["with_attribute"], "pct"),
            fmt(v["named"]["with_attribute"], "pct"), fmt(v["open"]["with_attribute"], "pct")]
           for a, v in res["negation"].items()]
    negp = [[a, f'"{v["negative_prompt"]}"', fmt(v["with_attribute"], "pct"), fmt(v["with_attribute_negative"], "pct"),
             fmt(v.get("with_attribute_negative_as_written"), "pct")] for a, v in res["negative_prompt"].items()]
    div = [[r["prompt"], fmt(r["generated_spread"]), fmt(r["real_spread"]), fmt(r["ratio"])]
           for r in res["diversity"]["per_prompt"]]
    return [f"Model {res['model']}; {res['sampler']} {res['steps']} steps, guidance {res['guidance']}; prompts from "
            f"held-out SynthFaces (seed {HELDOUT_SEED}), n = {res['n']} per phrasing.", "",
            "## Free phrasing (the oracle's agreement with what each prompt names)", "",
            *md_table(["prompts", "attributes", "hair colour", "style", "example"], free), "",
            "## Negation (share of images without / with the attribute)", "",
            *md_table(["attribute", "negated, e.g.", "without it when negated", "with it when named",
                       "with it when left open"], neg), "",
            "## Negative prompt (share of images with the attribute)", "",
            *md_table(["attribute", "negative prompt", "without", "with", "with, read as written (no negation)"],
                      negp), "",
            "## Diversity (mean pairwise oracle-feature distance of 16 faces of one prompt)", "",
            *md_table(["prompt", "generated", "real faces of the same group", "ratio"], div), "",
            f"Mean ratio {fmt(res['diversity']['mean_ratio'])} (1.0: as varied as the data)."]
