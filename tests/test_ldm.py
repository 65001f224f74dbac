"""Latent diffusion: tiny VQ autoencoder -> attribute+sketch LDM -> export -> sampling (ours and plain diffusers)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facediff import api
from facediff.errors import FacediffError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ldm_run(tmp_path_factory, synth16) -> Path:
    root = tmp_path_factory.mktemp("ldm")
    api.train("autoencoder", "tiny-vq", root / "vq",
              overrides=[f"data.path={synth16}", "train.max_steps=4", "autoencoder.disc_start=2"])
    api.train("ldm", "tiny-ldm", root / "ldm",
              overrides=[f"data.path={synth16}", f"latent.autoencoder={root / 'vq'}", "train.max_steps=4",
                         "train.checkpoint_every=2", "train.log_every=1"])
    return root / "ldm"


def test_scale_factor_from_data_is_stored(ldm_run):
    cfg = json.loads((ldm_run / "config.json").read_text())
    vae_cfg = json.loads((ldm_run / "export" / "vae" / "config.json").read_text())
    index = json.loads((ldm_run / "export" / "model_index.json").read_text())
    assert cfg["latent"]["scale_factor"] > 0
    assert vae_cfg["scaling_factor"] == pytest.approx(cfg["latent"]["scale_factor"])  # diffusers' convention
    assert index["_class_name"] == "FacediffPipeline" and index["sketch"] is True and index["vae"][1] == "VQModel"
    pipe = api.load(ldm_run)
    assert pipe.is_latent and pipe.takes_sketch and pipe.latent_shape == (4, 4, 4) and pipe.sample_size == 16


def test_latents_cached_and_standardised(ldm_run):
    from safetensors.torch import load_file

    cache = load_file(str(ldm_run / "cache" / "latents.safetensors"))
    s = json.loads((ldm_run / "config.json").read_text())["latent"]["scale_factor"]
    assert cache["z"].shape[-1] == 4
    assert float((cache["z"] * s).std()) == pytest.approx(1.0, rel=1e-3)


def test_sample_with_sketch_changes_output(ldm_run, synth16, tmp_path):
    from facediff.data.prepared import PreparedDataset

    sk = PreparedDataset(synth16).sketches([0])[0]
    a = api.sample(ldm_run, n=2, steps=3, sketch=sk)["images"]
    b = api.sample(ldm_run, n=2, steps=3)["images"]
    assert a.shape == (2, 16, 16, 3)
    assert not np.array_equal(a, b)
    with pytest.raises(FacediffError, match="missing.png: no such file"):
        api.sample(ldm_run, n=1, steps=2, sketch=tmp_path / "missing.png")


def test_export_loads_with_plain_diffusers(ldm_run):
    from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel

    ex = ldm_run / "export"
    index = json.loads((ex / "model_index.json").read_text())
    vae = VQModel.from_pretrained(ex / "vae")
    unet = UNet2DConditionModel.from_pretrained(ex / "unet")
    sched = DDPMScheduler.from_pretrained(ex / "scheduler")
    z = torch.randn(1, vae.config.latent_channels, 4, 4)
    sketch = torch.zeros(1, 1, 4, 4)
    c = torch.zeros(1, len(index["attributes"]) * index["num_levels"])
    sched.set_timesteps(2)
    for t in sched.timesteps:
        eps = unet(torch.cat([z, sketch], 1), t, encoder_hidden_states=None, class_labels=c).sample
        z = sched.step(eps, t, z).prev_sample
    img = vae.decode(z / vae.config.scaling_factor).sample
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all()


def test_ldm_needs_autoencoder(tmp_path):
    with pytest.raises(FacediffError, match="autoencoder"):
        api.train("ldm", "tiny-ldm", tmp_path / "x")


def test_eval_on_autoencoder_reports_reconstruction(ldm_run, synth16, tmp_path):
    res = api.evaluate(ldm_run.parent / "vq", synth16, n=8, out=tmp_path / "ae_eval")
    assert 0 < res["psnr"] < 100 and 0 < res["ssim"] <= 1
    assert 0 < res["codebook_usage"] <= 1 and res["perplexity"] >= 1
    assert res["fd_oracle"] is not None and res["fd_oracle"] >= 0
    assert (tmp_path / "ae_eval" / "report.html").is_file()


def test_eval_of_sketch_ldm_measures_sketch_fidelity(ldm_run, synth16, tmp_path):
    res = api.evaluate(ldm_run, synth16, metrics="fd,sketch", n=8, steps=2)
    assert 0 <= res["sketch"]["edge_f1"] <= 1
    assert res["floor_real_vs_real"]["sketch"]["edge_f1"] == pytest.approx(1.0)


def test_the_bundled_sketch_model_is_picked_for_a_sketch(synth16, tmp_path):
    """Without --model, `facediff sample --sketch FILE` runs the bundled sketch model and names it in the output
    and the PNG; the sketch steers the face (two sketches, same seed: different images)."""
    from PIL import Image
    from typer.testing import CliRunner

    from facediff.cli.main import app
    from facediff.data.prepared import PreparedDataset
    from facediff.request import Request

    sketches = PreparedDataset(synth16).sketches([0, 1])
    outs = []
    for i, sk in enumerate(sketches):
        Image.fromarray(np.asarray(sk).squeeze()).resize((64, 64)).save(tmp_path / f"s{i}.png")
        res = CliRunner().invoke(app, ["sample", "--sketch", str(tmp_path / f"s{i}.png"), "--n", "1", "--steps", "2",
                                       "--out", str(tmp_path / f"f{i}.png")])
        assert res.exit_code == 0, res.output
        assert "sketch_model" in res.output
        assert Request.from_png(tmp_path / f"f{i}.png").model_name == "sketch_model"
        outs.append(np.asarray(Image.open(tmp_path / f"f{i}.png"), np.float32))
    assert np.abs(outs[0] - outs[1]).mean() > 1.0
