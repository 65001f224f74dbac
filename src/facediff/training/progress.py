"""Progress of long jobs: a rich bar on a terminal, a plain line every ``PLAIN_EVERY_S`` seconds otherwise
(e.g. a job run with ``nohup ... > log &``), nothing when disabled (off the main process)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


PLAIN_EVERY_S = 30.0  # seconds between two plain progress lines when stderr is not a terminal


class ProgressBar:
    """``update(done, **fields)`` moves the bar to ``done`` of ``total`` and shows the fields (e.g. loss)."""

    def __init__(self, total: int, description: str, *, enabled: bool = True, start: int = 0):
        self.enabled = enabled
        if not enabled:
            return
        self._plain = not sys.stderr.isatty()
        if self._plain:  # no live bar in a log file: timestamped lines instead
            self.description, self.total = description, total
            self._t0 = self._last = time.monotonic()  # first line after PLAIN_EVERY_S (or at the end)
            return
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=start, info="")

    def update(self, done: int, **fields: float) -> None:
        if not self.enabled:
            return
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        if not self._plain:
            self._progress.update(self._task, completed=done, info=info)
        elif time.monotonic() - self._last >= PLAIN_EVERY_S or done >= self.total:
            self._line(done, info)

    def set_total(self, done: int, total: int) -> None:
        """Move to ``done`` of a (possibly new) ``total``: a ``progress(done, total)`` callback for library
        functions that learn the total as they go."""
        if not self.enabled:
            return
        if self._plain:
            self.total = total
            self.update(done)
        else:
            self._progress.update(self._task, total=total, completed=done)

    def _line(self, done: int, info: str) -> None:
        self._last = now = time.monotonic()
        pct = f" ({100 * done / self.total:.0f} %)" if self.total else ""
        print(f"[{time.strftime('%H:%M:%S')}] {self.description}: {done}/{self.total}{pct}{' ' + info if info else ''} "
              f"{now - self._t0:.0f} s", file=sys.stderr, flush=True)

    def callback(self):
        """A ``progress(done, total)`` callable for library functions."""
        return lambda done, total: self.update(done)

    def close(self) -> None:
        if self.enabled and not self._plain:
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
