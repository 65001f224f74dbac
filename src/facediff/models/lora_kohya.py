"""The kohya sd-scripts LoRA file writer ``save_kohya``, checked against diffusers' own kohya reader."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import safetensors.torch
import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict
from torch import nn

from facediff.errors import FacediffError
from facediff.models.lora_adapters import TEXT_TARGETS, _brief, _config

_KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_"}      # SD 1.x / 2.x spelling


def _kohya_tensors(module: nn.Module, role: str, adapter_name: str) -> tuple[dict[str, torch.Tensor], set[str]]:
    """kohya tensors of one module and the peft module names they came from.

    Written by hand rather than with diffusers' ``convert_state_dict_to_kohya`` (utils/state_dict_utils.py), which
    sets every ``.alpha`` to the rank (``torch.tensor(len(weight))``) and names the text encoder ``lora_te1_`` (SDXL).
    """
    config = _config(module, adapter_name, role)
    if config.use_dora or config.use_rslora or config.lora_bias:
        raise FacediffError(f"[lora] the {role} adapter {adapter_name!r} uses DoRA/rsLoRA/lora_bias, which kohya "
                            f"LoRA files cannot hold; save it with save_lora (diffusers format)")
    state = dict(get_peft_model_state_dict(module, adapter_name=adapter_name))
    # recent transformers flatten CLIPTextModel (no .text_model); kohya keys always carry text_model_
    path_prefix = "text_model." if role == "text_encoder" and not hasattr(module, "text_model") else ""
    out, names = {}, set()
    for name, layer in module.named_modules():
        if isinstance(layer, LoraLayer) and adapter_name in layer.lora_A:
            key = _KOHYA_PREFIX[role] + (path_prefix + name).replace(".", "_")
            out[f"{key}.lora_down.weight"] = state.pop(f"{name}.lora_A.weight").detach().contiguous()
            out[f"{key}.lora_up.weight"] = state.pop(f"{name}.lora_B.weight").detach().contiguous()
            out[f"{key}.alpha"] = torch.tensor(float(layer.lora_alpha[adapter_name]))
            names.add(name)
    if state:
        raise FacediffError(f"[lora] the {role} adapter has tensors kohya files cannot hold (e.g. {next(iter(state))})"
                            f"; save it with save_lora (diffusers format)")
    return out, names


def _peft_module_names(converted: Mapping[str, torch.Tensor], role: str, flat_text: bool) -> set[str]:
    """Module names diffusers' loaders will adapt for ``role``, given ``lora_state_dict``'s converted keys.

    Mirrors the key handling of ``UNet2DConditionModel.load_lora_adapter`` (loaders/peft.py) and
    ``_load_lora_into_text_encoder`` (loaders/lora_base.py).
    """
    part = {k.removeprefix(f"{role}."): v for k, v in converted.items() if k.startswith(f"{role}.")}
    if role == "unet":
        part = convert_unet_state_dict_to_peft(part)
    else:
        part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
        if flat_text:
            part = {k.removeprefix("text_model."): v for k, v in part.items()}
    return {k.split(".lora_")[0] for k in part}


def save_kohya(path: str | Path, unet: nn.Module | None, text_encoder: nn.Module | None = None, *,
               base_model_version: str = "sd_v1", extra_metadata: Mapping[str, str] | None = None,
               adapter_name: str = "default") -> Path:
    """Write one kohya sd-scripts LoRA .safetensors (A1111 / ComfyUI / diffusers ``load_lora_weights`` read it).

    Before writing, the tensors go through diffusers' own kohya reader; a module path that it would not map
    back to the same layer (or any key it would leave unconverted) is an error naming that module.
    """
    path = Path(path)
    if path.suffix != ".safetensors" or path.is_dir():
        raise FacediffError(f"[lora] {path}: a kohya LoRA file must be a .safetensors file path")
    if unet is None and text_encoder is None:
        raise FacediffError("[lora] save_kohya got neither a unet nor a text_encoder; pass at least one")
    if not base_model_version:
        raise FacediffError("[lora] base_model_version is empty; use e.g. 'sd_v1' or 'sd_v2'")
    tensors, expected = {}, {}
    for role, module in (("unet", unet), ("text_encoder", text_encoder)):
        if module is not None:
            part, expected[role] = _kohya_tensors(module, role, adapter_name)
            tensors.update(part)
    try:  # diffusers pops keys from the dict it converts: hand it a copy
        converted, _ = StableDiffusionPipeline.lora_state_dict(dict(tensors))
    except ValueError as err:
        raise FacediffError(f"[lora] {path}: diffusers' kohya reader rejects these keys "
                            f"({_brief(err)}); save with save_lora instead") from err
    for role, names in expected.items():
        try:  # diffusers' text-encoder path cannot even classify kohya q/k/v keys without out_proj ones
            got = _peft_module_names(converted, role, flat_text=not hasattr(text_encoder, "text_model"))
        except ValueError as err:
            raise FacediffError(f"[lora] {path}: diffusers could not read the {role} part back ({_brief(err)}); "
                                f"target all of {list(TEXT_TARGETS)} or save with save_lora") from err
        if got != names:
            bad = sorted(names - got) or sorted(got - names)
            raise FacediffError(f"[lora] {path}: diffusers' kohya reader would not map the {role} layer {bad[0]} "
                                f"back to itself; use other targets or save with save_lora (diffusers format)")
    role, module = ("unet", unet) if unet is not None else ("text_encoder", text_encoder)
    config = _config(module, adapter_name, role)
    metadata = {"ss_network_module": "networks.lora", "ss_network_dim": str(config.r),
                "ss_network_alpha": str(config.lora_alpha), "ss_base_model_version": base_model_version,
                "ss_v2": str(base_model_version.startswith("sd_v2")), "ss_training_comment": "facediff"}
    for key, value in (extra_metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise FacediffError(f"[lora] extra_metadata[{key!r}] = {value!r}: safetensors metadata must be strings")
        metadata[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path
