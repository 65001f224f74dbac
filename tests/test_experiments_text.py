"""The text-to-face recipes (seed004-hair, lora-style, seed002-compare) end to end in tiny mode: honest outputs
(arms, metrics in range, the papers' numbers labelled), prompts that differ only in the hair phrase, LoRA
parameter counts, each arm scored on its own model, and lora-style on a given Stable Diffusion folder."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from facediff.errors import FacediffError
from facediff.experiments.registry import run_experiment


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def tiny_oracle(tmp_path_factory):
    """A random tiny oracle WITH style and hair-colour heads (the prompt scores need them)."""
    from facediff.data.synth import HAIR_COLOURS
    from facediff.models.estimator import AttributeEstimator, EstimatorConfig, save_estimator

    colours = tuple(sorted({c for cs in HAIR_COLOURS.values() for c in cs}))
    torch.manual_seed(0)
    cfg = EstimatorConfig(size=16, widths=(8, 16), feature_dim=24, styles=("anime", "human"), hair_colours=colours)
    d = save_estimator(AttributeEstimator(cfg), tmp_path_factory.mktemp("oracle") / "oracle")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("facediff.metrics.features.oracle_dir", lambda: d)
        yield d


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> Path:
    """A 2-step tiny t2i run on mixed SynthFaces 16 px (human and anime captions)."""
    from facediff import api
    from facediff.data.synth import write_synth

    root = tmp_path_factory.mktemp("t2i")
    ds = write_synth(root / "ds", n=48, size=16, style="mixed", seed=0)
    api.train("autoencoder", "tiny-kl", root / "kl", overrides=[f"data.path={ds}", "train.max_steps=2",
                                                                "autoencoder.disc_start=2", "train.checkpoint_every=0"])
    api.train("t2i", "tiny-t2i", root / "run", overrides=[f"data.path={ds}", f"latent.autoencoder={root / 'kl'}",
                                                          "train.max_steps=2", "train.checkpoint_every=0",
                                                          "train.sample_steps=1"])
    return root / "run"


def _run(name, out, **kw):
    run_experiment(name, out, size=16, n_eval=8, budget_minutes=1, tiny=True, **kw)
    for f in ("results.json", "results.md", "report.html"):
        assert (out / f).is_file(), f
    return json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def _rate(v):
    return v is None or 0.0 <= v <= 1.0


def test_hair_variants_change_only_the_hair_phrase(tmp_path):
    from facediff.data.captions import parse_caption
    from facediff.data.prepared import PreparedDataset
    from facediff.data.synth import HAIR_COLOURS, write_synth
    from facediff.experiments.text import LENGTH_WORD, hair_variant

    ds = PreparedDataset(write_synth(tmp_path / "ds", n=40, size=16, style="mixed", seed=3))
    checked = 0
    for lab in ds.all_labels:
        for field in ("caption", "caption_heldout"):  # "<len> <col> hair" and "hair is <len> and <col>"
            cap = lab[field]
            pc = parse_caption(cap)
            if pc.attributes.get("age", 0) > 3:
                continue  # "greying": age 4 captions name grey in another word
            assert hair_variant(cap, colour=lab["hair_colour"]) == cap
            for colour in HAIR_COLOURS[lab["style"]]:
                v = parse_caption(hair_variant(cap, colour=colour))
                assert (v.attributes, v.style, v.hair_length, v.hair_colour) == (
                    pc.attributes, pc.style, pc.hair_length, colour)
                checked += 1
            for length in LENGTH_WORD:
                text = hair_variant(cap, length=length)
                v = parse_caption(text)
                assert (v.attributes, v.style, v.hair_colour, v.hair_length) == (
                    pc.attributes, pc.style, pc.hair_colour, length)
                assert len(text.split()) == len(cap.split())  # one word swapped, nothing else
    assert checked > 200
    assert hair_variant("a smiling woman with glasses", colour="red") is None


def test_seed004_hair(tmp_path, text_model):
    from facediff.data.captions import parse_caption
    from facediff.data.prepared import PreparedDataset

    res, md = _run("seed004-hair", tmp_path / "hair", model=text_model)
    trained, captions = {}, set()  # style -> the hair colours of the model's training rows; their captions
    for lab in PreparedDataset(text_model.parent / "ds", split="train").labels:
        trained.setdefault(lab["style"], set()).add(lab["hair_colour"])
        captions.add(lab["caption"])
    assert "seed 004 claim" in md and "фиолетовые волосы" in md and "purple hair" in md
    assert "publishes no numbers" in md and "most common wrong colour" in md
    bases, prompts = res["bases"], res["prompts"]
    assert {b["style"] for b in bases} == {"human", "anime"}  # the model trained on both styles
    assert not captions & {b["caption"] for b in bases}  # held-out rows
    for b, base in enumerate(bases):
        own = parse_caption(base["caption"])
        mine = [p for p in prompts if p["base"] == b]
        assert len({p["seed"] for p in mine if p["kind"] != "seed"}) == 1  # one seed for every variant
        colours = [p["value"] for p in mine if p["kind"] == "colour"]
        assert sorted(colours) == sorted(trained[base["style"]])  # every colour its style has in training
        for p in mine:
            v = parse_caption(p["prompt"])
            assert v.attributes == own.attributes and v.style == own.style
            if p["kind"] == "colour":
                assert v.hair_colour == p["value"] and v.hair_length == own.hair_length
            elif p["kind"] == "length":
                assert v.hair_length == p["value"] != own.hair_length and v.hair_colour == own.hair_colour
            else:
                assert p["prompt"] == base["caption"] and p["seed"] != mine[0]["seed"]
    colour_arms = [a for a in res["arms"] if "colour" in a]
    lengths = [a for a in res["arms"] if "length" in a]
    assert len(lengths) == 3 and len(colour_arms) == sum(len(trained[s]) for s in {b["style"] for b in bases})
    for a in res["arms"]:
        m = a["metrics"]
        assert _rate(m.get("accuracy")) and _rate(m["same_attributes"]) and _rate(m["hair_colour_kept"])
        assert m["feature_distance"] is None or m["feature_distance"] >= 0
    # the overall accuracy is the n-weighted mean of the per-colour rows
    n = sum(a["metrics"]["n"] for a in colour_arms)
    assert res["hair_colour"]["n"] == n
    assert res["hair_colour"]["accuracy"] == pytest.approx(
        sum(a["metrics"]["accuracy"] * a["metrics"]["n"] for a in colour_arms) / n)
    assert res["variants"]["same prompt, another seed"]["pairs"] == len(bases)


def _check_lora_arms(res, out):
    from facediff.models.lora import lora_parameter_count
    from facediff.pipelines.load import load_pipeline

    arms = res["arms"]
    assert [a["rank"] for a in arms] == [None, 2, 4, 8]
    counts = [a["metrics"]["trainable_parameters"] for a in arms[1:]]
    assert counts == sorted(counts) and len(set(counts)) == 3 and counts[0] > 0
    assert counts[1] == 2 * counts[0] and counts[2] == 4 * counts[0]  # r (in + out) per adapted layer
    for a in arms[1:]:
        run = Path(a["train"]["run"])
        pipe = load_pipeline(run)
        assert a["metrics"]["trainable_parameters"] == lora_parameter_count(pipe.unet)
        unet = sum(p.numel() for p in pipe.unet.parameters()) - lora_parameter_count(pipe.unet)
        assert a["metrics"]["share_of_unet"] == pytest.approx(lora_parameter_count(pipe.unet) / unet)
    for a in arms:
        m = a["metrics"]
        assert math.isfinite(m["fd_oracle"]) and m["fd_oracle"] >= 0
        assert _rate(m["style_accuracy"]) and m["style_accuracy"] is not None
        assert _rate(m["attr_accuracy"]) and m["attr_accuracy"] is not None
    for a in arms:  # each arm is scored on its own model: the base, or the base + that run's adapters
        scored = json.loads((out / "evals" / a["eval"] / "metrics.json").read_text())["model"]
        expected = Path(a["train"]["run"] if a["rank"] else res["base"]["model"])
        assert Path(scored) in (expected, expected / "export")
    md = (out / "results.md").read_text()
    assert "seed 002 (CelebA-Dialog 64px, paper): SD Nano 2.1 + LoRA" in md and "830K" in md and "0.10 %" in md
    assert "144.8888" in md and "| r |" in md


def test_lora_style_trains_its_base(tmp_path):
    res, md = _run("lora-style", tmp_path / "ls")
    assert res["base"]["trained_here"] and (tmp_path / "ls" / "runs" / "base-t2i" / "export" / "unet").is_dir()
    _check_lora_arms(res, tmp_path / "ls")
    assert "ours (SynthFaces 16px" in md


def test_lora_style_on_a_given_sd_folder(tmp_path, tiny_run):
    from tiny_sd import build_tiny_sd

    build_tiny_sd("f4-eps", tmp_path / "sd-tok").save_pretrained(tmp_path / "sd")
    res, md = _run("lora-style", tmp_path / "ls", model=tmp_path / "sd")
    assert not res["base"]["trained_here"] and not (tmp_path / "ls" / "runs" / "base-t2i").exists()
    for a in res["arms"][1:]:
        cfg = json.loads((Path(a["train"]["run"]) / "export" / "lora_config.json").read_text())
        assert cfg["base"] == str(tmp_path / "sd") and cfg["rank"] == a["rank"] == cfg["alpha"]
    _check_lora_arms(res, tmp_path / "ls")
    with pytest.raises(FacediffError, match="trains its own models"):
        run_experiment("seed002-compare", tmp_path / "x", model=tmp_path / "sd", tiny=True, size=16)
    with pytest.raises(FacediffError, match="Stable-Diffusion-format"):
        run_experiment("lora-style", tmp_path / "y", model=tiny_run, tiny=True, size=16)  # attribute DDPM


def test_seed002_compare(tmp_path):
    from facediff.models.lora import lora_parameter_count
    from facediff.pipelines.load import load_pipeline

    res, md = _run("seed002-compare", tmp_path / "cmp")
    names = [a["name"] for a in res["arms"]]
    assert names == ["attribute DDPM", "text model (t2i)", "t2i + LoRA r=4"]
    for col in ("seed 002 (CelebA-Dialog 64px, paper): Conditional DDPM",
                "seed 002 (CelebA-Dialog 64px, paper): SD Nano 2.1 + LoRA", "104.5163", "93.2055", "86.40 %",
                "80.40 %", "different data set and models"):
        assert col in md, col
    clip_row = next(line for line in md.splitlines() if line.startswith("| CLIP-S"))
    assert "26.1205" in clip_row and clip_row.count("n/a") == 4  # three arms + the floor
    ddpm, t2i, lora = res["arms"]
    assert ddpm["metrics"]["style_accuracy"] is None and t2i["metrics"]["style_accuracy"] is not None
    for a in res["arms"]:
        m = a["metrics"]
        assert math.isfinite(m["fd_oracle"]) and m["fd_oracle"] >= 0 and m["kid_oracle"] is not None
        for k in ("attr_accuracy", "faces_rate", "mtcnn_confidence", "style_accuracy", "hair_colour_accuracy"):
            assert _rate(m[k]), k
        assert m["attr_accuracy"] is not None
    assert ddpm["metrics"]["trainable_parameters"] == sum(
        p.numel() for p in load_pipeline(ddpm["train"]["run"]).unet.parameters())
    text = load_pipeline(t2i["train"]["run"])  # t2i trains its U-Net and its text encoder jointly
    assert t2i["metrics"]["trainable_parameters"] == sum(
        p.numel() for m in (text.unet, text.text_encoder) for p in m.parameters())
    assert lora["metrics"]["trainable_parameters"] == lora_parameter_count(load_pipeline(lora["train"]["run"]).unet)
    assert 0 < lora["metrics"]["trainable_parameters"] < t2i["metrics"]["trainable_parameters"]
    assert res["floor"]["style_accuracy"] is not None
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) >= 12 and all(line.count("|") == rows[0].count("|") for line in rows[:14])
    assert np.isfinite(res["arms"][0]["floor"]["fd_oracle"])


def test_text_understanding(tmp_path, text_model):
    """The prompts say what each measurement says they do (negated prompts parse to level 0, named ones above
    it, open ones not at all), rates are shares, and the diversity reference is real faces of the prompt's group."""
    from facediff.data.captions import parse_caption
    from facediff.experiments.understanding import NEGATION

    import shutil

    from facediff.experiments.understanding import NEGATIVE_PROMPTS

    model = shutil.copytree(text_model / "export", tmp_path / "model")  # a model that reads "glasses" as "no glasses"
    (model / "sampling_defaults.json").write_text(json.dumps({"negative_words_as_negation": True}))
    res, md = _run("text-understanding", tmp_path / "und", model=model)
    for name in ("free", "heldout_templates"):
        assert 0.0 <= res["free_phrasing"][name]["attr"]["accuracy"] <= 1.0
    assert set(res["negation"]) == set(NEGATION)
    for attr, arms in res["negation"].items():
        assert parse_caption(arms["negated"]["example"]).attributes.get(attr) == 0
        assert parse_caption(arms["named"]["example"]).attributes.get(attr, 0) > 0
        assert attr not in parse_caption(arms["open"]["example"]).attributes
        assert all(0.0 <= arms[a]["with_attribute"] <= 1.0 for a in arms)
    assert set(res["negative_prompt"]) == set(NEGATIVE_PROMPTS)
    for attr, row in res["negative_prompt"].items():  # every negative prompt, as the model reads it and as written
        assert row["negative_prompt"] == NEGATIVE_PROMPTS[attr][0] and row["read_as_negation"]
        assert all(0.0 <= row[k] <= 1.0 for k in ("with_attribute", "with_attribute_negative",
                                                   "with_attribute_negative_as_written"))
    for row in res["diversity"]["per_prompt"]:
        assert row["real_spread"] > 0 and math.isclose(row["ratio"], row["generated_spread"] / row["real_spread"])
    assert "## Negation" in md and "## Diversity" in md
