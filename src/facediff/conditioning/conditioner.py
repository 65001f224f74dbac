"""The conditioner of a model: user inputs -> ``Condition``, the null condition, and guidance branches.

It knows which fields the network takes (attribute one-hots, a sketch map, text token embeddings) and
nothing about noise or samplers. The pipeline owns one, built from its config.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from facediff.conditioning.attributes import attr_batch, check_name
from facediff.conditioning.condition import Branches, Condition
from facediff.conditioning.text import PromptEncoder
from facediff.errors import FacediffError


@dataclass(frozen=True)
class Conditioner:
    attributes: tuple[str, ...] = ()  # conditioned attributes, in the one-hot order (empty: no attributes)
    num_levels: int = 6  # levels per attribute
    sketch_size: int | None = None  # side of the sketch map concatenated to x_t (None: no sketch input)
    prompt_encoder: PromptEncoder | None = None  # prompts -> encoder_hidden_states (None: no text input)

    @property
    def takes_attributes(self) -> bool:
        return bool(self.attributes)

    @property
    def takes_sketch(self) -> bool:
        return self.sketch_size is not None

    @property
    def takes_text(self) -> bool:
        return self.prompt_encoder is not None

    def _prompts(self, prompts: str | Sequence[str] | None, n: int, what: str = "prompts") -> list[str]:
        rows = [prompts or ""] * n if prompts is None or isinstance(prompts, str) else list(prompts)
        if len(rows) != n:
            raise FacediffError(f"{len(rows)} {what} for {n} images: give one, or one per image")
        return rows

    def encode(self, n: int, attrs: Sequence[Mapping[str, int] | None] | None = None,
               sketch: torch.Tensor | None = None, prompts: str | Sequence[str] | None = None) -> Condition:
        """The condition of ``n`` images: ``attrs`` (one dict per image, None = don't care), ``sketch``
        ((n or 1, 1, h, w) ink maps; None = the null sketch) and ``prompts`` (one for all or one per image;
        None = the empty prompt). Fields the model does not take are refused."""
        if attrs is not None and any(attrs) and not self.takes_attributes:
            raise FacediffError("this model is not attribute-conditional: drop the attributes"
                                + (" and describe the face in --prompt" if self.takes_text else ""))
        if prompts is not None and any(self._prompts(prompts, n)) and not self.takes_text:
            raise FacediffError("this model does not take a prompt; use a text-to-face model (kind t2i, or a "
                                "Stable Diffusion folder) or give attributes")
        if sketch is not None and not self.takes_sketch:
            raise FacediffError("this model does not take a sketch; train an ldm with [latent] sketch = true")
        fields: dict[str, torch.Tensor] = {}
        if self.takes_attributes:
            rows = list(attrs) if attrs is not None else [None] * n
            if len(rows) != n:
                raise ValueError(f"{len(rows)} attribute conditions for {n} images")
            fields["class_labels"] = attr_batch(rows, self.attributes, self.num_levels)
        if self.takes_sketch:
            s = self.sketch_size
            if sketch is None:
                sketch = torch.zeros(n, 1, s, s)
            if sketch.ndim != 4 or sketch.shape[1:] != (1, s, s):
                raise FacediffError(f"sketch map has shape {tuple(sketch.shape)}; this model takes (n, 1, {s}, {s})")
            fields["concat"] = sketch.float().expand(n, -1, -1, -1) if len(sketch) == 1 else sketch.float()
        if self.takes_text:
            fields["encoder_hidden_states"] = self.prompt_encoder(self._prompts(prompts, n))
        return Condition(**fields)

    def null(self, cond: Condition, negative: str | Sequence[str] | None = None) -> Condition:
        """The unconditional branch for ``cond``'s rows: every field at its null value (zeros; for text the
        embedding of the empty prompt, as in training, or of the ``negative`` prompts)."""
        out = {k: torch.zeros_like(v) for k, v in cond.fields().items()}
        if self.takes_text and cond.encoder_hidden_states is not None:
            rows = self._prompts(negative, len(cond.encoder_hidden_states), "negative prompts")
            out["encoder_hidden_states"] = self.prompt_encoder(rows).to(cond.encoder_hidden_states)
        return Condition(**out)

    def branches(self, cond: Condition, guidance: float, attr_scales: Mapping[str, float] | None = None,
                 negative: str | Sequence[str] | None = None) -> Branches:
        """Guidance branches for ``cond`` (all combined in ONE batched forward by the sampler).

        - unconditional model, or ``guidance <= 1`` without per-attribute scales: the plain condition
          (scale 1 is the conditional model, so scales below 1 are treated as 1);
        - classifier-free guidance (Ho & Salimans 2022): null + s (cond - null); for text models null is the
          empty prompt or the ``negative`` prompt(s);
        - per-attribute guidance (Liu et al. 2022, eq. 9): each attribute named in ``attr_scales`` is guided
          on its own; attributes given in ``cond`` without a scale of their own, and the sketch, are the
          *context*, guided jointly with ``guidance``; attributes absent from ``cond`` are don't-care:
              pred = ctx + sum_i s_i (pred(ctx + block_i) - ctx) + (1 - guidance) (null - ctx)
          where the null term is present only when guidance > 1 and some row has a context.
        """
        scales = dict(attr_scales or {})
        if scales and not self.takes_attributes:
            raise FacediffError("--attr-scales needs an attribute-conditional model")
        for name in scales:
            check_name(name, self.attributes)
        if negative is not None and not self.takes_text:
            raise FacediffError("--negative-prompt needs a text-to-face model")
        if cond.batch_size is None or (not scales and guidance <= 1.0):
            return Branches(cond)
        null = self.null(cond, negative)
        if not scales:
            return Branches(null, ((cond, float(guidance)),))
        A, L = len(self.attributes), self.num_levels
        blocks = cond.class_labels.reshape(-1, A, L)
        guided = [i for i, a in enumerate(self.attributes) if a in scales]  # the model's attribute order
        ctx_blocks = blocks.clone()
        ctx_blocks[:, guided] = 0.0
        ctx = cond.with_fields(class_labels=ctx_blocks.reshape(-1, A * L))
        deltas = []
        for i in guided:
            b = ctx_blocks.clone()
            b[:, i] = blocks[:, i]
            deltas.append((cond.with_fields(class_labels=b.reshape(-1, A * L)), float(scales[self.attributes[i]])))
        has_context = any(bool(v.abs().sum() > 0) for v in ctx.fields().values())
        if guidance > 1.0 and has_context:
            deltas.append((null, 1.0 - float(guidance)))
        return Branches(ctx, tuple(deltas))
