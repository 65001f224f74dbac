"""LoRA adapters on a module through peft: ``add_lora``, ``lora_parameter_count``, ``merge_lora`` (+ shared helpers)."""
from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence

import transformers
from packaging import version
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer, check_target_module_exists
from torch import nn

from facediff.errors import FacediffError

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
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
