"""The one training loop (accelerate), shared by every trainer: diffusion (pixel and latent), autoencoder,
attribute estimator. A ``Task`` says what is trained and how its loss is computed; the loop owns the rest:

run start (one-line errors, config.json), data preparation on the main process first, precision, the LR
schedule, EMA, gradient accumulation (no DDP sync before the last micro-batch), the non-finite-loss guard
(agreed across ranks), gradient clipping, the time budget (agreed across ranks, so every process stops at
the same step), ``logs/metrics.jsonl`` + TensorBoard, atomic checkpoints (safetensors + JSON) and exact
resume, progress. Every random draw of a task is a function of (seed, step, ...), so a resumed run
reproduces the loss sequence of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from facediff.config import RunConfig, TrainConfig, save_config, to_dict
from facediff.errors import FacediffError
from facediff.progress import Progress, report
from facediff.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from facediff.training.common import (
    RunLock, agree_all, agree_any, check_precision, check_run_start, make_accelerator, make_ema,
    make_lr_scheduler, step_seed)
from facediff.training.data import resolve_dataset
from facediff.training.host_sync import DeviceGuard, resolve_host_sync
from facediff.training.metrics_log import log_row, trim_log
from facediff.sampling.precision import autocast
from facediff.training.precision import PrecisionChoice, choose_precision, no_sync_all


class Task:
    """What one trainer trains. The loop calls, in order: ``build`` once; per optimizer step ``losses`` for
    each micro-batch, then ``after_step``; ``periodic`` on the main process; ``finish`` at the end."""

    name = "train"  # progress label
    uses_ema = False  # keep an EMA of ``model`` (saved as ema.safetensors, used by ``finish``)
    model: nn.Module  # the trainable module (DDP-wrapped by the loop); its grads are clipped
    optimizer: torch.optim.Optimizer  # the optimizer of ``model`` (the LR schedule drives it)

    def build(self, acc: Accelerator, data_path: Path) -> None:
        raise NotImplementedError

    def lr_scheduler(self) -> Any | None:
        """A task-specific LR scheduler (None: warmup + constant/cosine from [train])."""
        return None

    def extra_modules(self) -> dict[str, tuple[nn.Module, torch.optim.Optimizer | None]]:
        """More state saved in every checkpoint (e.g. a discriminator and its optimizer)."""
        return {}

    def prepare(self, acc: Accelerator) -> None:
        """Wrap extra trainable modules with ``acc.prepare`` (``model``/``optimizer`` are done by the loop)."""

    def losses(self, step: int, micro: int, rank: int, world: int) -> tuple[list[torch.Tensor], dict[str, float], int]:
        """(losses to backpropagate, numbers to log, images used) of one micro-batch, under autocast."""
        raise NotImplementedError

    def optimizers_to_step(self, step: int) -> list[torch.optim.Optimizer]:
        return [self.optimizer]

    def after_step(self, step: int, acc: Accelerator) -> dict[str, Any]:
        """After the optimizer step (``step`` = steps done); returns extra log numbers."""
        return {}

    def periodic(self, step: int, ema_model: nn.Module | None) -> None:
        """Main process, after each step: sample grids, held-out evaluations."""

    def state(self) -> dict[str, Any]:
        """JSON-able task state saved with each checkpoint (restored by ``load_state``)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def finish(self, step: int, ema_model: nn.Module | None) -> dict[str, Any]:
        """Main process, after the final checkpoint: export; returns summary entries."""
        return {}


def train_loop(task: Task, cfg: RunConfig, out: str | Path, *, resume: bool = False,
               progress: Progress | None = None) -> dict[str, Any]:
    """Train ``task`` as configured by ``cfg.train`` into run directory ``out``; returns the summary."""
    out = Path(out)
    acc = make_accelerator(out / "logs")
    lock = RunLock(out) if acc.is_main_process else contextlib.nullcontext()
    with lock:  # one writer per run directory (the main process holds it for every rank)
        check_run_start(out, resume)
        return _train(task, cfg, out, acc, resume, progress)


def _resolve_precision(task: Task, requested: str, acc: Accelerator, step: int, resumed: str | None = None):
    """[train] mixed_precision for this machine (``training/precision.py``); "auto" times the task's own
    forward/backward (gradients discarded, no collectives, RNG untouched) and every rank adopts bf16 only
    if all of them chose it. A resumed "auto" run keeps the precision its checkpoint was trained in
    (``resumed``): a new probe could decide otherwise and the resumed losses would no longer repeat."""
    if requested == "auto" and resumed in ("no", "bf16"):
        return PrecisionChoice("auto", resumed, f"{'bf16' if resumed == 'bf16' else 'fp32'}: the precision this "
                                                "run was started with (resumed)")
    devices = [acc.device] if acc.device.type == "cuda" else []

    def probe_step(mp: str) -> None:
        with no_sync_all(acc, task.model), torch.random.fork_rng(devices=devices):
            with autocast(mp, acc.device):
                torch.manual_seed(0)
                losses, _, _ = task.losses(step, 0, acc.process_index, acc.num_processes)
            torch.stack([l.float() for l in losses]).sum().backward()
        for module in [task.model, *(m for m, _ in task.extra_modules().values())]:
            module.zero_grad(set_to_none=True)

    choice = choose_precision(requested, acc.device, probe_step)
    if requested == "auto" and acc.num_processes > 1:
        agreed = "bf16" if agree_all(acc, choice.chosen == "bf16") else "no"
        if agreed != choice.chosen:
            choice.chosen, choice.reason = agreed, f"{choice.reason}; another process chose fp32"
    return choice


@dataclass(eq=False)
class _Run:
    """What the steps of one run share: the task, the configs, the accelerator and the state that changes."""

    task: Task
    cfg: RunConfig  # the run's config as the task resolved it (written to summary.json)
    tc: TrainConfig  # [train] as given to train_loop
    out: Path
    acc: Accelerator
    progress: Progress | None
    sched: Any  # the LR scheduler
    ema: Any  # diffusers EMAModel of task.model (Task.uses_ema), else None
    ema_model: nn.Module | None  # the module the EMA weights are copied into (sampling, export)
    precision: PrecisionChoice
    mixed_precision: str  # precision.chosen: the autocast of every micro-batch
    log_path: Path  # logs/metrics.jsonl
    step: int  # optimizer steps done (a skipped step counts)
    nonfinite_total: int  # steps skipped for a non-finite loss, over the whole run (checkpointed)
    nonfinite_run: int = 0  # ... in a row
    t0: float = 0.0  # perf_counter at the first step: the time budget's clock
    t_last: float = 0.0  # perf_counter at the last metrics row
    imgs_since: int = 0  # images (all ranks) since the last metrics row
    rewarm_from: int | None = None  # resumed from a compact checkpoint at this step: the fresh Adam warms up again
    guard: DeviceGuard | None = None  # host_sync "log": the non-finite guard on the device (training.host_sync)
    last_loss: float = float("nan")  # the last loss the host read (every step, or each log row under a guard)

    def current_ema(self) -> nn.Module | None:
        if self.ema is None:
            return None
        self.ema.copy_to(self.ema_model.parameters())
        return self.ema_model

    def read_guard(self) -> None:
        """host_sync "log": the skipped-step count from the device (and the max_nonfinite error)."""
        if self.guard is not None:
            self.nonfinite_total = self.guard.read(self.step, self.tc)

    def checkpoint(self, at: int) -> None:
        task, acc = self.task, self.acc
        self.read_guard()
        extra = {"nonfinite_total": self.nonfinite_total, "task": task.state(),
                 "mixed_precision": self.mixed_precision}
        if self.ema is not None:
            extra["ema_step"] = self.ema.optimization_step
        save_checkpoint(self.out, at, acc.unwrap_model(task.model), self.current_ema(), task.optimizer, self.sched,
                        extra, keep=self.tc.keep_checkpoints,
                        extra_modules={k: (acc.unwrap_model(m), o) for k, (m, o) in task.extra_modules().items()})


def _train(task: Task, cfg: RunConfig, out: Path, acc: Accelerator, resume: bool,
           progress: Progress | None) -> dict[str, Any]:
    run = _setup(task, cfg, out, acc, resume, progress)
    tc = run.tc
    run.t0 = run.t_last = time.perf_counter()
    task.model.train()
    while run.step < tc.max_steps:
        if agree_any(acc, bool(tc.time_budget_minutes) and time.perf_counter() - run.t0 > 60 * tc.time_budget_minutes):
            break
        _one_step(run)
    return _finish(run)


def _build(task: Task, cfg: RunConfig, out: Path, acc: Accelerator, resume: bool) -> RunConfig:
    """The run's folders, its data set and ``task.build`` (each on the main process first), config.json (a
    resumed run's too: its --set overrides hold for the next resume); the config as the task resolved it."""
    if acc.is_main_process:
        for sub in ("state", "export", "logs", "samples", "cache"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    with acc.main_process_first():  # the main process renders SynthFaces once; the others then read it
        data_path = resolve_dataset(cfg.data, out / "cache")
    with acc.main_process_first():  # caches written by a task (e.g. encoded latents) are written once
        task.build(acc, data_path)
    if acc.is_main_process:
        save_config(task.cfg if hasattr(task, "cfg") else cfg, out / "config.json")
    return getattr(task, "cfg", cfg)  # a task may resolve fields (e.g. the latent scale)


def _setup(task: Task, cfg: RunConfig, out: Path, acc: Accelerator, resume: bool,
           progress: Progress | None) -> _Run:
    """Everything before the first step: build, LR schedule, EMA, resume from the latest checkpoint, accelerate's
    wrapping, the precision, the metrics log and the first progress line."""
    tc = cfg.train
    check_precision(tc.mixed_precision, acc.device)
    cfg = _build(task, cfg, out, acc, resume)
    sched = task.lr_scheduler() or make_lr_scheduler(task.optimizer, tc)
    ema = make_ema(task.model, tc) if task.uses_ema else None
    ema_model = None
    start_step, nonfinite_total, resumed_precision = 0, 0, None
    ckpt = latest_checkpoint(out) if resume else None
    if ema is not None:
        import copy

        ema_model = copy.deepcopy(task.model).requires_grad_(False)
    if ckpt is not None:
        trainer = load_checkpoint(ckpt, task.model, ema_model, task.optimizer, sched,
                                  extra_modules=task.extra_modules())
        start_step, nonfinite_total = trainer["step"], trainer.get("nonfinite_total", 0)
        resumed_precision = trainer.get("mixed_precision")
        if trainer.get("compact"):
            report(progress, task.name, start_step, tc.max_steps,
                   note="resumed from a compact checkpoint: bf16 weights, a fresh optimizer state")
        task.load_state(trainer.get("task", {}))
        if ema is not None:
            ema = make_ema(ema_model, tc)  # shadow weights = the checkpoint's EMA
            ema.optimization_step = trainer.get("ema_step", start_step)
    task.model, task.optimizer = acc.prepare(task.model, task.optimizer)
    task.prepare(acc)
    if ema is not None:
        ema.to(acc.device)

    precision = _resolve_precision(task, tc.mixed_precision, acc, start_step, resumed_precision)
    if precision.reason != "as configured":
        report(progress, task.name, start_step, tc.max_steps, note=f"precision: {precision.reason}")
    if precision.warning and progress is None:
        warnings.warn(precision.reason, stacklevel=4)  # at the caller of train_loop (-> _train -> _setup)

    log_path = out / "logs" / "metrics.jsonl"
    if acc.is_main_process:
        trim_log(log_path, start_step if ckpt is not None else None)
        acc.init_trackers("tensorboard")
    if resume and ckpt is None:
        report(progress, task.name, 0, tc.max_steps, note="no complete checkpoint to resume: starting at step 0")
    else:
        report(progress, task.name, start_step, tc.max_steps)
    rewarm = start_step if ckpt is not None and trainer.get("compact") and tc.warmup_steps > 0 else None
    run = _Run(task=task, cfg=cfg, tc=tc, out=out, acc=acc, progress=progress, sched=sched, ema=ema,
               ema_model=ema_model, precision=precision, mixed_precision=precision.chosen, log_path=log_path,
               step=start_step, nonfinite_total=nonfinite_total, rewarm_from=rewarm)
    _rewarm(run)  # the first step's LR too
    optimizers = [task.optimizer, *(o for _, o in task.extra_modules().values() if o is not None)]
    if resolve_host_sync(tc, acc, optimizers):
        run.guard = DeviceGuard(acc.device, nonfinite_total)
    return run


def _micro_batches(run: _Run) -> tuple[list[torch.Tensor], dict[str, float], bool]:
    """Forward and backward of the step's ``grad_accum`` micro-batches (no DDP sync before the last one);
    (first loss of each micro-batch, the logged terms averaged, skipped: a rank saw a non-finite loss)."""
    task, tc, acc = run.task, run.tc, run.acc
    world, rank = acc.num_processes, acc.process_index
    terms: dict[str, float] = {}
    losses_seen: list[torch.Tensor] = []
    skipped = False
    for micro in range(tc.grad_accum):
        last = micro == tc.grad_accum - 1
        sync = contextlib.nullcontext() if last or world == 1 else acc.no_sync(task.model)
        with sync:
            # randomness inside the networks (dropout) is a function of (seed, step, micro, rank) too, so a
            # resumed run draws the same masks; the process-wide RNG is left as it was
            devices = [acc.device] if acc.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), autocast(run.mixed_precision, acc.device):
                torch.manual_seed(step_seed(tc.seed, run.step, micro, rank))
                losses, micro_terms, n_img = task.losses(run.step, micro, rank, world)
            if run.guard is not None:  # no host read: the optimizer skips the step on the device
                run.guard.see(losses)
            elif not agree_all(acc, all(bool(torch.isfinite(l.detach()).all()) for l in losses)):
                skipped = True
                break
            for loss in losses:
                acc.backward(loss / tc.grad_accum)
        losses_seen.append(losses[0].detach())
        for k, v in micro_terms.items():
            terms[k] = terms.get(k, 0.0) + v / tc.grad_accum
        run.imgs_since += n_img * world
    return losses_seen, terms, skipped


def _optimizer_step(run: _Run, skipped: bool) -> torch.Tensor | float | None:
    """Count a skipped step (an error after max_nonfinite in a row) or clip and step; then zero the gradients,
    advance the LR schedule, ``run.step`` and the EMA. The gradient norm before clipping (None: skipped or no
    clip; a device tensor under a ``DeviceGuard``, which steps and skips on the device)."""
    task, tc, acc = run.task, run.tc, run.acc
    grad_norm = None
    if run.guard is not None:
        if tc.grad_clip > 0:
            grad_norm = acc.clip_grad_norm_(task.model.parameters(), tc.grad_clip)
        run.guard.step(acc, task.optimizers_to_step(run.step))
    elif skipped:
        run.nonfinite_run, run.nonfinite_total = run.nonfinite_run + 1, run.nonfinite_total + 1
        if run.nonfinite_run >= tc.max_nonfinite:
            raise FacediffError(f"stopped at step {run.step}: {run.nonfinite_run} non-finite losses in a row; lower "
                                f"[train] lr (now {tc.lr}) or use mixed_precision = 'no'")
    else:
        run.nonfinite_run = 0
        if tc.grad_clip > 0:
            grad_norm = float(acc.clip_grad_norm_(task.model.parameters(), tc.grad_clip))
        for opt in task.optimizers_to_step(run.step):
            opt.step()
    for opt in [task.optimizer, *(o for _, o in task.extra_modules().values() if o is not None)]:
        opt.zero_grad(set_to_none=True)
    run.sched.step()
    run.step += 1
    _rewarm(run)
    if run.ema is not None:
        run.ema.step(acc.unwrap_model(task.model).parameters())
    return grad_norm


def _rewarm(run: _Run) -> None:
    """After a compact checkpoint (no Adam moments), scale the scheduled LR by (k + 1) / warmup_steps for the
    first steps k since the resume: a fresh Adam moves every weight by ~lr at first, which would shake a trained
    model. The scheduler sets the LR afresh each step, so the scale never compounds."""
    if run.rewarm_from is None:
        return
    k = run.step - run.rewarm_from
    if k >= run.tc.warmup_steps:
        run.rewarm_from = None
        return
    for group in run.task.optimizer.param_groups:
        group["lr"] *= (k + 1) / run.tc.warmup_steps


def _one_step(run: _Run) -> None:
    """One optimizer step, then its progress report, metrics row, checkpoint and the task's periodic work."""
    task, tc, acc = run.task, run.tc, run.acc
    main = acc.is_main_process
    losses_seen, terms, skipped = _micro_batches(run)
    grad_norm = _optimizer_step(run, skipped)
    step = run.step
    extra = task.after_step(step, acc)
    row_due = step % tc.log_every == 0 or step == tc.max_steps or bool(extra)
    checkpoint_due = bool(tc.checkpoint_every) and step % tc.checkpoint_every == 0 and step < tc.max_steps
    if run.guard is None or row_due:  # under a guard the host reads on log rows only
        run.last_loss = float(acc.reduce(torch.stack(losses_seen).mean(), reduction="mean").item()) \
            if losses_seen else float("nan")  # (nan: a step the per-step guard skipped)
    if row_due or checkpoint_due:  # every rank reads (the counters agree), so a max_nonfinite stop is on all
        run.read_guard()
    budget = {"budget_s": 60 * tc.time_budget_minutes, "elapsed_s": time.perf_counter() - run.t0} \
        if tc.time_budget_minutes else {}
    report(run.progress, task.name, step, tc.max_steps, loss=run.last_loss, **budget)
    if main and row_due:
        log_row(run, run.last_loss, terms, None if grad_norm is None else float(grad_norm), extra)
    if checkpoint_due:
        acc.wait_for_everyone()
        if main:
            run.checkpoint(step)
    if main:
        task.periodic(step, run.current_ema() if tc.sample_every and step % tc.sample_every == 0 else None)


def _finish(run: _Run) -> dict[str, Any]:
    """After the last step: the final checkpoint, ``task.finish`` (export), logs/summary.json; the summary."""
    task, acc, step = run.task, run.acc, run.step
    run.read_guard()
    acc.wait_for_everyone()
    steps_per_rank = acc.gather(torch.tensor([step], device=acc.device)).tolist()
    raw = acc.unwrap_model(task.model)
    summary: dict[str, Any] = {"steps": step, "steps_per_rank": steps_per_rank,
                               "parameters": sum(p.numel() for p in raw.parameters()),
                               "nonfinite_total": run.nonfinite_total,
                               "train_seconds": round(time.perf_counter() - run.t0, 2),
                               "precision": run.precision.as_dict()}
    if acc.is_main_process:
        run.checkpoint(step)
        summary.update(task.finish(step, run.current_ema()))
        (run.out / "logs" / "summary.json").write_text(json.dumps({**summary, "config": to_dict(run.cfg)}, indent=1,
                                                                  default=str))
    # Drop the DDP wrappers while every rank is still here: a gloo process group torn down after its peer
    # has exited can block forever in its destructor.
    acc.wait_for_everyone()
    task.model = acc.unwrap_model(task.model)
    acc.free_memory()  # accelerate's own references to the wrapped model and optimizer
    acc.wait_for_everyone()
    acc.end_training()  # closes the trackers (and, in accelerate >= 1.x, the process group)
    return summary
