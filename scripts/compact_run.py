"""Compact a run's latest checkpoint for committing (a CPU run carried over to another machine; issue 26).

    python scripts/compact_run.py runs/attr64 resume/attr64
    # later, anywhere: cp -r resume/attr64 runs/attr64 && facediff train ldm --out runs/attr64 --resume

bf16 weights + EMA, no optimizer state (training/checkpoint.py: compact_checkpoint), the run's config.json and
metrics log. Commit one per model at most, and delete it when the model ships.
"""
from __future__ import annotations

import sys
from pathlib import Path

from facediff.training.checkpoint import compact_checkpoint

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/compact_run.py RUN_DIR OUT_DIR")
    print(f"wrote {compact_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]))}")
