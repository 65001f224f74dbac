"""Condition kinds as plug-ins: one protocol (``ConditionKind``) and one registry (``KINDS``).

A kind is what a model can be conditioned on (attribute levels, a sketch, a prompt, ...). It says which
*route* its encoding takes into the network — the three routes of diffusers' U-Nets, as k-diffusion passes
them in ``extra_args``:

- ``global``: a vector added to the timestep embedding (AdaGN scale-shift; ``Condition.class_labels``); the
  vectors of all global kinds are concatenated in the model's declared order;
- ``sequence``: tokens for cross-attention (``Condition.encoder_hidden_states``); at most one per model;
- ``spatial``: maps concatenated to x_t as input channels (``Condition.concat``); the channels of all spatial
  kinds are concatenated in declared order (``spatial_layout``: computed once, saved in the model's config).

Everything outside ``conditioning/`` works through this protocol (the ``Conditioner`` iterates over a model's
kinds); a new kind is one module with one subclass, registered by name in ``conditioning/registry.py`` (or
with ``@register`` from a user's own module) — see docs/extending.md.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from facediff.errors import FacediffError

ROUTES: tuple[str, ...] = ("global", "sequence", "spatial")
FIELD_OF_ROUTE = {"global": "class_labels", "sequence": "encoder_hidden_states", "spatial": "concat"}


@dataclass(frozen=True)
class Grid:
    """Where a model's conditions live: the sample size in pixels and the side of the diffusion grid
    (latent side for latent models; equal to ``pixels`` for pixel models)."""

    pixels: int  # side of the generated image
    side: int  # side of x_t (the grid spatial maps are made at)


class ConditionKind:
    """The protocol of a condition kind (subclass it and ``@register`` it).

    One instance per model holds the kind's settings for that model (e.g. which attributes, how many
    channels). Values: ``parse`` turns what a user gives (CLI text, a TOML value, a Python object) into the
    kind's value; ``encode`` turns one value per image (None = the null value) into the tensor of its route.
    """

    name: ClassVar[str] = ""  # the registry key, and the key in model configs, layouts and requests
    route: ClassVar[str] = ""  # global | sequence | spatial
    user_help: ClassVar[str] = ""  # what a user value looks like (one line, for --help and errors)
    absent: ClassVar[str] = ""  # the error when a model without this kind is given a value (default: generic)
    null_label: ClassVar[str] = "its null value"  # what the null value is, for the note when none is given
    fidelity_metric: ClassVar[str] = ""  # the eval metric (registry.METRICS) scoring how faces follow the values
    context: ClassVar[bool] = False  # never dropped in training, kept in guidance's null branch (a layout)

    # -- the model's declaration -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The settings saved in the model's config (JSON); ``from_description`` reads them back."""
        return {"kind": self.name}

    @classmethod
    def from_description(cls, description: dict[str, Any], grid: Grid, **model: Any) -> "ConditionKind":
        """The kind of a saved model (``model``: components some kinds need, e.g. the prompt encoder)."""
        return cls()

    @classmethod
    def from_config(cls, cfg: Any, grid: Grid) -> "ConditionKind":
        """The kind a training run declares (``cfg``: its RunConfig; read your settings from it)."""
        return cls()

    @property
    def width(self) -> int:
        """global: the vector's width; spatial: its channels; sequence: the token width."""
        raise NotImplementedError

    # -- values ----------------------------------------------------------------------------------------
    def parse(self, value: Any, where: str = "") -> Any:
        """A user's value, checked (one-line FacediffError naming ``where``, the value and what to give)."""
        return value

    def prepare(self, value: Any, grid: Grid) -> Any:
        """A parsed value in the form ``encode`` takes, made once per distinct value (e.g. a file read)."""
        return value

    def encode(self, values: Sequence[Any | None], grid: Grid) -> torch.Tensor:
        """One value per image (None: the null value) -> (n, width) | (n, L, width) | (n, width, side, side)."""
        raise NotImplementedError

    def null(self, n: int, grid: Grid, negative: Sequence[Any | None] | None = None) -> torch.Tensor:
        """The null condition of n images (classifier-free dropout and guidance); ``negative``: values the
        guidance steers away from instead, for kinds that have them (a negative prompt)."""
        if negative is not None and any(v is not None for v in negative):
            raise FacediffError(f"{self.name}: this condition has no negative value")
        return self.encode([None] * n, grid)

    def read_negatives(self, values: list[Any | None], negatives: list[Any | None]):
        """(values, negatives, notes): how this kind reads its values beside negative ones, before encoding; as
        given here (the text kind may move a negative prompt's words into the prompt)."""
        return values, negatives, []

    def dataset_values(self, dataset: Any, rows: Sequence[int]) -> list[Any | None]:
        """The values of prepared-data-set ``rows`` (training batches, evaluation conditions)."""
        raise FacediffError(f"{self.name}: this condition cannot be read from a prepared data set")

    def place(self, value: Any, box: tuple[int, int, int, int] | None, grid: Grid, canvas: tuple[int, int]) -> Any:
        """Composition: the value of a region with pixel ``box`` on a canvas of (height, width) pixels, as the
        value for the whole canvas. Global and sequence conditions hold for the region as they are."""
        return value

    def region_default(self, box: tuple[int, int, int, int] | None) -> Any:
        """Composition: the value of a region (pixel ``box``; None: the background) that gives none (None: the
        null value)."""
        return None

    def panorama_default(self) -> Any:
        """Panoramas: the value over the whole canvas when the user gives none (None: the null value)."""
        return None

    def encode_canvas(self, values: Sequence[Any | None], grid: Grid, canvas: tuple[int, int]) -> torch.Tensor:
        """Spatial kinds: one placed map per image (None: blank) -> (n, width, H, W) on the canvas's grid."""
        if self.route != "spatial":
            return self.encode(values, grid)
        f = grid.pixels // grid.side
        blank = torch.zeros(1, self.width, canvas[0] // f, canvas[1] // f)
        return torch.cat([blank if v is None else v for v in values])

    def own_drop_prob(self, cfg: Any) -> float | None:
        """Training: p of dropping this condition alone (besides [diffusion] cond_drop_prob, which drops every
        condition of a sample together); None = no draw of its own."""
        return None

    def part_drop_prob(self, cfg: Any) -> float:
        """Training: p of dropping each guidance part alone (per-part guidance needs it)."""
        return 0.0

    def guidance_parts(self) -> dict[str, slice]:
        """Global kinds: named slices of the vector that can be guided one by one (per-part guidance)."""
        return {}

    def legacy_config(self) -> dict[str, Any]:
        """Built-in kinds: the pipeline-config keys facediff read before ``conditions`` existed."""
        return {}

    def label(self, value: Any) -> str:
        """A short text for the value (PNG metadata, UI)."""
        return str(value)

    def ui_control(self) -> dict[str, Any]:
        """How the web UI asks for a value (``facediff.ui`` builds the input from this, never from the name):
        ``{"control": C, "help": ...}`` with C one of ``levels`` (+ ``parts``, ``levels``: a slider per part,
        value {part: level}), ``prompt`` (a text and a negative text), ``drawing`` (dark ink on light paper,
        saved as a PNG), ``paint`` (+ ``palette`` {label: "#rrggbb"}: regions painted in fixed colours, saved
        as a PNG), ``image`` (an uploaded PNG) or ``text`` (a line parsed by ``parse``)."""
        return {"control": "image" if self.route == "spatial" else "text", "help": self.user_help}


def paste_into_box(make: Callable[[Grid], torch.Tensor], box: tuple[int, int, int, int] | None, grid: Grid,
                   canvas: tuple[int, int], what: str) -> torch.Tensor:
    """Composition of a spatial kind: the (1, C, s, s) map that ``make`` builds for a square grid as large as
    the region's pixel ``box``, area-resized into the box on a blank canvas map (the canvas's latent grid)."""
    from torch.nn import functional as F

    if box is None:
        raise FacediffError(f"a {what} needs a box to be drawn into")
    f = grid.pixels // grid.side
    x0, y0, x1, y1 = (int(v) // f for v in box)
    side = max(x1 - x0, y1 - y0)
    m = make(Grid(side * f, side))
    out = torch.zeros(1, m.shape[1], canvas[0] // f, canvas[1] // f)
    out[..., y0:y1, x0:x1] = F.interpolate(m, size=(y1 - y0, x1 - x0), mode="area")
    return out


def spatial_layout(kinds: Sequence[ConditionKind]) -> list[tuple[str, int]]:
    """(name, channels) of the spatial kinds in input-channel order after x_t's own channels."""
    return [(k.name, k.width) for k in kinds if k.route == "spatial"]
