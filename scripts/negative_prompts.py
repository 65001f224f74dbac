"""What a negative prompt does to a text model's faces, per kind of word (run from the repository root):

    python scripts/negative_prompts.py --out docs/results/negative-prompts.json

For each case, ``--n`` faces of open prompts (the attribute or property left unnamed; seeds 200...) are drawn
without and with the negative prompt, and the oracle reads the property: for bare presence words (glasses, smile,
bangs, beard) both as the model reads them (a model with ``negative_words_as_negation`` moves them into the
prompt as "no glasses", ...) and as written; for level words (sunglasses, laughing), categories (hair colours,
style) and age as written (the model reads them so). DPM-Solver++ 20 steps, guidance 3.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# (negative prompt, oracle head, what counts: a class name, or None for "level above 0", subjects of the prompts)
CASES: list[tuple[str, str, str | None, tuple[str, ...]]] = [
    ("glasses", "eyeglasses", None, ("a photo of an elderly woman", "a photo of a man")),
    ("smile", "smiling", None, ("a photo of a woman", "a photo of a man", "an anime drawing of a girl")),
    ("bangs", "bangs", None, ("a photo of a woman", "a photo of a girl", "an anime drawing of a girl")),
    ("beard", "beard", None, ("a photo of an older man", "a photo of a middle-aged man")),
    ("sunglasses", "eyeglasses", "4+", ("a photo of a man", "a photo of a woman")),
    ("laughing", "smiling", "5", ("a photo of a woman", "a photo of a man")),
    ("blonde hair", "hair_colour", "blonde", ("a photo of a young woman", "a photo of a girl")),
    ("grey hair", "hair_colour", "grey", ("a photo of an older man", "a photo of an elderly woman")),
    ("anime", "style", "anime", ("a young woman", "a girl", "a man")),
    ("photo", "style", "human", ("a young woman", "a girl", "a man")),
    ("old", "age", "4+", ("a photo of a man", "a photo of a woman")),
]


def _share(read: np.ndarray, what: str | None) -> float:
    """Share of faces showing the property: level > 0, level >= k ("k+"), level k, or the class name."""
    if what is None:
        return float((read.astype(int) > 0).mean())
    if what.endswith("+"):
        return float((read.astype(int) >= int(what[:-1])).mean())
    if what.isdigit():
        return float((read.astype(int) == int(what)).mean())
    return float((read == what).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a text model folder (default: the bundled one)")
    ap.add_argument("--n", type=int, default=48, help="faces per arm")
    ap.add_argument("--out", type=Path, required=True, help="the JSON written")
    args = ap.parse_args()

    from facediff.metrics.features import OracleFeatures
    from facediff.metrics.prompts import readings
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(args.model, text=True)
    oracle, seeds = OracleFeatures(), list(range(200, 200 + args.n))
    reads_negation = bool(getattr(pipe, "negative_words_as_negation", False))

    def read(prompts: list[str], negative: str | None, as_written: bool = False) -> dict[str, np.ndarray]:
        pipe.negative_words_as_negation = reads_negation and not as_written
        images = pipe(seeds=seeds, prompt=prompts, negative_prompt=negative, sampler="dpmpp", steps=20,
                      guidance=3.0).images
        return {k: np.asarray(v) for k, v in readings(oracle.predict(images), oracle.model.config).items()}

    rows = []
    for negative, head, what, subjects in CASES:
        prompts = [subjects[i % len(subjects)] for i in range(args.n)]
        row = {"negative_prompt": negative, "head": head, "counts": what or "level > 0", "prompts": list(subjects),
               "without": _share(read(prompts, None)[head], what),
               "with": _share(read(prompts, negative)[head], what)}
        if what is None and reads_negation:  # a bare presence word: also as written (guidance from one level)
            row["with_as_written"] = _share(read(prompts, negative, as_written=True)[head], what)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {"model": str(pipe.model_dir), "n": args.n, "seeds": [seeds[0], seeds[-1]], "sampler": "dpmpp",
              "steps": 20, "guidance": 3.0, "negative_words_as_negation": reads_negation, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
