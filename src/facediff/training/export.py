"""Export a trained denoiser as a diffusers folder that plain diffusers loads.

* unconditional: a full ``DDPMPipeline`` folder (model_index.json, unet/, scheduler/), so
  ``DDPMPipeline.from_pretrained(RUN_DIR/export)()`` generates;
* attribute-conditional: ``unet/`` (UNet2DConditionModel) + ``scheduler/`` (DDPMScheduler config).
Both also get ``facediff.json``: what the condition vector means (attribute order, levels) and the image
size, so facediff (and a reader) can build the class_labels vector.
"""
from __future__ import annotations

import json
from pathlib import Path

from diffusers import DDPMPipeline, DDPMScheduler
from torch import nn

from facediff.config import RunConfig, to_dict
from facediff.diffusion.schedules import scheduler_config

FACEDIFF_META = "facediff.json"


def export_meta(cfg: RunConfig, latent: dict | None = None) -> dict:
    """facediff.json: what the condition vector means, sizes, and (latent models) the latent space."""
    meta = {
        "format": "facediff-export/1", "kind": cfg.kind, "conditioning": cfg.model.conditioning,
        "attributes": list(cfg.model.attributes), "num_levels": cfg.model.num_levels,
        "sample_size": cfg.data.size, "in_channels": cfg.model.in_channels,
        "prediction_type": cfg.diffusion.prediction_type, "config": to_dict(cfg),
    }
    if latent:
        meta.update(latent)  # scale_factor, latent_channels, latent_size, sketch
    return meta


def export_model(net: nn.Module, cfg: RunConfig, out: Path, *, vae: nn.Module | None = None,
                 latent: dict | None = None) -> Path:
    """Write ``net`` (the EMA weights) + the scheduler config (+ the autoencoder) + facediff.json into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sched = DDPMScheduler.from_config(scheduler_config(cfg.diffusion))
    if vae is not None:
        vae.save_pretrained(out / "vae", safe_serialization=True)
    if cfg.model.conditioning == "none" and vae is None and not (latent or {}).get("sketch"):
        DDPMPipeline(unet=net, scheduler=sched).save_pretrained(out, safe_serialization=True)
    else:
        net.save_pretrained(out / "unet", safe_serialization=True)
        sched.save_pretrained(out / "scheduler")
    (out / FACEDIFF_META).write_text(json.dumps(export_meta(cfg, latent), indent=1))
    return out
