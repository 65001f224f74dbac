"""Progress of long jobs: a rich bar on a terminal, a plain line every ``PLAIN_EVERY_S`` seconds otherwise
(e.g. a job run with ``nohup ... > log &``), nothing when disabled (off the main process)."""
from __future__ import annotations

import sys
import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


PLAIN_EVERY_S = 30.0  # seconds between two plain progress lines when stderr is not a terminal
BUDGET_UNITS = 1000  # a time-budgeted bar runs over this many units (its fraction of the budget or the steps)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _count(done: int, total: int, budget_s: float | None, elapsed_s: float | None) -> tuple[str, float]:
    """The bar's count text and its completed fraction: "done/total", or for a time-budgeted run (which
    ends at its budget or at total steps, whichever comes first) "elapsed / budget (pct %), step done"."""
    frac = done / total if total else 0.0
    if budget_s:
        frac = min(1.0, max(frac, (elapsed_s or 0.0) / budget_s))
        return f"{_clock(elapsed_s or 0.0)} / {_clock(budget_s)} ({100 * frac:.0f} %), step {done}", frac
    return f"{done}/{total}", frac


class ProgressBar:
    """``update(done, **fields)`` moves the bar to ``done`` of ``total`` and shows the fields (e.g. loss)."""

    def __init__(self, total: int, description: str, *, enabled: bool = True, start: int = 0):
        self.enabled = enabled
        if not enabled:
            return
        self._plain = not sys.stderr.isatty()
        self.description, self.total = description, total
        if self._plain:  # no live bar in a log file: timestamped lines instead
            self._t0 = self._last = time.monotonic()  # first line after PLAIN_EVERY_S (or at the end)
            return
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, completed=start, info="",
                                             count=f"{start}/{total}")

    def update(self, done: int, *, budget_s: float | None = None, elapsed_s: float | None = None,
               **fields: float) -> None:
        """Move to ``done`` of ``total``; a time-budgeted job also passes its ``budget_s`` and ``elapsed_s``."""
        if not self.enabled:
            return
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        count, frac = _count(done, self.total, budget_s, elapsed_s)
        if not self._plain:
            if budget_s:
                self._progress.update(self._task, total=BUDGET_UNITS, completed=frac * BUDGET_UNITS, info=info,
                                      count=count)
            else:
                self._progress.update(self._task, completed=done, info=info, count=count)
        elif time.monotonic() - self._last >= PLAIN_EVERY_S or frac >= 1.0:
            self._line(count, info)

    def set_total(self, done: int, total: int) -> None:
        """Move to ``done`` of a (possibly new) ``total``: a ``progress(done, total)`` callback for library
        functions that learn the total as they go."""
        if not self.enabled:
            return
        self.total = total
        if self._plain:
            self.update(done)
        else:
            self._progress.update(self._task, total=total, completed=done, count=f"{done}/{total}")

    def _line(self, count: str, info: str) -> None:
        self._last = now = time.monotonic()
        pct = "" if "%" in count or "/" not in count else f" ({100 * int(count.split('/')[0]) / max(1, self.total):.0f} %)"
        print(f"[{time.strftime('%H:%M:%S')}] {self.description}: {count}{pct}{' ' + info if info else ''} "
              f"{now - self._t0:.0f} s", file=sys.stderr, flush=True)

    def say(self, text: str) -> None:
        if not self.enabled:
            return
        if self._plain:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)
        else:
            self._progress.console.print(text)

    def close(self) -> None:
        if self.enabled and not self._plain:
            self._progress.stop()


class Reporter:
    """A ``facediff.progress.Progress`` callback that shows one bar per task (train, encode latents, sample)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bars: dict[str, ProgressBar] = {}

    def __call__(self, task: str, done: int, total: int, **info: Any) -> None:
        if not self.enabled:
            return
        note = info.pop("note", None)
        bar = self.bars.get(task)
        if bar is None:
            bar = self.bars[task] = ProgressBar(total, task, start=done)
        budget = {k: info.pop(k) for k in ("budget_s", "elapsed_s") if k in info}
        if bar.total != total:
            bar.set_total(done, total)
        if note:  # a one-off message (e.g. the precision chosen): its own line, not a field of the bar
            bar.say(f"{task}: {note}")
        bar.update(done, **budget, **{k: v for k, v in info.items() if isinstance(v, (int, float, str))})

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
