"""Shared fixtures: tiny SynthFaces sets and a tiny trained model, built once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def synth16(tmp_path_factory) -> Path:
    """64 human SynthFaces at 16x16 (a prepared data set)."""
    from facediff.data.synth import write_synth

    return write_synth(tmp_path_factory.mktemp("synth16") / "ds", n=64, size=16, style="human", seed=0)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synth16) -> Path:
    """A finished tiny attribute-conditional run (preset tiny-ddpm, shortened)."""
    from facediff import api

    out = tmp_path_factory.mktemp("runs") / "tiny"
    api.train("ddpm", "tiny-ddpm", out,
              overrides=[f"data.path={synth16}", "train.max_steps=6", "train.checkpoint_every=3",
                         "train.log_every=1"])
    return out
