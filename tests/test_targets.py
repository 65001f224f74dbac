"""The quality targets of the bundled models (issue 26, section 4), checked against what each model measures.

Each bundled model carries ``quality.json`` (written by scripts/record_quality.py from `facediff eval` and
`facediff experiment text-understanding` on held-out SynthFaces of seed 7), tied to its weights by their SHA-256:
a model retrained without a new measurement fails ``test_every_bundled_model_carries_its_measurement``.

A target the shipped model does not reach yet is an expected failure (strict: once a retrained model reaches it,
the test fails until the marker is removed), named for the target, with the measured number in its reason.
The commands that measure each model are in its quality.json and its preset's comments.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from facediff.fsutil import file_sha256
from facediff.metrics.features import oracle_dir
from facediff.pipelines.load import ASSETS

ROOT = Path(__file__).resolve().parents[1]


def weights_sha256(model: Path) -> str:
    """What scripts/record_quality.py records: the SHA-256 of the model's U-Net weights."""
    return file_sha256(model / "unet" / "diffusion_pytorch_model.safetensors")

MODELS = ("default_model", "compose_model", "text_model", "sketch_model", "mask_model")
ATTRIBUTES = ("bangs", "eyeglasses", "beard", "smiling", "age")


def quality(name: str) -> dict:
    return json.loads((ASSETS / name / "quality.json").read_text())


def _not_yet(reason: str):
    return pytest.mark.xfail(strict=True, reason=reason)


@pytest.mark.parametrize("name", MODELS)
def test_every_bundled_model_carries_its_measurement(name):
    q = quality(name)
    assert q["weights_sha256"] == weights_sha256(ASSETS / name), f"{name}: weights changed since quality.json"
    assert q["oracle_sha256"] == file_sha256(oracle_dir() / "model.safetensors"), \
        f"{name}: measured with another oracle than the bundled one; measure it again"
    assert q["commands"] and ("eval" in q or "understanding" in q)
    if "eval" in q:  # the sample size, FD against a floor of as many images
        assert q["eval"]["n"] >= 500 and q["eval"]["fd_n"] == q["eval"]["floor_real_vs_real"]["fd_n"]


# ---------------------------------------------------------------------------------------- attribute model
@_not_yet("bundled default model at its guidance 2: bangs 99.6, glasses 99.8, beard 99.2, age 98.2 % met; smiling "
          "93.6 % (the oracle reads real 64 px faces at 98.8 % smiling, but their kl-f4-64 reconstructions at 95.5 %: "
          "the autoencoder caps every latent model's smiling)")
def test_attribute_model_reaches_97_percent_on_every_attribute():
    per = quality("default_model")["eval"]["attr"]["per_attribute"]
    assert min(per[a]["accuracy"] for a in ATTRIBUTES) >= 0.97, {a: per[a]["accuracy"] for a in ATTRIBUTES}


def test_attribute_model_fd_within_1_3x_of_the_real_floor():
    ev = quality("default_model")["eval"]
    assert ev["fd_oracle"] <= 1.3 * ev["floor_real_vs_real"]["fd_oracle"]


@_not_yet("bundled default model: MTCNN finds a face in 60.2 % of its faces vs 65.8 % of real SynthFaces")
def test_attribute_model_detects_faces_as_often_as_real_faces():
    ev = quality("default_model")["eval"]
    assert ev["faces"]["rate"] >= ev["floor_real_vs_real"]["faces"]["rate"]


@_not_yet("bundled default model: up to 15.6 % of 64 sweeps change the oracle's smiling reading when glasses or a beard "
          "move; below the oracle's own noise the target cannot be read: SynthFaces' own sweeps (only one attribute "
          "drawn differently) leak 4.7 %, their autoencoder round trips 10.9 %")
def test_attribute_sweep_changes_only_the_swept_attribute():
    """`facediff experiment sweep-isolation`: moving one attribute changes another's oracle reading <= 3 %."""
    sweep = quality("default_model")["sweep"]
    assert sweep["worst"] <= 0.03, sweep["per_attribute"]


# ---------------------------------------------------------------------------------------- composition
def _group(arm_prefix: str) -> dict:
    """An arm of `facediff experiment seed001` on the composition model (2x2 faces, 128 px canvas)."""
    group = quality("compose_model")["group"]
    return next(v for k, v in group.items() if k.startswith(arm_prefix))


@_not_yet("MTCNN finds exactly 4 faces in 0 of 32 composed photos, 0 of 32 photos of four separately sampled faces "
          "side by side, and only 6 of 32 tiles of four REAL SynthFaces faces (18.8 %): it misses many 64 px "
          "SynthFaces faces, so this target needs a better detector too")
def test_composition_finds_exactly_the_intended_faces_in_90_percent():
    assert _group("MultiDiffusion, k = 20 %")["faces_exact"] >= 0.90


@_not_yet("MTCNN finds exactly 4 faces in 0 of 32 composed photos (1.06 faces a photo) against 6 of 32 tiles of "
          "real faces (2.6 a tile): the composition model's faces are harder to detect (48 % of single portraits, "
          "real 65.8 %)")
def test_composition_finds_the_four_faces_as_often_as_in_real_pictures():
    """MTCNN misses some drawn faces in real SynthFaces too: composed photos against tiles of four real faces."""
    assert _group("MultiDiffusion, k = 20 %")["faces_exact"] >= quality("compose_model")["group_real"]["faces_exact"]


def test_composed_faces_follow_their_attributes_within_5_points_of_single_faces():
    assert _group("MultiDiffusion, k = 20 %")["accuracy"] >= _group("plain")["accuracy"] - 0.05


def test_composition_seams_are_invisible():
    """Hann window weights (the default): 1.07x; the paper's uniform weights gave 1.25x."""
    assert _group("MultiDiffusion, k = 20 %")["seam_ratio"] <= 1.2


# ---------------------------------------------------------------------------------------- sketch and mask
def test_sketch_model_draws_the_sketched_faces_attributes_90_percent():
    assert quality("sketch_model")["eval"]["attr"]["accuracy"] >= 0.90


def test_mask_model_parsing_within_10_points_of_the_real_ceiling():
    ev = quality("mask_model")["eval"]
    assert ev["parsing"]["miou"] >= ev["floor_real_vs_real"]["parsing"]["miou"] - 0.10


# ---------------------------------------------------------------------------------------- text model
def _free(key: str) -> dict:
    return quality("text_model")["understanding"]["free_phrasing"][key]


@_not_yet("bundled text model (465 CPU-minutes of U-Net training): free phrasing smiling 94.2 %, beard 96.5 %; "
          "glasses 100 %, age 99.5 %, bangs 100 % met (smiling is capped near 95 % by the autoencoder)")
def test_text_model_prompts_reach_97_percent_on_every_attribute():
    per = _free("free")["attr"]["per_attribute"]
    assert min(per[a]["accuracy"] for a in ATTRIBUTES if a in per) >= 0.97


def test_text_model_hair_colour_95_percent_on_every_colour():
    per = _free("free")["hair_colour"]["per_value"]
    assert min(v["accuracy"] for v in per.values()) >= 0.95


def test_text_model_style_98_percent():
    assert _free("free")["style"]["accuracy"] >= 0.98


@_not_yet("bundled text model: 97.4 % on the training templates, 95.0 % on the held-out templates no training "
          "caption uses (92.7 % before long prompts were encoded in chunks; free phrasing, which it trained on: 98.0 %)")
def test_text_model_held_out_phrasing_within_2_points_of_the_training_templates():
    templates = quality("text_model")["eval"]["attr"]["accuracy"]  # `facediff eval --text`: caption prompts
    # SynthFaces' caption_heldout templates: never a training caption, in fixed or free caption mode
    assert _free("heldout_templates")["attr"]["accuracy"] >= templates - 0.02


def test_text_model_diversity_at_least_0_9x_of_real():
    assert quality("text_model")["understanding"]["diversity"]["mean_ratio"] >= 0.9


@pytest.mark.parametrize("attr", ["beard", "eyeglasses", "smiling", "bangs"])
def test_text_model_negative_prompt_removes_what_it_names(attr):
    """--negative-prompt beard / glasses / smile / bangs: 90.6 -> 6.3 %, 78.1 -> 3.1 %, 78.1 -> 3.1 %, 78.1 -> 0 %
    of faces keep it (read as the prompt's negation; as written, guidance away from the word's one level left
    28.1, 96.9, 90.6 and 40.6 %)."""
    row = quality("text_model")["understanding"]["negative_prompt"][attr]
    assert row["with_attribute_negative"] <= 0.25 * row["with_attribute"]


def test_text_model_negation_removes_what_it_negates():
    """'not smiling' leaves a smile on 3.1 % of faces; 'not wearing glasses', 'clean-shaven' and 'bare forehead'
    none (step 31 000)."""
    neg = quality("text_model")["understanding"]["negation"]
    assert all(v["negated"]["with_attribute"] <= 0.1 for v in neg.values())


# ---------------------------------------------------------------------------------------- speed
def test_sixteen_faces_in_under_10_seconds_on_this_cpu():
    """benchmarks/sixteen_faces.py: the default model, sampler and guidance, 1 and 2 threads."""
    res = json.loads((ROOT / "benchmarks" / "results" / "sixteen_faces.json").read_text())
    assert res["model_sha256"] == weights_sha256(ASSETS / "default_model")
    assert max(r["seconds"] for r in res["threads"].values()) < 10.0, res["threads"]
