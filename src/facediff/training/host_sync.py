"""Training steps the host never waits for: [train] host_sync = "log" ("auto": on CUDA).

A GPU runs ahead of Python only until Python reads a device value: ``bool(torch.isfinite(loss).all())``,
``float(clip_grad_norm_(...))``, ``loss.item()`` each block the host until every queued kernel has finished, so
the next step's kernels start late (measured on an H200 before this mode: 26 % of a step). With host_sync =
"log" a step reads nothing:

- the non-finite-loss guard stays on the device (``DeviceGuard``): each micro-batch's "some loss is not finite"
  flag is or-ed into a device tensor (max-reduced across processes, an asynchronous collective), every
  micro-batch is back-propagated, and the optimizer skips the step *on the device*: a fused Adam / AdamW reads
  ``found_inf`` (what ``torch.amp.GradScaler`` passes it) and leaves weights, moments and step count untouched
  when it is 1 -- the same skip as the per-step guard, without a host branch;
- the skipped-step counters (total, in a row, the longest run) are device tensors, read on log rows and
  checkpoints, where the max_nonfinite error is raised (a few steps later than per-step reading would);
- the loss and the gradient norm are read on log rows only; the progress line shows the last one read.

host_sync = "step" reads the flag and the loss every step (the CPU default: there a read costs nothing).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate import Accelerator

from facediff.config import TrainConfig
from facediff.errors import FacediffError


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on ``device``: on CUDA through pinned memory without waiting (a pageable copy blocks the host
    until the GPU has taken it); elsewhere a plain ``.to``."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def wants_fused(tc: TrainConfig, device: torch.device) -> bool | None:
    """``fused=`` for a task's Adam / AdamW: True where this run will skip steps on the device, else torch's
    default (None)."""
    return True if tc.host_sync == "log" or (tc.host_sync == "auto" and device.type == "cuda") else None


def _inner(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return getattr(opt, "optimizer", opt)  # accelerate's AcceleratedOptimizer wraps the torch optimizer


def resolve_host_sync(tc: TrainConfig, acc: Accelerator, optimizers: Sequence[torch.optim.Optimizer]) -> bool:
    """Whether steps run without host reads: host_sync "log", or "auto" on CUDA when every optimizer of the task
    is fused (a task with another optimizer reads every step) and no fp16 loss scaler owns ``found_inf``."""
    if tc.host_sync == "step":
        return False
    fused = all(_inner(o).defaults.get("fused") for o in optimizers)
    scaler = getattr(acc, "scaler", None) is not None
    if tc.host_sync == "log" and (not fused or scaler):
        why = "fp16's loss scaler skips steps itself" if scaler else "this task's optimizer is not a fused Adam / AdamW"
        raise FacediffError(f"[train] host_sync = 'log': {why}; use host_sync = 'step' or 'auto'")
    return fused and not scaler and (tc.host_sync == "log" or acc.device.type == "cuda")


class DeviceGuard:
    """The non-finite-loss guard of one run, kept on the device (module docstring)."""

    def __init__(self, device: torch.device, nonfinite_total: int):
        self.bad: torch.Tensor | None = None  # this step: some micro-batch's loss was not finite (bool, 0-d)
        self.total = torch.tensor(float(nonfinite_total), device=device)  # steps skipped over the run
        self.in_row = torch.zeros((), device=device)  # ... in a row, now
        self.longest = torch.zeros((), device=device)  # ... the longest such run since the last read

    def see(self, losses: Sequence[torch.Tensor]) -> None:
        """One micro-batch's losses: or its "not finite" into this step's flag."""
        bad = ~torch.stack([torch.isfinite(l.detach()).all() for l in losses]).all()
        self.bad = bad if self.bad is None else self.bad | bad

    def step(self, acc: Accelerator, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Step ``optimizers``, skipped on the device when any process saw a non-finite loss."""
        found = self.bad.float() if self.bad is not None else torch.zeros((), device=self.total.device)
        if acc.num_processes > 1:
            found = acc.reduce(found, reduction="max")
        for opt in optimizers:
            _inner(opt).found_inf = found
            try:
                opt.step()
            finally:
                _inner(opt).found_inf = None
        self.total += found
        self.in_row = (self.in_row + 1) * found  # 0 after a finite step
        torch.maximum(self.longest, self.in_row, out=self.longest)
        self.bad = None

    def read(self, step: int, tc: TrainConfig) -> int:
        """The host's read (log rows, checkpoints): steps skipped so far; raises the max_nonfinite error."""
        longest, total = int(self.longest), int(self.total)
        self.longest.copy_(self.in_row)
        if longest >= tc.max_nonfinite:
            raise FacediffError(f"stopped by step {step}: {longest} non-finite losses in a row; lower [train] lr "
                                f"(now {tc.lr}) or use mixed_precision = 'no'")
        return total
