"""Continue a bundled model's training run from the bundle itself (issue 26): a compact checkpoint whose weights
and EMA are the bundled U-Net, at the step the bundle was trained to (training/checkpoint.py:
checkpoint_from_bundle).

    python scripts/resume_from_bundle.py src/facediff/assets/text_model resume/t2i64 runs/t2i64 --step 10000
    OMP_NUM_THREADS=1 facediff train t2i --out runs/t2i64 --resume --set train.max_steps=20000 ...

A run lives on the machine that trained it; the bundle is in git. A bundled model trained further than its
committed compact checkpoint (``resume/NAME``) is so continued on any machine without committing a second
checkpoint of the same model. Like any compact checkpoint it has no Adam moments (they re-warm over
``warmup_steps``) and is not bit-exact.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from facediff.errors import FacediffError
from facediff.training.checkpoint import checkpoint_from_bundle

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, help="the bundled model folder (its unet/)")
    ap.add_argument("template", type=Path, help="a run of the same network (e.g. its resume/NAME compact run)")
    ap.add_argument("out", type=Path, help="the new run folder")
    ap.add_argument("--step", type=int, required=True, help="the step the bundle was trained to")
    args = ap.parse_args()
    try:
        print(f"wrote {checkpoint_from_bundle(args.bundle, args.template, args.out, args.step)}")
    except FacediffError as e:
        raise SystemExit(f"error: {e}") from None
