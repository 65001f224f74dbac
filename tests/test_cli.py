"""The CLI: every command has --help, user mistakes are one line on stderr with exit code 2."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facediff.cli.main import app

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in res.output, err
    return err


@pytest.mark.parametrize("cmd", [[], ["data", "synth"], ["data", "prepare"], ["data", "inspect"], ["data", "sketch"],
                                 ["train", "ddpm"], ["sample"], ["compose"], ["panorama"]])
def test_help(cmd):
    res = runner.invoke(app, cmd + ["--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_bad_config_key_is_one_line(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('kind = "ddpm"\n[train]\nlearning_rate = 1\n')
    err = _one_line_error(runner.invoke(app, ["train", "ddpm", "--config", str(cfg), "--out", str(tmp_path / "r")]))
    assert "learning_rate" in err


def test_bad_override_is_one_line(tmp_path):
    err = _one_line_error(runner.invoke(app, ["train", "ddpm", "--set", "train.lr", "--out", str(tmp_path / "r")]))
    assert "section.key=value" in err


def test_sample_from_run_and_errors(tiny_run, tmp_path):
    out = tmp_path / "g.png"
    res = runner.invoke(app, ["sample", "--model", str(tiny_run), "--n", "4", "--steps", "3", "--attrs", "smiling=5",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert Image.open(out).size[0] > 16
    out = tmp_path / "g2.png"  # a new name: an existing --out is an error of its own (test_request.py)
    err = _one_line_error(runner.invoke(app, ["sample", "--model", str(tiny_run), "--attrs", "smilng=5",
                                              "--out", str(out)]))
    assert "smilng" in err
    err = _one_line_error(runner.invoke(app, ["sample", "--model", str(tmp_path / "nowhere"), "--out", str(out)]))
    assert "no such file" in err
    err = _one_line_error(runner.invoke(app, ["sample", "--model", str(tiny_run), "--sampler", "plms",
                                              "--out", str(out)]))
    assert "plms" in err


def test_sample_sweep_grid_shape(tiny_run, tmp_path):
    out = tmp_path / "sweep.png"
    res = runner.invoke(app, ["sample", "--model", str(tiny_run), "--sweep", "--steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    w, h = Image.open(out).size
    assert w > h  # 6 levels across, 5 attributes down, plus labels


def test_data_synth_and_inspect(tmp_path):
    out = tmp_path / "ds"
    res = runner.invoke(app, ["data", "synth", "--out", str(out), "--n", "12", "--size", "16"])
    assert res.exit_code == 0, res.output
    assert np.load(out / "images.npy").shape == (12, 16, 16, 3)
    err = _one_line_error(runner.invoke(app, ["data", "synth", "--out", str(out), "--n", "12", "--size", "16"]))
    assert "already" in err
    res = runner.invoke(app, ["data", "inspect", str(out), "--out", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sheet.png").is_file()
    _one_line_error(runner.invoke(app, ["data", "inspect", str(tmp_path)]))


def test_bundled_default_model_generates(tmp_path):
    """The README's first command: no --model means the bundled attribute-conditional model."""
    out = tmp_path / "faces.png"
    res = runner.invoke(app, ["sample", "--sweep", "--steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from facediff.pipelines.load import load_pipeline

    bundle = load_pipeline(None)
    assert bundle.conditional and bundle.attributes == ("bangs", "eyeglasses", "beard", "smiling", "age")
    assert Image.open(out).size[0] > 6 * bundle.sample_size


def test_choices_come_from_the_registry_and_bad_ones_are_one_line(tmp_path):
    from facediff import registry

    help_text = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "250"}).output
    assert all(s in help_text for s in registry.SAMPLERS)
    err = _one_line_error(runner.invoke(app, ["sample", "--sampler", "plms", "--out", str(tmp_path / "x.png")]))
    assert "plms" in err and "dpmpp" in err
    err = _one_line_error(runner.invoke(app, ["sample", "--n", "abc"]))
    assert "--n" in err
    err = _one_line_error(runner.invoke(app, ["train", "ddpm", "--config", "no-such-preset", "--out", str(tmp_path)]))
    assert "no-such-preset" in err and "tiny-ddpm" in err  # the known presets are listed


def test_unexpected_exception_is_one_line_with_a_log(monkeypatch, capsys):
    import sys

    from facediff import api
    from facediff.cli import main as cli_main

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(api, "sample", broken)
    monkeypatch.setattr(sys, "argv", ["facediff", "sample", "--n", "1"])
    with pytest.raises(SystemExit) as e:
        cli_main.main()
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and err.startswith("error: unexpected RuntimeError: boom") and "\n" not in err
    log = Path(err.split("full traceback in ")[1].split(";")[0])
    assert "Traceback" in log.read_text() and "boom" in log.read_text()
