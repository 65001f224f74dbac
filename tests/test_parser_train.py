"""The face parser (mask oracle): trains through the one loop, resumes exactly, loads; the bundled one parses."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from facediff.data.parsing import PARSING_CLASSES, to_parsing
from facediff.data.synth import render_batch, write_synth
from facediff.errors import FacediffError
from facediff.metrics.parsing import mean_iou, parsing_fidelity
from facediff.models.parser import FaceParser, ParserConfig, bundled_parser_dir, load_bundled_parser, load_parser
from facediff.registry import KINDS
from facediff.training.parser import train_parser

TINY = ParserConfig(block_out_channels=(8, 16), norm_num_groups=4)
OPTS = dict(batch_size=4, size=16, lr=2e-3, eval_every=2, heldout_n=4, heldout_sizes=(16, 8), config=TINY,
            mixed_precision="no")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return write_synth(tmp_path_factory.mktemp("parser") / "ds", n=24, size=16, style="mixed", seed=0)


def test_parser_trains_resumes_and_loads(tmp_path, faces):
    assert "parser" in KINDS
    full = train_parser(faces, tmp_path / "full", steps=4, **OPTS)
    assert full["steps"] == 4 and [r["step"] for r in full["curve"]] == [2, 4]
    assert set(full["heldout"]) == {"16", "8", "source"} and full["heldout"]["8"]["size"] == 8
    assert set(full["val"]["per_class"]) == set(PARSING_CLASSES)
    run = tmp_path / "full"
    assert (run / "state").is_dir() and (run / "metrics.jsonl").is_file()
    assert json.loads((run / "config.json").read_text())["kind"] == "parser"
    # the run as if killed after its step-2 checkpoint, resumed: it ends with the same weights
    half = tmp_path / "half"
    shutil.copytree(run, half)
    for gone in (half / "state" / "step-0000004", half / "parser", half / "metrics.json"):
        shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    resumed = train_parser(faces, half, steps=4, resume=True, **OPTS)
    assert [r["step"] for r in resumed["curve"]] == [2, 4]
    a, b = (load_file(str(r / "parser" / "model.safetensors")) for r in (run, half))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = load_parser(run)  # the run directory or its parser/ folder
    assert isinstance(model, FaceParser) and not model.training and model.config.size == 16
    for side in (16, 8, 32):  # any input side: the output has the input's H x W
        assert model(torch.zeros(2, 3, side, side)).shape == (2, len(PARSING_CLASSES), side, side)
    faces8 = render_batch(5, 0, 3, 8, "mixed")
    pred = model.parse(np.stack([f.image for f in faces8]))
    assert pred.shape == (3, 8, 8) and pred.dtype == np.uint8
    res = parsing_fidelity(np.stack([f.image for f in faces8]), np.stack([to_parsing(f.mask) for f in faces8]), model)
    assert 0.0 <= res["miou"] <= 1.0 and set(res["per_class"]) == set(PARSING_CLASSES) and res["n"] == 3


def test_parser_errors_are_one_line(tmp_path, faces):
    from facediff.cli.main import app

    no_masks = tmp_path / "nomasks"
    no_masks.mkdir()
    for name in ("images.npy", "labels.jsonl", "manifest.json"):
        (no_masks / name).write_bytes((faces / name).read_bytes())
    res = CliRunner().invoke(app, ["train", "parser", "--data", str(no_masks), "--out", str(tmp_path / "r"),
                                   "--steps", "1"])
    assert res.exit_code == 2 and "masks" in res.output and len(res.output.strip().splitlines()) == 1, res.output
    with pytest.raises(FacediffError) as e:
        load_parser(tmp_path)
    assert "face parser" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"format": "facediff-parser/1", "widths": [4]}))
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    with pytest.raises(FacediffError) as e:
        load_parser(tmp_path / "bad")
    assert "widths" in str(e.value)


BUNDLED = bundled_parser_dir()


@pytest.mark.skipif(not (BUNDLED / "model.safetensors").is_file(), reason="no bundled face parser")
def test_bundled_parser_reads_fresh_synthfaces():
    size = sum(p.stat().st_size for p in BUNDLED.iterdir())
    assert size < 2_000_000, size
    metrics = json.loads((BUNDLED / "metrics.json").read_text())
    assert "facediff train parser" in metrics["command"]
    model = load_bundled_parser()
    assert model.config.classes == PARSING_CLASSES
    faces = render_batch(424242, 0, 32, 64, "mixed")  # a seed no training set used
    images, masks = np.stack([f.image for f in faces]), np.stack([to_parsing(f.mask) for f in faces])
    assert mean_iou(model.parse(images), masks, len(PARSING_CLASSES)) >= 0.8
    res = parsing_fidelity(images, masks)  # None = the bundled parser
    assert res["miou"] >= 0.8
    # scrambled masks (every face paired with another face's mask) must score far lower
    assert parsing_fidelity(images, np.roll(masks, 1, axis=0), model)["miou"] < res["miou"] - 0.2
