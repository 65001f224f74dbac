"""Caption parsing (the inverse of the SynthFaces caption generator) and kohya-style caption transforms.

:func:`parse_caption` reads the attribute levels, hair colour / length and style a text names; evaluation
uses it to know which levels a prompt asks for (attribute accuracy against exactly those). Matching is by
phrase, case-insensitive, on whole words (hyphen or space between the words of a phrase), scanning left to
right with the longest phrase winning at each place ("thick-framed sunglasses" before "sunglasses",
"no glasses" before "glasses"). For each attribute a *keyword* (``synth_text.KEYWORDS``, which every
generated phrasing contains) beats a loose word; among equals the first mention wins. Words it does not
know are ignored, and an attribute the text does not name is absent from ``attributes``.

Loose words (for free prompts; ``LOOSE_WORDS`` is the full table):
  bangs       bangs / fringe -> 3 (medium); no fringe, without bangs -> 0; wispy / short / long / full
              fringe -> 1 / 2 / 4 / 5; heavy or blunt bangs -> 5
  eyeglasses  glasses, eyeglasses, spectacles, thin glasses -> 2 (thin frame); rimless -> 1; thick /
              thick-rimmed / horn-rimmed glasses -> 3; sunglasses, shades -> 4; thick sunglasses -> 5;
              without glasses, no sunglasses -> 0
  beard       beard, bearded -> 4 (full beard); stubble -> 1; mustache -> 2; long beard -> 5;
              clean-shaven, beardless, without a beard, no facial hair -> 0
  smiling     smile, smiling, smiles -> 2 (gentle smile); faint / little smile, smirk -> 1; big / wide
              smile -> 3; grin, grinning, toothy smile -> 4; laugh, laughing -> 5; neutral, serious,
              not smiling, no smile -> 0
  age         child, kid, toddler -> 0; teen, teenager -> 1; youthful -> 2; middle aged -> 3; old -> 4;
              senior, very old, grandmother / grandfather -> 5; "N-year-old" / "N years old" -> 0 under 13,
              1 under 20, 2 under 35, 3 under 50, 4 under 60, else 5 (girl / boy alone name no age)
  hair        "<length> <colour> hair", "<colour>-haired", "hair is <length> and <colour>"; lengths short,
              short-cropped, cropped / medium, medium-length, shoulder-length, mid-length / long,
              waist-length; colours ``HAIR_COLOURS`` (+ blond -> blonde, gray / greying -> grey, ginger -> red)
  style       anime, manga, cartoon, cel-shaded, illustration, drawn, drawing -> anime; photo, photograph,
              realistic, photorealistic, snapshot, camera -> human (anime wins if both appear)
Negation: a level above 0 named right after "no", "not", "without", "never" or a "n't" word in the same part of
a clause ("not wearing glasses", "doesn't have a beard", "no beard or glasses") reads as level 0.
Known limit: "a little smile" reads as smiling 1, but "little" alone is the keyword of age 0.

:func:`shuffle_caption` and :func:`first_line` follow kohya sd-scripts: the caption is split on the separator,
the first ``keep_tokens`` tags stay in place and the rest are shuffled, joined with ", "; a sidecar
``IMAGE.txt`` caption is its first line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from facediff.config import ATTRIBUTES
from facediff.data.synth import HAIR_COLOURS
from facediff.data.synth_text import HAIR_LENGTH_WORDS, HAIR_LENGTH_WORDS_HELDOUT, KEYWORDS
from facediff.errors import FacediffError

__all__ = ["HAIR_COLOURS", "LOOSE_WORDS", "ParsedCaption", "parse_caption", "negative_as_negation", "shuffle_caption",
           "first_line"]

#: Loose words per attribute -> level (None: a phrase that is consumed but names no level, e.g. "year-old"
#: so that "5-year-old" never reads as "old").
LOOSE_WORDS: dict[str, dict[str, int | None]] = {
    "bangs": {"without bangs": 0, "no fringe": 0, "bare forehead": 0, "uncovered forehead": 0, "without a fringe": 0, "wispy fringe": 1, "short fringe": 2,
              "bangs": 3, "fringe": 3, "medium fringe": 3, "long fringe": 4, "full fringe": 5, "heavy bangs": 5,
              "blunt bangs": 5},
    "eyeglasses": {"without glasses": 0, "without sunglasses": 0, "no eyeglasses": 0, "no spectacles": 0,
                   "no sunglasses": 0, "rimless": 1, "frameless glasses": 1, "glasses": 2, "eyeglasses": 2,
                   "spectacles": 2, "thin glasses": 2, "wire-rimmed glasses": 2, "thick glasses": 3,
                   "thick-rimmed glasses": 3, "horn-rimmed glasses": 3, "sunglasses": 4, "shades": 4,
                   "thin sunglasses": 4, "thick sunglasses": 5, "thick-rimmed sunglasses": 5},
    "beard": {"clean-shaven": 0, "beardless": 0, "without a beard": 0, "no facial hair": 0, "stubble": 1,
              "mustache": 2, "moustached": 2, "mustached": 2, "beard": 4, "bearded": 4, "thick beard": 4,
              "long beard": 5},
    "smiling": {"neutral": 0, "serious": 0, "expressionless": 0, "not smiling": 0, "no smile": 0, "unsmiling": 0,
                "straight face": 0, "faint smile": 1, "little smile": 1, "slightly smiling": 1, "smirk": 1,
                "smirking": 1, "smile": 2, "smiles": 2, "smiling": 2, "big smile": 3, "wide smile": 3,
                "closed-mouth smile": 3, "grin": 4, "grinning": 4, "toothy smile": 4, "laugh": 5, "laughs": 5,
                "laughing": 5},
    "age": {"child": 0, "kid": 0, "toddler": 0, "teen": 1, "teenager": 1, "adolescent": 1, "youthful": 2,
            "middle-age": 3, "old": 4, "senior": 5, "very old": 5, "grandmother": 5, "grandfather": 5,
            "grandma": 5, "grandpa": 5, "year-old": None, "years old": None},
}
_AGE_BOUNDS = (13, 20, 35, 50, 60)  # "N-year-old": the first bound N is under gives the level (else 5)
_COLOUR_SYNONYMS = {"blond": "blonde", "gray": "grey", "greying": "grey", "graying": "grey", "ginger": "red"}
_LENGTH_LOOSE = {"medium": "medium"}
_ANIME_WORDS = ("anime", "manga", "cartoon", "cel-shaded", "illustration", "illustrated", "drawn", "drawing")
_HUMAN_WORDS = ("photo", "photograph", "photographed", "photographic", "photo-realistic", "photorealistic",
                "realistic", "snapshot", "camera")


@dataclass
class ParsedCaption:
    """What a caption names: attribute levels (only those named), hair colour / length and style, or None."""
    attributes: dict[str, int] = field(default_factory=dict)
    hair_colour: str | None = None
    hair_length: str | None = None
    style: str | None = None


def _norm(phrase: str) -> str:
    """One spelling per phrase: lower case, hyphens and runs of spaces as one space."""
    return " ".join(phrase.lower().replace("-", " ").split())


def _alternation(phrases: list[str]) -> str:
    """Regex alternation of phrases, longest first, a space or hyphen allowed between words."""
    uniq = sorted(set(phrases), key=lambda p: (-len(p), p))
    return "|".join(r"[\s-]+".join(re.escape(w) for w in p.replace("-", " ").split()) for p in uniq)


# (attribute, level or None, is a keyword) per normalised phrase; a keyword beats a loose word.
_PHRASE_TABLE: dict[str, tuple[str, int | None, bool]] = {}
for _attr, _words in LOOSE_WORDS.items():
    for _w, _lvl in _words.items():
        _PHRASE_TABLE[_norm(_w)] = (_attr, _lvl, False)
for _attr, _kws in KEYWORDS.items():
    for _lvl, _kw in enumerate(_kws):
        _PHRASE_TABLE[_norm(_kw)] = (_attr, _lvl, True)
_ATTR_RE = re.compile(r"(?<![\w-])(?:(?P<years>\d{1,3})[\s-]*(?:years?|yrs?)[\s-]+old|(?P<phrase>"
                      + _alternation(list(_PHRASE_TABLE)) + r"))(?![\w-])")

_COLOURS: dict[str, str] = {_norm(c): c for names in HAIR_COLOURS.values() for c in names}
_COLOURS.update(_COLOUR_SYNONYMS)
_LENGTHS: dict[str, str] = {_norm(w): length for table in (HAIR_LENGTH_WORDS, HAIR_LENGTH_WORDS_HELDOUT)
                            for length, words in table.items() for w in words}
_LENGTHS.update(_LENGTH_LOOSE)
_COL, _LEN = _alternation(list(_COLOURS)), _alternation(list(_LENGTHS))
# "long light blue hair", "purple-haired", "short hair"; and "hair is long and blonde".
_HAIR_RE = re.compile(rf"(?<![\w-])(?:(?P<len>{_LEN})[\s,-]+)?(?:(?P<col>{_COL})[\s-]+)?hair(?:ed)?(?![\w-])")
_HAIR_PRED_RE = re.compile(rf"(?<![\w-])hair\s+(?:is|that\s+is|which\s+is)\s+(?P<w1>{_LEN}|{_COL})"
                           rf"(?:\s+and\s+(?P<w2>{_LEN}|{_COL}))?(?![\w-])")
_ANIME_RE = re.compile(r"\b(?:" + _alternation(list(_ANIME_WORDS)) + r")\b")
_HUMAN_RE = re.compile(r"\b(?:" + _alternation(list(_HUMAN_WORDS)) + r")\b")


# Negation: a level > 0 named after "no / not / without / never / n't" in the same clause part ("not wearing
# glasses", "doesn't have a beard", "no beard or glasses") is level 0; a comma, "and", "but" or "with" ends it.
_NEGATORS = frozenset({"no", "not", "without", "never", "nor", "neither", "lacks", "lacking"})
_CLAUSE_BREAK = re.compile(r"[,.;:!?()]|\b(?:and|but|with|while|yet)\b")


def _negated(before: str) -> bool:
    """Whether the text just before a phrase (its clause part, last 3 words) negates it."""
    words = _CLAUSE_BREAK.split(before)[-1].split()[-3:]
    return any(w in _NEGATORS or w.endswith("n't") for w in words)


def _age_from_years(years: int) -> int:
    return next((lvl for lvl, bound in enumerate(_AGE_BOUNDS) if years < bound), len(_AGE_BOUNDS))


def parse_caption(text: str) -> ParsedCaption:
    """The attribute levels, hair colour / length and style that ``text`` names (see the module docstring)."""
    if not isinstance(text, str):
        raise FacediffError(f"a caption must be a string, got {type(text).__name__}; pass the prompt text")
    low = text.lower()
    found: dict[str, list[tuple[bool, int]]] = {}  # attr -> [(is keyword, level)] in text order
    for m in _ATTR_RE.finditer(low):
        if m.group("years") is not None:
            found.setdefault("age", []).append((False, _age_from_years(int(m.group("years")))))
            continue
        attr, level, strong = _PHRASE_TABLE[_norm(m.group("phrase"))]
        if level and attr != "age" and _negated(low[:m.start()]):
            level = 0
        if level is not None:
            found.setdefault(attr, []).append((strong, level))
    attributes = {}
    for attr in ATTRIBUTES:
        hits = found.get(attr)
        if hits:
            strong = [lvl for s, lvl in hits if s]
            attributes[attr] = strong[0] if strong else hits[0][1]

    colour = length = None
    hair_words: list[tuple[int, str]] = []  # (position, word) of hair length / colour words, in text order
    for m in _HAIR_RE.finditer(low):
        hair_words += [(m.start(g), m.group(g)) for g in ("len", "col") if m.group(g)]
    for m in _HAIR_PRED_RE.finditer(low):
        hair_words += [(m.start(g), m.group(g)) for g in ("w1", "w2") if m.group(g)]
    for _, word in sorted(hair_words):
        w = _norm(word)
        if w in _LENGTHS and length is None:
            length = _LENGTHS[w]
        elif w in _COLOURS and colour is None:
            colour = _COLOURS[w]
    style = "anime" if _ANIME_RE.search(low) else ("human" if _HUMAN_RE.search(low) else None)
    return ParsedCaption(attributes, colour, length, style)


# A negative prompt's bare presence words: in SynthFaces captions each names ONE level ("glasses" = thin frames,
# "smile" = a gentle smile, "bangs" = medium bangs, "beard" = a full beard), so guidance away from one would draw
# the other levels (thick glasses, a laugh), not none; read as the model's own negation phrase (a level-0 phrase
# of ``free_text.PHRASES_FREE``) instead. Level-specific phrases ("sunglasses", "a big laugh") stay negative.
GENERIC_WORDS: dict[str, tuple[str, ...]] = {
    "bangs": ("bangs", "fringe"),
    "eyeglasses": ("glasses", "eyeglasses", "spectacles", "eyewear", "wearing glasses"),
    "beard": ("beard", "beards", "bearded", "facial hair"),
    "smiling": ("smile", "smiles", "smiling"),
}
NEGATION_PHRASES = {"bangs": "no bangs", "eyeglasses": "no glasses", "beard": "no beard", "smiling": "not smiling"}
_GENERIC = {w: a for a, words in GENERIC_WORDS.items() for w in words}
_NEGATIVE_PARTS = re.compile(r"\s*(?:[,;.|]|\b(?:and|or)\b)\s*")
_ARTICLE = re.compile(r"^(?:a|an|any|some)\s+")


def negative_as_negation(prompt: str | None, negative: str) -> tuple[str | None, str, list[str]]:
    """(prompt, negative, moved): each comma / "and" / "or" part of ``negative`` that is a bare presence word
    (``GENERIC_WORDS``) of an attribute the prompt does not name is taken out of the negative prompt and its
    negation added to the prompt ("a photo of a man" + negative "glasses, blurry" -> "a photo of a man, no
    glasses" + negative "blurry"); ``moved`` lists the attributes read so."""
    named = parse_caption(prompt or "").attributes
    keep, negations, moved = [], [], []
    for part in (p for p in _NEGATIVE_PARTS.split(negative) if p.strip()):
        attr = _GENERIC.get(_ARTICLE.sub("", " ".join(part.lower().split())))
        if attr is None or attr in named:  # not a bare presence word, or the prompt says the level itself
            keep.append(part.strip())
        elif attr not in moved:  # (a repeated word is read once)
            negations.append(NEGATION_PHRASES[attr])
            moved.append(attr)
    if not negations:
        return prompt, negative, []
    base = (prompt or "").strip().rstrip(",;")
    joined = ", ".join(negations)
    prompt = joined if not base else f"{base} {joined}" if base.endswith((".", "!", "?", ":")) else f"{base}, {joined}"
    return prompt, ", ".join(keep), moved


def shuffle_caption(text: str, *, keep_tokens: int, rng: np.random.Generator, separator: str = ",") -> str:
    """kohya ``--shuffle_caption``: split on ``separator``, strip each tag, keep the first ``keep_tokens``
    tags in place, shuffle the rest with ``rng``; joined with ", " (as kohya does; empty tags are kept)."""
    if isinstance(keep_tokens, bool) or not isinstance(keep_tokens, (int, np.integer)) or keep_tokens < 0:
        raise FacediffError(f"keep_tokens={keep_tokens!r} is invalid; use an integer >= 0")
    if not isinstance(separator, str) or not separator:
        raise FacediffError(f"separator={separator!r} is invalid; use a non-empty string such as ','")
    tokens = [t.strip() for t in text.strip().split(separator)]
    fixed, flex = tokens[:int(keep_tokens)], tokens[int(keep_tokens):]
    return ", ".join(fixed + [flex[i] for i in rng.permutation(len(flex))])


def first_line(text: str) -> str:
    """The first line of ``text`` (split at \\n, \\r\\n or \\r), stripped: kohya reads IMAGE.txt this way."""
    return re.split(r"\r\n|\r|\n", text, maxsplit=1)[0].strip()
