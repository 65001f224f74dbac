"""FacediffPipeline: the 32 px pixel model (the bundled default until the 64 px latent model replaced it, kept as a
test fixture) gives the same images as before the redesign, old export folders load,
per-step callback, interrupt, progress totals, plain-diffusers round trips, one-line errors on foreign folders."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facediff.errors import FacediffError
from facediff.pipelines.facediff import FacediffPipeline
from facediff.pipelines.load import load_pipeline, save_pipeline

DATA = Path(__file__).resolve().parent / "data"
PIXEL32_MODEL = DATA / "pixel32_model"  # the 32 px pixel DDPM that was bundled before the 64 px latent model


def _as_255(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> one row (H, N*W, 3) in 0..255, unrounded."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).numpy()
    return np.concatenate(list(x), 1)


@pytest.fixture(scope="module")
def pixel32() -> FacediffPipeline:
    return load_pipeline(PIXEL32_MODEL)


# The reference PNGs were written by the code before the pipeline redesign (commit 86b25ac, api.sample with the
# arguments below, images side by side). The redesign must reproduce them: same weights, same seeds, same math.
@pytest.mark.parametrize("png,kwargs", [
    ("default_model_dpmpp10_seed0.png", dict(n=4, attrs={"smiling": 5, "eyeglasses": 3}, guidance=3.0,
                                              sampler="dpmpp", steps=10, seed=0)),
    ("default_model_ddim8_seed3_attrscales.png", dict(n=2, attrs={"smiling": 5}, attr_scales={"smiling": 4, "age": 2},
                                                      guidance=2.0, sampler="ddim", steps=8, seed=3)),
])
def test_pixel_model_reproduces_the_images_from_before_the_redesign(pixel32, png, kwargs):
    ref = np.asarray(Image.open(DATA / png)).astype(np.float32)
    out = pixel32(output_type="pt", **kwargs).images
    assert np.abs(_as_255(out) - ref).max() <= 1.0  # 1/255: the reference was rounded to uint8


def _write_legacy(src: Path, dst: Path) -> Path:
    """The pixel model written in the facediff-export/1 format (facediff.json + unet/ + scheduler/)."""
    dst.mkdir(parents=True)
    shutil.copytree(src / "unet", dst / "unet")
    shutil.copytree(src / "scheduler", dst / "scheduler")
    index = json.loads((src / "model_index.json").read_text())
    (dst / "facediff.json").write_text(json.dumps({
        "format": "facediff-export/1", "kind": "ddpm", "conditioning": "attributes",
        "attributes": index["attributes"], "num_levels": index["num_levels"], "sample_size": 32, "in_channels": 3}))
    return dst


def test_legacy_export_loads_and_converts(pixel32, tmp_path):
    old = load_pipeline(_write_legacy(PIXEL32_MODEL, tmp_path / "old"))
    assert old.attributes == pixel32.attributes and old.num_levels == 6 and not old.is_latent
    a = old(2, attrs={"age": 5}, steps=3, output_type="pt").images
    b = pixel32(2, attrs={"age": 5}, steps=3, output_type="pt").images
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    from typer.testing import CliRunner

    from facediff.cli.main import app

    res = CliRunner().invoke(app, ["convert", str(tmp_path / "old"), str(tmp_path / "new")])
    assert res.exit_code == 0, res.output
    new = tmp_path / "new"
    assert not (new / "facediff.json").exists()
    assert json.loads((new / "model_index.json").read_text())["_class_name"] == "FacediffPipeline"
    torch.testing.assert_close(load_pipeline(new)(2, attrs={"age": 5}, steps=3, output_type="pt").images, b)


def test_callback_interrupt_and_progress(pixel32):
    seen, progress = [], []

    def stop_after_two(pipe, step_index, timestep, tensors):  # diffusers' callback_on_step_end signature
        seen.append((step_index, int(timestep), pipe.num_timesteps, tuple(tensors["latents"].shape)))
        if step_index == 1:
            pipe.interrupt = True

    out = pixel32(3, steps=6, callback_on_step_end=stop_after_two,
                  progress=lambda task, d, t, **info: progress.append((task, d, t)))
    assert out.interrupted and [s[0] for s in seen] == [0, 1] and seen[0][2:] == (6, (3, 3, 32, 32))
    assert seen[0][1] == 999 and seen[1][1] < 999  # trailing spacing: the first step is t = T - 1
    assert progress == [("sample", 1, 6), ("sample", 2, 6)]
    assert not pixel32(1, steps=2).interrupted  # the flag is reset by the next call


def test_progress_total_counts_every_network_call(pixel32):
    """Heun makes 2 * steps - 2 network calls; progress ends exactly at its total, over every chunk."""
    calls = []
    pixel32.network_evaluations = 0
    pixel32(3, steps=4, sampler="heun", batch_size=2, progress=lambda task, d, t, **i: calls.append((d, t)))
    assert calls[-1] == (12, 12) and [d for d, _ in calls] == list(range(1, 13))  # 2 chunks x (2 * 4 - 2)
    assert pixel32.network_evaluations == 12


def test_callback_can_replace_latents(pixel32):
    def zero(pipe, step_index, timestep, tensors):
        last = step_index == pipe.num_timesteps - 1
        return {"latents": torch.zeros_like(tensors["latents"])} if last else None

    out = pixel32(1, steps=2, callback_on_step_end=zero, output_type="pt").images
    assert torch.equal(out, torch.zeros_like(out))


def test_unconditional_pixel_export_is_a_plain_ddpm_pipeline(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    pipe = FacediffPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50))
    save_pipeline(pipe, tmp_path / "ex")
    plain = DDPMPipeline.from_pretrained(tmp_path / "ex")
    ours = load_pipeline(tmp_path / "ex")
    assert not ours.conditional and ours.sample_size == 8
    assert plain(batch_size=1, num_inference_steps=2, output_type="np").images.shape == (1, 8, 8, 3)
    with pytest.raises(FacediffError, match="not attribute-conditional"):
        ours(1, attrs={"smiling": 1}, steps=1)


def test_foreign_and_damaged_folders_are_one_line_errors(tmp_path):
    ae = tmp_path / "ae"
    (ae / "vae").mkdir(parents=True)
    (ae / "vae" / "config.json").write_text("{}")
    with pytest.raises(FacediffError, match="an autoencoder, not a diffusion model"):
        load_pipeline(ae)
    bad = tmp_path / "bad"
    shutil.copytree(PIXEL32_MODEL, bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").rename(bad / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(FacediffError, match="safetensors only"):
        load_pipeline(bad)
    (tmp_path / "junk").mkdir()
    with pytest.raises(FacediffError, match="no model_index.json"):
        load_pipeline(tmp_path / "junk")
    (bad / "model_index.json").write_text("{not json")
    with pytest.raises(FacediffError, match="not valid JSON"):
        load_pipeline(bad)


def test_device_auto_takes_the_gpu_only_when_torch_sees_one(monkeypatch):
    from facediff.pipelines.load import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(FacediffError, match="no CUDA device"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("CUDA:1") == torch.device("cuda:1")
    with pytest.raises(FacediffError, match="2 CUDA device"):
        resolve_device("cuda:2")
    assert resolve_device("cpu") == torch.device("cpu")


def test_sample_on_device_cpu_equals_auto_on_a_cpu_machine(monkeypatch):
    from facediff import api

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    kw = dict(n=2, steps=3, seed=5, attrs="smiling=5")
    cpu, auto = api.sample(device="cpu", **kw)["images"], api.sample(device="auto", **kw)["images"]
    assert cpu.shape == (2, 64, 64, 3) and np.array_equal(cpu, auto)  # the bundled 64 px default
