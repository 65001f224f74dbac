"""Load a trained denoiser for sampling from a run directory or an export folder (diffusers format)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from torch import nn

from facediff.errors import FacediffError
from facediff.models.unet import conditioned_forward

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"


@dataclass
class ModelBundle:
    net: nn.Module  # the diffusers U-Net (EMA weights), in eval mode
    meta: dict[str, Any]  # facediff.json: conditioning, attributes, levels, size, config
    scheduler_config: dict[str, Any]  # diffusers scheduler config (the noise schedule lives here, not in weights)
    path: Path  # the export folder it came from
    vae: nn.Module | None = None  # latent models: the frozen autoencoder that decodes z_0 to pixels

    @property
    def is_latent(self) -> bool:
        return self.meta.get("kind") == "ldm"

    @property
    def sketch(self) -> bool:
        """Does the model take a sketch (concatenated to its input as one ink-density channel)?"""
        return bool(self.meta.get("sketch", False))

    @property
    def attr_dim(self) -> int:
        return len(self.attributes) * self.num_levels

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the space the diffusion runs in (pixels for pixel models)."""
        if self.is_latent:
            return (int(self.meta["latent_channels"]), int(self.meta["latent_size"]), int(self.meta["latent_size"]))
        return (self.in_channels, self.sample_size, self.sample_size)

    def model_fn(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """f(x_t, t, c): c = [attribute one-hots | flattened sketch] as built by the sampler."""
        return conditioned_forward(self.net, x, t, cond, self.attr_dim, self.latent_shape[1:] if self.sketch else None)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Diffusion-space samples -> images in [-1, 1] (identity for pixel models)."""
        if not self.is_latent:
            return x
        from facediff.models.autoencoder import decode

        return decode(self.vae, x / float(self.meta["scale_factor"]))

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.meta.get("attributes", ())) if self.conditional else ()

    @property
    def conditional(self) -> bool:
        return self.meta.get("conditioning", "none") != "none"

    @property
    def num_levels(self) -> int:
        return int(self.meta.get("num_levels", 6))

    @property
    def sample_size(self) -> int:
        return int(self.meta["sample_size"])

    @property
    def in_channels(self) -> int:
        return int(self.meta.get("in_channels", 3))


def resolve_export_dir(path: str | Path | None) -> Path:
    """A run directory -> its export/; an export folder as is; None -> the bundled default model."""
    if path is None:
        p = DEFAULT_MODEL_DIR
        if not (p / "facediff.json").is_file():
            raise FacediffError(f"the bundled default model is missing from {p}; reinstall facediff or pass --model")
        return p
    p = Path(path)
    if not p.exists():
        raise FacediffError(f"--model {p}: no such file or directory")
    if (p / "facediff.json").is_file():
        return p
    if (p / "export" / "facediff.json").is_file():
        return p / "export"
    if (p / "config.json").is_file():
        raise FacediffError(f"--model {p}: this run has no export yet (training not finished); "
                            "finish it with `facediff train ... --resume`")
    raise FacediffError(f"--model {p}: not a facediff run or export folder (no facediff.json)")


def load_bundle(path: str | Path | None, device: str | torch.device = "cpu") -> ModelBundle:
    export = resolve_export_dir(path)
    meta = json.loads((export / "facediff.json").read_text())
    sched_file = export / "scheduler" / "scheduler_config.json"
    if not sched_file.is_file():
        raise FacediffError(f"{export}: scheduler/scheduler_config.json is missing; re-export the model")
    scheduler_config = json.loads(sched_file.read_text())
    if meta.get("kind") not in ("ddpm", "ldm"):
        raise FacediffError(f"--model {export}: a {meta.get('kind')!r} export cannot generate faces "
                            "(pass a ddpm or ldm run)")
    cls = UNet2DModel if meta.get("conditioning", "none") == "none" else UNet2DConditionModel
    net = cls.from_pretrained(export / "unet", use_safetensors=True).to(device).eval()
    vae = None
    if meta.get("kind") == "ldm":
        from diffusers import AutoencoderKL, VQModel

        if not (export / "vae" / "config.json").is_file():
            raise FacediffError(f"{export}: latent model without vae/; re-export it")
        vae_cls = VQModel if meta.get("ae_kind") == "vq" else AutoencoderKL
        vae = vae_cls.from_pretrained(export / "vae", use_safetensors=True).to(device).eval()
    return ModelBundle(net=net, meta=meta, scheduler_config=scheduler_config, path=export, vae=vae)
