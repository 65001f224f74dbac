"""CelebA-Dialog-style captions for SynthFaces: varied wording, a stable vocabulary, held-out paraphrases.

Every caption names the level of each of the five attributes with a fixed *keyword* (``KEYWORDS[attr][level]``,
present verbatim in every phrasing of that level and absent from every other level's phrasing), the age-group
subject, hair length and colour, and the style (a photo-like ``human`` face or an ``anime`` one, each in
several phrasings); optional clauses add nuisance facts of the same face (eye colour, skin tone, face shape).
Each caption is built from one *template* (a sentence structure: clause order, subject first or last, a list,
separate sentences, comma tags) and one synonym per slot, all chosen by the caller's random generator
(SynthFaces passes its per-image text stream, so wording never touches the pictures).

Two disjoint template sets exist: ``TRAIN_TEMPLATES`` build ``caption`` (what a model trains on) and
``HELDOUT_TEMPLATES`` build ``caption_heldout`` (prompts for evaluation, in sentence structures and with a few
synonyms, ``HELDOUT_PHRASES`` / held-out frames and hair-length words, that training captions never use).
:func:`facediff.data.captions.parse_caption` recovers every level, hair length / colour and style from both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.errors import FacediffError

# The word(s) that identify each level; each phrase below contains its level's keyword and no other level's.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "bangs": ("no bangs", "wispy bangs", "short bangs", "medium bangs", "long bangs", "full bangs"),
    "eyeglasses": ("no glasses", "rimless glasses", "thin-framed glasses", "thick-framed glasses",
                   "thin-framed sunglasses", "thick-framed sunglasses"),
    "beard": ("no beard", "light stubble", "moustache", "goatee", "full beard", "bushy beard"),
    "smiling": ("neutral expression", "slight smile", "gentle smile", "broad smile", "open smile", "big laugh"),
    "age": ("little", "teenage", "young", "middle-aged", "older", "elderly"),
}

# Noun phrases per attribute and level (training captions); no commas inside, so tag lists stay tags.
_BANGS = (
    ("no bangs", "no bangs over a bare forehead"),
    ("a few wispy bangs", "wispy bangs at the hairline"),
    ("short bangs", "short bangs over the top of the forehead"),
    ("medium bangs", "medium bangs covering half the forehead"),
    ("long bangs", "long bangs covering most of the forehead"),
    ("full bangs", "full bangs reaching the eyebrows"),
)
_GLASSES = (
    ("no glasses", "no glasses at all"),
    ("rimless glasses", "a pair of rimless glasses"),
    ("thin-framed glasses", "a pair of thin-framed glasses", "delicate thin-framed glasses"),
    ("thick-framed glasses", "a pair of thick-framed glasses", "bold thick-framed glasses"),
    ("thin-framed sunglasses", "dark thin-framed sunglasses"),
    ("thick-framed sunglasses", "dark thick-framed sunglasses"),
)
_BEARD = (
    ("no beard", "no beard at all"),
    ("light stubble", "a bit of light stubble"),
    ("a moustache", "a neat moustache"),
    ("a goatee", "a short goatee"),
    ("a full beard", "a thick full beard"),
    ("a bushy beard", "a long bushy beard"),
)
_SMILE = (
    ("a neutral expression", "a serious neutral expression"),
    ("a slight smile", "just a slight smile"),
    ("a gentle smile", "a warm gentle smile"),
    ("a broad smile", "a broad smile with closed lips"),
    ("an open smile", "an open smile showing the teeth"),
    ("a big laugh", "a big laugh with the mouth wide open"),
)
# Subject phrases; {kid} is girl/boy, {adult} woman/man (or a held-out synonym), {pos} her/his.
_AGE = (
    ("little {kid}", "little {kid} of about six"),
    ("teenage {kid}", "teenage {kid} of about fifteen"),
    ("young {adult}", "young {adult} in {pos} twenties"),
    ("middle-aged {adult}", "middle-aged {adult} in {pos} forties"),
    ("older {adult}", "older {adult} in {pos} fifties"),
    ("elderly {adult}", "elderly {adult} over sixty"),
)
#: Training noun phrases, ``PHRASES[attr][level]``.
PHRASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "bangs": _BANGS, "eyeglasses": _GLASSES, "beard": _BEARD, "smiling": _SMILE, "age": _AGE}
#: Phrases only held-out captions use (empty where a level has none); they keep the KEYWORDS contract too.
HELDOUT_PHRASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "bangs": ((), ("thin wispy bangs",), (), ("medium bangs halfway down the forehead",), (), ("heavy full bangs",)),
    "eyeglasses": (("no glasses on the face",), (), ("slim thin-framed glasses",), (),
                   ("tinted thin-framed sunglasses",), ("chunky thick-framed sunglasses",)),
    "beard": ((), (), ("a trimmed moustache",), (), ("a dense full beard",), ("a big bushy beard",)),
    "smiling": (("a blank neutral expression",), (), ("a soft gentle smile",), (), ("a toothy open smile",), ()),
    "age": (("little {kid} of kindergarten age",), (), ("young {adult} of about twenty-five",), (), (),
            ("elderly {adult} past seventy",)),
}
_KID = {"female": "girl", "male": "boy"}
_ADULT = {"female": ("woman",), "male": ("man",)}
_ADULT_HELDOUT = {"female": ("lady",), "male": ("gentleman",)}

# Hair length words (each names its length; the caption parser maps them back).
HAIR_LENGTH_WORDS: dict[str, tuple[str, ...]] = {
    "short": ("short", "short-cropped"), "medium": ("medium-length", "shoulder-length"), "long": ("long",)}
HAIR_LENGTH_WORDS_HELDOUT: dict[str, tuple[str, ...]] = {
    "short": ("cropped",), "medium": ("mid-length",), "long": ("waist-length",)}

# Style: frames around the subject noun phrase ("a photo of {}"), the medium ("in this {}"), a leading tag.
STYLE_FRAMES: dict[str, tuple[str, ...]] = {
    "human": ("a photo of {}", "a photograph of {}", "a realistic photo of {}", "a photo-realistic portrait of {}"),
    "anime": ("an anime drawing of {}", "an anime-style picture of {}", "an anime illustration of {}",
              "{} drawn in anime style"),
}
STYLE_FRAMES_HELDOUT: dict[str, tuple[str, ...]] = {
    "human": ("a realistic snapshot of {}", "a camera shot of {}"),
    "anime": ("a cel-shaded anime picture of {}", "{} in anime art style"),
}
_MEDIUM = {"human": ("photo", "photograph"), "anime": ("anime drawing", "anime illustration")}
_MEDIUM_HELDOUT = {"human": ("snapshot",), "anime": ("anime artwork",)}
_TAG = {"human": ("photo", "realistic photo"), "anime": ("anime", "anime style")}

# Verbs for clauses "{P} {verb} {np}"; level 0 (a negative: "no beard") always takes "has" / "wears".
_VERBS = {"eyeglasses": ("wears", "is wearing", "has"), "smiling": ("has", "shows"), "beard": ("has", "sports")}

# Sentence structures. Fields: {frame}/{Frame} style frame around the subject with its article, {subj} the
# bare subject, {medium}, {tag}; {hair}/{Hair} e.g. "long blonde hair", {hair_pred} "long and blonde";
# {bangs} {glasses} {beard} {smile} (+ capitalised) noun phrases; {gl_v} {sm_v} {be_v} verb clauses;
# {P} {p} {pos} {Pos} pronouns. Each template has its own order of the six facts (subject, hair and the
# four face attributes), so a caption's order tells its template apart (tests rely on this).
TRAIN_TEMPLATES: dict[str, str] = {
    "lead_with_hair": "{Frame} with {hair} and {bangs}. {P} {gl_v}. {P} {sm_v} and {be_v}.",
    "bangs_last": "{Frame} with {hair}. {P} {sm_v}, {gl_v} and {be_v}. {P} has {bangs}.",
    "colon_list": "{Frame}: {hair}, {bangs}, {glasses}, {beard}, {smile}.",
    "subject_last": "{Hair}, {bangs}, {glasses}, {beard} and {smile}: {frame}.",
    "short_sentences": "{Frame}. {P} has {bangs}. {P} {gl_v}. {P} has {hair}. {P} {sm_v}. {P} {be_v}.",
    "with_first": "With {glasses} and {smile}, the {subj} in this {medium} has {hair} and {bangs}, and {p} {be_v}.",
    "tags": "{tag}, {subj}, {smile}, {glasses}, {hair}, {bangs}, {beard}",
    "hair_frames_face": "{Hair} and {bangs} frame the face of the {subj} in this {medium}, who {gl_v}, {sm_v} "
                        "and {be_v}.",
    "fields": "{Frame}. Expression: {smile}. Eyewear: {glasses}. Facial hair: {beard}. Hair: {hair} with {bangs}.",
}
HELDOUT_TEMPLATES: dict[str, str] = {
    "show_me": "Show me {frame} who has {bangs}, {hair}, {smile}, {glasses} and {beard}.",
    "look_of": "{Smile}, {beard} and {glasses}: that is the look of {frame}, whose hair is {hair_pred} with {bangs}.",
    "dash_list": "{Frame} - {glasses}, {bangs}, {beard}, {hair}, and {smile}.",
    "hair_first": "{Pos} hair is {hair_pred} and {p} has {bangs}; the {subj} in this {medium} has {beard}, "
                  "{smile} and {glasses}.",
}
_TAG_TEMPLATES = frozenset({"tags"})  # extras join these as further tags, not as a sentence
_EXTRA_SENTENCES = ("{P} has {x}.", "{P} also has {x}.")

STYLES = ("human", "anime")
GENDERS = ("female", "male")


@dataclass(frozen=True)
class Caption:
    """A composed caption and the name of the template that built it."""
    text: str
    template: str


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def hair_colour_word(colour: str, age: int) -> str:
    """The caption's word for a hair colour: age-4 grey (salt and pepper) reads 'greying'."""
    return "greying" if (colour == "grey" and age == 4) else colour


def _check(style: str, gender: str, attributes: dict[str, int], hair_length: str) -> None:
    if style not in STYLES:
        raise FacediffError(f"caption style {style!r} is unknown; use one of: {', '.join(STYLES)}")
    if gender not in GENDERS:
        raise FacediffError(f"caption gender {gender!r} is unknown; use one of: {', '.join(GENDERS)}")
    if hair_length not in HAIR_LENGTH_WORDS:
        raise FacediffError(f"caption hair_length {hair_length!r} is unknown; use one of: "
                            f"{', '.join(HAIR_LENGTH_WORDS)}")
    for name in ATTRIBUTES:
        level = attributes.get(name)
        if not isinstance(level, (int, np.integer)) or not 0 <= int(level) < NUM_LEVELS:
            raise FacediffError(f"caption attribute {name}={level!r} is missing or out of range; "
                                f"give an integer 0..{NUM_LEVELS - 1} for each of {', '.join(ATTRIBUTES)}")


def compose(*, style: str, gender: str, attributes: dict[str, int], hair_colour: str, hair_length: str,
            rng: np.random.Generator, eye_colour: str | None = None, skin_tone: str | None = None,
            face_shape: str | None = None, heldout: bool = False) -> Caption:
    """One caption naming every attribute level, hair length and colour and the style (+ optional nuisance facts).

    ``heldout=False`` uses only ``TRAIN_TEMPLATES`` and training synonyms; ``heldout=True`` uses only
    ``HELDOUT_TEMPLATES``, with training and held-out synonyms. The draws from ``rng`` are in a fixed order.
    """
    _check(style, gender, attributes, hair_length)
    a = {k: int(attributes[k]) for k in ATTRIBUTES}

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    def phrases(attr: str) -> tuple[str, ...]:
        train = PHRASES[attr][a[attr]]
        return train + HELDOUT_PHRASES[attr][a[attr]] if heldout else train

    templates = HELDOUT_TEMPLATES if heldout else TRAIN_TEMPLATES
    name = pick(tuple(templates))
    female = gender == "female"
    pos = "her" if female else "his"
    adults = _ADULT[gender] + (_ADULT_HELDOUT[gender] if heldout else ())
    subj = pick(phrases("age")).format(kid=_KID[gender], adult=pick(adults), pos=pos)
    a_subj = f"{_article(subj)} {subj}"
    lengths = HAIR_LENGTH_WORDS[hair_length] + (HAIR_LENGTH_WORDS_HELDOUT[hair_length] if heldout else ())
    length_word, colour_word = pick(lengths), hair_colour_word(hair_colour, a["age"])
    bangs, glasses, beard, smile = (pick(phrases(k)) for k in ("bangs", "eyeglasses", "beard", "smiling"))

    def clause(attr: str, np_: str) -> str:
        verb = pick(_VERBS[attr]) if a[attr] > 0 else ("wears" if attr == "eyeglasses" else "has")
        return f"{verb} {np_}"

    gl_v, sm_v, be_v = clause("eyeglasses", glasses), clause("smiling", smile), clause("beard", beard)
    frames = STYLE_FRAMES[style] + (STYLE_FRAMES_HELDOUT[style] if heldout else ())
    frame = pick(frames).format(a_subj)
    medium = pick(_MEDIUM[style] + (_MEDIUM_HELDOUT[style] if heldout else ()))
    tag = pick(_TAG[style])
    hair = f"{length_word} {colour_word} hair"
    fields = dict(Frame=_cap(frame), frame=frame, subj=subj, medium=medium, tag=tag, hair=hair, Hair=_cap(hair),
                  hair_pred=f"{length_word} and {colour_word}", bangs=bangs, glasses=glasses, beard=beard,
                  smile=smile, Smile=_cap(smile), gl_v=gl_v, sm_v=sm_v, be_v=be_v, P="She" if female else "He",
                  p="she" if female else "he", pos=pos, Pos=_cap(pos))
    text = templates[name].format(**fields)
    # Optional nuisance facts, each present with probability 0.4, in a random order.
    facts = [f"{eye_colour} eyes" if eye_colour else "", f"{skin_tone} skin" if skin_tone else "",
             f"{_article(face_shape)} {face_shape} face" if face_shape else ""]
    keep = rng.random(3) < 0.4
    extras = [facts[i] for i in rng.permutation(3) if keep[i] and facts[i]]
    sentence = pick(_EXTRA_SENTENCES)
    if extras:
        text += (", " + ", ".join(extras)) if name in _TAG_TEMPLATES else " " + sentence.format(
            P=fields["P"], x=_join(extras))
    return Caption(text, name)


def caption(*, style: str, gender: str, attributes: dict[str, int], hair_colour: str, hair_length: str,
            rng: np.random.Generator, eye_colour: str | None = None, skin_tone: str | None = None,
            face_shape: str | None = None) -> str:
    """A training caption (``TRAIN_TEMPLATES``): the labels.jsonl ``caption``."""
    return compose(style=style, gender=gender, attributes=attributes, hair_colour=hair_colour,
                   hair_length=hair_length, rng=rng, eye_colour=eye_colour, skin_tone=skin_tone,
                   face_shape=face_shape).text


def caption_heldout(*, style: str, gender: str, attributes: dict[str, int], hair_colour: str, hair_length: str,
                    rng: np.random.Generator, eye_colour: str | None = None, skin_tone: str | None = None,
                    face_shape: str | None = None) -> str:
    """A held-out caption (``HELDOUT_TEMPLATES`` only): the labels.jsonl ``caption_heldout``."""
    return compose(style=style, gender=gender, attributes=attributes, hair_colour=hair_colour,
                   hair_length=hair_length, rng=rng, eye_colour=eye_colour, skin_tone=skin_tone,
                   face_shape=face_shape, heldout=True).text
