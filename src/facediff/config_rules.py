"""Coercion and validation rules of the run configuration: ``ConfigError``, field types, per-section ``_RULES``."""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import fields
from typing import Any, Callable

from facediff import registry
from facediff.errors import FacediffError


class ConfigError(FacediffError):
    """A user-facing configuration error (one line, names the key and what to do)."""


# ------------------------------------------------------------------------------------------- coercion
_TYPE_NAMES = {int: "int (a whole number)", float: "float", bool: "bool (true/false/1/0)", str: "str"}


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of dataclass ``cls`` (cached)."""
    cached = _HINTS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = _HINTS[cls] = {f.name: hints[f.name] for f in fields(cls)}
    return cached


_HINTS: dict[type, dict[str, Any]] = {}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0]).split(' ')[0]}"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


class _Bad(Exception):
    """Internal: the value cannot be converted to the field's type."""


def _scalar(tp: type, value: Any) -> Any:
    """Convert one scalar to ``tp`` (int, float, bool or str) or raise _Bad."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise _Bad
    if tp is int:
        if isinstance(value, bool):
            raise _Bad
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                pass
            try:
                value = float(text)
            except ValueError:
                raise _Bad from None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return int(value)
        raise _Bad
    if tp is float:
        if isinstance(value, bool):
            raise _Bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _Bad from None
        raise _Bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Bad
    raise TypeError(f"config field type {tp!r} is not supported")  # a programming error, not a user one


def _coerce(section: str, name: str, tp: Any, value: Any) -> Any:
    """Convert a TOML / --set / Python value to the field's declared type ``tp``, or raise ConfigError."""
    try:
        if typing.get_origin(tp) is tuple:
            inner = typing.get_args(tp)[0]
            if isinstance(value, str):
                text = value.strip()
                if text.startswith("[") and text.endswith("]"):
                    text = text[1:-1]
                value = [v.strip().strip("'\"") for v in text.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise _Bad
            return tuple(_scalar(inner, v) for v in value)
        return _scalar(tp, value)
    except _Bad:
        raise ConfigError(f"[{section}] {name} = {value!r} is not a valid {_type_name(tp)}") from None


# ------------------------------------------------------------------------------------------- checks
Rule = Callable[[Any], "str | None"]  # value -> None if fine, else what is allowed


def _choice(choices: tuple[str, ...]) -> Rule:
    return lambda v: None if v in choices else f"choose one of {', '.join(choices)}"


def _at_least(lo: int | float) -> Rule:
    return lambda v: None if v >= lo else f"must be >= {lo}"


def _above(lo: float) -> Rule:
    return lambda v: None if v > lo else f"must be > {lo:g}"


def _unit(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1]"


def _unit_open(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else "must be in [0, 1)"


def _channels(v: tuple[int, ...]) -> str | None:
    if not v:
        return "must list at least one channel count, e.g. [32, 64]"
    return None if all(c >= 1 for c in v) else "every entry must be >= 1"


def _positive_entries(v: tuple[int, ...]) -> str | None:
    return None if all(c >= 1 for c in v) else "every entry must be >= 1"


def _nonempty(v: tuple[str, ...]) -> str | None:
    return None if v and all(v) else "must list at least one name, e.g. [\"to_q\", \"to_v\"]"


_POS, _NONNEG = _at_least(1), _at_least(0)

_RULES: dict[str, dict[str, Rule]] = {
    "data": {"synth_n": _POS, "synth_style": _choice(registry.SYNTH_STYLES),
             "synth_layout": _choice(registry.SYNTH_LAYOUTS), "size": _at_least(8)},
    "model": {"block_out_channels": _channels, "layers_per_block": _POS, "attention_resolutions": _positive_entries,
              "attention_head_dim": _POS, "norm_num_groups": _POS, "dropout": _unit,
              "conditioning": _choice(registry.CONDITIONING), "num_levels": _POS, "in_channels": _POS},
    "diffusion": {"schedule": _choice(registry.SCHEDULES), "num_train_timesteps": _at_least(2),
                  "prediction_type": _choice(registry.PREDICTION_TYPES),
                  "loss_weighting": _choice(registry.LOSS_WEIGHTINGS), "snr_gamma": _above(0.0),
                  "cond_drop_prob": _unit, "attr_drop_prob": _unit, "noise_offset": _NONNEG},
    "train": {"batch_size": _POS, "grad_accum": _POS, "max_steps": _POS, "time_budget_minutes": _NONNEG,
              "lr": _above(0.0), "weight_decay": _NONNEG, "warmup_steps": _NONNEG,
              "lr_schedule": _choice(registry.LR_SCHEDULES), "grad_clip": _NONNEG, "ema_decay": _unit_open,
              "host_sync": _choice(registry.HOST_SYNC), "ema_start": _NONNEG,
              "mixed_precision": _choice(registry.MIXED_PRECISION), "log_every": _POS,
              "sample_every": _NONNEG, "checkpoint_every": _NONNEG, "keep_checkpoints": _POS,
              "max_nonfinite": _POS, "sample_steps": _POS, "sample_sampler": _choice(registry.SAMPLERS)},
    "autoencoder": {"kind": _choice(registry.AE_KINDS), "block_out_channels": _channels, "layers_per_block": _POS,
                    "latent_channels": _POS, "num_vq_embeddings": _POS, "vq_embed_dim": _POS,
                    "norm_num_groups": _POS, "l1_weight": _NONNEG, "l2_weight": _NONNEG,
                    "perceptual_weight": _NONNEG, "commitment_beta": _NONNEG, "kl_weight": _NONNEG,
                    "disc_weight": _NONNEG, "disc_start": _NONNEG, "disc_channels": _POS,
                    "dead_code_restart": _NONNEG, "eval_every": _NONNEG, "eval_n": _POS},
    "latent": {"scale_factor": _NONNEG, "sketch_drop_prob": _unit},
    "text": {"vocab_size": _at_least(300), "max_length": _at_least(4), "hidden_size": _POS, "num_layers": _POS,
             "num_heads": _POS, "intermediate_size": _POS, "keep_tokens": _NONNEG,
             "encoder": lambda v: None if str(v).strip() else "give clip, minilm or a text-encoder folder",
             "caption_mode": _choice(registry.CAPTION_MODES), "loose_words": _unit},
    "lora": {"rank": _POS, "alpha": _above(0.0), "targets": _nonempty, "text_encoder_rank": _NONNEG,
             "resolution": _NONNEG},
    "run": {"kind": _choice(registry.KINDS)},
}


def coerce_and_check(obj: Any, section: str) -> None:
    """Coerce each field of config dataclass ``obj`` (of ``section``, "run" for RunConfig) in place to its
    declared type, then validate it."""
    cls = type(obj)
    rules = _RULES[section]
    for name, tp in field_types(cls).items():
        value = getattr(obj, name)
        if dataclasses.is_dataclass(tp):  # RunConfig's sections
            if isinstance(value, dict):
                unknown = [k for k in value if k not in field_types(tp)]
                if unknown:
                    raise ConfigError(f"unknown key [{name}] {unknown[0]} (known: {', '.join(field_types(tp))})")
                value = tp(**value)
            elif not isinstance(value, tp):
                raise ConfigError(f"[{name}] must be a table of {', '.join(field_types(tp))}, not {value!r}")
            object.__setattr__(obj, name, value)
            continue
        value = _coerce(section, name, tp, value)
        object.__setattr__(obj, name, value)
        label = f"kind = {value!r}" if section == "run" else f"[{section}] {name} = {value!r}"
        if tp is float and not math.isfinite(value):
            raise ConfigError(f"{label}: must be a finite number")
        rule = rules.get(name)
        problem = rule(value) if rule else None
        if problem:
            raise ConfigError(f"{label}: {problem}")
    if section == "diffusion" and obj.schedule != "cosine" and not (0.0 < obj.beta_start <= obj.beta_end < 1.0):
        raise ConfigError(f"[diffusion] beta_start = {obj.beta_start!r}, beta_end = {obj.beta_end!r}: need "
                          f"0 < beta_start <= beta_end < 1 for schedule = {obj.schedule!r}")
