"""The conditioner of a model: user values -> ``Condition``, the null condition, and guidance branches.

It holds the model's condition kinds (``conditioning/kinds.py``) in their declared order and iterates over
them: the vectors of global kinds are concatenated into ``class_labels``, the maps of spatial kinds into
``concat`` (the channel layout ``spatial_layout``), a sequence kind gives ``encoder_hidden_states``. It knows
nothing about noise or samplers, and names no kind: the pipeline owns one, built from its config.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from facediff.conditioning.condition import Branches, Condition
from facediff.conditioning.kinds import FIELD_OF_ROUTE, ConditionKind, Grid, spatial_layout
from facediff.conditioning.registry import KINDS, kind_class
from facediff.errors import FacediffError

# the pipeline's and encode()'s keywords for the built-in kinds (diffusers-style ``prompt=``) -> kind name
LEGACY_NAMES = {"attrs": "attributes", "sketch": "sketch", "prompt": "text", "prompts": "text"}


def _given(value: Any) -> bool:
    """Is a value (or any value of a per-image list) given? Empty texts and empty dicts are not."""
    if isinstance(value, (list, tuple)):
        return any(_given(v) for v in value)
    if isinstance(value, (torch.Tensor,)) or hasattr(value, "shape"):
        return True
    return bool(value)


@dataclass(frozen=True)
class Conditioner:
    kinds: tuple[ConditionKind, ...] = ()  # the model's conditions, in declared (= channel / vector) order
    grid: Grid = Grid(0, 0)  # sample size and diffusion-grid side (spatial maps are made at grid.side)

    @classmethod
    def from_parts(cls, attributes: Sequence[str] = (), num_levels: int = 6, sketch_size: int | None = None,
                   prompt_encoder=None, grid: Grid | None = None) -> "Conditioner":
        """The conditioner of a model described by its legacy config keys (attributes, sketch, text)."""
        kinds: list[ConditionKind] = []
        if attributes:
            kinds.append(kind_class("attributes")(tuple(attributes), num_levels))
        if sketch_size is not None:
            kinds.append(kind_class("sketch")())
        if prompt_encoder is not None:
            kinds.append(kind_class("text")(prompt_encoder))
        side = sketch_size or (grid.side if grid else 0)
        return cls(tuple(kinds), grid or Grid(side, side))

    # -- what the model takes --------------------------------------------------------------------------
    def kind(self, name: str) -> ConditionKind | None:
        return next((k for k in self.kinds if k.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.kinds)

    def spatial_layout(self) -> list[tuple[str, int]]:
        return spatial_layout(self.kinds)

    @property
    def attributes(self) -> tuple[str, ...]:
        k = self.kind("attributes")
        return k.attributes if k is not None else ()

    @property
    def num_levels(self) -> int:
        k = self.kind("attributes")
        return k.num_levels if k is not None else 6

    @property
    def takes_attributes(self) -> bool:
        return self.kind("attributes") is not None

    @property
    def takes_sketch(self) -> bool:
        return self.kind("sketch") is not None

    @property
    def takes_text(self) -> bool:
        return any(k.route == "sequence" for k in self.kinds)

    # -- values -> Condition ---------------------------------------------------------------------------
    def check_names(self, names) -> None:
        """A value for a condition the model does not take is refused, naming both."""
        for name in names:
            if self.kind(name) is None:
                takes = ", ".join(self.names) or "no condition (an unconditional model)"
                known = KINDS.get(name)
                what = known.absent if known is not None and known.absent else \
                    f"this model does not take a {name} condition"
                raise FacediffError(f"{what} (it takes {takes})")

    def gather(self, n: int, conditions: Mapping[str, Any] | None = None, *, prepare: bool = True,
               **legacy: Any) -> dict[str, list[Any]]:
        """Every kind's values for n images, checked and prepared once (``kind.parse``, ``kind.prepare``):
        ``conditions`` {kind name: one value or one per image}, or the built-in kinds' keywords ``attrs``,
        ``sketch``, ``prompt`` (LEGACY_NAMES). A value for a kind the model does not take is refused."""
        values = dict(conditions or {})
        for key, value in legacy.items():
            if key not in LEGACY_NAMES:
                raise TypeError(f"unknown condition keyword {key!r}")
            if value is not None:
                values[LEGACY_NAMES[key]] = value
        self.check_names(name for name, v in values.items() if _given(v))
        out: dict[str, list[Any]] = {}
        for k in self.kinds:
            value = values.get(k.name)
            if isinstance(value, torch.Tensor) and value.ndim == 4 and len(value) == n and n > 1:
                value = [value[i:i + 1] for i in range(n)]  # a batch of maps: one per image
            prepared: dict[int, Any] = {}  # one value for every image is prepared once
            rows = []
            for v in self.per_image(k.name, value, n):
                if v is None:
                    rows.append(None)
                    continue
                if id(v) not in prepared:
                    prepared[id(v)] = k.prepare(k.parse(v), self.grid) if prepare else k.parse(v)
                rows.append(prepared[id(v)])
            out[k.name] = rows
        return out

    def read_negatives(self, values: dict[str, list[Any]], negatives: list[Any]):
        """(values, negatives, notes) as the model's text kind reads a negative prompt (``TextKind.read_negatives``:
        bare presence words may move into the prompt as negations); unchanged for other models."""
        seq = next((k for k in self.kinds if k.route == "sequence"), None)
        if seq is None or all(not v for v in negatives):
            return values, negatives, []
        prompts = values.get(seq.name, [None] * len(negatives))
        prompts, negatives, notes = seq.read_negatives(list(prompts), list(negatives))
        return ({**values, seq.name: prompts} if any(p is not None for p in prompts) else values), negatives, notes

    def per_image(self, name: str, value: Any, n: int) -> list[Any]:
        """One value for all n images, or a list/tuple of n values."""
        rows = list(value) if isinstance(value, (list, tuple)) else [value] * n
        if len(rows) != n:
            raise FacediffError(f"{len(rows)} {name} values for {n} images: give one, or one per image")
        return rows

    def encode_values(self, n: int, values: Mapping[str, Any], canvas: tuple[int, int] | None = None) -> Condition:
        """The condition of ``n`` images from ``values`` {kind name: one value, or one per image}; a kind given
        no value gets its null value. ``canvas``: (height, width) pixels of a composition whose spatial
        values were placed with ``kind.place``."""
        self.check_names(name for name, v in values.items() if _given(v))
        parts: dict[str, list[torch.Tensor]] = {}
        for k in self.kinds:
            rows = self.per_image(k.name, values.get(k.name), n)
            if canvas is not None and k.route == "spatial":
                t = k.encode_canvas(rows, self.grid, canvas)
            else:
                t = k.encode(rows, self.grid)
            parts.setdefault(FIELD_OF_ROUTE[k.route], []).append(t.float())
        return Condition(**{f: torch.cat(ts, 1) if f != "encoder_hidden_states" else ts[0]
                            for f, ts in parts.items()})

    def null_notes(self, given: Mapping[str, Any]) -> list[str]:
        """One note per declared kind that ``given`` leaves empty: it is sampled with its null value."""
        return [f"{k.name}: none given, sampled with its null value ({k.null_label})"
                for k in self.kinds if not _given(given.get(k.name))]

    def encode_region(self, n: int, values: Mapping[str, list[Any]], box: tuple[int, int, int, int] | None,
                      canvas: tuple[int, int]) -> Condition:
        """Composition: the condition of one region on a (height, width) pixel canvas, from ``gather(...,
        prepare=False)`` values: spatial values drawn into the region's pixel ``box`` (``kind.place``), the
        others holding for the whole region."""
        placed = {}
        for k in self.kinds:
            rows = [k.region_default(box) if v is None else v for v in values.get(k.name, [None] * n)]
            if k.route == "spatial":
                placed[k.name] = [None if v is None else k.place(v, box, self.grid, canvas) for v in rows]
            else:
                placed[k.name] = [None if v is None else k.prepare(v, self.grid) for v in rows]
        return self.encode_values(n, placed, canvas=canvas)

    def encode(self, n: int, attrs: Sequence[Mapping[str, int] | None] | None = None,
               sketch: torch.Tensor | None = None, prompts: str | Sequence[str] | None = None) -> Condition:
        """``encode_values`` with the keywords of the three built-in kinds: ``attrs`` (one dict per image),
        ``sketch`` ((n or 1, 1, h, w) ink maps) and ``prompts`` (one for all or one per image)."""
        values: dict[str, Any] = {}
        if attrs is not None and any(attrs):
            values["attributes"] = list(attrs)
        if sketch is not None:
            if sketch.ndim != 4:
                raise FacediffError(f"sketch map has shape {tuple(sketch.shape)}; this model takes (n, 1, h, w)")
            values["sketch"] = [sketch[i:i + 1] for i in range(len(sketch))] if len(sketch) > 1 else sketch
        if prompts is not None and any(self.per_image("prompt", prompts, n)):
            values["text"] = prompts
        return self.encode_values(n, values)

    def null(self, cond: Condition, negative: str | Sequence[str] | None = None) -> Condition:
        """The unconditional branch for ``cond``'s rows: global kinds' null vectors, blank spatial maps (zeros,
        at the canvas's size), the sequence kind's null (the empty prompt, as in training, or ``negative``)."""
        n = cond.batch_size or 0
        out = {k: torch.zeros_like(v) for k, v in cond.fields().items()}
        if cond.concat is not None:  # context kinds (a layout) keep their maps: guidance works within them
            start = 0
            for name, width in spatial_layout(self.kinds):
                if self.kind(name).context:
                    out["concat"][:, start:start + width] = cond.concat[:, start:start + width]
                start += width
        nulls = [k.null(n, self.grid) for k in self.kinds if k.route == "global"]
        if nulls and cond.class_labels is not None:
            out["class_labels"] = torch.cat(nulls, 1).to(cond.class_labels)
        seq = next((k for k in self.kinds if k.route == "sequence"), None)
        if seq is not None and cond.encoder_hidden_states is not None:
            rows = self.per_image("negative prompt", negative, n)
            out["encoder_hidden_states"] = seq.null(n, self.grid, rows).to(cond.encoder_hidden_states)
        return Condition(**out)

    # -- guidance --------------------------------------------------------------------------------------
    def parts(self) -> dict[str, slice]:
        """Every guidable part of the global vector: name -> its slice of ``class_labels``."""
        out, offset = {}, 0
        for k in self.kinds:
            if k.route != "global":
                continue
            for name, sl in k.guidance_parts().items():
                out[name] = slice(offset + sl.start, offset + sl.stop)
            offset += k.width
        return out

    def branches(self, cond: Condition, guidance: float, part_scales: Mapping[str, float] | None = None,
                 negative: str | Sequence[str] | None = None) -> Branches:
        """Guidance branches for ``cond`` (all combined in ONE batched forward by the sampler).

        - unconditional model, or ``guidance <= 1`` without per-part scales: the plain condition
          (scale 1 is the conditional model, so scales below 1 are treated as 1);
        - classifier-free guidance (Ho & Salimans 2022): null + s (cond - null); for text models null is the
          empty prompt;
        - a ``negative`` prompt is composed in with the NOT of Composable Diffusion (Liu et al. 2022, eq. 13):
              pred = empty + s (cond - empty) - s (neg - empty)
          i.e. diffusers' neg + s (cond - neg) plus one more step away from the negative (empty - neg), which
          measured stronger (README, "negative prompts"). A row whose negative is "" gets plain guidance;
        - per-part guidance (Liu et al. 2022, eq. 9), e.g. per attribute: each part named in ``part_scales``
          is guided on its own; parts given in ``cond`` without a scale of their own, and every other
          condition, are the *context*, guided jointly with ``guidance``; parts absent from ``cond`` are
          don't-care:
              pred = ctx + sum_i s_i (pred(ctx + part_i) - ctx) + (1 - guidance) (null - ctx)
          where the null term is present only when guidance > 1 and some row has a context.
        """
        scales = dict(part_scales or {})
        parts = self.parts()
        if scales and not parts:
            raise FacediffError("--attr-scales needs an attribute-conditional model")
        for name in scales:
            if name not in parts:
                raise FacediffError(f"unknown attribute {name!r} for this model (known: {', '.join(parts)})")
        if negative is not None and not self.takes_text:
            raise FacediffError("--negative-prompt needs a text-to-face model")
        if cond.batch_size is None or (not scales and guidance <= 1.0):
            return Branches(cond)
        null = self.null(cond)
        negated = ((self.null(cond, negative), -float(guidance)),) if negative is not None else ()  # the NOT
        if not scales:
            return Branches(null, ((cond, float(guidance)), *negated))
        guided = [name for name in parts if name in scales]  # the model's order
        ctx_labels = cond.class_labels.clone()
        for name in guided:
            ctx_labels[:, parts[name]] = 0.0
        ctx = cond.with_fields(class_labels=ctx_labels)
        deltas = []
        for name in guided:
            b = ctx_labels.clone()
            b[:, parts[name]] = cond.class_labels[:, parts[name]]
            deltas.append((cond.with_fields(class_labels=b), float(scales[name])))
        has_context = any(bool(v.abs().sum() > 0) for v in ctx.fields().values())
        if guidance > 1.0 and has_context:
            # the NOT, from ctx: - s (neg - empty) = - s (neg - ctx) + s (empty - ctx): empty's weight 1 - s + s
            deltas += [(null, 1.0 if negated else 1.0 - float(guidance)), *negated]
        return Branches(ctx, tuple(deltas))
