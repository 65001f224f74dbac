"""A t2i model's text encoder pretrained on what captions say (training/text_encoder.py): the targets read
negation, tags and numbers and leave unsaid facts open; training learns them; a t2i run takes the encoder frozen
and exports it as a plain Stable Diffusion text encoder (causal, no padding mask)."""
from __future__ import annotations

import json

import pytest
import torch

from facediff import api
from facediff.errors import FacediffError
from facediff.training.text_encoder import FACTS, caption_targets


def _said(text: str) -> dict[str, str]:
    """The facts ``caption_targets`` reads, as names (unnamed facts left out)."""
    return {f: FACTS[f][i - 1] for f, i in caption_targets(text).items() if i}


def test_targets_read_negation_tags_numbers_and_leave_the_rest_open():
    assert _said("a photo of a man, clean-shaven, not smiling") == {
        "beard": "0", "smiling": "0", "style": "human", "gender": "male"}
    assert _said("1girl, solo, blue hair, smile, glasses, anime") == {
        "hair_colour": "blue", "smiling": "2", "eyeglasses": "2", "style": "anime", "gender": "female"}
    assert _said("a 70-year-old woman with long grey hair")["age"] == "5"
    assert _said("a woman without glasses")["eyeglasses"] == "0"
    assert _said("beard") == {"beard": "4"}  # a negative prompt alone: one fact named, the rest open
    assert _said("") == {}
    assert "gender" not in _said("a man and a woman")  # both named: neither is the face's


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    from facediff.data.synth import write_synth

    root = tmp_path_factory.mktemp("te")
    ds = write_synth(root / "ds", n=300, size=8, style="mixed", seed=0)  # labels are what counts: 30 held out
    toml = root / "text.toml"
    toml.write_text('kind = "t2i"\n[text]\nvocab_size = 600\nhidden_size = 32\nnum_layers = 1\nnum_heads = 2\n'
                    'intermediate_size = 64\nmax_length = 48\n')
    metrics = api.train_text_encoder(ds, root / "run", config=toml, steps=120, batch_size=64, lr=3e-3,
                                     eval_every=20)
    return root, ds, metrics


def test_pretraining_learns_what_free_captions_say(encoder_run):
    _, _, metrics = encoder_run
    first, last = metrics["curve"][0], metrics["curve"][-1]
    assert [r["step"] for r in metrics["curve"]] == [20, 40, 60, 80, 100, 120]
    # named facts of held-out rows' captions: ~27 % right after 20 steps, ~49 % after 120 (a run learns on)
    assert last["free_named"] > first["free_named"] + 0.12 and last["free_named"] > 0.4
    assert last["free_unnamed"] > 0.75  # what a caption leaves out reads as open
    # phrasings this training never wrote (SynthFaces' held-out templates) improve too
    assert last["heldout_templates_named"] > first["heldout_templates_named"] + 0.08
    assert 0.0 <= last["loose_words_named"] <= 1.0  # the parser's other words ([text] loose_words), also read


def test_t2i_takes_the_pretrained_encoder_frozen_and_exports_it_for_plain_diffusers(encoder_run, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    root, _, _ = encoder_run
    folder = root / "run" / "text_encoder"
    from facediff.data.synth import write_synth

    t2i_data = write_synth(tmp_path / "ds", n=24, size=16, style="mixed", seed=1)
    api.train("autoencoder", "tiny-kl", tmp_path / "kl", overrides=[f"data.path={t2i_data}", "train.max_steps=2",
                                                                    "autoencoder.disc_start=2"])
    from typer.testing import CliRunner

    from facediff.cli.main import app

    res = CliRunner().invoke(app, ["train", "t2i", "--config", "tiny-t2i", "--data", str(t2i_data), "--autoencoder",
                                   str(tmp_path / "kl"), "--text-encoder", str(folder), "--out", str(tmp_path / "t2i"),
                                   "--set", "train.max_steps=3", "--set", "text.max_length=48",
                                   "--set", "text.caption_mode=free"])
    assert res.exit_code == 0, res.output
    export = tmp_path / "t2i" / "export"
    config = json.loads((export / "text_encoder" / "config.json").read_text())
    assert config["model_type"] == "clip_text_model" and not config.get("use_attention_mask")  # causal, as SD's CLIP
    before, after = load_file(folder / "model.safetensors"), load_file(export / "text_encoder" / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # frozen
    sd = StableDiffusionPipeline.from_pretrained(export)
    sd.set_progress_bar_config(disable=True)
    assert sd("a man, clean-shaven", height=16, width=16, num_inference_steps=2, output_type="np").images.shape == \
        (1, 16, 16, 3)


def test_a_data_set_without_synthfaces_labels_is_a_one_line_error(tmp_path):
    with pytest.raises(FacediffError, match="not a prepared data set"):
        api.train_text_encoder(tmp_path, tmp_path / "run", steps=2)
