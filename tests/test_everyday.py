"""Everyday CLI behaviour: `--autoencoder` takes a Stable Diffusion folder or its vae/, time-budgeted progress
shows the budget, progress lines name their command, the README's set-up commands are what CI runs."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facediff.errors import FacediffError

ROOT = Path(__file__).resolve().parents[1]


def test_autoencoder_accepts_an_sd_folder_or_its_vae(tmp_path):
    from tiny_sd import build_tiny_sd

    from facediff.training.autoencoder import load_autoencoder

    sd = tmp_path / "sd"
    build_tiny_sd("f4-eps", tmp_path).save_pretrained(sd, safe_serialization=True)
    a, b = load_autoencoder(sd), load_autoencoder(sd / "vae")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(FacediffError, match="its vae/ folder"):
        load_autoencoder(sd / "unet")
    with pytest.raises(FacediffError, match="a file"):
        load_autoencoder(sd / "model_index.json")


def test_budgeted_progress_shows_the_budget_not_the_step_cap():
    from facediff.cli.progress import _count

    text, frac = _count(271, 100000, budget_s=600.0, elapsed_s=150.0)
    assert text == "2:30 / 10:00 (25 %), step 271" and frac == pytest.approx(0.25)
    text, frac = _count(50, 100, budget_s=None, elapsed_s=None)
    assert text == "50/100" and frac == 0.5
    # the step cap still ends a budgeted run first when it is reached first
    assert _count(90, 100, budget_s=600.0, elapsed_s=60.0)[1] == pytest.approx(0.9)


def test_plain_progress_lines_name_the_command_and_the_budget(capsys, monkeypatch):
    from facediff.cli import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)
    rep = progress.Reporter()
    rep("train ddpm", 271, 100000, loss=0.5, budget_s=600.0, elapsed_s=150.0)
    rep("panorama", 3, 25)
    rep.close()
    err = capsys.readouterr().err
    assert "train ddpm: 2:30 / 10:00 (25 %), step 271 loss=0.5" in err
    assert "panorama: 3/25 (12 %)" in err


def test_panorama_reports_progress_as_panorama(tiny_run):
    from facediff import api

    seen = []
    api.panorama(str(tiny_run), width=32, steps=2, progress=lambda task, d, t, **kw: seen.append(task))
    assert seen and set(seen) == {"panorama"}


def test_readme_setup_commands_are_what_ci_runs():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from readme_commands import setup_command
    finally:
        sys.path.pop(0)
    main, test = setup_command("main"), setup_command("test")
    assert main.startswith("bash scripts/install.sh && facediff sample")
    assert test == "bash scripts/install.sh --test && python3 -m pytest -q tests"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py main" in ci and "readme_commands.py test" in ci and "venv" in ci
    with pytest.raises(SystemExit, match="no ```bash block"):
        setup_command("main", "nothing here")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_commands.py"), "test"], capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == test


def test_a_negative_prompt_alone_picks_the_bundled_text_model(tmp_path):
    """`facediff sample --negative-prompt glasses` (no --model, no prompt) is text the attribute model cannot read:
    the bundled text model runs, says so, and reads the bare word as the prompt's "no glasses"."""
    from typer.testing import CliRunner

    from facediff.cli.main import app
    from facediff.request import Request

    res = CliRunner().invoke(app, ["sample", "--negative-prompt", "glasses", "--n", "1", "--steps", "2",
                                   "--out", str(tmp_path / "f.png")])
    assert res.exit_code == 0, res.output
    assert "text_model" in res.output and "'no glasses' added to the prompt" in res.output
    req = Request.from_png(tmp_path / "f.png")
    assert req.model_name == "text_model" and req.negative_prompt == "glasses" and req.prompt is None
