"""Find and load a model folder: a run directory, an export folder, or the bundled default model.

Formats, newest first:
* ``model_index.json`` (``FacediffPipeline`` or a plain ``DDPMPipeline``): every export since the pipeline
  redesign; components in diffusers folders, the condition layout in the pipeline config.
* ``facediff.json`` + ``unet/`` (+ ``vae/``) with ``"format": "facediff-export/1"``: exports written before it;
  loaded as they are (``load_legacy``). ``facediff convert OLD NEW`` rewrites one in the new format.
* ``vae/`` only (an autoencoder export): not a diffusion model; a one-line error says so.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from facediff.errors import FacediffError
from facediff.pipelines.facediff import TRAINING_CONFIG, FacediffPipeline

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL_DIR = ASSETS / "default_model"
LEGACY_META = "facediff.json"


def resolve_model_dir(path: str | Path | None) -> Path:
    """A run directory -> its export/; an export folder as is; None -> the bundled default model."""
    if path is None:
        if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
            raise FacediffError(f"the bundled default model is missing from {DEFAULT_MODEL_DIR}; reinstall facediff "
                                "or pass --model")
        return DEFAULT_MODEL_DIR
    p = Path(path)
    if not p.exists():
        raise FacediffError(f"--model {p}: no such file or directory")
    if not p.is_dir():
        raise FacediffError(f"--model {p}: a file; pass a run directory or an export folder")
    for folder in (p, p / "export"):
        if (folder / "model_index.json").is_file() or (folder / LEGACY_META).is_file():
            return folder
        if (folder / "vae" / "config.json").is_file() and not (folder / "unet").is_dir():
            raise FacediffError(f"--model {p}: an autoencoder, not a diffusion model; pass a ddpm or ldm run "
                                "(autoencoders are used with `facediff train ldm --autoencoder` and `facediff eval`)")
    if (p / "config.json").is_file():
        try:
            kind = json.loads((p / "config.json").read_text()).get("kind")
        except ValueError:
            kind = None
        if kind == "estimator":
            raise FacediffError(f"--model {p}: an attribute-estimator run, not a diffusion model; it is used by "
                                "`facediff eval` through the oracle, not sampled")
        raise FacediffError(f"--model {p}: this run has no export yet (training not finished); "
                            "finish it with `facediff train ... --resume`")
    raise FacediffError(f"--model {p}: not a facediff run or export folder (no model_index.json)")


def load_pipeline(path: str | Path | None = None, device: str | torch.device = "cpu") -> FacediffPipeline:
    """The ``FacediffPipeline`` of a run directory, an export folder or (None) the bundled default model."""
    from diffusers.utils import logging as dlogging

    folder = resolve_model_dir(path)
    if not (folder / "model_index.json").is_file():
        pipe = load_legacy(folder)
    else:
        _check_index(folder)
        was = dlogging.is_progress_bar_enabled()
        dlogging.disable_progress_bar()
        try:
            pipe = FacediffPipeline.from_pretrained(folder, use_safetensors=True)
        except (OSError, ValueError, KeyError) as e:
            raise FacediffError(f"--model {folder}: cannot load it ({str(e).splitlines()[0][:200]})") from None
        finally:
            if was:
                dlogging.enable_progress_bar()
    if (folder / TRAINING_CONFIG).is_file():
        pipe.training_config = json.loads((folder / TRAINING_CONFIG).read_text())
    pipe.model_dir = folder
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _check_index(folder: Path) -> None:
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except ValueError:
        raise FacediffError(f"{folder / 'model_index.json'}: not valid JSON; re-export the model") from None
    if index.get("_class_name") not in ("FacediffPipeline", "DDPMPipeline"):
        raise FacediffError(f"{folder}: a {index.get('_class_name')!r} folder; facediff samples FacediffPipeline "
                            "and DDPMPipeline exports")
    for name in ("unet", "vae"):
        if name in index and index[name][0] is not None:
            if not (folder / name / "diffusion_pytorch_model.safetensors").is_file():
                raise FacediffError(f"{folder / name} has no diffusion_pytorch_model.safetensors "
                                    "(facediff loads safetensors only); re-export the model")


def load_legacy(folder: Path) -> FacediffPipeline:
    """An export of the ``facediff-export/1`` format (``facediff.json`` + ``unet/`` [+ ``vae/``])."""
    from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

    from facediff.models.autoencoder import load_vae

    try:
        meta = json.loads((folder / LEGACY_META).read_text())
    except ValueError:
        raise FacediffError(f"{folder / LEGACY_META}: not valid JSON; re-export the model") from None
    if meta.get("kind") == "autoencoder":
        raise FacediffError(f"--model {folder}: an autoencoder, not a diffusion model; pass a ddpm or ldm run")
    if meta.get("kind") not in ("ddpm", "ldm") or not (folder / "unet" / "config.json").is_file():
        raise FacediffError(f"{folder}: {LEGACY_META} describes no ddpm/ldm export (kind = {meta.get('kind')!r})")
    conditional = meta.get("conditioning", "none") != "none"
    if not (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file():
        raise FacediffError(f"{folder / 'unet'} has no diffusion_pytorch_model.safetensors (facediff loads "
                            "safetensors only); re-export the model")
    cls = UNet2DConditionModel if conditional else UNet2DModel
    unet = cls.from_pretrained(folder / "unet", use_safetensors=True)
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    vae = None
    if meta.get("kind") == "ldm":
        vae = load_vae(folder / "vae")
        vae.register_to_config(scaling_factor=float(meta["scale_factor"]))
    pipe = FacediffPipeline(unet=unet, scheduler=scheduler, vae=vae,
                            attributes=tuple(meta.get("attributes", ())) if conditional else (),
                            num_levels=int(meta.get("num_levels", 6)), sketch=bool(meta.get("sketch", False)))
    pipe.training_config = meta.get("config")
    return pipe


def save_pipeline(pipe: FacediffPipeline, out: str | Path, training_config: dict | None = None) -> Path:
    """Write ``pipe`` as a diffusers folder (safetensors) + ``training_config.json``, swapped in when complete
    (a full disk or a kill leaves the previous export as it was)."""
    from facediff.fsutil import replace_folder

    with replace_folder(out, "the export") as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        cfg = training_config if training_config is not None else pipe.training_config
        if cfg is not None:
            (tmp / TRAINING_CONFIG).write_text(json.dumps(cfg, indent=1))
    return Path(out)
