"""Attribute condition vectors and the classifier-free-guided denoiser.

Condition layout (DESIGN item 1): for attributes (a_1..a_A) with L levels each, the vector is the
concatenation of A one-hot blocks of length L; a zero block means "attribute not given" (don't care),
all zeros is the null condition used for the unconditional branch of classifier-free guidance.
Training drops the whole condition (cond_drop_prob) and single blocks (attr_drop_prob), so the model
knows every partial condition that per-attribute guidance asks for.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.diffusion.guidance import cfg_combine, compose
from facediff.errors import FacediffError

ModelFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_name(name: str, attributes: Sequence[str]) -> None:
    if name not in attributes:
        raise FacediffError(f"unknown attribute {name!r} (known: {', '.join(attributes)})")


def attr_vector(
    attrs: Mapping[str, int] | None,
    attributes: Sequence[str] = ATTRIBUTES,
    num_levels: int = NUM_LEVELS,
) -> torch.Tensor:
    """Concatenated one-hots, float32 (A*L,); unspecified attributes are zero blocks, None is all zeros."""
    vec = torch.zeros(len(attributes) * num_levels, dtype=torch.float32)
    for name, level in (attrs or {}).items():
        _check_name(name, attributes)
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < num_levels:
            raise FacediffError(
                f"attribute {name!r}: level {level!r} is not an integer in 0..{num_levels - 1}"
            )
        vec[list(attributes).index(name) * num_levels + level] = 1.0
    return vec


def attr_batch(
    attrs_list: Sequence[Mapping[str, int] | None],
    attributes: Sequence[str] = ATTRIBUTES,
    num_levels: int = NUM_LEVELS,
) -> torch.Tensor:
    """Stack ``attr_vector`` over a batch: float32 (B, A*L)."""
    return torch.stack([attr_vector(a, attributes, num_levels) for a in attrs_list])


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


def parse_attrs(
    text: str, attributes: Sequence[str] | None = None, num_levels: int | None = None
) -> dict[str, int]:
    """'smiling=5,eyeglasses=3' -> {'smiling': 5, 'eyeglasses': 3}; names/levels checked when given."""
    out = _parse_pairs(text, "--attrs", "smiling=5,eyeglasses=3", int)
    if attributes is not None:
        attr_vector(out, attributes, num_levels if num_levels is not None else NUM_LEVELS)
    return out


def parse_scales(text: str, attributes: Sequence[str] | None = None) -> dict[str, float]:
    """'smiling=4,age=2' -> {'smiling': 4.0, 'age': 2.0}; names checked when ``attributes`` is given."""
    out = _parse_pairs(text, "--attr-guidance", "smiling=4,age=2", float)
    for name in out if attributes is not None else ():
        _check_name(name, attributes)
    return out


def guided_denoiser(
    model_fn: ModelFn,
    cond: torch.Tensor | None,
    guidance: float,
    *,
    per_attribute_scales: Mapping[str, float] | None = None,
    attributes: Sequence[str] = ATTRIBUTES,
    num_levels: int = NUM_LEVELS,
) -> Denoise:
    """Wrap ``model_fn(x, t, cond_or_None)`` into ``denoise(x, t) -> prediction`` with guidance.

    - ``cond is None``, or ``guidance <= 1`` without per-attribute scales: one plain forward
      (``model_fn(x, t, cond)``; scale 1 is the conditional model, so scales below 1 are treated as 1).
    - Joint CFG (Ho & Salimans 2022): null and cond rows in ONE forward of batch 2B, then
      ``cfg_combine(null, cond, guidance)``.
    - Per-attribute (Liu et al. 2022): each attribute named in ``per_attribute_scales`` is guided on its
      own. Attributes given in ``cond`` without a scale of their own are the *context*: present in every
      branch, guided jointly with ``guidance``. Attributes absent from ``cond`` (zero blocks) are don't-care.
      Branches, all in ONE forward: ctx, and ctx + block_i for each guided attribute i (batch (1+k)B);
      plus the null condition when some row has a context and ``guidance > 1`` (batch (2+k)B):
          pred = cfg_combine(null, ctx, guidance) + sum_i s_i * (pred(ctx + block_i) - pred(ctx))
      With no context (every given attribute has its own scale) ctx is the null condition and this is
      exactly ``compose(null, [pred(block_i)], [s_i])``.
    """
    scales = dict(per_attribute_scales or {})
    for name in scales:
        _check_name(name, attributes)
    L = num_levels
    if cond is not None:
        if cond.ndim != 2 or cond.shape[1] < len(attributes) * L:
            raise FacediffError(
                f"condition has shape {tuple(cond.shape)}; expected (batch, {len(attributes) * L}) "
                f"for {len(attributes)} attributes x {L} levels"
            )
    guidance = float(guidance)

    def _batch(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        c = c.to(x.device)
        return c.expand(x.shape[0], -1) if c.shape[0] == 1 else c

    def _t(t: torch.Tensor | float | int, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        return t.expand(x.shape[0]) if t.ndim == 0 else t

    if cond is None or (not scales and guidance <= 1.0):

        def plain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model_fn(x, t, None if cond is None else _batch(cond, x))

        return plain

    if not scales:

        def joint(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            c = _batch(cond, x)
            t = _t(t, x)
            out = model_fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([torch.zeros_like(c), c]))
            pred_null, pred_cond = out.chunk(2)
            return cfg_combine(pred_null, pred_cond, guidance)

        return joint

    # Columns past A*L (e.g. a latent model's flattened sketch) are context: kept in every branch but the
    # null one, so they are guided jointly with ``guidance``.
    AL = len(attributes) * L
    guided = [a for a in attributes if a in scales]  # fixed order: the model's attribute order
    guided_idx = [list(attributes).index(a) for a in guided]

    def per_attribute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = _batch(cond, x)
        t = _t(t, x)
        blocks, tail = c[:, :AL].reshape(c.shape[0], len(attributes), L), c[:, AL:]
        ctx_blocks = blocks.clone()
        ctx_blocks[:, guided_idx] = 0.0
        ctx = torch.cat([ctx_blocks.reshape(c.shape[0], AL), tail], 1)
        branches = [ctx]
        for i in guided_idx:
            b = ctx_blocks.clone()
            b[:, i] = blocks[:, i]
            branches.append(torch.cat([b.reshape(c.shape[0], AL), tail], 1))
        with_null = guidance > 1.0 and bool(ctx.abs().sum() > 0)
        if with_null:
            branches.append(torch.zeros_like(c))
        n = len(branches)
        out = model_fn(torch.cat([x] * n), torch.cat([t] * n), torch.cat(branches)).chunk(n)
        pred_ctx, preds_attr = out[0], list(out[1 : 1 + len(guided)])
        pred = compose(pred_ctx, preds_attr, [scales[a] for a in guided])
        if with_null:
            # cfg_combine(null, ctx, g) - ctx added to compose(ctx, ...) = null + g (ctx - null) + sum_i ...
            pred = pred + (guidance - 1.0) * (pred_ctx - out[-1])
        return pred

    return per_attribute
