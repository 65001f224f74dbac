"""Free-phrased captions drawn afresh from a face's labels: what a new user types, not a template's sentence.

The SynthFaces ``caption`` names every fact of a face in one of nine sentence structures; a model trained on it
alone learns those sentences, not the words: it ignores "not smiling", reads "1girl, blue hair, smile" as noise
and draws the same face for every prompt that leaves something out. :func:`free_caption` writes one caption of a
labels row in one of four registers, each fact named or left out independently:

* ``sentence``: the SynthFaces training caption itself (every fact, the nine templates);
* ``phrase``: "a photo of a 70-year-old man with short grey hair, not smiling, without glasses";
* ``tags``: danbooru-style tag lists, "1girl, solo, anime, long hair, blue hair, smile, glasses", shuffled;
* ``words``: the fewest words, "elderly woman, clean-shaven" (one to three facts).

Level 0 of an attribute is said by negation as often as by its neutral phrase ("no glasses", "not wearing
glasses", "without a beard", "clean-shaven", "bare forehead", "not smiling"); age by a subject word or a number
("a 70-year-old"). A fact left out is unnamed, so the model learns what a prompt leaves open (diversity) and
what each phrase alone means (negative prompts). Every phrase here reads back to its level through
:func:`facediff.data.captions.parse_caption` (tests check every phrase of every level), and a named fact is
always the labels' fact. The draws come from the caller's generator only (a run seeds it per image and step).
"""
from __future__ import annotations

import re

import numpy as np

from facediff.config import ATTRIBUTES
from facediff.data.synth_text import caption as template_caption
from facediff.errors import FacediffError

__all__ = ["REGISTERS", "PHRASES_FREE", "free_caption"]

#: Register -> probability of drawing it.
REGISTERS: dict[str, float] = {"sentence": 0.3, "phrase": 0.35, "tags": 0.2, "words": 0.15}

#: Free phrases per attribute and level (noun / adjective phrases that follow "with" or stand as a tag).
PHRASES_FREE: dict[str, tuple[tuple[str, ...], ...]] = {
    "bangs": (("no bangs", "without bangs", "a bare forehead", "no fringe"),
              ("wispy bangs", "a wispy fringe"), ("short bangs", "a short fringe"),
              ("medium bangs", "bangs", "a fringe"), ("long bangs", "a long fringe"),
              ("full bangs", "heavy bangs", "blunt bangs", "a full fringe")),
    "eyeglasses": (("no glasses", "without glasses", "not wearing glasses", "no eyeglasses"),
                   ("rimless glasses", "frameless glasses"), ("thin-framed glasses", "glasses", "thin glasses"),
                   ("thick-framed glasses", "thick glasses", "horn-rimmed glasses"),
                   ("thin-framed sunglasses", "sunglasses", "shades"),
                   ("thick-framed sunglasses", "thick sunglasses")),
    "beard": (("no beard", "without a beard", "clean-shaven", "beardless", "no facial hair"),
              ("light stubble", "stubble"), ("a moustache", "a mustache"), ("a goatee",), ("a full beard", "a beard"),
              ("a bushy beard", "a long beard")),
    "smiling": (("a neutral expression", "not smiling", "serious", "no smile"),
                ("a slight smile", "a faint smile", "a smirk"), ("a gentle smile", "a smile", "smiling"),
                ("a broad smile", "a big smile", "a wide smile"), ("an open smile", "a grin", "grinning",
                                                                   "a toothy smile"),
                ("a big laugh", "laughing")),
}
#: More words the prompt parser reads (``captions.LOOSE_WORDS``), said instead of a phrase above with probability
#: ``loose`` ([text] loose_words): what a user may type ("spectacles", "a straight face") is then a word the model
#: trained on. Never a held-out word (``synth_text.HELDOUT_PHRASES``, the held-out frames and hair words).
LOOSE_FREE: dict[str, tuple[tuple[str, ...], ...]] = {
    "bangs": (("an uncovered forehead", "without a fringe"), (), (), ("a medium fringe",), (), ()),
    "eyeglasses": (("no spectacles",), (), ("spectacles", "eyeglasses", "wire-rimmed glasses"),
                   ("thick-rimmed glasses",), ("thin sunglasses",), ("thick-rimmed sunglasses",)),
    "beard": ((), (), (), (), ("a thick beard",), ()),
    "smiling": (("expressionless", "unsmiling", "a straight face"), ("slightly smiling", "smirking"), (),
                ("a closed-mouth smile",), (), ()),
}
_LOOSE_AGE = {"female": (("kid", "toddler"), ("adolescent",), ("youthful woman",), ("middle-age woman",), (),
                         ("grandmother", "grandma")),
              "male": (("kid", "toddler"), ("adolescent",), ("youthful man",), ("middle-age man",), (),
                       ("grandfather", "grandpa"))}
_LOOSE_COLOUR = {"blonde": "blond", "grey": "gray", "red": "ginger"}
_LOOSE_STYLE_TAGS = {"human": ("photograph", "photographic", "camera photo"), "anime": ("illustration", "cel-shaded",
                                                                                       "cartoon")}
#: Phrases that stand alone ("a man, clean-shaven"), not after "with".
_STANDALONE = re.compile(r"^(?:without|not)\b|^(?:clean-shaven|beardless|serious|smiling|grinning|laughing|"
                         r"expressionless|unsmiling|slightly smiling|smirking)$")
# Age: subject words per level ({kid} girl / boy, {adult} woman / man) and the ages a number may say.
_AGE_WORDS = (("little {kid}", "{kid}", "child"), ("teenage {kid}", "teenager", "teen {kid}"),
              ("young {adult}",), ("middle-aged {adult}",), ("older {adult}", "old {adult}"),
              ("elderly {adult}", "senior {adult}", "very old {adult}"))
_AGE_YEARS = ((4, 12), (13, 19), (20, 34), (35, 49), (50, 59), (60, 90))  # inclusive; parse_caption's bounds
_NOUN = {"female": ("girl", "woman"), "male": ("boy", "man")}  # child / adult subject when age goes unnamed
_STYLE_FRAMES = {"human": ("a photo of {}", "photo of {}", "a portrait photo of {}", "a realistic picture of {}",
                           "{}, photo", "{}, realistic"),
                 "anime": ("an anime drawing of {}", "{}, anime", "a manga illustration of {}", "{}, anime style",
                           "{} in anime style", "a cartoon of {}")}
_STYLE_TAGS = {"human": ("photo", "realistic", "photorealistic"), "anime": ("anime", "manga", "anime style")}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _loosen(rng: np.random.Generator, loose: float, word: str, others: tuple[str, ...]) -> str:
    """``word``, or with probability ``loose`` one of ``others`` (no draw at all when ``loose`` is 0, so the
    captions of loose = 0 are the ones drawn before the option existed)."""
    return _pick(rng, others) if loose > 0 and others and rng.random() < loose else word


def _subject(label: dict, rng: np.random.Generator, name_age: bool, loose: float = 0.0) -> str:
    """'a 70-year-old man', 'an elderly woman', 'a girl' (age unnamed: girl / woman by age group only)."""
    kid, adult = _NOUN[label["gender"]]
    age = int(label["attributes"]["age"])
    if not name_age:
        noun = kid if age <= 1 else adult
    elif loose > 0 and _LOOSE_AGE[label["gender"]][age] and rng.random() < loose:
        noun = _pick(rng, _LOOSE_AGE[label["gender"]][age])
    elif rng.random() < 0.3:
        lo, hi = _AGE_YEARS[age]
        noun = f"{int(rng.integers(lo, hi + 1))}-year-old {kid if age <= 1 else adult}"
    else:
        noun = _pick(rng, _AGE_WORDS[age]).format(kid=kid, adult=adult)
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _hair(label: dict, length: bool, colour: bool, rng: np.random.Generator | None = None,
          loose: float = 0.0) -> list[str]:
    """Hair facts as phrases: 'long blue hair' / 'blue-haired' (phrase) or separate tags."""
    col = label["hair_colour"]
    if col == "grey" and int(label["attributes"]["age"]) == 4:
        col = "greying"
    elif colour and col in _LOOSE_COLOUR and rng is not None:
        col = _loosen(rng, loose, col, (_LOOSE_COLOUR[col],))
    if length and colour:
        return [f"{label['hair_length']} {col} hair"]
    if length:
        return [f"{label['hair_length']} hair"]
    return [f"{col} hair"] if colour else []


def _attr_phrase(label: dict, attr: str, rng: np.random.Generator, loose: float) -> str:
    level = int(label["attributes"][attr])
    return _loosen(rng, loose, _pick(rng, PHRASES_FREE[attr][level]), LOOSE_FREE[attr][level])


def _facts(label: dict, rng: np.random.Generator, keep: float, loose: float) -> tuple[dict[str, bool], list[str]]:
    """Which facts this caption names (each with probability ``keep``) and the attribute phrases it uses."""
    named = {k: bool(rng.random() < keep) for k in (*ATTRIBUTES, "length", "colour", "style")}
    phrases = [_attr_phrase(label, a, rng, loose) for a in ("bangs", "eyeglasses", "beard", "smiling") if named[a]]
    return named, phrases


def _style_tag(label: dict, rng: np.random.Generator, loose: float) -> str:
    return _loosen(rng, loose, _pick(rng, _STYLE_TAGS[label["style"]]), _LOOSE_STYLE_TAGS[label["style"]])


def _bare(phrase: str) -> str:
    """A phrase as a tag: without its article ('a full beard' -> 'full beard')."""
    return phrase.split(" ", 1)[1] if phrase.startswith(("a ", "an ")) else phrase


def _listing(parts: list[str], rng: np.random.Generator) -> str:
    """'x', 'x and y', 'x, y and z' (or all commas)."""
    if len(parts) < 2:
        return "".join(parts)
    return ", ".join(parts[:-1]) + (" and " if rng.random() < 0.7 else ", ") + parts[-1]


def _phrase(label: dict, rng: np.random.Generator, loose: float) -> str:
    named, phrases = _facts(label, rng, 0.6, loose)
    parts = _hair(label, named["length"], named["colour"], rng, loose) + phrases
    parts = [parts[i] for i in rng.permutation(len(parts))]
    nouns = [p for p in parts if not _STANDALONE.search(p)]
    alone = [p for p in parts if _STANDALONE.search(p)]
    text = _subject(label, rng, named["age"], loose) + (" with " + _listing(nouns, rng) if nouns else "")
    text += "".join(", " + p for p in alone)
    return _pick(rng, _STYLE_FRAMES[label["style"]]).format(text) if named["style"] else text


def _tags(label: dict, rng: np.random.Generator, loose: float) -> str:
    named, phrases = _facts(label, rng, 0.6, loose)
    age = int(label["attributes"]["age"])
    who = ("1girl" if label["gender"] == "female" else "1boy") if age <= 2 or rng.random() < 0.5 else \
        _subject(label, rng, True, loose).split(" ", 1)[1]
    tags = [who] + (["solo"] if rng.random() < 0.3 else []) + [_bare(p) for p in phrases]
    tags += [f"{label['hair_length']} hair"] if named["length"] else []
    tags += _hair(label, False, named["colour"], rng, loose)
    tags += [_style_tag(label, rng, loose)] if named["style"] else []
    if named["age"] and who.startswith("1"):
        tags.append(_subject(label, rng, True, loose).split(" ", 1)[1])
    head, rest = tags[:1], tags[1:]
    return ", ".join(head + [rest[i] for i in rng.permutation(len(rest))])


def _words(label: dict, rng: np.random.Generator, loose: float) -> str:
    facts = ("bangs", "eyeglasses", "beard", "smiling", "colour", "style")
    chosen = [facts[i] for i in rng.permutation(len(facts))[:int(rng.integers(1, 4))]]
    out = [_subject(label, rng, bool(rng.random() < 0.5), loose).split(" ", 1)[1]]
    for f in chosen:
        if f == "colour":
            out += _hair(label, False, True, rng, loose)
        elif f == "style":
            out.append(_style_tag(label, rng, loose))
        else:
            out.append(_bare(_attr_phrase(label, f, rng, loose)))
    return ", ".join(out)


def free_caption(label: dict, rng: np.random.Generator, loose: float = 0.0) -> str:
    """One caption of a SynthFaces labels row (attributes, gender, style, hair_colour, hair_length, ...) in a
    register drawn by ``REGISTERS``; every named fact is the row's, unnamed ones are left open. ``loose``: the
    chance that a named fact is said with one of the parser's other words (``LOOSE_FREE``: "spectacles",
    "a kid", "grandma", "gray hair"); 0 draws exactly the captions drawn before the option existed."""
    missing = [k for k in ("attributes", "gender", "style", "hair_colour", "hair_length") if k not in label]
    if missing:
        raise FacediffError(f"[text] caption_mode = 'free' needs labels.jsonl rows with {', '.join(missing)} "
                            f"(a SynthFaces set has them); use caption_mode = 'fixed' for other data")
    register = list(REGISTERS)[int(rng.choice(len(REGISTERS), p=list(REGISTERS.values())))]
    if register == "sentence":
        return template_caption(style=label["style"], gender=label["gender"], attributes=label["attributes"],
                                hair_colour=label["hair_colour"], hair_length=label["hair_length"], rng=rng,
                                eye_colour=label.get("eye_colour"), skin_tone=label.get("skin_tone"),
                                face_shape=label.get("face_shape"))
    return {"phrase": _phrase, "tags": _tags, "words": _words}[register](label, rng, loose)
