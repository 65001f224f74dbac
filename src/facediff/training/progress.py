"""A rich progress bar for long jobs (quiet when disabled or not on a terminal's main process)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ProgressBar:
    """``update(done, **fields)`` moves the bar to ``done`` of ``total`` and shows the fields (e.g. loss)."""

    def __init__(self, total: int, description: str, *, enabled: bool = True, start: int = 0):
        self.enabled = enabled
        if not enabled:
            return
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=start, info="")

    def update(self, done: int, **fields: float) -> None:
        if self.enabled:
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            self._progress.update(self._task, completed=done, info=info)

    def callback(self):
        """A ``progress(done, total)`` callable for library functions."""
        return lambda done, total: self.update(done)

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()


def open_run_logs(out: Path, resumed_step: int | None, main: bool) -> tuple[Path, Any]:
    """``logs/metrics.jsonl`` (rows after ``resumed_step`` dropped when resuming) and a TensorBoard writer
    (None off the main process)."""
    log_path = Path(out) / "logs" / "metrics.jsonl"
    if not main:
        return log_path, None
    if resumed_step is not None and log_path.exists():  # rows logged after the checkpoint we resume from
        rows = [r for r in log_path.read_text().splitlines() if r and json.loads(r)["step"] <= resumed_step]
        log_path.write_text("".join(r + "\n" for r in rows))
    from torch.utils.tensorboard import SummaryWriter

    return log_path, SummaryWriter(str(Path(out) / "logs"))
