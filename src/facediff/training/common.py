"""What every trainer shares: run-start checks, the accelerator, precision, LR schedule, EMA, seeds.

Public on purpose: the loop (``training/loop.py``) and every task (diffusion, autoencoder, estimator) use
these, and so may benchmarks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn

from facediff.config import TrainConfig
from facediff.errors import FacediffError


class RunLock:
    """One writer per run directory: an exclusive OS lock (``fcntl.flock``) on RUN_DIR/.lock, held while
    training; the kernel releases it when the process dies, so a killed run never leaves a stale lock."""

    def __init__(self, out: Path):
        self.path, self.fd = Path(out) / ".lock", None

    def __enter__(self) -> "RunLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise FacediffError(f"{self.path.parent} is being trained by another process (pid {holder}); wait "
                                "for it to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def check_run_start(out: Path, resume: bool) -> None:
    """One-line errors shared by every trainer: run dir vs --resume."""
    if (out / "config.json").exists() and not resume:
        raise FacediffError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (out / "config.json").exists():
        raise FacediffError(f"--resume: {out} holds no run (no config.json)")


def make_accelerator(log_dir: Path) -> Accelerator:
    """The run's Accelerator: device placement, DDP, collectives, TensorBoard tracking (``log_with``).

    Mixed precision is NOT given to accelerate: its process-wide state cannot change precision between two
    runs in one Python process (tests, recipes), so ``sampling.precision.autocast`` applies it per run instead.
    """
    return Accelerator(log_with="tensorboard", project_dir=str(log_dir))


def check_precision(mixed_precision: str, device: torch.device) -> None:
    if mixed_precision == "fp16" and device.type != "cuda":
        raise FacediffError("[train] mixed_precision = 'fp16' needs a CUDA GPU; use 'bf16' or 'no' on CPU")


def make_lr_scheduler(optimizer: torch.optim.Optimizer, tc: TrainConfig):
    """diffusers' ``get_scheduler``: linear warmup over ``warmup_steps``, then constant or cosine to 0 at
    ``max_steps`` (Loshchilov & Hutter 2017, half a cosine period)."""
    name = "cosine" if tc.lr_schedule == "cosine" else "constant_with_warmup"
    return get_scheduler(name, optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=tc.max_steps)


def make_ema(model: nn.Module, tc: TrainConfig) -> EMAModel:
    """diffusers' ``EMAModel`` over ``model``'s parameters, theta_ema <- d theta_ema + (1 - d) theta with
    d = min(ema_decay, (1 + k) / (10 + k)), k = steps since ``ema_start`` (0 before: EMA = the weights);
    ``foreach`` updates all tensors in one fused call."""
    return EMAModel(model.parameters(), decay=tc.ema_decay, update_after_step=tc.ema_start, foreach=True)


def step_seed(seed: int, step: int, micro: int = 0, rank: int = 0) -> int:
    """The generator seed of one draw: a pure function of (seed, step, micro-batch, process)."""
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(step_seed(seed, step, micro, rank))


def agree_any(acc: Accelerator, flag: bool) -> bool:
    """True on every process when it is True on any (e.g. "the time budget is spent"): ranks stop together.
    One process asks no device (a GPU would otherwise be waited for at every step)."""
    if acc.num_processes == 1:
        return bool(flag)
    t = acc.reduce(torch.tensor(1.0 if flag else 0.0, device=acc.device), reduction="max")
    return bool(t.item() > 0)


def agree_all(acc: Accelerator, flag: bool) -> bool:
    """True on every process only when it is True on all (e.g. "this loss is finite")."""
    return not agree_any(acc, not flag)
