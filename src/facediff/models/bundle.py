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

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "default_model"


@dataclass
class ModelBundle:
    net: nn.Module  # the diffusers U-Net (EMA weights), in eval mode
    meta: dict[str, Any]  # facediff.json: conditioning, attributes, levels, size, config
    scheduler_config: dict[str, Any]  # diffusers scheduler config (the noise schedule lives here, not in weights)
    path: Path  # the export folder it came from

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
    cls = UNet2DModel if meta.get("conditioning", "none") == "none" else UNet2DConditionModel
    net = cls.from_pretrained(export / "unet", use_safetensors=True).to(device).eval()
    return ModelBundle(net=net, meta=meta, scheduler_config=scheduler_config, path=export)
