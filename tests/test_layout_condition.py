"""The "layout" condition (where faces are), a context kind: never dropped in training, kept in guidance's null
branch; a composed region's face fills its box, the background gets none (issue 26, section 3)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from facediff import api
from facediff.conditioning.kinds import Grid
from facediff.conditioning.layout import PORTRAIT, LayoutKind, faces_of, layout_map
from facediff.config import load_config, load_config_json
from facediff.errors import FacediffError


@pytest.fixture(scope="module")
def layout_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    data = api.synth(root / "data", n=48, size=16, style="mixed", seed=5, layout="scenes")
    cfg = load_config("tiny-ddpm")
    cfg = replace(cfg, model=replace(cfg.model, conditions=("layout",)), data=replace(cfg.data, path=str(data)),
                  train=replace(cfg.train, max_steps=4))
    api.train("ddpm", cfg, root / "run")
    return root


def test_values_parse_to_faces_and_bad_ones_are_one_line():
    assert faces_of(None) == faces_of("portrait") == PORTRAIT and faces_of("none") == ()
    assert faces_of("0.5,0,0.4; -0.5,0,0.4") == ((0.5, 0.0, 0.4), (-0.5, 0.0, 0.4))
    for bad in ("left", "1,2", "0,0,0", "9,0,1"):
        with pytest.raises(FacediffError) as e:
            faces_of(bad)
        assert "\n" not in str(e.value)


def test_the_map_covers_each_face_where_it_is():
    m = layout_map(((0.5, 0.0, 0.4),), 16)[0, 0]
    assert m.shape == (16, 16) and float(m.max()) == 1.0 and float(m.min()) == 0.0
    assert float(m[:, :8].sum()) == 0.0 and float(m[:, 8:].sum()) > 0  # a face on the right half only
    portrait = layout_map(PORTRAIT, 16)[0, 0]
    torch.testing.assert_close(portrait, portrait.flip(-1))  # centred: mirror-symmetric
    assert float(layout_map((), 16).sum()) == 0.0


def test_training_never_drops_it_and_guidance_keeps_it(layout_run):
    from facediff.conditioning.conditioner import Conditioner  # noqa: F401  (the pipeline's)

    pipe = api.load(layout_run / "run")
    assert [k.name for k in pipe.condition_kinds] == ["attributes", "layout"]
    index = json.loads((layout_run / "run" / "export" / "model_index.json").read_text())
    assert {"kind": "layout"} in index["conditions"]
    cond = pipe.conditioner.encode_values(2, {"attributes": [{"smiling": 5}, {"age": 1}], "layout": ["none", None]})
    null = pipe.conditioner.null(cond)
    assert float(null.class_labels.abs().sum()) == 0.0  # the attributes are dropped ...
    torch.testing.assert_close(null.concat, cond.concat)  # ... the layout is kept
    assert float(cond.concat[0].sum()) == 0.0 and float(cond.concat[1].sum()) > 0  # none / the portrait default
    # training: a batch with every condition dropped still carries the layout maps
    from facediff.training.conditions import TrainingConditions
    from facediff.training.data import TrainingData

    cfg = load_config_json(layout_run / "run" / "config.json")
    data = TrainingData(layout_run / "data", cfg.data, cfg.model.attributes)
    tc = TrainingConditions(cfg, data, Grid(16, 16))
    idx, n = torch.arange(8), 8
    drops = {"drop_all": torch.ones(n, dtype=torch.bool),
             **tc.draw_drops(n, torch.ones(n, dtype=torch.bool), torch.Generator().manual_seed(0))}
    fields = tc.batch(idx, torch.zeros(n, dtype=torch.bool), drops)
    assert float(fields["class_labels"].abs().sum()) == 0.0
    torch.testing.assert_close(fields["concat"], tc.tables["layout"][0][idx])
    kinds = [lab["scene"] for lab in data.dataset.labels[:8]]
    sums = fields["concat"].sum((1, 2, 3))
    assert all((float(s) == 0.0) == (k == "background") for s, k in zip(sums, kinds))


def test_sampling_notes_the_portrait_default_and_takes_a_layout(layout_run):
    res = api.sample(str(layout_run / "run"), n=1, steps=2)
    assert any("layout: none given" in note and "one centred face" in note for note in res["notes"])
    res = api.sample(str(layout_run / "run"), conditions={"layout": "0.5,0,0.5"}, n=1, steps=2)
    assert res["images"].shape == (1, 16, 16, 3)
    with pytest.raises(FacediffError, match="cx,cy,scale"):
        api.sample(str(layout_run / "run"), conditions={"layout": "left"}, n=1, steps=2)


def test_composition_gives_regions_their_face_and_the_background_none(layout_run, monkeypatch):
    """Every (window, region) path's layout channel: the region's face inside its box, nothing elsewhere; the
    background's: nothing anywhere."""
    from facediff.pipelines import compose as compose_mod

    seen = []
    real = compose_mod.multidiffusion_denoiser

    def spy(model_fn, canvas, views, regions, **kwargs):
        for r in regions:
            for branch in (r.branches.base, *(c for c, _ in r.branches.deltas)):
                seen.append(branch.concat[:, -1:].clone())
        return real(model_fn, canvas, views, regions, **kwargs)

    monkeypatch.setattr(compose_mod, "multidiffusion_denoiser", spy)
    layout = {"width": 32, "height": 16, "steps": 1, "stride": 8,
              "region": [{"box": [16, 0, 32, 16], "attrs": {"smiling": 5}}]}
    api.compose(str(layout_run / "run"), layout)
    assert seen, "the spy saw no region"
    face, background = seen[0], seen[-1]  # the region's branches first, the background's last
    assert float(face[..., :8].sum()) == 0.0 and float(face[..., 8:].sum()) > 0  # inside its box only
    assert float(background.sum()) == 0.0


def test_a_panorama_puts_one_face_on_each_native_tile(layout_run, monkeypatch):
    from facediff.pipelines import compose as compose_mod

    seen = []
    real = compose_mod.multidiffusion_denoiser

    def spy(model_fn, canvas, views, regions, **kwargs):
        seen.append(regions[-1].branches.deltas[0][0].concat[:, -1:].clone())
        return real(model_fn, canvas, views, regions, **kwargs)

    monkeypatch.setattr(compose_mod, "multidiffusion_denoiser", spy)
    api.panorama(str(layout_run / "run"), width=48, steps=1)
    tile = layout_map(PORTRAIT, 16)
    torch.testing.assert_close(seen[0], torch.cat([tile] * 3, -1))
    seen.clear()
    api.panorama(str(layout_run / "run"), width=48, steps=1, conditions={"layout": "none"})
    assert float(seen[0].sum()) == 0.0  # a background panorama, when asked


def test_the_layout_kind_is_refused_by_models_without_it(tiny_run):
    with pytest.raises(FacediffError, match="does not take a layout"):
        api.sample(str(tiny_run), conditions={"layout": "portrait"}, n=1, steps=2)
    assert LayoutKind().encode([None], Grid(16, 4)).shape == (1, 1, 4, 4)
