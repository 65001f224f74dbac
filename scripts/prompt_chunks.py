"""How a text model reads long prompts, by chunk length (run from the repository root):

    python scripts/prompt_chunks.py --field caption_heldout --min-tokens 60 --chunks 94,58,40,28 \\
        --out docs/results/prompt-chunks.json

Generates the first ``--n`` prompts of a held-out SynthFaces set (``--data``, seed 7) whose ``--field`` is longer
than ``--min-tokens`` tokens (BOS and EOS included), once per chunk length (``PromptEncoder``: prompts over
``--whole`` content tokens are split into chunks of that length; the tokenizer's length = encoded whole), and
reports the oracle's agreement with what each prompt names. DPM-Solver++ 20 steps, guidance 3, seeds 300...
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a text model folder (default: the bundled one)")
    ap.add_argument("--data", type=Path, default=Path("runs/eval64k"), help="a prepared held-out SynthFaces set")
    ap.add_argument("--field", default="caption_heldout", help="labels.jsonl field: caption or caption_heldout")
    ap.add_argument("--min-tokens", type=int, default=60, help="only prompts longer than this")
    ap.add_argument("--n", type=int, default=96, help="how many prompts")
    ap.add_argument("--whole", type=int, default=58, help="prompts up to this many content tokens stay whole")
    ap.add_argument("--chunks", default="94,58,40,28", help="chunk lengths to compare (comma-separated)")
    ap.add_argument("--out", type=Path, required=True, help="the JSON written")
    args = ap.parse_args()

    from facediff.metrics.features import OracleFeatures
    from facediff.metrics.prompts import prompt_accuracy
    from facediff.pipelines.load import load_pipeline

    pipe = load_pipeline(args.model, text=True)
    tok = pipe.tokenizer
    rows = [json.loads(line) for line in (args.data / "labels.jsonl").read_text().splitlines() if line]
    prompts = [r[args.field] for r in rows if len(tok(r[args.field]).input_ids) > args.min_tokens][:args.n]
    oracle, seeds, arms = OracleFeatures(), list(range(300, 300 + len(prompts))), []
    for chunk in (int(c) for c in args.chunks.split(",")):
        # a chunk length over --whole (the tokenizer's 94, say) means: every prompt encoded whole
        pipe.prompt_chunk_tokens, pipe.prompt_whole_tokens = chunk, max(args.whole, chunk)
        images = pipe(seeds=seeds, prompt=prompts, steps=20, guidance=3.0, batch_size=32).images
        res = prompt_accuracy(images, prompts, oracle)
        arms.append({"chunk_tokens": chunk, "attributes": res["attr"]["accuracy"],
                     "per_attribute": {a: v["accuracy"] for a, v in res["attr"]["per_attribute"].items()},
                     "hair_colour": res["hair_colour"]["accuracy"], "style": res["style"]["accuracy"]})
        print(json.dumps(arms[-1]), flush=True)
    args.out.write_text(json.dumps({"model": args.model or "bundled text model", "field": args.field,
                                    "min_tokens": args.min_tokens, "n": len(prompts), "whole_tokens": args.whole,
                                    "arms": arms}, indent=1) + "\n")


if __name__ == "__main__":
    main()
