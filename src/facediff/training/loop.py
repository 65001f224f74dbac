"""The one training loop (accelerate): DDPM-family denoisers on pixels (later: latents).

Per optimizer step s: for each micro-batch m (gradient accumulation), x_0 and the condition c come from
``TrainingData`` (stateless in s), t ~ U{0..T-1}, eps ~ N(0, I) from a generator seeded by (seed, s, m,
process); x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; loss = w(t) * ||f(x_t, t, c) - target||^2
(Ho et al. 2020; Min-SNR-gamma weights w(t), Hang et al. 2023). AdamW, warmup, EMA, NaN/inf guard,
atomic checkpoints. Because every random draw is a function of the step, ``resume`` reproduces the loss
sequence of an uninterrupted run.
"""
from __future__ import annotations

import copy
from dataclasses import replace
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from facediff.config import RunConfig, cond_dim, save_config, to_dict
from facediff.diffusion.process import NoiseProcess
from facediff.diffusion.schedules import scheduler_config
from facediff.errors import FacediffError
from facediff.imaging import make_grid, save_png, to_uint8
from facediff.models.unet import build_unet, conditioned_forward, count_parameters
from facediff.models.bundle import ModelBundle
from facediff.sampling.generate import attribute_sweep, generate_images
from facediff.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from facediff.training.data import TrainingData, resolve_dataset
from facediff.training.export import export_meta, export_model
from facediff.training.progress import ProgressBar, open_run_logs


def _lr_lambda(cfg: RunConfig):
    warm, total, kind = cfg.train.warmup_steps, cfg.train.max_steps, cfg.train.lr_schedule

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        return 1.0

    return f


def check_run_start(out: Path, resume: bool, mixed_precision: str) -> None:
    """One-line errors shared by every trainer: run dir vs --resume, and fp16 without CUDA."""
    if (out / "config.json").exists() and not resume:
        raise FacediffError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (out / "config.json").exists():
        raise FacediffError(f"--resume: {out} holds no run (no config.json)")
    if mixed_precision == "fp16" and not torch.cuda.is_available():
        raise FacediffError("[train] mixed_precision = 'fp16' needs a CUDA GPU; use 'bf16' or 'no' on CPU")


def make_accelerator(mixed_precision: str, grad_accum: int = 1) -> Accelerator:
    """A fresh Accelerator; the process-wide AcceleratorState is reset first (keeping the distributed
    PartialState) so several runs with different precisions can train in one Python process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum)


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The generator seed of one micro-batch: a pure function of (seed, step, micro-batch, process)."""
    return int(np.random.SeedSequence([seed, step, micro, rank]).generate_state(1)[0])


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p.detach().to(pe.dtype), 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


def write_sample_grid(bundle: ModelBundle, cfg: RunConfig, path: Path, seed: int = 0,
                      sketches: torch.Tensor | None = None) -> Path:
    """Attribute-sweep grid (rows: attributes, columns: levels), sketch -> face pairs for sketch models,
    or an 8x4 grid for unconditional models."""
    m, size = cfg.model, cfg.data.size
    bundle.net.eval()
    kw = dict(sampler=cfg.train.sample_sampler, steps=cfg.train.sample_steps, guidance=3.0)
    scale = max(1, 64 // size)
    if sketches is not None:
        n = len(sketches)
        conds = [None] * n
        x = generate_images(bundle, seeds=list(range(n)), conditions=conds, sketches=sketches, **kw)
        lat = bundle.latent_shape[1]
        ink = sketches.reshape(n, 1, lat, lat)
        shown = torch.nn.functional.interpolate(1 - 2 * ink, size=size, mode="nearest").expand(-1, 3, -1, -1)
        grid = make_grid(to_uint8(torch.cat([shown, x])), n, scale=scale)
    elif m.conditioning == "attributes":
        conds, seeds = attribute_sweep(m.attributes, m.num_levels, seed)
        x = generate_images(bundle, seeds=seeds, conditions=conds, **kw)
        grid = make_grid(to_uint8(x), m.num_levels, scale=scale, row_labels=list(m.attributes),
                         col_labels=[str(i) for i in range(m.num_levels)])
    else:
        x = generate_images(bundle, seeds=list(range(32)), **kw)
        grid = make_grid(to_uint8(x), 8, scale=scale)
    bundle.net.train()
    return save_png(grid, path)


def train(cfg: RunConfig, out: str | Path, *, resume: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train the denoiser described by ``cfg`` into run directory ``out``; returns a summary dict."""
    out = Path(out)
    tc = cfg.train
    if cfg.kind not in ("ddpm", "ldm"):
        raise FacediffError(f"kind = {cfg.kind!r}: this trainer handles kind = 'ddpm' and 'ldm'")
    if cfg.kind == "ldm" and not cfg.latent.autoencoder:
        raise FacediffError("[latent] autoencoder is empty: pass --autoencoder AE_RUN_DIR (a trained autoencoder)")
    check_run_start(out, resume, tc.mixed_precision)
    acc = make_accelerator(tc.mixed_precision, tc.grad_accum)
    main = acc.is_main_process
    if main:
        for sub in ("state", "export", "logs", "samples", "cache"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        if not resume:
            save_config(cfg, out / "config.json")
    acc.wait_for_everyone()
    data_path = resolve_dataset(cfg.data, out / "cache") if main else None
    acc.wait_for_everyone()
    data_path = resolve_dataset(cfg.data, out / "cache")
    ae, latent, sketch_hw, grid_sketches = None, None, None, None
    if cfg.kind == "ldm":
        from facediff.training.autoencoder import load_autoencoder
        from facediff.training.latents import LatentData

        ae, ae_meta = load_autoencoder(cfg.latent.autoencoder)
        ae.requires_grad_(False)
        if int(ae_meta["sample_size"]) != cfg.data.size:
            raise FacediffError(f"[data] size = {cfg.data.size} but the autoencoder was trained at "
                                f"{ae_meta['sample_size']} px; set --set data.size={ae_meta['sample_size']}")
        data = LatentData(data_path, cfg, ae, out / "cache" / "latents.safetensors", show_progress=show_progress and main)
        if not cfg.latent.scale_factor:  # the latent scale s = 1/std(z), stored in the resolved config
            cfg = replace(cfg, latent=replace(cfg.latent, scale_factor=data.scale))
            if main:
                save_config(cfg, out / "config.json")
        lat_c, lat_s = int(data.z.shape[1]), data.latent_size
        latent = {"ae_kind": ae_meta["ae_kind"], "scale_factor": data.scale, "latent_channels": lat_c,
                  "latent_size": lat_s, "sketch": cfg.latent.sketch, "downsample": ae_meta["downsample"]}
        sketch_hw = (lat_s, lat_s) if cfg.latent.sketch else None
        grid_sketches = data.sketch_grid[:8] if cfg.latent.sketch else None
        net_in, net_out, net_size = lat_c + (1 if cfg.latent.sketch else 0), lat_c, lat_s
    else:
        data = TrainingData(data_path, cfg.data, cfg.model, tc.seed)
        net_in = net_out = cfg.model.in_channels
        net_size = cfg.data.size
    attr_dim = cond_dim(cfg.model)

    torch.manual_seed(tc.seed)  # identical initial weights on every process
    net = build_unet(cfg.model, net_size, in_channels=net_in, out_channels=net_out)
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    process = NoiseProcess(cfg.diffusion)
    start_step, nonfinite_total = 0, 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        trainer = load_checkpoint(ckpt, net, ema, opt, sched)
        start_step, nonfinite_total = trainer["step"], trainer.get("nonfinite_total", 0)
    net, opt = acc.prepare(net, opt)

    def bundle_of(weights: nn.Module) -> ModelBundle:
        """The in-training model as a sampling bundle (same code path as a loaded export)."""
        return ModelBundle(net=weights, meta=export_meta(cfg, latent), scheduler_config=scheduler_config(cfg.diffusion),
                           path=out, vae=ae)

    ema.to(acc.device)

    log_path, tb = open_run_logs(out, start_step if ckpt is not None else None, main)
    bar = ProgressBar(tc.max_steps, f"train {cfg.kind}", enabled=show_progress and main, start=start_step)
    world, rank = acc.num_processes, acc.process_index
    nonfinite_run, t_last, imgs_since = 0, time.perf_counter(), 0
    step = start_step
    t_start = time.perf_counter()
    net.train()
    while step < tc.max_steps:
        if tc.time_budget_minutes and time.perf_counter() - t_start > 60 * tc.time_budget_minutes:
            stop = torch.tensor(1.0, device=acc.device)
        else:
            stop = torch.tensor(0.0, device=acc.device)
        if world > 1:
            stop = acc.reduce(stop, reduction="max")
        if stop.item() > 0:
            break
        losses, skipped, grad_norm = [], False, None
        for micro in range(tc.grad_accum):
            gen = torch.Generator().manual_seed(step_seed(tc.seed, step, micro, rank))
            idx = data.indices(step, micro, tc.grad_accum, rank, world, tc.batch_size)
            if cfg.kind == "ldm":
                x0, cond = data.batch(idx, gen, cfg.diffusion.cond_drop_prob, cfg.diffusion.attr_drop_prob,
                                      cfg.latent.sketch_drop_prob)
            else:
                x0, cond = data.batch(idx, gen, cfg.diffusion.cond_drop_prob, cfg.diffusion.attr_drop_prob)
            t = process.sample_timesteps(len(idx), gen)
            eps = torch.randn(x0.shape, generator=gen)
            x0, eps, t = x0.to(acc.device), eps.to(acc.device), t.to(acc.device)
            cond = cond.to(acc.device) if cond is not None else None
            x_t = process.add_noise(x0, eps, t)
            with acc.accumulate(net), acc.autocast():
                pred = conditioned_forward(net, x_t, t, cond, attr_dim, sketch_hw)
                loss = process.loss(pred.float(), x0, eps, t).mean()
                finite = torch.isfinite(loss.detach()).float()
                if world > 1:
                    finite = acc.reduce(finite, reduction="min")
                if finite.item() < 1:
                    skipped = True
                    opt.zero_grad(set_to_none=True)
                    continue
                acc.backward(loss)
                grad_norm = acc.clip_grad_norm_(net.parameters(), tc.grad_clip) if (
                    tc.grad_clip > 0 and acc.sync_gradients) else None
                opt.step()
                opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
            imgs_since += len(idx) * world
        if skipped:
            nonfinite_run += 1
            nonfinite_total += 1
            opt.zero_grad(set_to_none=True)
            if nonfinite_run >= tc.max_nonfinite:
                raise FacediffError(f"stopped at step {step}: {nonfinite_run} non-finite losses in a row; lower "
                                    f"[train] lr (now {tc.lr}) or use mixed_precision = 'no'")
        else:
            nonfinite_run = 0
        sched.step()
        step += 1
        decay = 0.0 if step <= tc.ema_start else min(tc.ema_decay, (1 + step) / (10 + step))
        ema_update(ema, acc.unwrap_model(net), decay)
        loss_val = acc.reduce(torch.stack(losses).mean(), reduction="mean").item() if losses else float("nan")
        bar.update(step, loss=loss_val)
        if main and (step % tc.log_every == 0 or step == tc.max_steps):
            now = time.perf_counter()
            row = {"step": step, "loss": loss_val, "lr": sched.get_last_lr()[0],
                   "grad_norm": float(grad_norm) if (losses and grad_norm is not None) else None,
                   "images_per_s": imgs_since / max(now - t_last, 1e-9), "nonfinite_total": nonfinite_total}
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            tb.add_scalar("train/loss", loss_val, step)
            tb.add_scalar("train/lr", row["lr"], step)
            t_last, imgs_since = now, 0
        if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.max_steps:
            acc.wait_for_everyone()
            if main:
                save_checkpoint(out, step, acc.unwrap_model(net), ema, opt, sched,
                                {"nonfinite_total": nonfinite_total}, keep=tc.keep_checkpoints)
        if main and tc.sample_every and step % tc.sample_every == 0 and step < tc.max_steps:
            write_sample_grid(bundle_of(ema), cfg, out / "samples" / f"step-{step:07d}.png", sketches=grid_sketches)
    bar.close()
    acc.wait_for_everyone()
    summary: dict[str, Any] = {"steps": step, "parameters": count_parameters(ema), "nonfinite_total": nonfinite_total}
    if main:
        save_checkpoint(out, step, acc.unwrap_model(net), ema, opt, sched, {"nonfinite_total": nonfinite_total},
                        keep=tc.keep_checkpoints)
        export_model(ema, cfg, out / "export", vae=ae, latent=latent)
        summary["grid"] = str(write_sample_grid(bundle_of(ema), cfg, out / "samples" / f"step-{step:07d}.png",
                                                sketches=grid_sketches))
        summary["export"] = str(out / "export")
        tb.close()
        (out / "logs" / "summary.json").write_text(json.dumps({**summary, "config": to_dict(cfg)}, indent=1))
    acc.end_training()
    return summary
