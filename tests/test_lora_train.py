"""`facediff train lora` on two tiny Stable-Diffusion-format pipelines of different geometry (8x VAE with
v-prediction, 4x VAE with epsilon): the one loop, frozen base, exports that plain diffusers and kohya-format
loaders accept with the same images as facediff, resumable, --full with EMA, kohya folders with sidecars."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from facediff import api
from facediff.errors import FacediffError
from tiny_sd import GEOMETRIES, build_tiny_sd, image_size


@pytest.fixture(scope="module", params=GEOMETRIES)
def base(request, tmp_path_factory):
    """(geometry, SD folder, captioned SynthFaces at the base's resolution)."""
    from facediff.data.synth import write_synth

    root = tmp_path_factory.mktemp(f"lora-{request.param}")
    build_tiny_sd(request.param, root).save_pretrained(root / "sd")
    ds = write_synth(root / "ds", n=24, size=image_size(request.param), style="mixed", seed=0)
    return request.param, root / "sd", ds


def _train(base, out, *extra, resume=False):
    geometry, sd, ds = base
    return api.train("lora", None, out, resume=resume, overrides=[
        f"lora.base={sd}", f"data.path={ds}", "lora.rank=2", "lora.alpha=7", "train.batch_size=4",
        "train.max_steps=3", "train.lr=5e-2", "train.warmup_steps=0", "train.log_every=1",
        "train.checkpoint_every=2", "train.sample_steps=2",
        "train.mixed_precision=no",  # "auto" probes per run: two runs compared below could pick differently
        *extra])


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plain(sd_dir, lora=None, scheduler=None):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir)
    pipe.set_progress_bar_config(disable=True)
    if scheduler is not None:
        pipe.scheduler = scheduler
    if lora is not None:
        pipe.load_lora_weights(lora)
    return pipe


def test_lora_run_exports_what_diffusers_and_kohya_loaders_read(base, tmp_path):
    from facediff.models.lora import lora_parameter_count, read_lora_metadata
    from facediff.sampling.samplers import make_scheduler

    geometry, sd, ds = base
    frozen = _sha(sd / "unet" / "diffusion_pytorch_model.safetensors")
    summary = _train(base, tmp_path / "run")
    export = tmp_path / "run" / "export"
    assert {"pytorch_lora_weights.safetensors", "kohya_lora.safetensors", "lora_config.json"} <= {
        p.name for p in export.iterdir()}
    assert _sha(sd / "unet" / "diffusion_pytorch_model.safetensors") == frozen  # the base is never written
    meta = read_lora_metadata(export / "pytorch_lora_weights.safetensors")
    assert json.dumps(meta).count("7") >= 1  # alpha 7 != rank 2 travels in the adapter config
    # a checkpoint holds the adapters only, not the frozen base
    ckpt = sorted((tmp_path / "run" / "state").glob("step-*"))[-1]
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)

    ours = api.load(tmp_path / "run")  # base + the run's adapters
    assert summary["trainable_parameters"] == lora_parameter_count(ours.unet) > 0
    sched = make_scheduler("ddim", dict(ours.scheduler.config))
    size = image_size(geometry)
    kw = dict(height=size, width=size, num_inference_steps=3, guidance_scale=2.0, output_type="pt")
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    prompt = ["a smiling woman", "an old man with a beard"]
    with_lora = _plain(sd, export, sched)(prompt, generator=gens(), **kw).images
    kohya = _plain(sd, export / "kohya_lora.safetensors", sched)(prompt, generator=gens(), **kw).images
    without = _plain(sd, None, sched)(prompt, generator=gens(), **kw).images
    assert torch.allclose(with_lora, kohya, atol=1e-5)
    assert not torch.allclose(with_lora, without, atol=1e-4)  # training moved the adapters
    mine = ours(seeds=[1, 2], prompt=prompt, sampler="ddim", steps=3, guidance=2.0, output_type="pt").images
    assert torch.allclose(mine, with_lora * 2 - 1, atol=2e-4)
    # --lora FILE --lora-scale 0 on the base is the base
    base_only = api.load(sd, lora=export / "kohya_lora.safetensors", lora_scale=0.0)
    zero = base_only(seeds=[1, 2], prompt=prompt, sampler="ddim", steps=3, guidance=2.0, output_type="pt").images
    assert torch.allclose(zero, without * 2 - 1, atol=2e-4)


def test_lora_resume_repeats_the_uninterrupted_losses(base, tmp_path):
    _train(base, tmp_path / "full", "train.max_steps=4")
    _train(base, tmp_path / "cut", "train.max_steps=2")
    api.train("lora", None, tmp_path / "cut", overrides=["train.max_steps=4"], resume=True)

    def losses(run):
        return [json.loads(x)["loss"] for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]

    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), rel=1e-5)


def test_text_encoder_lora_and_kohya_captions(base, tmp_path):
    """kohya-style folder (PNG + first-line .txt sidecars) through the CLI, with text-encoder LoRA, caption
    shuffling and gradient checkpointing."""
    from PIL import Image
    from typer.testing import CliRunner

    from facediff.cli.main import app
    from facediff.data.prepared import PreparedDataset

    geometry, sd, ds = base
    folder = tmp_path / "kohya"
    folder.mkdir()
    prepared = PreparedDataset(ds)
    for i, (img, cap) in enumerate(zip(prepared.images()[:8], prepared.captions()[:8])):
        Image.fromarray(img).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("face, " + cap.replace(".", ",") + "\nsecond line is ignored\n")
    size = image_size(geometry)
    res = CliRunner().invoke(app, [
        "train", "lora", "--base", str(sd), "--data", str(folder), "--rank", "2", "--alpha", "3",
        "--text-encoder-rank", "2", "--shuffle-caption", "--keep-tokens", "1", "--gradient-checkpointing",
        "--resolution", str(size), "--set", "train.max_steps=2", "--set", "train.batch_size=4",
        "--set", "train.sample_steps=2", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    export = tmp_path / "run" / "export"
    with safe_open(str(export / "kohya_lora.safetensors"), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert any(k.startswith("lora_te_") for k in keys) and any(k.startswith("lora_unet_") for k in keys)
    assert meta["ss_network_dim"] == "2" and float(meta["ss_network_alpha"]) == 3.0
    captions = PreparedDataset(tmp_path / "run" / "cache" / "prepared").captions()
    assert all(c.startswith("face, ") and "second line" not in c for c in captions)
    plain = _plain(sd, export)  # diffusers loads U-Net + text-encoder adapters
    assert plain.text_encoder.peft_config is not None


def test_full_finetune_exports_a_stable_diffusion_pipeline_with_ema(base, tmp_path):
    from diffusers import StableDiffusionPipeline

    geometry, sd, ds = base
    summary = _train(base, tmp_path / "run", "lora.full=true", "train.ema_decay=0.5")
    export = tmp_path / "run" / "export"
    assert json.loads((export / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    tuned = StableDiffusionPipeline.from_pretrained(export)
    orig = StableDiffusionPipeline.from_pretrained(sd)
    n_unet = sum(p.numel() for p in orig.unet.parameters())
    assert summary["trainable_parameters"] == n_unet
    moved = [not torch.equal(a, b) for a, b in zip(tuned.unet.parameters(), orig.unet.parameters())]
    assert np.mean(moved) > 0.5
    for a, b in zip(tuned.text_encoder.parameters(), orig.text_encoder.parameters()):
        assert torch.equal(a, b)  # the text encoder stays frozen
    assert tuned.scheduler.config.prediction_type == orig.scheduler.config.prediction_type


def test_lora_bad_inputs(base, tmp_path, tiny_run):
    geometry, sd, ds = base
    with pytest.raises(FacediffError, match=r"\[lora\] base is empty"):
        api.train("lora", None, tmp_path / "a", overrides=[f"data.path={ds}"])
    with pytest.raises(FacediffError, match="not a text-to-image latent model"):
        api.train("lora", None, tmp_path / "b", overrides=[f"lora.base={tiny_run}", f"data.path={ds}"])
    with pytest.raises(FacediffError, match="to_nothing"):
        _train(base, tmp_path / "c", "lora.targets=to_nothing")
    with pytest.raises(FacediffError, match="divisible"):
        _train(base, tmp_path / "d", "lora.resolution=18")
    with pytest.raises(FacediffError, match="not a text-to-image model"):
        api.load(tiny_run, lora=tmp_path / "x.safetensors")
