"""Nothing facediff loads from a user path goes through pickle: a planted payload never runs, and every loader
answers with one line saying it loads safetensors only."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from facediff.errors import FacediffError
from facediff.pipelines.load import load_pipeline

PIXEL32_MODEL = Path(__file__).resolve().parent / "data" / "pixel32_model"  # a real export (the former 32 px default)


class _Payload:
    """Unpickling this creates the marker file: proof that pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"weight": _Payload(marker)}, f)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "weights_only" not in msg, msg  # no advice to turn the safety off
    return msg


@pytest.fixture()
def marker(tmp_path) -> Path:
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a planted pickle was executed"


def test_pipeline_with_pickled_unet(tmp_path, marker):
    bad = tmp_path / "export"
    shutil.copytree(PIXEL32_MODEL, bad)
    (bad / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    _plant(bad / "unet" / "diffusion_pytorch_model.bin", marker)
    with pytest.raises(FacediffError) as e:
        load_pipeline(bad)
    assert "safetensors only" in _one_line(e)


def test_legacy_export_with_pickled_unet(tmp_path, marker):
    old = tmp_path / "old"
    shutil.copytree(PIXEL32_MODEL / "scheduler", old / "scheduler")
    (old / "unet").mkdir(parents=True)
    shutil.copy(PIXEL32_MODEL / "unet" / "config.json", old / "unet" / "config.json")
    _plant(old / "unet" / "diffusion_pytorch_model.bin", marker)
    (old / "facediff.json").write_text(json.dumps({"format": "facediff-export/1", "kind": "ddpm",
                                                   "conditioning": "attributes",
                                                   "attributes": ["bangs", "eyeglasses", "beard", "smiling", "age"],
                                                   "num_levels": 6}))
    with pytest.raises(FacediffError) as e:
        load_pipeline(old)
    assert "safetensors" in _one_line(e)


def _vae_folder(root: Path, marker: Path) -> Path:
    from diffusers import VQModel

    vq = VQModel(block_out_channels=(8,), norm_num_groups=4, latent_channels=2, num_vq_embeddings=8, vq_embed_dim=2,
                 down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), sample_size=8)
    vq.save_pretrained(root / "vae", safe_serialization=True)
    (root / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    _plant(root / "vae" / "diffusion_pytorch_model.bin", marker)
    return root


def test_autoencoder_with_pickled_vae(tmp_path, marker):
    from facediff.models.autoencoder import load_vae
    from facediff.training.autoencoder import load_autoencoder

    ae = _vae_folder(tmp_path / "ae", marker)
    for load in (lambda: load_vae(ae / "vae"), lambda: load_autoencoder(ae)):
        with pytest.raises(FacediffError) as e:
            load()
        assert "safetensors only" in _one_line(e)


def test_ldm_training_on_a_pickled_autoencoder(tmp_path, marker, synth16):
    from facediff import api

    ae = _vae_folder(tmp_path / "ae", marker)
    with pytest.raises(FacediffError) as e:
        api.train("ldm", "tiny-ldm", tmp_path / "ldm", overrides=[f"data.path={synth16}", f"latent.autoencoder={ae}"])
    assert "safetensors only" in _one_line(e)


def test_latent_pipeline_with_pickled_vae(tmp_path, marker):
    bad = tmp_path / "export"
    shutil.copytree(PIXEL32_MODEL, bad)
    _vae_folder(bad, marker)
    index = json.loads((bad / "model_index.json").read_text())
    index["vae"] = ["diffusers", "VQModel"]
    (bad / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(FacediffError) as e:
        load_pipeline(bad)
    assert "safetensors only" in _one_line(e)


def test_estimator_and_lpips_weights(tmp_path, marker):
    from facediff.metrics.image import load_lpips
    from facediff.models.estimator import load_estimator

    est = tmp_path / "est"
    est.mkdir()
    (est / "config.json").write_text("{}")
    _plant(est / "model.bin", marker)
    with pytest.raises(FacediffError) as e:
        load_estimator(est)
    _one_line(e)
    _plant(tmp_path / "lpips.pth", marker)
    with pytest.raises(FacediffError) as e:
        load_lpips(tmp_path / "lpips.pth")
    assert "safetensors only" in _one_line(e)
    from facediff.metrics.features import InceptionFeatures

    _plant(tmp_path / "inception.pth", marker)
    with pytest.raises(FacediffError) as e:
        InceptionFeatures(tmp_path / "inception.pth")
    assert "safetensors only" in _one_line(e)


def test_checkpoint_with_pickled_state_is_not_loaded(tmp_path, marker, tiny_run):
    from facediff.training.checkpoint import latest_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for ck in (run / "state").glob("step-*"):
        (ck / "optimizer.safetensors").unlink()
        _plant(ck / "optimizer.bin", marker)
    assert latest_checkpoint(run) is None  # incomplete: nothing to resume from, nothing unpickled
