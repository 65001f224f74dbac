"""logs/metrics.jsonl of a training run: one JSON row per log step (and its TensorBoard train/* scalars), and the
rows after the checkpoint a run resumes from dropped, so a resumed run's log reads as one uninterrupted run."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def trim_log(log_path: Path, resumed_step: int | None) -> None:
    """Drop rows logged after the checkpoint we resume from (and a torn last line)."""
    if not log_path.exists():
        return
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line torn by a kill
            continue
        if resumed_step is not None and row.get("step", 0) <= resumed_step:
            keep.append(line)
    log_path.write_text("".join(r + "\n" for r in keep))


def log_row(run: Any, loss_val: float, terms: dict[str, float], grad_norm: float | None,
            extra: dict[str, Any]) -> None:
    """Main process: one logs/metrics.jsonl row and its TensorBoard train/* scalars (``run``: the loop's _Run)."""
    now = time.perf_counter()
    row = {"step": run.step, "seconds": round(now - run.t0, 3), "loss": loss_val,
           **{k: v for k, v in terms.items() if k != "loss"},
           "lr": run.task.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
           "images_per_s": run.imgs_since / max(now - run.t_last, 1e-9), "nonfinite_total": run.nonfinite_total,
           **extra}
    with open(run.log_path, "a") as f:
        f.write(json.dumps(row) + "\n")
    run.acc.log({f"train/{k}": v for k, v in row.items()
                 if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
                 and v is not None and math.isfinite(v)}, step=run.step)
    run.t_last, run.imgs_since = now, 0
