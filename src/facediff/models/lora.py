"""LoRA adapters for Stable-Diffusion-format U-Nets and CLIP text encoders, in diffusers' and kohya's files.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): a frozen layer W gains a trainable
low-rank update, h = W x + (alpha / r) * B A x, with A (r x in) Gaussian and B (out x r) zero at init, so
training starts from the base model. peft injects the layers (``LoraConfig`` + ``module.add_adapter``, the
diffusers ``UNet2DConditionModel`` / transformers ``CLIPTextModel`` API); diffusers writes and reads the files.

* diffusers format (``save_lora``): ``<dir>/pytorch_lora_weights.safetensors`` with keys
  ``unet.<module>.lora.down.weight`` / ``.lora.up.weight`` (``text_encoder.text_model.<module>.lora_linear_layer.``
  for the text encoder; plain peft ``.lora_A.weight`` keys where diffusers' renaming table does not cover every
  target) and each adapter's ``LoraConfig`` as JSON under the safetensors metadata key ``lora_adapter_metadata``.
  That metadata is the only place alpha lives: without it diffusers loads with alpha = r (diffusers issue #6087).
* kohya sd-scripts format (``save_kohya``): one .safetensors with ``lora_unet_<module path, . -> _>.lora_down.weight``
  (peft lora_A), ``.lora_up.weight`` (peft lora_B), ``.alpha`` (0-dim float) and ``lora_te_text_model_...`` for
  the text encoder, plus ``ss_*`` metadata strings. Every written file is checked against diffusers' own kohya
  reader (``StableDiffusionPipeline.lora_state_dict``) before it is saved.
* ``load_lora`` reads either format into modules that live outside a diffusers pipeline (facediff's own pipeline
  holds the same modules) through diffusers' loaders, never unpickling (safetensors only).

This module holds networks only: it never imports facediff.diffusion / training / pipelines / sampling.
Adding, counting and merging adapters live in ``lora_adapters.py``, the kohya writer in ``lora_kohya.py``;
every name is importable from here.
"""
from __future__ import annotations

import json
from pathlib import Path

import safetensors
import torch
from diffusers import StableDiffusionPipeline
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE
from diffusers.utils import convert_state_dict_to_diffusers
from diffusers.utils.peft_utils import set_weights_and_activate_adapters
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict
from torch import nn

from facediff.errors import FacediffError
from facediff.models.lora_adapters import (  # noqa: F401  (re-exported: the API is facediff.models.lora)
    TEXT_TARGETS, UNET_TARGETS, _brief, _config, add_lora, lora_parameter_count, merge_lora)
from facediff.models.lora_kohya import save_kohya  # noqa: F401  (re-exported)

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")  # diffusers' test, loaders/lora_pipeline.py


def _diffusers_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """convert_state_dict_to_diffusers when it renames every key, else the peft keys unchanged.

    Its table (utils/state_dict_utils.py PEFT_TO_DIFFUSERS) covers only to_q/k/v/out.0 and the CLIP projections,
    and the U-Net loader decides from the FIRST key alone whether to convert back (loaders/peft.py,
    load_lora_adapter: ``if "lora_A" not in first_key``), so a mixed file (e.g. targets to_q + proj_in) silently
    loses half its layers. Unconverted peft keys are what diffusers' own ``save_lora_adapter`` writes.
    """
    converted = convert_state_dict_to_diffusers(state)
    return state if any(".lora_A." in k or ".lora_B." in k for k in converted) else converted


def save_lora(directory: str | Path, unet: nn.Module | None, text_encoder: nn.Module | None = None, *,
              adapter_name: str = "default") -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` in diffusers' format, LoraConfig metadata included.

    Same path as diffusers' train_text_to_image_lora.py: get_peft_model_state_dict -> convert_state_dict_to_diffusers
    (see ``_diffusers_keys`` for targets outside its table) -> StableDiffusionPipeline.save_lora_weights, plus
    ``*_lora_adapter_metadata`` so alpha != rank survives. Plain ``pipe.load_lora_weights(directory)`` reads it.
    """
    directory = Path(directory)
    if directory.is_file():  # diffusers only logs an error and writes nothing in this case (write_lora_layers)
        raise FacediffError(f"[lora] {directory} is a file; save_lora needs a directory to write "
                            f"{LORA_WEIGHT_NAME_SAFE} into")
    if unet is None and text_encoder is None:
        raise FacediffError("[lora] save_lora got neither a unet nor a text_encoder; pass at least one")
    layers, metadata = {}, {}
    for role, module in (("unet", unet), ("text_encoder", text_encoder)):
        if module is not None:
            metadata[role] = _config(module, adapter_name, role).to_dict()
            state = get_peft_model_state_dict(module, adapter_name=adapter_name)
            # canonical SD key layout for the text encoder (text_model.encoder...) even where transformers 5
            # flattened CLIPTextModel: diffusers strips the prefix again for flat models (loaders/lora_base.py)
            head = "text_model." if role == "text_encoder" and not hasattr(module, "text_model") else ""
            layers[role] = _diffusers_keys({head + k: v.detach().contiguous() for k, v in state.items()})
    StableDiffusionPipeline.save_lora_weights(
        directory, unet_lora_layers=layers.get("unet"), text_encoder_lora_layers=layers.get("text_encoder"),
        unet_lora_adapter_metadata=metadata.get("unet"),
        text_encoder_lora_adapter_metadata=metadata.get("text_encoder"), safe_serialization=True)
    return directory / LORA_WEIGHT_NAME_SAFE


def _lora_file(path: str | Path) -> Path:
    """The weights file named by ``path`` (a file, or a directory holding pytorch_lora_weights.safetensors)."""
    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME_SAFE
    if not path.is_file():
        raise FacediffError(f"[lora] {path}: no such LoRA file; pass a .safetensors file or a directory "
                            f"holding {LORA_WEIGHT_NAME_SAFE}")
    return path


def _file_format(file: Path) -> tuple[str, int]:
    """("diffusers" | "kohya", tensor count) read from the safetensors header alone."""
    try:
        with safetensors.safe_open(str(file), framework="pt", device="cpu") as handle:
            keys = list(handle.keys())
    except (safetensors.SafetensorError, OSError) as err:
        raise FacediffError(f"[lora] {file}: not a safetensors file ({err}); only .safetensors LoRA files are "
                            f"read (pickled .bin/.pt files never are)") from err
    if keys and all(k.startswith(KOHYA_PREFIXES) for k in keys):
        return "kohya", len(keys)
    if keys and all("lora" in k and k.split(".")[0] in ("unet", "text_encoder") for k in keys):
        return "diffusers", len(keys)
    example = next((k for k in keys if not k.startswith(KOHYA_PREFIXES)), "no tensors at all")
    raise FacediffError(f"[lora] {file}: neither a diffusers nor a kohya LoRA file (key {example!r}); expected keys "
                        f"'unet.<module>.lora...' or 'lora_unet_<module>.lora_down.weight'")


def _loaded_count(module: nn.Module, adapter_name: str) -> int:
    return sum(1 for n, _ in module.named_parameters()
               if f".{adapter_name}." in n and (".lora_A." in n or ".lora_B." in n))


def _drop_adapter(module: nn.Module, adapter_name: str) -> None:
    """Remove a half-loaded adapter with peft's layer API (transformers' delete_adapter has the version check too)."""
    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer):
            layer.delete_adapter(adapter_name)
    configs = getattr(module, "peft_config", None)
    if configs is not None:
        configs.pop(adapter_name, None)
        if not configs:  # as diffusers' delete_adapters does: no adapters left, no peft state left
            del module.peft_config
            module._hf_peft_config_loaded = False


def load_lora(path: str | Path, unet: nn.Module | None, text_encoder: nn.Module | None = None, *,
              scale: float = 1.0, adapter_name: str = "default") -> dict:
    """Load a diffusers-format (file or folder) or kohya LoRA into ``unet`` (+ ``text_encoder``) and activate it.

    Uses diffusers' ``lora_state_dict`` (kohya conversion, network alphas, adapter metadata) and
    ``load_lora_into_unet`` / ``load_lora_into_text_encoder``, then sets the adapter's weight to ``scale``
    (0 = base model) the way ``pipe.set_adapters`` does. Every tensor of the file must land in a layer: a file
    for another model (or a text-encoder LoRA without a text encoder) is an error, not a silent partial load.
    Returns {"format", "file", "adapter_name", "rank", "alpha", "alpha_from", "tensors"}.
    """
    file = _lora_file(path)
    fmt, n_tensors = _file_format(file)
    try:
        state, alphas, metadata = StableDiffusionPipeline.lora_state_dict(
            str(file), use_safetensors=True, local_files_only=True, return_lora_metadata=True)
    except ValueError as err:
        raise FacediffError(f"[lora] {file}: diffusers cannot convert this {fmt} LoRA "
                            f"({_brief(err)})") from err
    modules = {"unet": unet, "text_encoder": text_encoder}
    counts: dict[str, int] = {}
    for key in state:
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + 1
    if not counts:
        raise FacediffError(f"[lora] {file}: no LoRA weight tensors (only alphas?); nothing to load")
    for role in counts:
        if modules.get(role) is None:
            raise FacediffError(f"[lora] {file} holds LoRA weights for the {role}, which was not given; pass it "
                                f"(SDXL text_encoder_2 LoRAs are not supported)")
        if adapter_name in (getattr(modules[role], "peft_config", None) or {}):
            raise FacediffError(f"[lora] the {role} already has an adapter {adapter_name!r}; pass another "
                                f"adapter_name")
    loaded = []
    try:
        for role in counts:
            loader = (StableDiffusionPipeline.load_lora_into_unet if role == "unet"
                      else StableDiffusionPipeline.load_lora_into_text_encoder)
            loader(state, alphas, modules[role], adapter_name=adapter_name, metadata=metadata)
            loaded.append(role)
            landed = _loaded_count(modules[role], adapter_name)
            if landed != counts[role]:
                raise FacediffError(f"[lora] {file}: {counts[role]} {role} LoRA tensors but {landed} landed in its "
                                    f"layers (diffusers dropped the rest); the file was made for a different {role}")
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        for role in loaded:
            _drop_adapter(modules[role], adapter_name)
        raise FacediffError(f"[lora] {file} does not fit the given model "
                            f"({_brief(err)}); was it made for another base model?") from err
    except FacediffError:
        for role in loaded:
            _drop_adapter(modules[role], adapter_name)
        raise
    for role in loaded:  # diffusers.utils.peft_utils: what pipe.set_adapters([name], [scale]) does per module
        set_weights_and_activate_adapters(modules[role], [adapter_name], [float(scale)])
    config = modules[loaded[0]].peft_config[adapter_name]
    alpha_from = ("metadata" if metadata else "kohya .alpha tensors" if alphas
                  else "none stored: diffusers assumes alpha = rank")
    return {"format": fmt, "file": str(file), "adapter_name": adapter_name, "rank": config.r,
            "alpha": config.lora_alpha, "alpha_from": alpha_from, "tensors": n_tensors}


def read_lora_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata strings of a LoRA file (kohya ``ss_*`` keys, diffusers' adapter JSON, ...)."""
    file = _lora_file(path)
    _file_format(file)
    with safetensors.safe_open(str(file), framework="pt", device="cpu") as handle:
        meta = dict(handle.metadata() or {})
    if LORA_ADAPTER_METADATA_KEY in meta:  # pretty-printed JSON: keep it valid but one line
        meta[LORA_ADAPTER_METADATA_KEY] = json.dumps(json.loads(meta[LORA_ADAPTER_METADATA_KEY]), sort_keys=True)
    return meta
