"""Attribute conditions: levels per named attribute -> concatenated one-hots (``Condition.class_labels``).

Layout (DESIGN item 1): for attributes (a_1..a_A) with L levels each, the vector is the concatenation of A
one-hot blocks of length L; a zero block means "attribute not given" (don't care), all zeros is the null
condition used for the unconditional branch of classifier-free guidance. Training drops the whole
condition (cond_drop_prob) and single blocks (attr_drop_prob), so the model knows every partial condition
that per-attribute guidance asks for.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.conditioning.kinds import ConditionKind, Grid
from facediff.errors import FacediffError


def check_name(name: str, attributes: Sequence[str]) -> None:
    if name not in attributes:
        raise FacediffError(f"unknown attribute {name!r} for this model (known: {', '.join(attributes)})")


def attr_vector(attrs: Mapping[str, int] | None, attributes: Sequence[str] = ATTRIBUTES,
                num_levels: int = NUM_LEVELS) -> torch.Tensor:
    """Concatenated one-hots, float32 (A*L,); unspecified attributes are zero blocks, None is all zeros."""
    vec = torch.zeros(len(attributes) * num_levels, dtype=torch.float32)
    for name, level in (attrs or {}).items():
        check_name(name, attributes)
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 0 <= level < num_levels:
            raise FacediffError(f"attribute {name!r}: level {level!r} is not an integer in 0..{num_levels - 1}")
        vec[list(attributes).index(name) * num_levels + int(level)] = 1.0
    return vec


def attr_batch(attrs_list: Sequence[Mapping[str, int] | None], attributes: Sequence[str] = ATTRIBUTES,
               num_levels: int = NUM_LEVELS) -> torch.Tensor:
    """Stack ``attr_vector`` over a batch: float32 (B, A*L)."""
    return torch.stack([attr_vector(a, attributes, num_levels) for a in attrs_list])


def levels_to_onehot(levels: torch.Tensor, num_levels: int) -> torch.Tensor:
    """(B, A) integer levels, -1 = unknown / dropped -> (B, A*L) concatenated one-hots (zero block for -1)."""
    onehot = torch.zeros(levels.shape[0], levels.shape[1], num_levels)
    known = levels >= 0
    onehot[known, levels[known]] = 1.0
    return onehot.reshape(levels.shape[0], -1)


def _parse_pairs(text: str, what: str, example: str, convert: Callable[[str], float | int]) -> dict:
    out: dict = {}
    for item in (p.strip() for p in (text or "").split(",")):
        if not item:
            continue
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not name or not value:
            raise FacediffError(f"{what} {text!r}: expected name=value pairs separated by commas, e.g. {example}")
        if name in out:
            raise FacediffError(f"{what} {text!r}: {name!r} given twice")
        try:
            out[name] = convert(value)
        except ValueError:
            kind = "an integer level" if convert is int else "a number"
            raise FacediffError(f"{what} {text!r}: {value!r} for {name!r} is not {kind}, e.g. {example}") from None
    return out


def parse_attrs(text: str, attributes: Sequence[str] | None = None, num_levels: int | None = None) -> dict[str, int]:
    """'smiling=5,eyeglasses=3' -> {'smiling': 5, 'eyeglasses': 3}; names/levels checked when given."""
    out = _parse_pairs(text, "--attrs", "smiling=5,eyeglasses=3", int)
    if attributes is not None:
        attr_vector(out, attributes, num_levels if num_levels is not None else NUM_LEVELS)
    return out


def parse_scales(text: str, attributes: Sequence[str] | None = None) -> dict[str, float]:
    """'smiling=4,age=2' -> {'smiling': 4.0, 'age': 2.0}; names checked when ``attributes`` is given."""
    out = _parse_pairs(text, "--attr-scales", "smiling=4,age=2", float)
    for name in out if attributes is not None else ():
        check_name(name, attributes)
    for name, s in out.items():
        if not np.isfinite(s):
            raise FacediffError(f"--attr-scales {text!r}: the scale of {name!r} must be a finite number")
    return out


def attribute_sweep(attributes: tuple[str, ...], num_levels: int, seed: int) -> tuple[list[dict[str, int]], list[int]]:
    """Conditions + seeds for a grid whose row r sweeps attribute r over its levels, the rest fixed.

    The base levels of the other attributes are drawn from ``seed``; every tile shares the seed, so the only
    thing changing along a row is the attribute named at its left. Eyeglasses (when the model has them) stay
    at 0 in the other rows so that the eyes remain visible.
    """
    rng = np.random.default_rng(seed)
    base = {a: int(rng.integers(0, num_levels)) for a in attributes}
    if "eyeglasses" in base:
        base["eyeglasses"] = 0
    conds = [{**base, a: level} for a in attributes for level in range(num_levels)]
    return conds, [seed] * len(conds)


# ------------------------------------------------------------------------------------------------ the kind


class AttributesKind(ConditionKind):
    """Attribute levels -> concatenated one-hots on the global route (null: all zeros = don't care)."""

    name = "attributes"
    route = "global"
    user_help = "attribute levels, e.g. smiling=5,eyeglasses=3 (the rest: don't care)"
    null_label = "don't care"
    absent = "this model is not attribute-conditional: drop the attributes"

    def __init__(self, attributes: Sequence[str] = ATTRIBUTES, num_levels: int = NUM_LEVELS):
        self.attributes, self.num_levels = tuple(attributes), int(num_levels)

    def describe(self) -> dict:
        return {"kind": self.name, "attributes": list(self.attributes), "num_levels": self.num_levels}

    @classmethod
    def from_description(cls, description: dict, grid: Grid, **model) -> "AttributesKind":
        return cls(tuple(description["attributes"]), int(description.get("num_levels", NUM_LEVELS)))

    @classmethod
    def from_config(cls, cfg, grid: Grid) -> "AttributesKind":
        return cls(tuple(cfg.model.attributes), cfg.model.num_levels)

    def part_drop_prob(self, cfg) -> float:
        return cfg.diffusion.attr_drop_prob  # each attribute alone: per-attribute guidance

    @property
    def width(self) -> int:
        return len(self.attributes) * self.num_levels

    def parse(self, value, where: str = "") -> dict[str, int] | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str):
            return parse_attrs(value, self.attributes, self.num_levels)
        if isinstance(value, Mapping):
            attr_vector(value, self.attributes, self.num_levels)  # names and levels checked
            return dict(value) or None
        raise FacediffError(f"{where or '--attrs'} {value!r}: give name=level pairs, e.g. smiling=5,eyeglasses=3")

    def encode(self, values, grid: Grid) -> torch.Tensor:
        return attr_batch([self.parse(v) if isinstance(v, str) else v for v in values], self.attributes,
                          self.num_levels)

    def dataset_values(self, dataset, rows, **options) -> list[dict[str, int] | None]:
        levels = dataset.attribute_levels(self.attributes)[np.asarray(rows)]
        return [{a: int(v) for a, v in zip(self.attributes, lv) if v >= 0} or None for lv in levels]

    def ui_control(self) -> dict:
        return {"control": "levels", "parts": list(self.attributes), "levels": self.num_levels, "help": self.user_help}

    def legacy_config(self) -> dict:
        return {"attributes": self.attributes, "num_levels": self.num_levels}

    def guidance_parts(self) -> dict[str, slice]:
        L = self.num_levels
        return {a: slice(i * L, (i + 1) * L) for i, a in enumerate(self.attributes)}

    def label(self, value) -> str:
        return ", ".join(f"{k}={v}" for k, v in (value or {}).items())
