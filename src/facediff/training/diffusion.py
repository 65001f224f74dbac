"""Diffusion training: one task, one loop, for kind ddpm (pixels), ldm (a frozen autoencoder's latents), t2i
(latents + captions, a new text model) and lora (a Stable-Diffusion-format base + LoRA or full fine-tuning;
the text parts are in ``facediff.training.text``).

Per optimizer step s, for every sample j of the step (all micro-batches and processes, drawn together from
one generator seeded by (seed, s)): x_0 = E(image_j) (``PixelSpace`` or ``LatentSpace``), t_j ~ U{0..T-1},
eps_j ~ N(0, I) (+ the noise offset d * N(0, 1) per sample and channel), the condition c_j (attributes, sketch,
or the caption's token ids) with classifier-free-guidance dropout (a dropped caption is the empty prompt); x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps; loss = mean_j w(t_j) ||f(x_t, t_j, c_j) - target_j||^2 (Ho et al. 2020; Min-SNR-gamma
weights w, Hang et al. 2023). A process computes its micro-batch's rows only, so (batch b, accumulation k,
processes p) sees the same samples and noise as (batch k*p*b, one process).
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any


import torch
from accelerate import Accelerator
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file
from torch import nn

from facediff.conditioning.attributes import attribute_sweep
from facediff.conditioning.kinds import Grid
from facediff.config import RunConfig
from facediff.diffusion.process import NoiseProcess
from facediff.diffusion.schedules import scheduler_config
from facediff.errors import FacediffError
from facediff.imaging import make_grid, save_png, to_uint8
from facediff.models.unet import build_unet, unet_call
from facediff.pipelines.facediff import FacediffPipeline
from facediff.pipelines.load import save_pipeline
from facediff.pipelines.spaces import LatentSpace, PixelSpace
from facediff.progress import Progress, report
from facediff.training.common import step_generator
from facediff.training.host_sync import to_device, wants_fused
from facediff.training.conditions import TrainingConditions
from facediff.training.data import TrainingData, micro_slice
from facediff.training.loop import Task


class PixelTargets:
    """x_0 of pixel diffusion: the images themselves (uint8 in memory, converted per batch)."""

    def __init__(self, data: TrainingData):
        self.data = data
        self.shape = (3, data.size, data.size)

    def x0(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        x = self.data.pixels(idx)
        return torch.where(flip[:, None, None, None], x.flip(-1), x)


class LatentTargets:
    """x_0 of latent diffusion: s * E(image), encoded once (as is and mirrored) by the frozen autoencoder."""

    def __init__(self, z: torch.Tensor, z_flip: torch.Tensor, scale: float):
        self.z, self.z_flip = z * scale, z_flip * scale
        self.shape = tuple(z.shape[1:])

    def x0(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        return torch.where(flip[:, None, None, None], self.z_flip[idx], self.z[idx])


LATENT_KINDS = ("ldm", "t2i")  # kinds that train in a facediff autoencoder's latent space
TEXT_KINDS = ("t2i", "lora")  # kinds conditioned on captions


class DiffusionTask(Task):
    uses_ema = True

    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None = None):
        if cfg.kind in LATENT_KINDS and not cfg.latent.autoencoder:
            raise FacediffError("[latent] autoencoder is empty: pass --autoencoder AE_RUN_DIR (a trained autoencoder)")
        if cfg.kind == "t2i" and cfg.model.conditioning != "text":
            cfg = replace(cfg, model=replace(cfg.model, conditioning="text"))
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.name = f"train {cfg.kind}"
        self.process = NoiseProcess(cfg.diffusion)
        self._step_cache: tuple[int, dict[str, torch.Tensor]] | None = None
        self.text = cfg.kind in TEXT_KINDS
        self.base = None  # kind lora: the loaded base pipeline

    # -- setup ---------------------------------------------------------------------------------------
    def build(self, acc: Accelerator, data_path: Path) -> None:
        if self.cfg.kind == "lora":
            from facediff.training.text import load_base

            self.base, self.cfg = load_base(self.cfg)
            self.process = NoiseProcess(self.cfg.diffusion)
        cfg = self.cfg
        m = cfg.model
        attrs = m.attributes if m.conditioning == "attributes" and not self.text else ()
        self.data = TrainingData(data_path, cfg.data, attrs, seed=cfg.train.seed, need_labels=bool(attrs),
                                 caption_field=cfg.text.caption_field if self.text else None)
        if cfg.kind in LATENT_KINDS or self.base is not None:
            if self.base is not None:
                vae = self.base.vae
            else:
                from facediff.training.autoencoder import load_autoencoder

                vae = load_autoencoder(cfg.latent.autoencoder)
                if int(vae.config.sample_size) != cfg.data.size:
                    raise FacediffError(f"[data] size = {cfg.data.size} but the autoencoder was trained at "
                                        f"{vae.config.sample_size} px; set --set data.size={vae.config.sample_size}")
            vae.requires_grad_(False)
            z, z_flip = self._encode_latents(vae)
            if self.base is not None:  # the base U-Net was trained at the base VAE's scaling factor
                scale = float(vae.config.scaling_factor)
            else:
                scale = cfg.latent.scale_factor or float(1.0 / z.float().std())  # s = 1/std(z) (Rombach et al.)
            self.cfg = cfg = replace(cfg, latent=replace(cfg.latent, scale_factor=scale))
            vae.register_to_config(scaling_factor=scale)
            self.space: PixelSpace | LatentSpace = LatentSpace(vae)
            self.targets: PixelTargets | LatentTargets = LatentTargets(z, z_flip, scale)
            channels, net_size = int(z.shape[1]), int(z.shape[-1])
        else:
            self.space, self.targets = PixelSpace(), PixelTargets(self.data)
            channels, net_size = m.in_channels, cfg.data.size
        self.conditions = TrainingConditions(cfg, self.data, Grid(cfg.data.size, net_size)) if not self.text else None
        if self.text:
            from facediff.training.text import (
                Captions, adapt_base, build_text_model, free_captions_sample, tokenizer_for_run)

            labels = self.data.dataset.labels if cfg.text.caption_mode == "free" else None

            if self.base is not None:
                self.tokenizer = self.base.tokenizer
                self.model, self.trainable = adapt_base(cfg, self.base)
                self.uses_ema = cfg.lora.full
                self.model.checkpoint_keys = {k for k, p in self.model.named_parameters() if p.requires_grad}
            else:
                vocabulary = self.data.captions + (free_captions_sample(labels, loose=cfg.text.loose_words)
                                                   if labels is not None else [])
                self.tokenizer = tokenizer_for_run(cfg, vocabulary, self.out)
                self.model = build_text_model(cfg, self.tokenizer, channels, net_size)
                if not any(p.requires_grad for p in self.model.text_encoder.parameters()):
                    # a frozen encoder is rebuilt from [text] on resume (pretrained weights, or the seed's
                    # init): checkpoints hold the U-Net only (all-MiniLM-L6-v2 would add 2 x 87 MB to each)
                    self.model.checkpoint_keys = {k for k in self.model.state_dict() if not k.startswith("text_encoder.")}
            self.captions = Captions(self.data.captions, self.tokenizer, cfg, labels)
            self.captions.encode_all(self.model.text_encoder,  # a frozen encoder runs once per caption
                                     on_chunk=lambda done, total: report(self.progress, "encode captions", done, total))
        else:
            torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
            spatial, global_width = self.conditions.widths()
            self.model = build_unet(m, net_size, in_channels=channels + spatial, out_channels=channels,
                                    class_dim=global_width)
        tc = cfg.train
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay,
                                           fused=wants_fused(tc, acc.device))  # fused: skips steps on the device

    @torch.no_grad()
    def _encode_latents(self, vae: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw latents E(x) of every training image, as is and mirrored (flip augmentation needs no encoder
        at training time), cached in the run's cache/latents.safetensors."""
        cache = self.out / "cache" / "latents.safetensors"
        if cache.is_file():
            t = load_file(str(cache))
            if len(t["z"]) == self.data.n:
                return t["z"], t["z_flip"]
        raw = LatentSpace(vae, scaling_factor=1.0)
        zs, zfs = [], []
        for i in range(0, self.data.n, 64):
            x = self.data.pixels(torch.arange(i, min(self.data.n, i + 64)))
            zs.append(raw.encode(x).float())
            zfs.append(raw.encode(x.flip(-1)).float())
            report(self.progress, "encode latents", min(self.data.n, i + 64), self.data.n)
        z, z_flip = torch.cat(zs).contiguous(), torch.cat(zfs).contiguous()
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        save_file({"z": z, "z_flip": z_flip}, str(tmp))
        os.replace(tmp, cache)
        return z, z_flip

    # -- one step ------------------------------------------------------------------------------------
    def _step_draws(self, step: int, world: int) -> dict[str, torch.Tensor]:
        """Every random draw of optimizer step ``step``, for all of its samples at once."""
        if self._step_cache is not None and self._step_cache[0] == step:
            return self._step_cache[1]
        tc, dc = self.cfg.train, self.cfg.diffusion
        idx = self.data.order.step_indices(step, tc.grad_accum, world, tc.batch_size)
        n = len(idx)
        gen = step_generator(tc.seed, step)
        flip = torch.rand(n, generator=gen) < 0.5 if self.data.hflip else torch.zeros(n, dtype=torch.bool)
        drop_all = torch.rand(n, generator=gen) < dc.cond_drop_prob  # classifier-free guidance: p_uncond
        draws = {"idx": torch.from_numpy(idx), "flip": flip, "drop_all": drop_all}
        if self.conditions is not None:  # per kind, in declared order: its part drops, its own drop
            draws.update(self.conditions.draw_drops(n, drop_all, gen))
        draws["t"] = self.process.sample_timesteps(n, gen)
        draws["eps"] = torch.randn((n, *self.targets.shape), generator=gen)
        if dc.noise_offset:  # eps + d * N(0, 1) per (sample, channel): learns to shift the mean brightness
            draws["eps"] += dc.noise_offset * torch.randn((n, self.targets.shape[0], 1, 1), generator=gen)
        self._step_cache = (step, draws)
        return draws

    def batch(self, step: int, micro: int, rank: int, world: int) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                                          torch.Tensor, torch.Tensor]:
        """(x_0, condition fields, t, eps) of one process's micro-batch."""
        d = self._step_draws(step, world)
        sl = micro_slice(micro, rank, world, self.cfg.train.batch_size)
        idx, flip = d["idx"][sl], d["flip"][sl]
        x0 = self.targets.x0(idx, flip)
        cond: dict[str, torch.Tensor] = {}
        if self.conditions is not None:
            cond = self.conditions.batch(idx, flip, {k: v[sl] for k, v in d.items() if k.startswith("drop")})
        if self.text and self.captions.states is not None:
            cond["encoder_hidden_states"] = self.captions.hidden_states(idx, d["drop_all"][sl])
        elif self.text:
            cond["input_ids"] = self.captions.batch(idx, d["drop_all"][sl], self.cfg.train.seed, step)
        return x0, cond, d["t"][sl], d["eps"][sl]

    def losses(self, step: int, micro: int, rank: int, world: int):
        x0, cond, t, eps = self.batch(step, micro, rank, world)
        dev = next(self.model.parameters()).device
        x0, t, eps = to_device(x0, dev), to_device(t, dev), to_device(eps, dev)
        cond = {k: to_device(v, dev) for k, v in cond.items()}
        x_t = self.process.add_noise(x0, eps, t)
        if self.text:  # f(x_t, t, tau(y)): the text encoder runs inside the trained module (or its cache)
            pred = self.model(x_t, t, **cond)
        else:
            pred = unet_call(self.model, x_t, t, **cond)
        loss = self.process.loss(pred.float(), x0, eps, t).mean()
        return [loss], {}, len(x0)

    # -- outputs -------------------------------------------------------------------------------------
    def pipeline(self, model: nn.Module) -> FacediffPipeline:
        """The in-training model as a sampling pipeline (same code path as a loaded export)."""
        model = model.module if hasattr(model, "module") else model  # unwrap DDP
        vae = self.space.vae if isinstance(self.space, LatentSpace) else None
        if self.text:  # model = TextConditionedUNet; a lora run samples with the base's own scheduler
            sched = self.base.scheduler if self.base is not None else \
                DDPMScheduler.from_config(scheduler_config(self.cfg.diffusion))
            return FacediffPipeline(unet=model.unet, scheduler=sched, vae=vae, tokenizer=self.tokenizer,
                                    text_encoder=model.text_encoder)
        sched = DDPMScheduler.from_config(scheduler_config(self.cfg.diffusion))
        return FacediffPipeline(unet=model, scheduler=sched, vae=vae, **self.conditions.pipeline_config())

    def write_grid(self, unet: nn.Module, path: Path, seed: int = 0) -> Path:
        """Attribute-sweep grid (rows: attributes, columns: levels), sketch -> face pairs for sketch models,
        or an 8x4 grid for unconditional models."""
        pipe = self.pipeline(unet)
        tc, size = self.cfg.train, self.cfg.data.size
        kw = dict(sampler=tc.sample_sampler, steps=tc.sample_steps, guidance=3.0, output_type="pt")
        scale = max(1, 64 // size)
        was = unet.training
        unet.eval()
        if self.text:  # the first 8 captions of the data set, two seeds each
            prompts = [c for c in self.data.captions if c][:8]
            x = pipe(seeds=list(range(2 * len(prompts))), prompt=prompts * 2, **kw).images
            grid = make_grid(to_uint8(x), len(prompts), scale=scale)
        elif self.conditions.spatial_maps(8) is not None:  # spatial conditions: the maps above their faces
            values, maps = self.conditions.first_values(8), self.conditions.spatial_maps(8)
            x = pipe(seeds=list(range(len(maps))), conditions=values, **kw).images
            shown = torch.nn.functional.interpolate(1 - 2 * maps[:, :1], size=size, mode="nearest").expand(-1, 3, -1, -1)
            grid = make_grid(to_uint8(torch.cat([shown, x])), len(maps), scale=scale)
        elif pipe.attributes:
            L = pipe.num_levels
            conds, seeds = attribute_sweep(pipe.attributes, L, seed)
            x = pipe(seeds=seeds, attrs=conds, **kw).images
            grid = make_grid(to_uint8(x), L, scale=scale, row_labels=list(pipe.attributes),
                             col_labels=[str(i) for i in range(L)])
        elif self.conditions.kinds:  # other conditions: the first training rows' values
            x = pipe(seeds=list(range(8)), conditions=self.conditions.first_values(8), **kw).images
            grid = make_grid(to_uint8(x), 8, scale=scale)
        else:
            grid = make_grid(to_uint8(pipe(seeds=list(range(32)), **kw).images), 8, scale=scale)
        unet.train(was)
        return save_png(grid, path)

    def periodic(self, step: int, ema_model: nn.Module | None) -> None:
        if not self.uses_ema and self.cfg.train.sample_every and step % self.cfg.train.sample_every == 0:
            ema_model = self.model  # a LoRA run keeps no EMA: its grids show the current adapters
        if ema_model is not None and step < self.cfg.train.max_steps:
            self.write_grid(ema_model, self.out / "samples" / f"step-{step:07d}.png")

    def finish(self, step: int, ema_model: nn.Module | None) -> dict[str, Any]:
        from facediff.config import to_dict

        model = ema_model if ema_model is not None else self.model
        if self.base is not None and not self.cfg.lora.full:
            from facediff.training.text import export_lora

            export = export_lora(self.cfg, self.pipeline(model), self.out / "export")
        else:
            export = save_pipeline(self.pipeline(model), self.out / "export", to_dict(self.cfg))
        grid = self.write_grid(model, self.out / "samples" / f"step-{step:07d}.png")
        out = {"grid": str(grid), "export": str(export)}
        if self.base is not None:
            out["trainable_parameters"] = int(self.trainable)
        return out


def train_diffusion(cfg: RunConfig, out: str | Path, *, resume: bool = False,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Train the denoiser described by ``cfg`` (kind ddpm, ldm, t2i or lora) into run directory ``out``."""
    from facediff.training.loop import train_loop

    if cfg.kind not in ("ddpm", "ldm", *TEXT_KINDS):
        raise FacediffError(f"kind = {cfg.kind!r}: this trainer handles kind = ddpm, ldm, t2i and lora")
    return train_loop(DiffusionTask(cfg, out, progress), cfg, out, resume=resume, progress=progress)





def export_untrained(cfg: RunConfig, out: str | Path) -> dict[str, Any]:
    """A pixel model at its initial weights (seed 002's "untrained" baseline), exported without a training
    step: RUN/config.json, RUN/export, RUN/logs/summary.json with steps = 0."""
    import json

    from facediff.config import save_config, to_dict

    out = Path(out)
    if cfg.kind != "ddpm":
        raise FacediffError(f"export_untrained: kind = {cfg.kind!r}; only pixel (ddpm) models")
    torch.manual_seed(cfg.train.seed)  # the same initial weights as step 0 of a training run
    unet = build_unet(cfg.model, cfg.data.size)
    attrs = cfg.model.attributes if cfg.model.conditioning == "attributes" else ()
    pipe = FacediffPipeline(unet=unet, scheduler=DDPMScheduler.from_config(scheduler_config(cfg.diffusion)),
                            attributes=attrs, num_levels=cfg.model.num_levels)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    save_pipeline(pipe, out / "export", to_dict(cfg))
    summary = {"steps": 0, "parameters": sum(p.numel() for p in unet.parameters()), "export": str(out / "export")}
    (out / "logs" / "summary.json").write_text(json.dumps({**summary, "config": to_dict(cfg)}, indent=1))
    return summary
