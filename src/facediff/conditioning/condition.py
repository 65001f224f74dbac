"""The typed condition a denoiser is called with: ``model(x_t, t, **cond.fields())``.

Named fields instead of columns packed into one tensor (the way diffusers' U-Nets take ``class_labels`` and
``encoder_hidden_states``, and k-diffusion passes ``extra_args``), so a (B, L, D) text embedding, a spatial
sketch map and attribute one-hots travel side by side and every consumer reads only the fields it knows.

Guidance is a list of branches over these conditions (``Branches``): the sampler evaluates every branch in
ONE batched forward (``Condition.cat`` concatenates field by field) and combines the predictions linearly.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Sequence

import torch

FIELDS = ("class_labels", "encoder_hidden_states", "encoder_attention_mask", "concat")


@dataclass(frozen=True)
class Condition:
    """One condition per batch row; a None field is absent (the network gets no such keyword)."""

    class_labels: torch.Tensor | None = None  # (B, A*L) concatenated attribute one-hots; zeros = null condition
    encoder_hidden_states: torch.Tensor | None = None  # (B, L, D) per-token text embeddings (cross-attention)
    encoder_attention_mask: torch.Tensor | None = None  # (B, L) 1 = real token, 0 = padding
    concat: torch.Tensor | None = None  # (B, C, h, w) spatial maps concatenated to x_t (sketch ink density)

    def fields(self) -> dict[str, torch.Tensor]:
        """The present fields as keyword arguments for ``model(x, t, **cond.fields())``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @property
    def batch_size(self) -> int | None:
        """Rows of the condition (None when it has no field: the unconditional model)."""
        return next((len(v) for v in self.fields().values()), None)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Condition":
        """Move every field; floating fields (not the attention mask) are cast to ``dtype`` when given."""
        out = {}
        for k, v in self.fields().items():
            cast = dtype if dtype is not None and v.is_floating_point() and k != "encoder_attention_mask" else None
            out[k] = v.to(device=device, dtype=cast) if cast is not None else v.to(device)
        return Condition(**out)

    def with_fields(self, **changes: torch.Tensor | None) -> "Condition":
        return replace(self, **changes)

    @staticmethod
    def cat(conditions: Sequence["Condition"]) -> "Condition":
        """Concatenate along the batch, field by field (every condition must have the same fields); token
        states of long prompts (several chunks) and short ones are tiled to one length (``tile_states``)."""
        from facediff.conditioning.text import tile_states

        present = [tuple(c.fields()) for c in conditions]
        if len(set(present)) != 1:
            raise ValueError(f"cannot batch conditions with different fields: {sorted(set(present))}")
        fields = {k: [getattr(c, k) for c in conditions] for k in present[0]}
        if "encoder_hidden_states" in fields:
            lengths = [s.shape[1] for s in fields["encoder_hidden_states"]]
            fields["encoder_hidden_states"] = tile_states(fields["encoder_hidden_states"])
            if "encoder_attention_mask" in fields:  # (B, L) masks repeat with their states
                fields["encoder_attention_mask"] = [m.repeat(1, fields["encoder_hidden_states"][0].shape[1] // n)
                                                    for m, n in zip(fields["encoder_attention_mask"], lengths)]
        return Condition(**{k: torch.cat(v) for k, v in fields.items()})


@dataclass(frozen=True)
class Branches:
    """A guided prediction as a linear combination of branches (Ho & Salimans 2022; Liu et al. 2022):

        pred = pred(x_t, base) + sum_k w_k * (pred(x_t, c_k) - pred(x_t, base))

    Classifier-free guidance with scale s: base = null, deltas = [(cond, s)]. Per-attribute guidance:
    base = context, deltas = [(context + attribute_i, s_i), ..., (null, 1 - s)]. No deltas: plain conditional.
    """

    base: Condition  # the branch every delta is measured from
    deltas: tuple[tuple[Condition, float], ...] = field(default_factory=tuple)  # (c_k, w_k)

    @property
    def conditions(self) -> list[Condition]:
        return [self.base, *(c for c, _ in self.deltas)]

    @property
    def weights(self) -> list[float]:
        return [w for _, w in self.deltas]
