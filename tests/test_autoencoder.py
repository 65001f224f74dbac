"""Autoencoders (VQ / KL): tiny train -> checkpoint -> resume -> export -> plain diffusers load, and the math
(quantisation, codebook statistics, dead-code restart, adaptive GAN weight, PSNR)."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from facediff.config import AutoencoderConfig, load_config, load_config_json
from facediff.errors import FacediffError
from facediff.models.autoencoder import (
    NLayerDiscriminator, adaptive_gan_weight, build_autoencoder, code_counts, codebook, codebook_stats, decode,
    disc_layers, encode, quantize, restart_dead_codes)
from facediff.training.autoencoder import load_autoencoder, train_autoencoder
from facediff.training.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parent.parent
STEPS = 4  # the discriminator starts at step 2 and dead codes restart at steps 1, 2 and 4: every path runs


def _cfg(kind: str, data: Path, steps: int = STEPS):
    return load_config(f"tiny-{kind}",
                       [f"data.path={data}", f"train.max_steps={steps}", "train.checkpoint_every=2",
                        "train.log_every=1", "train.batch_size=8", "autoencoder.disc_start=2",
                        "autoencoder.dead_code_restart=2", "autoencoder.eval_n=8"])


def _train_rows(run: Path) -> list[dict]:
    rows = [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines() if l]
    return [r for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth16) -> dict[str, Path]:
    out = {}
    for kind in ("vq", "kl"):
        out[kind] = tmp_path_factory.mktemp("ae") / kind
        train_autoencoder(_cfg(kind, synth16), out[kind])
    return out


@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_tiny_run_exports_for_plain_diffusers(runs, kind, synth16):
    from diffusers import AutoencoderKL, VQModel

    run = runs[kind]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.name == f"step-{STEPS:07d}"
    for f in ("model.safetensors", "optimizer.safetensors", "discriminator.safetensors",
              "discriminator.optimizer.safetensors", "trainer.json"):
        assert (ckpt / f).is_file(), f
    assert (ckpt / "code_usage.safetensors").is_file() == (kind == "vq")
    vae_cfg = json.loads((run / "export" / "vae" / "config.json").read_text())
    assert vae_cfg["_class_name"] == ("VQModel" if kind == "vq" else "AutoencoderKL")
    assert 2 ** (len(vae_cfg["block_out_channels"]) - 1) == 4 and vae_cfg["sample_size"] == 16
    cls = VQModel if kind == "vq" else AutoencoderKL
    plain = cls.from_pretrained(run / "export" / "vae").eval()  # plain diffusers, no facediff code
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        lat = plain.encode(x).latents if kind == "vq" else plain.encode(x).latent_dist.mean
        assert lat.shape == (2, 4, 4, 4)
        assert plain.decode(lat).sample.shape == x.shape
    ae = load_autoencoder(run)  # a run dir resolves to its export
    assert type(ae) is cls and ae.config.sample_size == 16
    summary = json.loads((run / "logs" / "summary.json").read_text())
    assert summary["perceptual_loss"] and summary["heldout"] is True
    assert summary["eval"]["psnr"] > 0 and 0 < summary["eval"]["ssim"] <= 1
    rows = _train_rows(run)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert "gan_lambda" in rows[-1] and "d_loss" in rows[-1]  # the PatchGAN ran from disc_start
    assert any("val/psnr" in json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines())
    assert list((run / "samples").glob("recon-*.png"))
    if kind == "vq":
        assert summary["eval"]["codebook_usage"] > 0 and summary["eval"]["perplexity"] >= 1
        assert any(r.get("revived_codes") for r in rows)


def test_resume_reproduces_uninterrupted_losses(runs, synth16, tmp_path):
    part = tmp_path / "part"
    train_autoencoder(_cfg("vq", synth16, steps=2), part)
    cfg = load_config_json(part / "config.json")
    train_autoencoder(replace(cfg, train=replace(cfg.train, max_steps=STEPS)), part, resume=True)
    a, b = _train_rows(runs["vq"]), _train_rows(part)
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in ("loss", "rec", "reg", "d_loss"):
            if key in ra:
                assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["step"], key)


def test_existing_run_needs_resume(runs):
    with pytest.raises(FacediffError, match="--resume"):
        train_autoencoder(load_config_json(runs["kl"] / "config.json"), runs["kl"])


@pytest.mark.parametrize("kind", ["vq", "kl"])
@pytest.mark.parametrize("levels,f", [(3, 4), (4, 8)])
def test_encode_decode_shapes(kind, levels, f):
    cfg = AutoencoderConfig(kind=kind, block_out_channels=(8,) * levels, latent_channels=3, vq_embed_dim=5,
                            num_vq_embeddings=16, norm_num_groups=4)
    ae = build_autoencoder(cfg, 32).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = encode(ae, x)
        assert z.shape == (2, 5 if kind == "vq" else 3, 32 // f, 32 // f)
        assert decode(ae, z).shape == x.shape
        if kind == "vq":  # decode snaps the continuous latent to the codebook
            z_q, e, idx = quantize(ae, z)
            assert torch.equal(e.permute(0, 2, 3, 1).reshape(-1, 5), codebook(ae)[idx.flatten()])
            assert torch.allclose(decode(ae, z), decode(ae, e, quantize_latents=False), atol=1e-5)


def test_quantize_picks_nearest_code():
    ae = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 8), vq_embed_dim=2, num_vq_embeddings=4,
                                             norm_num_groups=4), 8)
    codebook(ae).data = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    z = torch.tensor([[0.9, 0.1], [0.1, 0.8], [4.0, 4.0], [0.1, -0.1]]).t().reshape(1, 2, 2, 2)
    assert quantize(ae, z)[2].flatten().tolist() == [1, 2, 3, 0]


def test_dead_code_restart_revives_unused_codes():
    torch.manual_seed(0)
    ae = build_autoencoder(AutoencoderConfig(block_out_channels=(8, 8), vq_embed_dim=4, num_vq_embeddings=64,
                                             norm_num_groups=4), 16)
    with torch.no_grad():
        z = encode(ae, torch.rand(8, 3, 16, 16) * 2 - 1)
        before = code_counts(quantize(ae, z)[2], 64)
        dead = before == 0
        assert dead.sum() > 32  # U(-1/K, 1/K) init: almost every code is unused
        n = restart_dead_codes(ae, dead, z, torch.Generator().manual_seed(0))
        after = code_counts(quantize(ae, z)[2], 64)
    assert n == int(dead.sum())
    assert int((after > 0).sum()) >= int((before > 0).sum()) + n // 2  # revived codes are now chosen
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    dist = torch.cdist(codebook(ae)[dead], flat).min(1).values
    assert float(dist.max()) < 1e-2 * float(flat.std()) + 1e-6  # each revived code sits on an encoder output


def test_codebook_perplexity():
    k = 37
    uniform = codebook_stats(torch.ones(k) * 5)
    assert uniform["perplexity"] == pytest.approx(k) and uniform["codebook_usage"] == 1.0
    one = codebook_stats(torch.tensor([10.0] + [0.0] * (k - 1)))
    assert one["perplexity"] == pytest.approx(1.0) and one["codebook_usage"] == pytest.approx(1 / k)
    two = codebook_stats(torch.tensor([3.0, 1.0, 0.0, 0.0]))
    p = np.array([0.75, 0.25])
    assert two["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_adaptive_gan_weight_formula():
    w = torch.nn.Parameter(torch.randn(4, 3))
    a, b = torch.randn(4, 3) * 3, torch.randn(4, 3) * 0.5
    rec, gan = (a * w).sum(), (b * w).sum() ** 2  # grad_w gan = 2 (b.w) b
    lam = adaptive_gan_weight(rec, gan, w)
    g_gan = 2 * (b * w).sum().detach() * b
    assert float(lam) == pytest.approx(float(a.norm() / (g_gan.norm() + 1e-4)), rel=1e-5)
    assert not lam.requires_grad


def test_patchgan_gives_patch_logits():
    for size in (16, 32, 64):
        d = NLayerDiscriminator(3, 8, disc_layers(size))
        out = d(torch.randn(2, 3, size, size))
        assert out.shape[:2] == (2, 1) and out.shape[-1] >= 2


def test_psnr_identical_and_known_noise():
    from facediff.metrics.image import psnr

    rng = np.random.default_rng(0)
    x = rng.integers(40, 200, size=(3, 16, 16, 3), dtype=np.uint8)
    assert psnr(x, x) > 100
    y = (x.astype(np.int16) + rng.choice([-10, 10], size=x.shape)).astype(np.uint8)
    mse = (((x.astype(np.float64) - y) / 255.0) ** 2).reshape(3, -1).mean(1)
    assert psnr(x, y) == pytest.approx(float(np.mean(10 * np.log10(1 / mse))), rel=1e-6)


def test_reconstruction_metrics_match_definition(runs, synth16):
    from facediff.data.prepared import PreparedDataset
    from facediff.metrics.reconstruction import reconstruct_images, reconstruction_metrics

    ae = load_autoencoder(runs["vq"] / "export")
    images = PreparedDataset(synth16, split="val").images()
    res = reconstruction_metrics(ae, images, batch=4)
    x, x_hat, counts = reconstruct_images(ae, images)
    mse = (((x - x_hat) / 2) ** 2).flatten(1).mean(1).double()
    assert res["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-4)
    assert counts.sum() == len(images) * 4 * 4 and res["codebook_usage"] == pytest.approx(
        float((counts > 0).double().mean()))
    from facediff.evaluation.autoencoder import evaluate_autoencoder

    assert evaluate_autoencoder(runs["vq"], synth16, n=100)["psnr"] == pytest.approx(res["psnr"])


def test_load_unexported_run_from_checkpoint(runs, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs["kl"], run, ignore=shutil.ignore_patterns("export", "cache"))
    ae = load_autoencoder(run)
    ref = load_autoencoder(runs["kl"] / "export")
    assert type(ae).__name__ == "AutoencoderKL"
    for (k, a), b in zip(ae.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), k


def test_bad_config_is_one_line_error(tmp_path, synth16):
    cfg = _cfg("vq", synth16)
    bad = replace(cfg, autoencoder=replace(cfg.autoencoder, block_out_channels=(8, 8, 8, 8, 8, 8)))
    with pytest.raises(FacediffError, match="not divisible") as e:
        train_autoencoder(bad, tmp_path / "bad")
    assert "\n" not in str(e.value)
    with pytest.raises(FacediffError, match="not an autoencoder"):
        load_autoencoder(tmp_path)


def test_decoder_only_fine_tune_starts_from_init_and_keeps_the_latent_space(runs, synth16, tmp_path):
    """[autoencoder] init + train_encoder = false (sd-vae-ft-mse's recipe): the run starts from the given
    autoencoder's weights; its encoder (so every latent a latent model was trained on) is unchanged and only the
    decoder learns. A different architecture is a one-line error."""
    cfg = _cfg("kl", synth16, steps=2)
    ft = replace(cfg, autoencoder=replace(cfg.autoencoder, init=str(runs["kl"] / "export"), train_encoder=False,
                                          disc_weight=0.0))
    train_autoencoder(ft, tmp_path / "ft")
    before, after = load_autoencoder(runs["kl"]).state_dict(), load_autoencoder(tmp_path / "ft").state_dict()
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    both = replace(ft, autoencoder=replace(ft.autoencoder, train_encoder=True))
    train_autoencoder(both, tmp_path / "both")  # the default: every weight learns, from init
    moved = load_autoencoder(tmp_path / "both").state_dict()
    assert any(not torch.equal(before[k], moved[k]) for k in frozen)
    wide = replace(ft, autoencoder=replace(ft.autoencoder, latent_channels=8))
    with pytest.raises(FacediffError, match=r"\[autoencoder\] init = .*architecture differs") as e:
        train_autoencoder(wide, tmp_path / "wide")
    assert "\n" not in str(e.value)
