"""``train(kind, config, out)``: the resolved run config of a new or resumed run, handed to its trainer.

The one place that maps a kind (``facediff.registry.KINDS``) to its trainer; api, CLI and experiments call it.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from facediff.config import RunConfig, apply_overrides, load_config, load_config_json
from facediff.errors import FacediffError
from facediff.progress import Progress
from facediff.registry import KINDS, check_choice


def run_config(kind: str, config: str | Path | RunConfig | None, out: Path, overrides: list[str] | None,
               resume: bool) -> RunConfig:
    """The config a run trains with: the run's config.json (+ overrides) when resuming, else ``config`` (a
    RunConfig, a TOML path or a preset name; None = the defaults of ``kind``) + overrides."""
    if resume:
        if not (out / "config.json").is_file():
            raise FacediffError(f"--resume: {out} holds no run (no config.json)")
        cfg = apply_overrides(load_config_json(out / "config.json"), overrides)
    elif isinstance(config, RunConfig):
        cfg = apply_overrides(config, overrides)
    else:
        cfg = load_config(config, overrides)
        if config is None:
            cfg = replace(cfg, kind=kind)  # defaults for this kind
    if cfg.kind != kind:
        raise FacediffError(f"the config is for kind = {cfg.kind!r}, not {kind!r}")
    return cfg


def train(kind: str, config: str | Path | RunConfig | None, out: str | Path, *, overrides: list[str] | None = None,
          resume: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Train a model of ``kind`` into run directory ``out``; returns the run summary."""
    check_choice("kind", kind, KINDS)
    if kind in ("estimator", "parser", "text_encoder"):  # training/estimator.py, parser.py, text_encoder.py
        raise FacediffError(f"kind {kind!r} takes its own options: use `facediff train {kind.replace('_', '-')} "
                            "--data ...`")
    out = Path(out)
    cfg = run_config(kind, config, out, overrides, resume)
    if kind == "autoencoder":
        from facediff.training.autoencoder import train_autoencoder

        return train_autoencoder(cfg, out, resume=resume, progress=progress)
    from facediff.training.diffusion import train_diffusion

    return train_diffusion(cfg, out, resume=resume, progress=progress)
