"""CelebA-Dialog-style captions for SynthFaces.

Every caption names the level of each of the five attributes with a fixed *keyword* (``KEYWORDS[attr][level]``,
present verbatim in every phrasing of that level and absent from every other level's phrasing), plus hair length
and colour; templates and synonyms vary per image, chosen by the caller's random generator, so a text encoder
sees varied wording with a stable vocabulary.
"""
from __future__ import annotations

import numpy as np

# The word(s) that identify each level; each phrase below contains its level's keyword and no other level's.
KEYWORDS: dict[str, tuple[str, ...]] = {
    "bangs": ("no bangs", "wispy bangs", "short bangs", "medium bangs", "long bangs", "full bangs"),
    "eyeglasses": ("no glasses", "rimless glasses", "thin-framed glasses", "thick-framed glasses",
                   "thin-framed sunglasses", "thick-framed sunglasses"),
    "beard": ("no beard", "light stubble", "moustache", "goatee", "full beard", "bushy beard"),
    "smiling": ("neutral expression", "slight smile", "gentle smile", "broad smile", "open smile", "big laugh"),
    "age": ("little", "teenage", "young", "middle-aged", "older", "elderly"),
}

_BANGS = (
    ("no bangs", "no bangs, so the whole forehead shows"),
    ("a few wispy bangs", "wispy bangs at the top of the forehead"),
    ("short bangs", "short bangs covering a bit of the forehead"),
    ("medium bangs", "medium bangs covering half of the forehead"),
    ("long bangs", "long bangs covering most of the forehead"),
    ("full bangs", "full bangs reaching down to the eyebrows"),
)
_GLASSES = (
    ("wears no glasses", "has no glasses on"),
    ("wears rimless glasses", "has rimless glasses on"),
    ("wears thin-framed glasses", "has thin-framed glasses on"),
    ("wears thick-framed glasses", "has thick-framed glasses on"),
    ("wears thin-framed sunglasses", "has dark thin-framed sunglasses on"),
    ("wears thick-framed sunglasses", "has dark thick-framed sunglasses on"),
)
_SMILE = (
    ("has a neutral expression", "keeps a neutral expression"),
    ("has a slight smile", "shows a slight smile"),
    ("has a gentle smile", "is smiling a gentle smile"),
    ("has a broad smile with closed lips", "smiles a broad smile without showing teeth"),
    ("has an open smile showing the teeth", "smiles an open smile with the teeth showing"),
    ("is breaking into a big laugh with the mouth wide open", "has a big laugh that squeezes the eyes"),
)
_BEARD = (
    ("has no beard", "is clean-shaven with no beard"),
    ("has light stubble", "shows light stubble on the jaw"),
    ("has a moustache", "wears a moustache"),
    ("has a goatee", "has a short goatee beard"),
    ("has a full beard", "wears a thick full beard"),
    ("has a long bushy beard", "wears a very long, bushy beard"),
)
# Subject phrases; {kid} is girl/boy, {adult} woman/man, {pos} her/his.
_AGE = (
    ("little {kid}", "little {kid} of about six"),
    ("teenage {kid}", "teenage {kid} of about fifteen"),
    ("young {adult}", "young {adult} in {pos} twenties"),
    ("middle-aged {adult}", "middle-aged {adult} in {pos} forties"),
    ("older {adult}", "older {adult} in {pos} fifties"),
    ("elderly {adult}", "elderly {adult} over sixty"),
)
PHRASES: dict[str, tuple[tuple[str, ...], ...]] = {
    "bangs": _BANGS, "eyeglasses": _GLASSES, "beard": _BEARD, "smiling": _SMILE, "age": _AGE}

_LENGTH_WORDS = {"short": ("short",), "medium": ("medium-length", "shoulder-length"), "long": ("long",)}


def hair_phrase(length: str, colour: str, age: int, rng: np.random.Generator) -> str:
    """E.g. 'long blonde hair'; age 4 hair that is partly grey reads 'greying' instead of 'grey'."""
    words = _LENGTH_WORDS[length]
    colour_word = "greying" if (colour == "grey" and age == 4) else colour
    return f"{words[int(rng.integers(len(words)))]} {colour_word} hair"


def caption(*, style: str, gender: str, attributes: dict[str, int], hair_colour: str, hair_length: str,
            rng: np.random.Generator) -> str:
    """A three-sentence caption naming every attribute level, hair length and hair colour."""
    female = gender == "female"
    P = "She" if female else "He"
    fmt = {"kid": "girl" if female else "boy", "adult": "woman" if female else "man",
           "pos": "her" if female else "his"}

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    a = attributes
    subject = pick(_AGE[a["age"]]).format(**fmt)
    art = "An" if subject[0] in "aeiou" else "A"
    hair = hair_phrase(hair_length, hair_colour, a["age"], rng)
    bangs, glasses = pick(_BANGS[a["bangs"]]), pick(_GLASSES[a["eyeglasses"]])
    smile, beard = pick(_SMILE[a["smiling"]]), pick(_BEARD[a["beard"]])
    anime = style == "anime"
    template = int(rng.integers(3))
    if template == 0:
        lead = f"This anime-style {subject}" if anime else f"This {subject}"
        return (f"{lead} has {hair} with {bangs}. {P} {glasses}. {P} {smile} and {beard}.")
    if template == 1:
        lead = f"{art} {subject} drawn in anime style" if anime else f"{art} {subject}"
        return (f"{lead} with {hair}. {P} {smile}, {glasses} and {beard}. {P} has {bangs}.")
    lead = f"In this anime picture, the {subject}" if anime else f"The {subject} in this photo"
    return (f"{lead} {glasses} and {beard}. {P} has {hair} and {bangs}. {P} {smile}.")
