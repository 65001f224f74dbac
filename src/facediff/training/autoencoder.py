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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from facediff.config import AutoencoderConfig, RunConfig, load_config_json, to_dict
from facediff.data.imageio import resize_batch
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError
from facediff.models.autoencoder import (
    Autoencoder, CodeUsage, NLayerDiscriminator, adaptive_gan_weight, build_autoencoder, check_config, codebook,
    codebook_stats, decode, disc_layers, encode, hinge_d_loss, hinge_g_loss, is_vq, last_layer, load_vae, quantize,
    restart_dead_codes, vq_loss)
from facediff.progress import Progress
from facediff.training.checkpoint import latest_checkpoint
from facediff.training.common import step_generator
from facediff.training.data import TrainingData
from facediff.training.loop import Task, train_loop

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
        from facediff.metrics.image import load_lpips

        self.net = load_lpips(weights, "alex", what="[autoencoder] lpips_weights =")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y).flatten()


def build_perceptual(cfg: AutoencoderConfig) -> tuple[nn.Module | None, str]:
    """The perceptual loss P and a note naming it (for logs/summary.json)."""
    if cfg.perceptual_weight <= 0:
        return None, "none (perceptual_weight = 0)"
    if cfg.lpips_weights:
        return _LPIPSLoss(cfg.lpips_weights), f"lpips ({cfg.lpips_weights})"
    try:
        from facediff.metrics.features import load_oracle  # lazy: loading the oracle costs a second

        return OraclePerceptual(load_oracle("cpu")), "oracle-features (bundled SynthFaces estimator)"
    except Exception as e:  # no bundled oracle in this install
        return None, f"none (no LPIPS weights given; oracle unavailable: {str(e).splitlines()[0][:160]})"


def heldout_images(data_path: Path, cfg: RunConfig) -> tuple[np.ndarray, bool]:
    """Up to eval_n uint8 images for held-out metrics: the val split, or (no val split) training images."""
    splits = {lab.get("split", "train") for lab in PreparedDataset(data_path).all_labels}
    heldout = "val" in splits and cfg.data.split != "val"
    ds = PreparedDataset(data_path, split="val" if heldout else (cfg.data.split or None))
    images = ds.images(np.arange(min(cfg.autoencoder.eval_n, len(ds))))
    return (images if ds.size == cfg.data.size else resize_batch(images, cfg.data.size)), heldout


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


class AutoencoderTask(Task):
    """Generator (the autoencoder) + optional PatchGAN discriminator; codebook restarts; held-out evals."""

    def __init__(self, cfg: RunConfig, out: Path, progress: Progress | None = None):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.name = f"train autoencoder ({cfg.autoencoder.kind})"
        check_config(cfg.autoencoder, cfg.data.size)
        self.perceptual, self.perceptual_note = build_perceptual(cfg.autoencoder)

    def build(self, acc: Accelerator, data_path: Path) -> None:
        cfg, tc, ac = self.cfg, self.cfg.train, self.cfg.autoencoder
        self.data = TrainingData(data_path, cfg.data, seed=tc.seed)
        self.val_images, self.heldout = heldout_images(data_path, cfg)
        torch.manual_seed(tc.seed)  # identical initial weights on every process
        self.ae = build_autoencoder(ac, cfg.data.size)
        if ac.init:
            start_from(self.ae, ac.init)
        if not ac.train_encoder:  # the decoder-only fine-tune of SD's sd-vae-ft-mse: latents stay as they were
            for part in (self.ae.encoder, self.ae.quant_conv):
                part.requires_grad_(False)
        self.vq = is_vq(self.ae)
        self.model = _GeneratorPass(self.ae, ac)
        # Adam betas (0.5, 0.9) for both players of the GAN, as Esser et al. 2021 (taming-transformers);
        # without a discriminator the usual (0.9, 0.999).
        betas = (0.5, 0.9) if ac.disc_weight > 0 else (0.9, 0.999)
        self.optimizer = torch.optim.AdamW([q for q in self.model.parameters() if q.requires_grad], lr=tc.lr, betas=betas, weight_decay=tc.weight_decay)
        self.disc = self.opt_d = None
        if ac.disc_weight > 0:
            self.disc = NLayerDiscriminator(3, ac.disc_channels, disc_layers(cfg.data.size))
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=tc.lr, betas=(0.5, 0.9), weight_decay=0.0)
        self.usage = CodeUsage(codebook(self.ae).shape[0]) if self.vq else None
        self.last_z = None
        self.device = acc.device

    def extra_modules(self) -> dict[str, tuple[nn.Module, Any]]:
        mods: dict[str, tuple[nn.Module, Any]] = {}
        if self.disc is not None:
            mods["discriminator"] = (self.disc, self.opt_d)
        if self.usage is not None:
            mods["code_usage"] = (self.usage, None)
        return mods

    def prepare(self, acc: Accelerator) -> None:
        if self.disc is not None:
            self.disc, self.opt_d = acc.prepare(self.disc, self.opt_d)
        if self.perceptual is not None:
            self.perceptual.to(acc.device)
        if self.usage is not None:
            self.usage.to(acc.device)
        self.raw_ae = acc.unwrap_model(self.model).ae

    def disc_on(self, step: int) -> bool:
        return self.disc is not None and step >= self.cfg.autoencoder.disc_start

    def losses(self, step: int, micro: int, rank: int, world: int):
        ac, tc = self.cfg.autoencoder, self.cfg.train
        gen = step_generator(tc.seed, step, micro, rank)
        idx = self.data.order.positions(((step * tc.grad_accum + micro) * world + rank) * tc.batch_size,
                                        tc.batch_size)
        x = self.data.pixels(idx)
        if self.data.hflip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = x.to(self.device)
        if self.disc is not None:
            self.disc.requires_grad_(False)
        x_hat, reg, z, codes = self.model(x, None if self.vq else gen)
        x_hat = x_hat.float()
        rec = ac.l1_weight * (x - x_hat).abs().mean() + ac.l2_weight * F.mse_loss(x_hat, x)
        if self.perceptual is not None:
            rec = rec + ac.perceptual_weight * self.perceptual(x, x_hat).mean()
        reg = reg.float() * (1.0 if self.vq else ac.kl_weight)
        loss = rec + reg
        terms: dict[str, float] = {}
        out = [loss]
        if self.disc_on(step):
            g_gan = hinge_g_loss(self.disc(x_hat).float())
            lam = adaptive_gan_weight(rec, g_gan, last_layer(self.raw_ae))
            out[0] = loss = loss + ac.disc_weight * lam * g_gan
            self.disc.requires_grad_(True)
            d_loss = hinge_d_loss(self.disc(x).float(), self.disc(x_hat.detach()).float())
            out.append(d_loss)
            terms.update(g_gan=float(g_gan.detach()), gan_lambda=float(lam), d_loss=float(d_loss.detach()))
        if codes is not None:
            self.usage.update(codes)
        self.last_z = z.detach()
        terms.update(rec=float(rec.detach()), reg=float(reg.detach()))
        return out, terms, len(idx)

    def optimizers_to_step(self, step: int) -> list:
        return [self.optimizer] + ([self.opt_d] if self.disc_on(step) else [])

    def after_step(self, step: int, acc: Accelerator) -> dict[str, Any]:
        ac = self.cfg.autoencoder
        if not (self.vq and ac.dead_code_restart and self.last_z is not None
                and (step == 1 or step % ac.dead_code_restart == 0)):
            return {}
        world = acc.num_processes
        counts = acc.reduce(self.usage.counts.clone(), reduction="sum") if world > 1 else self.usage.counts
        zs = acc.gather(self.last_z) if world > 1 else self.last_z
        window = codebook_stats(counts)
        restart_gen = step_generator(self.cfg.train.seed, step, _RESTART_STREAM, 0)
        revived = restart_dead_codes(self.raw_ae, counts == 0, zs, restart_gen)
        self.usage.reset()
        return {"revived_codes": revived, "window_codebook_usage": window["codebook_usage"],
                "window_perplexity": window["perplexity"]}

    def _eval(self, step: int) -> dict[str, Any]:
        res = evaluate(self.raw_ae, self.val_images, self.out / "samples" / f"recon-{step:07d}.png",
                       self.cfg.autoencoder.lpips_weights)
        with open(self.out / "logs" / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **{f"val/{k}": v for k, v in res.items()
                                                 if isinstance(v, (int, float))}}) + "\n")
        return res

    def periodic(self, step: int, ema_model: nn.Module | None) -> None:
        every = self.cfg.autoencoder.eval_every
        if every and step % every == 0 and step < self.cfg.train.max_steps:
            self._eval(step)

    def state(self) -> dict[str, Any]:
        return {"perceptual": self.perceptual_note}

    def finish(self, step: int, ema_model: nn.Module | None) -> dict[str, Any]:
        res = self._eval(step)
        return {"ae_kind": self.cfg.autoencoder.kind, "perceptual_loss": self.perceptual_note,
                "heldout": self.heldout, "eval": res, "grid": str(self.out / "samples" / f"recon-{step:07d}.png"),
                "export": str(export_autoencoder(self.raw_ae, self.cfg, self.out / "export"))}


def train_autoencoder(cfg: RunConfig, out: str | Path, *, resume: bool = False,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Train the autoencoder of ``cfg`` into run directory ``out``; returns the summary (also logs/summary.json)."""
    if cfg.kind != "autoencoder":
        raise FacediffError(f"kind = {cfg.kind!r}: this trainer handles kind = 'autoencoder'")
    return train_loop(AutoencoderTask(cfg, out, progress), cfg, out, resume=resume, progress=progress)


# ------------------------------------------------------------------------------------ export / load
def start_from(ae: Autoencoder, init: str) -> None:
    """Load ``[autoencoder] init``'s weights into ``ae`` (built from this run's config): a one-line error when
    the two architectures differ."""
    src = load_autoencoder(init).state_dict()
    own = ae.state_dict()
    wrong = [k for k in own if k not in src or src[k].shape != own[k].shape]
    if wrong or len(src) != len(own):
        raise FacediffError(f"[autoencoder] init = {init!r}: its architecture differs from this run's [autoencoder] "
                            f"(e.g. {(wrong or sorted(set(src) - set(own)))[0]}); use the same kind, "
                            "block_out_channels, latent_channels and norm_num_groups")
    ae.load_state_dict(src)


def export_autoencoder(ae: Autoencoder, cfg: RunConfig, out: str | Path) -> Path:
    """``out/vae/`` (diffusers save_pretrained, safetensors) + ``out/training_config.json``. Everything a reader
    needs (VQ or KL, f, latent channels, image size) is in ``vae/config.json``: plain
    ``VQModel.from_pretrained(out / "vae")`` / ``AutoencoderKL.from_pretrained(out / "vae")`` load it."""
    from facediff.fsutil import replace_folder

    with replace_folder(out, "the autoencoder export") as tmp:  # the previous export survives a failure
        ae.save_pretrained(tmp / "vae", safe_serialization=True)
        (tmp / "training_config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    return Path(out)


def load_autoencoder(path: str | Path, device: str | torch.device = "cpu") -> Autoencoder:
    """The autoencoder (eval mode) of an export dir or a Stable Diffusion folder (their ``vae/``), of a ``vae/``
    folder itself, or of a run dir (its export, else its newest checkpoint)."""
    import json

    from facediff.training.checkpoint import load_weights

    p = Path(path)
    if not p.exists():
        raise FacediffError(f"autoencoder {p}: no such directory")
    if not p.is_dir():
        raise FacediffError(f"autoencoder {p}: a file; pass a Stable Diffusion folder, its vae/ folder, or an "
                            "autoencoder run / export folder")
    for folder in (p, p / "export"):
        if (folder / "vae" / "config.json").is_file():
            return load_vae(folder / "vae", device)
    if (p / "config.json").is_file() and (p / "diffusion_pytorch_model.safetensors").is_file():
        try:
            is_vae = json.loads((p / "config.json").read_text()).get("_class_name") in ("AutoencoderKL", "VQModel")
        except ValueError:
            is_vae = False
        if is_vae:  # the vae/ folder itself
            return load_vae(p, device)
    if (p / "config.json").is_file() and (p / "state").is_dir():
        cfg = load_config_json(p / "config.json")
        if cfg.kind != "autoencoder":
            raise FacediffError(f"{p} is a {cfg.kind!r} run, not an autoencoder run")
        ckpt = latest_checkpoint(p)
        if ckpt is None:
            raise FacediffError(f"{p} has no checkpoint yet; train it first (facediff train autoencoder)")
        ae = build_autoencoder(cfg.autoencoder, cfg.data.size)
        weights = load_weights(ckpt, "model")
        ae.load_state_dict({k.removeprefix("ae."): v for k, v in weights.items()})
        return ae.to(device).eval()
    raise FacediffError(f"autoencoder {p}: not an autoencoder; pass a Stable Diffusion folder (the one holding "
                        "vae/), its vae/ folder, or an autoencoder run / export folder")
