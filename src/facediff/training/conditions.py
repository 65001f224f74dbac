"""The conditions of a diffusion training run, for every kind its config declares (``training_kinds``): each
kind's values of every training image encoded once into a table (spatial maps also mirrored, for the flip
augmentation), classifier-free-guidance dropout per step, and the export's declaration.

Dropout (Ho & Salimans 2022): ``drop_all`` (p = [diffusion] cond_drop_prob) replaces every condition of a sample
by its null value; a kind may also drop alone (``own_drop_prob``, e.g. the sketch) and drop each of its guidance
parts alone (``part_drop_prob``, e.g. each attribute), so that per-part guidance finds the partial conditions
it asks for. The draws are made per kind in declared order from the step's generator.
"""
from __future__ import annotations

from typing import Any

import torch

from facediff.conditioning.kinds import FIELD_OF_ROUTE, Grid
from facediff.conditioning.registry import training_kinds
from facediff.config import RunConfig


class TrainingConditions:
    def __init__(self, cfg: RunConfig, data, grid: Grid):
        self.cfg, self.grid = cfg, grid
        self.kinds = training_kinds(cfg, grid)
        rows = list(range(data.n))
        self.tables: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        for k in self.kinds:
            values = k.dataset_values(data.dataset, rows)
            table = k.encode([None if v is None else k.prepare(k.parse(v), grid) for v in values], grid).float()
            flipped = table.flip(-1) if k.route == "spatial" else None  # the map of the mirrored image
            self.tables[k.name] = (table, flipped)
        self._values = {k.name: k.dataset_values(data.dataset, rows[:8]) for k in self.kinds}

    def widths(self) -> tuple[int, int]:
        """(spatial channels added to the U-Net input, width of the global vector)."""
        return (sum(k.width for k in self.kinds if k.route == "spatial"),
                sum(k.width for k in self.kinds if k.route == "global"))

    def draw_drops(self, n: int, drop_all: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        draws = {}
        for k in self.kinds:
            parts = k.guidance_parts()
            if parts:
                draws[f"drop_parts:{k.name}"] = torch.rand(n, len(parts), generator=gen) < k.part_drop_prob(self.cfg)
            p = k.own_drop_prob(self.cfg)
            if p is not None:
                draws[f"drop_own:{k.name}"] = drop_all | (torch.rand(n, generator=gen) < p)
        return draws

    def batch(self, idx: torch.Tensor, flip: torch.Tensor, drops: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The condition fields of training rows ``idx`` (mirrored where ``flip``), with this step's dropout."""
        fields: dict[str, list[torch.Tensor]] = {}
        drop_all = drops["drop_all"]
        for k in self.kinds:
            table, flipped = self.tables[k.name]
            x = table[idx]
            if flipped is not None:
                x = torch.where(flip.reshape(-1, *[1] * (x.ndim - 1)), flipped[idx], x)
            dropped = drops.get(f"drop_own:{k.name}", drop_all)
            if k.context:  # never dropped (a layout): the null branch of guidance keeps it too
                dropped = torch.zeros_like(dropped)
            parts = drops.get(f"drop_parts:{k.name}")
            if parts is not None:  # each part alone (null part = zero block)
                x = x.clone()
                for j, sl in enumerate(k.guidance_parts().values()):
                    x[parts[:, j], sl] = 0.0
            null = k.null(len(x), self.grid).float() if k.route != "spatial" else torch.zeros_like(x)
            x = torch.where(dropped.reshape(-1, *[1] * (x.ndim - 1)), null, x)
            fields.setdefault(FIELD_OF_ROUTE[k.route], []).append(x)
        return {f: torch.cat(xs, 1) for f, xs in fields.items()}

    def pipeline_config(self) -> dict[str, Any]:
        """FacediffPipeline config of the export: the declared kinds (their order is the channel / vector
        layout), plus the keys older facediff versions read for the built-in kinds."""
        config: dict[str, Any] = {"conditions": [k.describe() for k in self.kinds]} if self.kinds else {}
        for k in self.kinds:
            config.update(k.legacy_config())
        return config

    def first_values(self, n: int) -> dict[str, list[Any]]:
        """The first training rows' values of every kind (sample grids)."""
        return {name: v[:n] for name, v in self._values.items()}

    def spatial_maps(self, n: int) -> torch.Tensor | None:
        """(n, C, h, w) spatial maps of the first training rows (None without spatial kinds)."""
        maps = [self.tables[k.name][0][:n] for k in self.kinds if k.route == "spatial"]
        return torch.cat(maps, 1) if maps else None
