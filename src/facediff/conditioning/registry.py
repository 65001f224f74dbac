"""The one registry of condition kinds: name -> implementation (``conditioning/kinds.py`` is the protocol).

The built-in kinds are listed here; a plug-in (a user's module, a test) adds its own with ``@register``. Model
configs, layouts, requests and training runs name kinds by these keys.
"""
from __future__ import annotations

from typing import Any

from facediff.conditioning.attributes import AttributesKind
from facediff.conditioning.kinds import ROUTES, ConditionKind, Grid
from facediff.conditioning.layout import LayoutKind
from facediff.conditioning.mask import MaskKind
from facediff.conditioning.sketch import SketchKind
from facediff.conditioning.text import TextKind
from facediff.errors import FacediffError

KINDS: dict[str, type[ConditionKind]] = {k.name: k for k in (AttributesKind, SketchKind, TextKind, MaskKind,
                                                              LayoutKind)}


def register(cls: type[ConditionKind]) -> type[ConditionKind]:
    """Class decorator: add a kind to ``KINDS`` (a plug-in module or a test registers its kinds this way)."""
    if not cls.name or cls.route not in ROUTES:
        raise ValueError(f"{cls.__name__}: give a name and a route in {ROUTES}")
    KINDS[cls.name] = cls
    return cls


def registered() -> tuple[str, ...]:
    """The names of every registered kind."""
    return tuple(KINDS)


def context_kinds() -> set[str]:
    """The kinds that tell a model where things are (``ConditionKind.context``, e.g. the layout): composition
    prefers a bundled model that declares one."""
    return {name for name, cls in KINDS.items() if cls.context}


def kind_class(name: str) -> type[ConditionKind]:
    if name not in KINDS:
        raise FacediffError(f"unknown condition kind {name!r} (known: {', '.join(sorted(KINDS))})")
    return KINDS[name]


def training_kinds(cfg: Any, grid: Grid) -> tuple[ConditionKind, ...]:
    """The condition kinds a run's config declares, in order: the attributes ([model] conditioning =
    "attributes"), the sketch ([latent] sketch, latent runs), then [model] conditions (any registered kind,
    plug-ins included). A text model's captions are its text model's own (training/text.py)."""
    names: list[str] = []
    if cfg.model.conditioning == "attributes" and cfg.kind in ("ddpm", "ldm"):
        names.append(AttributesKind.name)
    if cfg.kind == "ldm" and cfg.latent.sketch:
        names.append(SketchKind.name)
    names += [n for n in getattr(cfg.model, "conditions", ()) if n not in names]
    return tuple(kind_class(n).from_config(cfg, grid) for n in names)
