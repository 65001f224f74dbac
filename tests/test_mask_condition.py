"""The face-parsing mask condition, built through the plug-in path (conditioning/mask.py + one registry entry):
it trains (pixel and latent), samples from a mask PNG (class ids or palette colours), composes per region and
evaluates like the other kinds."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facediff import api
from facediff.conditioning.kinds import Grid
from facediff.conditioning.mask import mask_to_map, read_mask
from facediff.conditioning.registry import kind_class
from facediff.config import load_config
from facediff.data.parsing import NUM_PARSING_CLASSES, colorize
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask")
    data = api.synth(root / "data", n=48, size=16, style="mixed", seed=5)
    cfg = load_config("tiny-ddpm")
    cfg = replace(cfg, model=replace(cfg.model, conditioning="none", conditions=("mask",)),
                  data=replace(cfg.data, path=str(data)), train=replace(cfg.train, max_steps=6))
    api.train("ddpm", cfg, root / "run")
    return root


def test_mask_maps_are_class_coverage():
    ids = np.zeros((8, 8), np.uint8)
    ids[:4] = 2  # top half hair
    m = mask_to_map(ids, 2)
    assert m.shape == (1, NUM_PARSING_CLASSES, 2, 2)
    torch.testing.assert_close(m.sum(1), torch.ones(1, 2, 2))  # shares of one cell sum to 1
    assert float(m[0, 2, 0, 0]) == 1.0 and float(m[0, 0, 1, 1]) == 1.0 and float(m[0, 2, 1, 0]) == 0.0


def test_user_masks_read_as_ids_or_palette_colours(tmp_path):
    ids = np.random.default_rng(0).integers(0, NUM_PARSING_CLASSES, (16, 16)).astype(np.uint8)
    Image.fromarray(ids, "L").save(tmp_path / "ids.png")
    Image.fromarray(colorize(ids).astype(np.uint8)).save(tmp_path / "colours.png")
    assert np.array_equal(read_mask(tmp_path / "ids.png", 16), ids)
    assert np.array_equal(read_mask(tmp_path / "colours.png", 16), ids)
    Image.fromarray(np.full((16, 16), 40, np.uint8), "L").save(tmp_path / "bad.png")
    with pytest.raises(FacediffError, match="0-8"):
        read_mask(tmp_path / "bad.png", 16)
    with pytest.raises(FacediffError, match="no such file"):
        read_mask(tmp_path / "missing.png", 16)


def test_trains_exports_and_samples_from_a_mask(mask_run, tmp_path):
    index = json.loads((mask_run / "run" / "export" / "model_index.json").read_text())
    assert index["conditions"] == [{"kind": "mask"}]
    unet = json.loads((mask_run / "run" / "export" / "unet" / "config.json").read_text())
    assert unet["in_channels"] == 3 + NUM_PARSING_CLASSES  # the channel layout: x_t, then the mask's classes
    ds = PreparedDataset(mask_run / "data")
    Image.fromarray(colorize(ds.parsing([0])[0]).astype(np.uint8)).save(tmp_path / "m.png")
    Image.fromarray(colorize(ds.parsing([1])[0]).astype(np.uint8)).save(tmp_path / "m2.png")
    run = str(mask_run / "run")
    a = api.sample(run, conditions={"mask": str(tmp_path / "m.png")}, n=2, steps=3)
    b = api.sample(run, conditions={"mask": str(tmp_path / "m2.png")}, n=2, steps=3)
    assert not np.array_equal(a["images"], b["images"]) and not any(n.startswith("mask:") for n in a["notes"])
    blank = api.sample(run, n=1, steps=2)
    assert any(n.startswith("mask: none given") for n in blank["notes"])
    out = tmp_path / "cli.png"
    from typer.testing import CliRunner

    from facediff.cli.main import app

    res = CliRunner().invoke(app, ["sample", "--model", run, "--cond", f"mask={tmp_path / 'm.png'}", "--n", "2",
                                   "--steps", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(out))[2:18, 2:18], a["images"][0])  # first tile (pad 2)
    assert "mask=" in Image.open(out).text["parameters"]


def test_composes_and_evaluates_with_masks(mask_run, tmp_path):
    ds = PreparedDataset(mask_run / "data")
    Image.fromarray(colorize(ds.parsing([2])[0]).astype(np.uint8)).save(tmp_path / "face.png")
    layout = {"width": 32, "height": 16, "steps": 2, "stride": 16,
              "region": [{"box": [0, 0, 16, 16], "mask": None, "conditions": {"mask": str(tmp_path / "face.png")}}]}
    layout["region"][0].pop("mask")
    res = api.compose(str(mask_run / "run"), layout)
    assert res["images"].shape == (1, 16, 32, 3)
    metrics = api.evaluate(str(mask_run / "run"), mask_run / "data", n=8, steps=2, metrics="fd,parsing")
    assert "fd_oracle" in metrics and 0.0 <= metrics["parsing"]["miou"] <= 1.0 and metrics["parsing"]["n"] == 8
    # the ceiling: real faces read against their own maps beat a 6-step model's noise
    assert metrics["floor_real_vs_real"]["parsing"]["miou"] > metrics["parsing"]["miou"]


def test_the_mask_kind_is_registered_and_refused_by_other_models(tiny_run):
    assert kind_class("mask").route == "spatial"
    with pytest.raises(FacediffError, match="does not take a face-parsing mask"):
        api.sample(str(tiny_run), conditions={"mask": np.zeros((16, 16), np.uint8)}, n=1, steps=2)
    assert kind_class("mask")().encode([None], Grid(16, 4)).shape == (1, NUM_PARSING_CLASSES, 4, 4)


def test_a_latent_model_trains_on_masks(mask_run, tmp_path):
    data = mask_run / "data"
    api.train("autoencoder", "tiny-vq", tmp_path / "vq", overrides=[f"data.path={data}", "train.max_steps=2"])
    api.train("ldm", "tiny-ldm", tmp_path / "ldm",
              overrides=[f"data.path={data}", f"latent.autoencoder={tmp_path / 'vq'}", "train.max_steps=2",
                         "latent.sketch=false", 'model.conditions=["mask"]'])
    pipe = api.load(tmp_path / "ldm")
    assert [k.name for k in pipe.condition_kinds] == ["attributes", "mask"] and pipe.is_latent
    assert pipe.unet.config.in_channels == pipe.latent_shape[0] + NUM_PARSING_CLASSES
    ds = PreparedDataset(data)
    res = api.sample(str(tmp_path / "ldm"), conditions={"mask": ds.parsing([0])[0]}, attrs="smiling=5", n=1, steps=2)
    assert res["images"].shape == (1, 16, 16, 3)


def test_the_bundled_mask_model_is_picked_for_a_mask(tmp_path):
    """Without --model, `facediff sample --mask FILE` runs the bundled model that takes masks, and says so; the
    default (attribute) model is still what runs without one."""
    from typer.testing import CliRunner

    from facediff.cli.main import app
    from facediff.request import Request

    ids = np.zeros((64, 64), np.uint8)
    ids[8:60, 12:52] = 1  # skin
    ids[4:24, 10:54] = 2  # hair
    Image.fromarray(ids, "L").save(tmp_path / "m.png")
    res = CliRunner().invoke(app, ["sample", "--mask", str(tmp_path / "m.png"), "--n", "1", "--steps", "2",
                                   "--out", str(tmp_path / "f.png")])
    assert res.exit_code == 0, res.output
    assert "mask_model" in res.output
    req = Request.from_png(tmp_path / "f.png")
    assert req.model_name == "mask_model" and req.conditions == {"mask": str(tmp_path / "m.png")}
    plain = api.sample(None, n=1, steps=2)
    assert plain["request"].model_name == "default_model"


def test_ui_compose_gives_each_region_its_uploaded_mask(mask_run, tmp_path):
    """The Compose tab's "sketch / mask" column: a file name routes an uploaded map to the model's image kind
    for that region only; the request names the stored copy, and the picture changes with the map."""
    from types import SimpleNamespace

    from facediff.ui.limits import Limits
    from facediff.ui.tabs import _saved_uploads, build_layout, image_conditions

    ds = PreparedDataset(mask_run / "data")
    Image.fromarray(colorize(ds.parsing([2])[0]).astype(np.uint8)).save(tmp_path / "face.png")
    server = SimpleNamespace(limits=Limits())
    uploads = _saved_uploads([str(tmp_path / "face.png")], tmp_path / "inputs", server)
    assert list(uploads) == ["face.png"] and Path(uploads["face.png"]).parent == tmp_path / "inputs"
    left, right = np.zeros((16, 32), np.uint8), np.zeros((16, 32), np.uint8)
    left[:, :16], right[:, 16:] = 255, 255
    common = dict(width=32, height=16, folder=tmp_path / "inputs", steps=2, sampler="ddim", guidance=3.0, seed=0,
                  bootstrap=0.0, uploads=uploads, image_kinds=["mask"])
    rows = [["red", "", "", "face.png"], ["green", "", "", ""]]
    layout = build_layout([("red", left), ("green", right)], rows, ("", ""), **common)
    assert layout.regions[0].conditions == {"mask": uploads["face.png"]} and layout.regions[1].conditions == {}
    with_map = api.compose(str(mask_run / "run"), layout)["images"]
    without = api.compose(str(mask_run / "run"), build_layout([("red", left), ("green", right)],
                                                              [r[:3] for r in rows], ("", ""), **common))["images"]
    assert np.abs(with_map[0, :, :16].astype(int) - without[0, :, :16]).mean() > 0.5  # the mapped region changed
    with pytest.raises(FacediffError, match="no uploaded file is named 'other.png'"):
        image_conditions("other.png", uploads, ["mask"], "red")
    with pytest.raises(FacediffError, match="takes no sketch or mask"):
        image_conditions("face.png", uploads, [], "red")
    with pytest.raises(FacediffError, match="takes no 'sketch'; it takes mask"):
        image_conditions("sketch=face.png", uploads, ["mask"], "red")
    assert image_conditions("mask=face.png", uploads, ["mask", "sketch"], "red") == {"mask": uploads["face.png"]}
