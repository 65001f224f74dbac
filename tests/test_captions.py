"""SynthFaces captions (variety, held-out templates, keyword contract), caption parsing, kohya caption transforms."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.data import synth
from facediff.data.captions import HAIR_COLOURS, ParsedCaption, first_line, parse_caption, shuffle_caption
from facediff.data.prepare import prepare
from facediff.data.synth import GENERATOR, make_look, render, render_batch, write_synth
from facediff.data.synth_text import (HAIR_LENGTH_WORDS_HELDOUT, HELDOUT_PHRASES, HELDOUT_TEMPLATES, KEYWORDS,
                                      PHRASES, STYLE_FRAMES, STYLE_FRAMES_HELDOUT, TRAIN_TEMPLATES, compose,
                                      hair_colour_word)
from facediff.errors import FacediffError


def _labels(seed: int, n: int, style: str = "mixed", start: int = 0) -> list[dict]:
    """Label rows exactly as the renderer writes them, without painting pixels (fast)."""
    return [synth._label(seed, i, make_look(seed, i, style)) for i in range(start, start + n)]


def _facts(lab: dict) -> dict:
    return dict(style=lab["style"], gender=lab["gender"], attributes=lab["attributes"],
                hair_colour=lab["hair_colour"], hair_length=lab["hair_length"], eye_colour=lab["eye_colour"],
                skin_tone=lab["skin_tone"], face_shape=lab["face_shape"])


def _templates(lab: dict) -> tuple[str, str]:
    """Rebuild both captions from the text stream; (train template, held-out template) after checking the text."""
    rng = np.random.default_rng([lab["seed"], lab["index"], synth._KEY_TEXT])
    train, held = compose(rng=rng, **_facts(lab)), compose(rng=rng, heldout=True, **_facts(lab))
    assert (train.text, held.text) == (lab["caption"], lab["caption_heldout"])
    return train.template, held.template


def _order(text: str, lab: dict) -> tuple[str, ...]:
    """The order in which a caption states subject (age), hair and the four face attributes: its structure."""
    pos = {attr: text.find(KEYWORDS[attr][lvl]) for attr, lvl in lab["attributes"].items()}
    colour = hair_colour_word(lab["hair_colour"], lab["attributes"]["age"])
    pos["hair"] = re.search(rf"(?<![\w-]){re.escape(colour)}(?![\w-])", text).start()
    assert min(pos.values()) >= 0
    return tuple(sorted(pos, key=pos.get))


# ----------------------------------------------------------------------------------------------- generator
def test_captions_are_deterministic_per_seed_and_index():
    a, b = render_batch(3, 5, 6, 16, "mixed"), render_batch(3, 5, 6, 16, "mixed")
    assert [f.label for f in a] == [f.label for f in b]
    # an image's captions depend on (seed, index) only, not on the batch it was rendered in
    assert render(3, 7, 16, "mixed").label["caption"] == a[2].label["caption"]
    assert render(3, 7, 16, "mixed").label["caption_heldout"] == a[2].label["caption_heldout"]
    assert _labels(3, 1, start=7)[0] == a[2].label
    caps = [f.label["caption"] for f in a] + [render(4, 7, 16, "mixed").label["caption"]]
    assert len(set(caps)) == len(caps)


def test_pixels_do_not_depend_on_caption_code(monkeypatch):
    before = render_batch(7, 0, 10, 32, "mixed") + render_batch(7, 20, 4, 32, "human", {"age": 4, "beard": 3})
    seen = []

    def greedy(**kw):  # consumes many draws of whatever stream it is given and says nothing
        seen.append(kw["rng"].bit_generator.state)
        kw["rng"].random(5000)
        return "constant"

    monkeypatch.setattr(synth, "make_caption", greedy)
    monkeypatch.setattr(synth, "make_caption_heldout", greedy)
    after = render_batch(7, 0, 10, 32, "mixed") + render_batch(7, 20, 4, 32, "human", {"age": 4, "beard": 3})
    assert len(seen) == 2 * len(before)  # the patch took effect: both captions of every face
    # the training caption gets a fresh text stream of (seed, index), never the look stream
    assert seen[0] == np.random.default_rng([7, 0, synth._KEY_TEXT]).bit_generator.state
    for x, y in zip(before, after):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.sketch, y.sketch)
        assert np.array_equal(x.mask, y.mask)
        assert y.label["caption"] == y.label["caption_heldout"] == "constant"
        strip = {k: v for k, v in x.label.items() if k not in ("caption", "caption_heldout")}
        assert strip == {k: v for k, v in y.label.items() if k not in ("caption", "caption_heldout")}


def test_train_and_heldout_templates_are_disjoint():
    assert len(TRAIN_TEMPLATES) >= 8 and len(HELDOUT_TEMPLATES) >= 3
    assert not set(TRAIN_TEMPLATES) & set(HELDOUT_TEMPLATES)
    assert not set(TRAIN_TEMPLATES.values()) & set(HELDOUT_TEMPLATES.values())
    labels = _labels(11, 600)
    used_train, used_held, orders_train, orders_held = Counter(), Counter(), set(), set()
    for lab in labels:
        t, h = _templates(lab)
        assert t in TRAIN_TEMPLATES and h in HELDOUT_TEMPLATES
        used_train[t] += 1
        used_held[h] += 1
        orders_train.add(_order(lab["caption"], lab))
        orders_held.add(_order(lab["caption_heldout"], lab))
    assert set(used_train) == set(TRAIN_TEMPLATES) and set(used_held) == set(HELDOUT_TEMPLATES)
    # held-out sentence structures never occur in training captions
    assert orders_train.isdisjoint(orders_held)
    # nor do held-out synonyms, frames and hair-length words
    train_text = "\n".join(lab["caption"] for lab in labels)
    held_text = "\n".join(lab["caption_heldout"] for lab in labels)
    literals = [max(re.split(r"\{\w*\}", p), key=len) for levels in HELDOUT_PHRASES.values()
                for options in levels for p in options]
    literals += [max(p.split("{}"), key=len).strip() for frames in STYLE_FRAMES_HELDOUT.values() for p in frames]
    assert len(literals) >= 12
    for lit in literals:
        assert lit not in train_text, lit
    assert sum(lit in held_text for lit in literals) >= len(literals) // 2  # and held-out captions do use them
    for words in list(HAIR_LENGTH_WORDS_HELDOUT.values()) + [("lady", "gentleman")]:
        for w in words:
            assert not re.search(rf"(?<![\w-]){w}(?![\w-])", train_text), w


def _contract_ok(text: str, attr: str, level: int) -> bool:
    others = [k for i, k in enumerate(KEYWORDS[attr]) if i != level and k not in KEYWORDS[attr][level]]
    return KEYWORDS[attr][level] in text and not any(k in text for k in others)


def test_keyword_contract_for_every_phrase_and_caption():
    assert set(KEYWORDS) == set(ATTRIBUTES) and all(len(v) == NUM_LEVELS for v in KEYWORDS.values())
    for attr in ATTRIBUTES:
        for level in range(NUM_LEVELS):
            phrases = PHRASES[attr][level] + HELDOUT_PHRASES[attr][level]
            assert len(PHRASES[attr][level]) >= 2, (attr, level)  # synonyms for every level
            for p in phrases:
                assert _contract_ok(p, attr, level), (attr, level, p)
    faces = _labels(5, 400) + [f.label for f in render_batch(5, 0, 12, 16, "mixed", {"age": 4})]
    for lab in faces:
        for key in ("caption", "caption_heldout"):
            for attr, level in lab["attributes"].items():
                assert _contract_ok(lab[key], attr, level), (key, attr, level, lab[key])


def test_captions_vary_in_structure_synonyms_and_style_words():
    labels = _labels(2, 500)
    caps = [lab["caption"] for lab in labels]
    assert len(set(caps)) == len(caps)
    assert len({_order(lab["caption"], lab) for lab in labels}) >= len(TRAIN_TEMPLATES)
    for style in ("human", "anime"):
        texts = [lab["caption"].lower() for lab in labels if lab["style"] == style]
        used = {f for f in STYLE_FRAMES[style] if any(max(f.split("{}"), key=len).strip() in t for t in texts)}
        assert len(used) >= 3, (style, used)
        assert all(("anime" in t) == (style == "anime") for t in texts)
    # several phrasings of one level show up (smiling level 2: "a gentle smile" / "a warm gentle smile")
    assert sum("warm gentle smile" in c for c in caps) > 0 and sum(
        "gentle smile" in c and "warm gentle smile" not in c for c in caps) > 0


def test_optional_clauses_state_only_facts_of_the_face():
    labels = _labels(4, 300)
    counts = Counter()
    for lab in labels:
        for key in ("caption", "caption_heldout"):
            text = lab[key]
            if re.search(r"\w eyes\b", text):
                counts["eyes"] += 1
                assert f"{lab['eye_colour']} eyes" in text
            if " skin" in text:
                counts["skin"] += 1
                assert f"{lab['skin_tone']} skin" in text
            if re.search(r"\b(narrow|oval|wide) face\b", text):
                counts["face"] += 1
                assert f"{lab['face_shape']} face" in text
    assert all(60 < counts[k] < 540 for k in ("eyes", "skin", "face")), counts  # optional: some, not all
    assert {lab["face_shape"] for lab in labels} == {"narrow", "oval", "wide"}


def test_hair_colours_are_the_renderers():
    labels = _labels(9, 1500)
    for style in ("human", "anime"):
        seen = {lab["hair_colour"] for lab in labels if lab["style"] == style}
        assert seen == set(HAIR_COLOURS[style]) | set(HAIR_COLOURS["aged"]), style
    assert set(HAIR_COLOURS["human"]) == {name for name, _ in synth.HAIR_HUMAN}


def test_labels_rows_have_heldout_caption_and_version(tmp_path: Path):
    out = write_synth(tmp_path / "ds", 6, 16, "mixed", seed=2)
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert row["caption_heldout"] and row["caption_heldout"] != row["caption"]
        assert row["skin_tone"] and row["face_shape"] in ("narrow", "oval", "wide")
    man = json.loads((out / "manifest.json").read_text())
    assert man["generator"] == GENERATOR and int(GENERATOR.rsplit("/", 1)[1]) >= 3


# ----------------------------------------------------------------------------------------------- parser
def test_parse_recovers_every_generated_caption_exactly():
    labels = _labels(0, 1500) + _labels(1, 1500) + [f.label for f in render_batch(
        6, 0, 30, 8, "human", {"age": 4})] + [f.label for f in render_batch(6, 0, 30, 8, "anime", {"age": 5})]
    levels = {attr: set() for attr in ATTRIBUTES}
    for lab in labels:
        for key in ("caption", "caption_heldout"):
            got = parse_caption(lab[key])
            assert got == ParsedCaption(lab["attributes"], lab["hair_colour"], lab["hair_length"], lab["style"]), \
                (key, lab[key])
        for attr, lvl in lab["attributes"].items():
            levels[attr].add(lvl)
    assert all(v == set(range(NUM_LEVELS)) for v in levels.values())  # every level was exercised
    assert {"greying", "white"} <= set(" ".join(lab["caption"] for lab in labels).split())


@pytest.mark.parametrize("text, attributes, colour, length, style", [
    ("a smiling anime girl with purple hair and thick glasses", {"smiling": 2, "eyeglasses": 3}, "purple", None,
     "anime"),
    ("A photo of an old man with a long beard and sunglasses", {"age": 4, "beard": 5, "eyeglasses": 4}, None, None,
     "human"),
    ("a woman in thin-framed sunglasses", {"eyeglasses": 4}, None, None, None),
    ("a woman in thin framed glasses", {"eyeglasses": 2}, None, None, None),
    ("a 7-year-old boy, short-haired, no glasses, laughing", {"age": 0, "eyeglasses": 0, "smiling": 5}, None,
     "short", None),
    ("Portrait of a clean-shaven middle aged man with blond hair, not smiling, full bangs",
     {"beard": 0, "age": 3, "smiling": 0, "bangs": 5}, "blonde", None, None),
    ("her hair is long and light blue; a big laugh; a slight smile later", {"smiling": 5}, "light blue", "long",
     None),
    ("a gray-haired grandmother with spectacles and a little smile", {"age": 5, "eyeglasses": 2, "smiling": 1},
     "grey", None, None),
    ("a cyberpunk astronaut on the moon", {}, None, None, None),
])
def test_parse_free_prompts(text, attributes, colour, length, style):
    assert parse_caption(text) == ParsedCaption(attributes, colour, length, style)


def test_parse_rejects_non_text():
    with pytest.raises(FacediffError) as e:
        parse_caption(None)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------- kohya transforms
def test_shuffle_caption_keeps_first_tags_and_permutes_the_rest():
    text = "photo,  young woman , long blonde hair, short bangs, no glasses, no beard, a slight smile, fair skin"
    tags = [t.strip() for t in text.split(",")]
    outs = set()
    for seed in range(40):
        out = shuffle_caption(text, keep_tokens=2, rng=np.random.default_rng(seed))
        got = out.split(", ")
        assert got[:2] == tags[:2] and Counter(got) == Counter(tags)
        assert out == shuffle_caption(text, keep_tokens=2, rng=np.random.default_rng(seed))
        outs.add(out)
    assert len(outs) > 20  # the rest really is shuffled
    assert {shuffle_caption(text, keep_tokens=0, rng=np.random.default_rng(s)).split(", ")[0]
            for s in range(40)} != {"photo"}
    assert shuffle_caption(text, keep_tokens=99, rng=np.random.default_rng(0)) == ", ".join(tags)
    assert shuffle_caption("a|b|c", keep_tokens=3, rng=np.random.default_rng(0), separator="|") == "a, b, c"


@pytest.mark.parametrize("kw", [dict(keep_tokens=-1), dict(keep_tokens=1.5), dict(keep_tokens=1, separator="")])
def test_shuffle_caption_bad_arguments(kw):
    with pytest.raises(FacediffError) as e:
        shuffle_caption("a, b", rng=np.random.default_rng(0), **kw)
    assert "\n" not in str(e.value)


def test_first_line():
    assert first_line("  first tags, here \nsecond line\n") == "first tags, here"
    assert first_line("a\r\nb") == "a" and first_line("a\rb") == "a" and first_line("only") == "only"
    assert first_line("") == "" and first_line("\nlater") == ""


def test_folder_sidecar_caption_is_its_first_line(tmp_path: Path):
    root = tmp_path / "f"
    root.mkdir()
    for name, colour in (("a", (200, 30, 40)), ("b", (30, 200, 60)), ("c", (40, 60, 210))):
        Image.new("RGB", (24, 24), colour).save(root / f"{name}.png")
    (root / "a.txt").write_text("1girl, smiling, purple hair\nnotes for the tagger\nmore\n")
    (root / "b.txt").write_bytes(b"crlf caption\r\nsecond\r\n")
    (root / "c.caption").write_text("single line\n")
    out = prepare("folder", root, 16, tmp_path / "out", workers=1)
    labels = {json.loads(line)["file"]: json.loads(line) for line in open(out / "labels.jsonl")}
    assert {k: v["caption"] for k, v in labels.items()} == {
        "a.png": "1girl, smiling, purple hair", "b.png": "crlf caption", "c.png": "single line"}
    notes = {n["file"]: n["note"] for n in json.loads((out / "manifest.json").read_text())["notes"]}
    assert "a.txt: only its first line" in notes["a.png"] and "2 further line(s)" in notes["a.png"]
    assert "1 further line(s)" in notes["b.png"] and "c.png" not in notes


@pytest.mark.parametrize("prompt, negative, want_prompt, want_negative, moved", [
    ("a photo of a man", "glasses", "a photo of a man, no glasses", "", ["eyeglasses"]),
    ("a photo of a man", "Glasses, blurry", "a photo of a man, no glasses", "blurry", ["eyeglasses"]),
    ("A photo of a woman.", "a smile and bangs", "A photo of a woman. not smiling, no bangs", "", ["smiling", "bangs"]),
    ("1girl, anime", "beard | eyewear | low quality", "1girl, anime, no beard, no glasses", "low quality",
     ["beard", "eyeglasses"]),
    (None, "smiling", "not smiling", "", ["smiling"]),
    # the prompt names the attribute itself: the negative prompt steers away from that word's level, as said
    ("a man with glasses", "glasses", "a man with glasses", "glasses", []),
    # level-specific words and other text stay negative
    ("a man", "sunglasses, a big laugh, long beard", "a man", "sunglasses, a big laugh, long beard", []),
    ("a man", "glasses, glasses", "a man, no glasses", "", ["eyeglasses"]),
])
def test_negative_presence_words_read_as_negation(prompt, negative, want_prompt, want_negative, moved):
    from facediff.data.captions import negative_as_negation

    got = negative_as_negation(prompt, negative)
    assert got == (want_prompt, want_negative, moved)
    if moved:  # the added phrases are what the parser (and so the training captions) read as level 0
        assert all(parse_caption(got[0]).attributes[a] == 0 for a in moved)


def test_negation_phrases_are_training_phrases_of_level_0():
    from facediff.data.captions import GENERIC_WORDS, NEGATION_PHRASES
    from facediff.data.free_text import PHRASES_FREE

    for attr, phrase in NEGATION_PHRASES.items():
        assert phrase in PHRASES_FREE[attr][0]  # the free captions say level 0 this way
        # each bare word the parser knows names one level above 0 (why guidance away from it needs this);
        # the others ("eyewear", "facial hair") are no caption words at all, so the model cannot steer from them
        levels = [parse_caption(f"a person with {w}").attributes.get(attr) for w in GENERIC_WORDS[attr]]
        assert all(lvl is None or lvl > 0 for lvl in levels) and any(lvl for lvl in levels)
