"""Autoencoder training for latent diffusion (kind = "autoencoder"): VQ-VAE / VQGAN or KL.

Generator objective per batch x (Esser et al. 2021, eq. 4-7; Rombach et al. 2022, App. G):

    L_rec = w1 |x - x_hat| + w2 (x - x_hat)^2 + w_p P(x, x_hat)
    L_G   = L_rec + [VQ] ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2     (van den Oord et al. 2017, eq. 3)
                  + [KL] w_kl KL(q(z|x) || N(0, I))                       (Rombach et al. 2022)
                  + [step >= disc_start] w_d lambda L_GAN,  L_GAN = -E[D(x_hat)]
    lambda = ||grad_{G_L} L_rec|| / (||grad_{G_L} L_GAN|| + 1e-4)        (Esser et al. 2021, eq. 7)
    L_D   = 1/2 (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))])              (hinge; PatchGAN D, Isola et al. 2017)

All terms are means over pixel values (the KL sum is divided by the number of pixel values, which is
Rombach's per-image sums scaled by one constant, so w_kl = 1e-6 means what it means there). P is LPIPS
(Zhang et al. 2018) when ``lpips_weights`` names the user's file, else an LPIPS-style distance in the
bundled SynthFaces oracle's trunk features, else nothing (the choice is logged in logs/summary.json).
Dead VQ codes are re-initialised to random encoder outputs (at step 1 — a data-dependent codebook init —
and every ``dead_code_restart`` steps). No EMA: the decoder is used as trained (as Esser et al.).

Conventions of ``training/loop.py``: accelerate; every random draw from a generator seeded by
``step_seed(seed, step, micro, rank)``; batches from ``TrainingData``; atomic safetensors + JSON
checkpoints (the discriminator, its optimizer and the code-use counts ride along as extra modules), so
``resume`` reproduces an uninterrupted run; ``logs/metrics.jsonl`` + TensorBoard; grids in ``samples/``.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facediff.config import AutoencoderConfig, RunConfig, load_config_json, save_config, to_dict
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError
from facediff.models.autoencoder import (
    Autoencoder, CodeUsage, NLayerDiscriminator, adaptive_gan_weight, build_autoencoder, check_config, codebook,
    codebook_stats, decode, disc_layers, downsample_factor, encode, hinge_d_loss, hinge_g_loss, is_vq, last_layer,
    latent_channels, quantize, restart_dead_codes, vq_loss)
from facediff.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from facediff.training.data import TrainingData, _resize_all, resolve_dataset
from facediff.training.loop import _lr_lambda, check_run_start, make_accelerator, step_seed
from facediff.training.progress import ProgressBar, open_run_logs

AE_META = "facediff.json"  # the export's metadata file (as training/export.py)
_RESTART_STREAM = 1_000_003  # micro-batch slot of the dead-code restart's generator (never a real micro-batch)


class _GeneratorPass(nn.Module):
    """x -> (x_hat, regulariser, z_e, code indices): one forward call, so DDP wraps the whole generator."""

    def __init__(self, ae: Autoencoder, cfg: AutoencoderConfig):
        super().__init__()
        self.ae, self.beta = ae, cfg.commitment_beta

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        if is_vq(self.ae):
            z = encode(self.ae, x)
            z_q, e, idx = quantize(self.ae, z)
            return decode(self.ae, z_q, quantize_latents=False), vq_loss(z, e, self.beta), z, idx
        dist = self.ae.encode(x).latent_dist
        z = dist.sample(generator)
        return self.ae.decode(z).sample, dist.kl().sum() / x.numel(), z, None


class OraclePerceptual(nn.Module):
    """LPIPS-style distance (Zhang et al. 2018, eq. 1 with unit channel weights) in the trunk features of the
    bundled SynthFaces oracle: per stage, unit-normalise channels, squared difference, spatial mean."""

    def __init__(self, estimator: nn.Module):
        super().__init__()
        self.est = estimator.eval().requires_grad_(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = self.est.stem(self.est._resize(x)), []
        for block in self.est.blocks:
            h = block(h)
            out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self._features(x), self._features(y)
        return sum(((a - b) ** 2).sum(1).mean((1, 2)) for a, b in zip(fx, fy)) / len(fx)  # (B,)

    def train(self, mode: bool = True) -> "OraclePerceptual":
        return super().train(False)  # frozen: always eval mode


class _LPIPSLoss(nn.Module):
    """LPIPS (Zhang et al. 2018) from the user's weights file through the ``lpips`` package."""

    def __init__(self, weights: str):
        super().__init__()
        try:
            import lpips as lpips_pkg  # needs a working torchvision: the user's environment only
            self.net = lpips_pkg.LPIPS(net="alex", model_path=weights, verbose=False).eval().requires_grad_(False)
        except Exception:
            raise FacediffError(f"[autoencoder] lpips_weights = {weights!r}: LPIPS needs the lpips package and a "
                                "working torchvision; install them or set lpips_weights = \"\"") from None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y).flatten()


def build_perceptual(cfg: AutoencoderConfig) -> tuple[nn.Module | None, str]:
    """The perceptual loss P and a note naming it (for logs/summary.json)."""
    if cfg.perceptual_weight <= 0:
        return None, "none (perceptual_weight = 0)"
    if cfg.lpips_weights:
        if not Path(cfg.lpips_weights).is_file():
            raise FacediffError(f"[autoencoder] lpips_weights = {cfg.lpips_weights!r}: file not found")
        return _LPIPSLoss(cfg.lpips_weights), f"lpips ({cfg.lpips_weights})"
    try:
        from facediff.metrics.features import load_oracle  # lazy: metrics sits above training

        return OraclePerceptual(load_oracle("cpu")), "oracle-features (bundled SynthFaces estimator)"
    except Exception as e:  # no bundled oracle in this install
        return None, f"none (no LPIPS weights given; oracle unavailable: {str(e).splitlines()[0][:160]})"


def heldout_images(data_path: Path, cfg: RunConfig) -> tuple[np.ndarray, bool]:
    """Up to eval_n uint8 images for held-out metrics: the val split, or (no val split) training images."""
    splits = {lab.get("split", "train") for lab in PreparedDataset(data_path).all_labels}
    heldout = "val" in splits and cfg.data.split != "val"
    ds = PreparedDataset(data_path, split="val" if heldout else (cfg.data.split or None))
    images = ds.images(np.arange(min(cfg.autoencoder.eval_n, len(ds))))
    return (images if ds.size == cfg.data.size else _resize_all(images, cfg.data.size)), heldout


def evaluate(ae: Autoencoder, images: np.ndarray, grid_path: Path | None, lpips_weights: str = "") -> dict[str, Any]:
    """Held-out metrics (``facediff.metrics.reconstruction``) + originals-over-reconstructions grid."""
    from facediff.imaging import make_grid, save_png, to_uint8
    from facediff.metrics.reconstruction import reconstruct_images, reconstruction_metrics

    res = reconstruction_metrics(ae, images, batch=64, lpips_weights=lpips_weights or None)
    if grid_path is not None:
        k = min(8, len(images))
        _, x_hat, _ = reconstruct_images(ae, images[:k])
        size = images.shape[1]
        save_png(make_grid(np.concatenate([images[:k], to_uint8(x_hat)]), k, scale=max(1, 64 // size)), grid_path)
    return res


def train_autoencoder(cfg: RunConfig, out: str | Path, *, resume: bool = False, show_progress: bool = True,
                      time_budget_s: float | None = None) -> dict[str, Any]:
    """Train the autoencoder of ``cfg`` into run directory ``out``; returns the summary (also logs/summary.json).

    ``time_budget_s`` stops training early (then checkpoints, evaluates and exports as at max_steps).
    """
    out, tc, ac = Path(out), cfg.train, cfg.autoencoder
    if cfg.kind != "autoencoder":
        raise FacediffError(f"kind = {cfg.kind!r}: this trainer handles kind = 'autoencoder'")
    check_run_start(out, resume, tc.mixed_precision)
    check_config(ac, cfg.data.size)
    perceptual, perceptual_note = build_perceptual(ac)
    acc = make_accelerator(tc.mixed_precision)
    main, world, rank = acc.is_main_process, acc.num_processes, acc.process_index
    if main:
        for sub in ("state", "export", "logs", "samples", "cache"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        if not resume:
            save_config(cfg, out / "config.json")
        resolve_dataset(cfg.data, out / "cache")
    acc.wait_for_everyone()
    data_path = resolve_dataset(cfg.data, out / "cache")
    data = TrainingData(data_path, cfg.data, replace(cfg.model, conditioning="none"), tc.seed)
    val_images, heldout = heldout_images(data_path, cfg)

    torch.manual_seed(tc.seed)  # identical initial weights on every process
    ae = build_autoencoder(ac, cfg.data.size)
    vq = is_vq(ae)
    # Adam betas (0.5, 0.9) for both players of the GAN, as Esser et al. 2021 (taming-transformers);
    # without a discriminator the usual (0.9, 0.999).
    betas = (0.5, 0.9) if ac.disc_weight > 0 else (0.9, 0.999)
    opt_g = torch.optim.AdamW(ae.parameters(), lr=tc.lr, betas=betas, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_g, _lr_lambda(cfg))
    disc = opt_d = None
    if ac.disc_weight > 0:
        disc = NLayerDiscriminator(3, ac.disc_channels, disc_layers(cfg.data.size))
        opt_d = torch.optim.AdamW(disc.parameters(), lr=tc.lr, betas=(0.5, 0.9), weight_decay=0.0)
    usage = CodeUsage(codebook(ae).shape[0]) if vq else None
    extra_modules: dict[str, tuple[nn.Module, Any]] = {}
    if disc is not None:
        extra_modules["discriminator"] = (disc, opt_d)
    if usage is not None:
        extra_modules["code_usage"] = (usage, None)
    start_step, nonfinite_total = 0, 0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        trainer = load_checkpoint(ckpt, ae, None, opt_g, sched, extra_modules=extra_modules)
        start_step, nonfinite_total = trainer["step"], trainer.get("nonfinite_total", 0)
    gen_pass, opt_g = acc.prepare(_GeneratorPass(ae, ac), opt_g)
    if disc is not None:
        disc, opt_d = acc.prepare(disc, opt_d)
    if perceptual is not None:
        perceptual.to(acc.device)
    if usage is not None:
        usage.to(acc.device)

    log_path, tb = open_run_logs(out, start_step if ckpt is not None else None, main)

    def log(row: dict[str, Any]) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k != "step" and isinstance(v, (int, float)) and v is not None:
                tb.add_scalar(k if "/" in k else f"train/{k}", v, row["step"])

    def checkpoint(at: int) -> None:
        save_checkpoint(out, at, acc.unwrap_model(gen_pass).ae, None, opt_g, sched,
                        {"nonfinite_total": nonfinite_total, "perceptual": perceptual_note}, keep=tc.keep_checkpoints,
                        extra_modules={k: (acc.unwrap_model(m), o) for k, (m, o) in extra_modules.items()})

    def run_eval(at: int) -> dict[str, Any]:
        res = evaluate(acc.unwrap_model(gen_pass).ae, val_images, out / "samples" / f"recon-{at:07d}.png",
                       ac.lpips_weights)
        log({"step": at, **{f"val/{k}": v for k, v in res.items() if isinstance(v, (int, float))}})
        return res

    bar = ProgressBar(tc.max_steps, f"train autoencoder ({ac.kind})", enabled=show_progress and main,
                      start=start_step)
    raw_ae = acc.unwrap_model(gen_pass).ae
    t0 = t_last = time.perf_counter()
    imgs_since, nonfinite_run, step, acc_n = 0, 0, start_step, {}
    gen_pass.train()
    while step < tc.max_steps:
        if time_budget_s is None and cfg.train.time_budget_minutes:
            time_budget_s = 60 * cfg.train.time_budget_minutes
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
        disc_on = disc is not None and step >= ac.disc_start
        terms: dict[str, float] = {}
        skipped, last_z = False, None
        for micro in range(tc.grad_accum):
            gen = torch.Generator().manual_seed(step_seed(tc.seed, step, micro, rank))
            idx = data.indices(step, micro, tc.grad_accum, rank, world, tc.batch_size)
            x = data.batch(idx, gen, 0.0, 0.0)[0].to(acc.device)
            if disc is not None:
                disc.requires_grad_(False)
            with acc.autocast():
                x_hat, reg, z, codes = gen_pass(x, None if vq else gen)
                x_hat = x_hat.float()
                rec = ac.l1_weight * (x - x_hat).abs().mean() + ac.l2_weight * F.mse_loss(x_hat, x)
                if perceptual is not None:
                    rec = rec + ac.perceptual_weight * perceptual(x, x_hat).mean()
                reg = reg.float() * (1.0 if vq else ac.kl_weight)
                loss = rec + reg
                if disc_on:
                    g_gan = hinge_g_loss(disc(x_hat).float())
                    lam = adaptive_gan_weight(rec, g_gan, last_layer(raw_ae))
                    loss = loss + ac.disc_weight * lam * g_gan
                    terms["g_gan"], terms["gan_lambda"] = float(g_gan.detach()), float(lam)
            finite = torch.isfinite(loss.detach()).float()
            if world > 1:
                finite = acc.reduce(finite, reduction="min")
            if finite.item() < 1:
                skipped = True
                break
            acc.backward(loss / tc.grad_accum)
            if disc_on:
                disc.requires_grad_(True)
                with acc.autocast():
                    d_loss = hinge_d_loss(disc(x).float(), disc(x_hat.detach()).float())
                acc.backward(d_loss / tc.grad_accum)
                terms["d_loss"] = terms.get("d_loss", 0.0) + float(d_loss) / tc.grad_accum
            if codes is not None:
                usage.update(codes)
            last_z = z.detach()
            for k, v in (("loss", loss), ("rec", rec), ("reg", reg)):
                terms[k] = terms.get(k, 0.0) + float(v.detach()) / tc.grad_accum
            imgs_since += len(idx) * world
        grad_norm = None
        if skipped:
            nonfinite_run, nonfinite_total = nonfinite_run + 1, nonfinite_total + 1
            if nonfinite_run >= tc.max_nonfinite:
                raise FacediffError(f"stopped at step {step}: {nonfinite_run} non-finite losses in a row; lower "
                                    f"[train] lr (now {tc.lr}) or use mixed_precision = 'no'")
        else:
            nonfinite_run = 0
            if tc.grad_clip > 0:
                grad_norm = float(acc.clip_grad_norm_(gen_pass.parameters(), tc.grad_clip))
            opt_g.step()
            if disc_on:
                opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        if opt_d is not None:
            opt_d.zero_grad(set_to_none=True)
        sched.step()
        step += 1
        revived = None
        if vq and ac.dead_code_restart and last_z is not None and (step == 1 or step % ac.dead_code_restart == 0):
            counts = acc.reduce(usage.counts.clone(), reduction="sum") if world > 1 else usage.counts
            zs = acc.gather(last_z) if world > 1 else last_z
            window = codebook_stats(counts)
            restart_gen = torch.Generator().manual_seed(step_seed(tc.seed, step, _RESTART_STREAM, 0))
            revived = restart_dead_codes(raw_ae, counts == 0, zs, restart_gen)
            usage.reset()
        bar.update(step, loss=terms.get("loss", float("nan")))
        if main and (step % tc.log_every == 0 or step == tc.max_steps or revived is not None):
            now = time.perf_counter()
            row = {"step": step, **terms, "lr": sched.get_last_lr()[0], "grad_norm": grad_norm,
                   "images_per_s": imgs_since / max(now - t_last, 1e-9), "nonfinite_total": nonfinite_total}
            if revived is not None:
                row.update({"revived_codes": revived, "window_codebook_usage": window["codebook_usage"],
                            "window_perplexity": window["perplexity"]})
            log(row)
            t_last, imgs_since = now, 0
        if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.max_steps:
            acc.wait_for_everyone()
            if main:
                checkpoint(step)
        if main and ac.eval_every and step % ac.eval_every == 0 and step < tc.max_steps:
            run_eval(step)
    bar.close()
    acc.wait_for_everyone()
    summary: dict[str, Any] = {"steps": step, "ae_kind": ac.kind, "perceptual_loss": perceptual_note,
                               "parameters": sum(p.numel() for p in raw_ae.parameters()),
                               "nonfinite_total": nonfinite_total, "train_seconds": time.perf_counter() - t0}
    if main:
        checkpoint(step)
        res = run_eval(step)
        summary.update({"heldout": heldout, "eval": res, "grid": str(out / "samples" / f"recon-{step:07d}.png"),
                        "export": str(export_autoencoder(raw_ae, cfg, out / "export"))})
        tb.close()
        (out / "logs" / "summary.json").write_text(json.dumps({**summary, "config": to_dict(cfg)}, indent=1))
    acc.end_training()
    return summary


# ------------------------------------------------------------------------------------ export / load
def export_autoencoder(ae: Autoencoder, cfg: RunConfig, out: str | Path) -> Path:
    """``out/vae/`` (diffusers save_pretrained, safetensors) + ``out/facediff.json``.

    Plain ``VQModel.from_pretrained(out / "vae")`` / ``AutoencoderKL.from_pretrained(out / "vae")`` load it.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ae.save_pretrained(out / "vae", safe_serialization=True)
    meta = {"format": "facediff-export/1", "kind": "autoencoder", "ae_kind": "vq" if is_vq(ae) else "kl",
            "downsample": downsample_factor(cfg.autoencoder), "latent_channels": latent_channels(ae),
            "sample_size": cfg.data.size, "config": to_dict(cfg)}
    tmp = out / (AE_META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out / AE_META)
    return out


def load_autoencoder(path: str | Path, device: str | torch.device = "cpu") -> tuple[Autoencoder, dict[str, Any]]:
    """(autoencoder in eval mode, metadata) from an export dir, or a run dir (its export, else its newest
    checkpoint). The metadata has kind, ae_kind, downsample, latent_channels, sample_size."""
    from diffusers import AutoencoderKL, VQModel

    from facediff.training.checkpoint import load_weights

    p = Path(path)
    if (p / "export" / AE_META).is_file():
        p = p / "export"
    if (p / AE_META).is_file():
        meta = json.loads((p / AE_META).read_text())
        if meta.get("kind") != "autoencoder" or meta.get("ae_kind") not in ("vq", "kl"):
            raise FacediffError(f"{p / AE_META}: kind = {meta.get('kind')!r} is not an autoencoder export")
        if not (p / "vae" / "config.json").is_file():
            raise FacediffError(f"{p} has no vae/config.json; re-export the autoencoder run")
        cls = VQModel if meta["ae_kind"] == "vq" else AutoencoderKL
        return cls.from_pretrained(p / "vae").to(device).eval(), meta
    if (p / "config.json").is_file() and (p / "state").is_dir():
        cfg = load_config_json(p / "config.json")
        if cfg.kind != "autoencoder":
            raise FacediffError(f"{p} is a {cfg.kind!r} run, not an autoencoder run")
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise FacediffError(f"{p} has no checkpoint yet; train it first (facediff train autoencoder)")
        ae = build_autoencoder(cfg.autoencoder, cfg.data.size)
        ae.load_state_dict(load_weights(ckpt, "model"))
        meta = {"kind": "autoencoder", "ae_kind": cfg.autoencoder.kind,
                "downsample": downsample_factor(cfg.autoencoder), "latent_channels": latent_channels(ae),
                "sample_size": cfg.data.size, "config": to_dict(cfg)}
        return ae.to(device).eval(), meta
    raise FacediffError(f"{p} is neither an autoencoder export (facediff.json + vae/) nor an autoencoder run dir")
