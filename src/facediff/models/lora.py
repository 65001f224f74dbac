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
"""
from __future__ import annotations

import importlib.metadata
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import safetensors
import safetensors.torch
import torch
import transformers
from diffusers import StableDiffusionPipeline
from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY, LORA_WEIGHT_NAME_SAFE
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft
from diffusers.utils.peft_utils import set_weights_and_activate_adapters
from packaging import version
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer, check_target_module_exists
from peft.utils import get_peft_model_state_dict
from torch import nn

from facediff.errors import FacediffError

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")  # diffusers' test, loaders/lora_pipeline.py
_KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_"}      # SD 1.x / 2.x spelling
_ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _adaptable_names(module: nn.Module) -> list[str]:
    """Names of the Linear/Conv layers of ``module`` that LoRA can wrap (peft's own sub-layers excluded)."""
    return [name for name, sub in module.named_modules()
            if isinstance(sub, _ADAPTABLE) and ".lora_" not in name and not name.endswith(".base_layer")]


def _brief(err: BaseException) -> str:
    """The informative start of a (multi-line) library error, on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
    text = lines[0] + (" " + lines[1] if lines[0].endswith(":") and len(lines) > 1 else "")
    return text[:240]


def _suffix_hint(names: Sequence[str], limit: int = 12) -> str:
    """A few distinct module-name suffixes (the last one or two path parts) to suggest as targets."""
    seen: dict[str, None] = {}
    for name in names:
        parts = name.split(".")
        seen[".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]] = None
    return ", ".join(list(seen)[:limit]) or "none"


def _transformers_refuses_peft(module: nn.Module) -> bool:
    """True when ``module`` is a transformers model whose add_adapter() rejects the installed peft.

    transformers 5.x demands peft >= MIN_PEFT_VERSION (0.22.0 in 5.24, transformers/integrations/peft.py) in
    add_adapter/set_adapter/delete_adapter although its load_adapter and peft 0.21 work together; then peft's
    inject_adapter_in_model, which add_adapter wraps, is called directly.
    """
    if not isinstance(module, transformers.PreTrainedModel):
        return False
    from transformers.integrations import peft as hf_peft

    needed = getattr(hf_peft, "MIN_PEFT_VERSION", "0")
    return version.parse(importlib.metadata.version("peft")) < version.parse(needed)


def add_lora(module: nn.Module, *, rank: int, alpha: float, targets: Sequence[str], dropout: float = 0.0,
             adapter_name: str = "default") -> int:
    """Wrap the ``targets`` layers of ``module`` in a LoRA adapter; freeze everything else; return the trainable count.

    ``targets`` are peft module-name suffixes (``UNET_TARGETS`` for a diffusers U-Net, ``TEXT_TARGETS`` for a
    CLIP text encoder); each must match at least one Linear/Conv layer. Init is peft's "gaussian" (A ~ N(0, 1/r),
    B = 0), the diffusers training-script choice. Only this adapter's A and B stay trainable.
    """
    if rank < 1 or alpha <= 0 or not 0.0 <= dropout < 1.0:
        raise FacediffError(f"[lora] rank={rank}, alpha={alpha}, dropout={dropout}: need rank >= 1, alpha > 0 and "
                            f"0 <= dropout < 1")
    if not hasattr(module, "add_adapter"):
        raise FacediffError(f"[lora] {type(module).__name__} has no add_adapter(); pass a diffusers U-Net or a "
                            f"transformers text encoder")
    if adapter_name in (getattr(module, "peft_config", None) or {}):
        raise FacediffError(f"[lora] adapter {adapter_name!r} already exists on {type(module).__name__}; pass "
                            f"another adapter_name")
    names = _adaptable_names(module)
    missing = [t for t in targets
               if not any(check_target_module_exists(LoraConfig(target_modules=[t]), n) for n in names)]
    if not targets or missing:
        raise FacediffError(f"[lora] targets {list(missing or targets)} match no Linear/Conv layer of "
                            f"{type(module).__name__}; available suffixes include: {_suffix_hint(names)}")
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(targets),
                        lora_dropout=dropout)
    module.requires_grad_(False)
    if _transformers_refuses_peft(module):
        # transformers' add_adapter = version check + this same peft call + activation (integrations/peft.py)
        inject_adapter_in_model(config, module, adapter_name=adapter_name)
        module._hf_peft_config_loaded = True
        for layer in module.modules():
            if isinstance(layer, BaseTunerLayer):
                layer.set_adapter(adapter_name)
    else:
        module.add_adapter(config, adapter_name=adapter_name)
    for name, param in module.named_parameters():
        param.requires_grad_(f".{adapter_name}." in name and (".lora_A." in name or ".lora_B." in name))
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def lora_parameter_count(module: nn.Module, adapter_name: str | None = None) -> int:
    """Number of LoRA A/B parameters in ``module`` (of one adapter, or of all)."""
    tag = f".{adapter_name}." if adapter_name else "."
    return sum(p.numel() for n, p in module.named_parameters()
               if (".lora_A." in n or ".lora_B." in n) and tag in n)


def merge_lora(module: nn.Module, adapter_name: str = "default") -> int:
    """Fold the adapter into the base weights in place (W += (alpha / r) B A); return the layers merged.

    peft's ``BaseTunerLayer.merge`` is used directly because diffusers' ``fuse_lora`` is a pipeline / diffusers-model
    method and transformers text encoders have no equivalent.
    """
    merged = 0
    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer) and adapter_name in getattr(layer, "lora_A", {}):
            layer.merge(adapter_names=[adapter_name])
            merged += 1
    if not merged:
        raise FacediffError(f"[lora] {type(module).__name__} has no LoRA adapter {adapter_name!r} to merge")
    return merged


def _config(module: nn.Module, adapter_name: str, role: str) -> LoraConfig:
    configs = getattr(module, "peft_config", None) or {}
    if adapter_name not in configs:
        raise FacediffError(f"[lora] the {role} has no LoRA adapter {adapter_name!r} (has {sorted(configs)}); "
                            f"call add_lora first or pass adapter_name")
    return configs[adapter_name]


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
