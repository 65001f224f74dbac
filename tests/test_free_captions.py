"""Free-phrased training captions (data/free_text.py): every phrase reads back, named facts are the labels',
registers and negation all occur, unnamed facts vary; the caption parser's negation rule; a t2i run with
[text] caption_mode = "free" draws a new caption per image and step."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from facediff.config import ATTRIBUTES, load_config
from facediff.data import synth
from facediff.data.captions import parse_caption
from facediff.data.free_text import PHRASES_FREE, free_caption
from facediff.data.synth import make_look
from facediff.errors import FacediffError


def _labels(n: int, seed: int = 3) -> list[dict]:
    return [synth._label(seed, i, make_look(seed, i, "mixed")) for i in range(n)]


@pytest.mark.parametrize("subject", ["a woman with {}", "{}", "1girl, {}, smile"])
def test_every_free_phrase_reads_back_as_its_level(subject):
    for attr, levels in PHRASES_FREE.items():
        for level, phrases in enumerate(levels):
            for phrase in phrases:
                got = parse_caption(subject.format(phrase)).attributes.get(attr)
                assert got == level, (attr, level, phrase, got)


def test_named_facts_are_the_labels_and_unnamed_ones_are_absent():
    rows, rng = _labels(120), np.random.default_rng(0)
    named = Counter()
    texts = set()
    for row in rows:
        for _ in range(6):
            text = free_caption(row, rng)
            texts.add(text)
            p = parse_caption(text)
            for attr, level in p.attributes.items():
                assert level == row["attributes"][attr], (text, attr)
            assert p.hair_colour in (None, row["hair_colour"]), text
            assert p.hair_length in (None, row["hair_length"]), text
            assert p.style in (None, row["style"]), text
            named.update(p.attributes.keys())
            named["style"] += p.style is not None
    n = 120 * 6
    assert len(texts) > 0.95 * n  # wording varies per draw
    for fact in (*ATTRIBUTES, "style"):  # each fact is sometimes named and sometimes left open
        assert 0.3 * n < named[fact] < 0.97 * n, (fact, named[fact])


@pytest.mark.parametrize("subject", ["a woman with {}", "{}", "1girl, {}, smile"])
def test_every_loose_phrase_reads_back_as_its_level_and_is_no_held_out_word(subject):
    from facediff.data import synth_text
    from facediff.data.free_text import _LOOSE_AGE, LOOSE_FREE

    held_out = [p for levels in synth_text.HELDOUT_PHRASES.values() for ps in levels for p in ps]
    held_out += [w for ws in (*synth_text.HAIR_LENGTH_WORDS_HELDOUT.values(), *synth_text._MEDIUM_HELDOUT.values())
                 for w in ws] + ["lady", "gentleman"]
    for attr, levels in LOOSE_FREE.items():
        for level, phrases in enumerate(levels):
            for phrase in phrases:
                assert parse_caption(subject.format(phrase)).attributes.get(attr) == level, (attr, level, phrase)
                assert phrase not in PHRASES_FREE[attr][level]  # a word the plain free captions never use
                assert not any(phrase in h for h in held_out), phrase
    for gender, levels in _LOOSE_AGE.items():
        for level, nouns in enumerate(levels):
            assert all(parse_caption(f"a photo of a {noun}").attributes.get("age") == level for noun in nouns)


def test_loose_words_say_the_same_facts_with_other_words():
    """loose = 1: every fact that has another word is said with it, and parses to the labels; loose = 0: not."""
    from facediff.data.free_text import LOOSE_FREE

    rows, loose_words = _labels(150), {p for levels in LOOSE_FREE.values() for ps in levels for p in ps}
    plain = [free_caption(r, np.random.default_rng([2, i])) for i, r in enumerate(rows)]
    loose = [free_caption(r, np.random.default_rng([2, i]), 1.0) for i, r in enumerate(rows)]
    for row, text in zip(rows, loose):
        p = parse_caption(text)
        assert all(level == row["attributes"][a] for a, level in p.attributes.items()), text
        assert p.hair_colour in (None, row["hair_colour"]) and p.style in (None, row["style"]), text
    said = lambda texts: sum(any(w in t for w in loose_words) for t in texts)  # noqa: E731
    assert said(loose) > said(plain) + 0.3 * len(rows)  # (plain: "eyeglasses" inside "no eyeglasses", ...)
    joined = "\n".join(loose)
    for needle in ("kid", "grand", "spectacles", "gray hair", "unsmiling"):
        assert needle in joined, needle
    with pytest.raises(FacediffError, match=r"\[text\] loose_words = 1.5"):
        load_config("tiny-t2i", ["text.loose_words=1.5"])


def test_registers_negation_numbers_and_tags_all_occur():
    rows, rng = _labels(200), np.random.default_rng(1)
    texts = [free_caption(r, rng) for r in rows for _ in range(3)]
    joined = "\n".join(texts)
    for needle in ("not smiling", "without", "clean-shaven", "1girl", "1boy", "-year-old", "bare forehead"):
        assert needle in joined, needle
    assert any(t.count(",") >= 3 and "." not in t for t in texts)  # tag lists
    assert any(len(t.split(",")) <= 2 and len(t.split()) <= 4 for t in texts)  # a few words only


def test_free_caption_depends_only_on_the_generator():
    row = _labels(1)[0]
    assert free_caption(row, np.random.default_rng([5, 7])) == free_caption(row, np.random.default_rng([5, 7]))


def test_rows_without_synthfaces_labels_are_refused_in_one_line():
    with pytest.raises(FacediffError, match="caption_mode = 'free' needs labels.jsonl rows with .*hair_colour"):
        free_caption({"attributes": {a: 0 for a in ATTRIBUTES}, "gender": "female", "style": "human"},
                     np.random.default_rng(0))


@pytest.mark.parametrize("text, attr, level", [
    ("a man not wearing glasses", "eyeglasses", 0),
    ("she doesn't have a beard", "beard", 0),
    ("a man with no beard or glasses", "eyeglasses", 0),
    ("a woman who isn't smiling", "smiling", 0),
    ("a woman with no bangs and glasses", "eyeglasses", 2),  # "and" ends the negated part
    ("not smiling, with a beard", "beard", 4),
    ("a man without a smile, wearing sunglasses", "eyeglasses", 4),
    ("a bare forehead", "bangs", 0),
])
def test_parser_reads_negation_within_its_clause_part(text, attr, level):
    assert parse_caption(text).attributes.get(attr) == level


def test_caption_mode_is_checked_in_the_config():
    assert load_config("tiny-t2i", ["text.caption_mode=free"]).text.caption_mode == "free"
    with pytest.raises(FacediffError, match=r"\[text\] caption_mode = 'tags': choose one of fixed, free"):
        load_config("tiny-t2i", ["text.caption_mode=tags"])


def test_a_free_run_draws_new_token_ids_per_step_and_the_same_on_replay():
    import torch

    from facediff.conditioning.text import build_tokenizer
    from facediff.training.text import Captions, free_captions_sample

    rows = _labels(16)
    cfg = load_config("tiny-t2i", ["text.caption_mode=free", "text.max_length=48"])
    tok = build_tokenizer([r["caption"] for r in rows] + free_captions_sample(rows), vocab_size=400, max_length=48)
    caps = Captions([r["caption"] for r in rows], tok, cfg, rows)
    idx, keep = torch.arange(8), torch.zeros(8, dtype=torch.bool)
    a, b, again = caps.batch(idx, keep, 0, 1), caps.batch(idx, keep, 0, 2), caps.batch(idx, keep, 0, 1)
    assert torch.equal(a, again) and not torch.equal(a, b)
    dropped = caps.batch(idx, torch.ones(8, dtype=torch.bool), 0, 1)
    assert torch.equal(dropped, caps.null_ids[None].expand(8, -1))
    fixed = Captions([r["caption"] for r in rows], tok, load_config("tiny-t2i", ["text.max_length=48"]), rows)
    assert torch.equal(fixed.batch(idx, keep, 0, 1), fixed.batch(idx, keep, 0, 2))  # fixed mode: the data's text
