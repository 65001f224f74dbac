"""SynthFaces: deterministic procedural faces (human and anime) with attributes, captions, sketches and part masks.

Image ``i`` of seed ``s`` depends only on ``(s, i, size, style)``: all its random choices come from
``np.random.default_rng([s, i, KEY])`` drawn in a fixed order, so chunking never matters and overriding one
attribute (``render_batch(..., attributes={"smiling": 5})``) keeps everything else about the face unchanged.

The five CelebA-Dialog attributes (``facediff.config.ATTRIBUTES``) take six levels each, all drawn uniformly
(beard levels > 0 only on men; women draw beard 0):
  bangs       0 none .. 5 forehead covered down to the eyebrows (share of forehead = level / 5)
  eyeglasses  0 none, 1 rimless, 2 thin frame, 3 thick frame, 4 thin-frame sunglasses, 5 thick-frame sunglasses
  beard       0 none, 1 stubble, 2 moustache, 3 goatee + moustache, 4 full beard, 5 long bushy beard
  smiling     0 neutral, 1 slight, 2 smile, 3 broad closed smile, 4 open smile with teeth, 5 laugh (squinted eyes)
  age         0 child, 1 teen, 2 young adult, 3 middle-aged, 4 older (greying), 5 over sixty (white hair)
Nuisance factors: gender, skin tone, hair colour / length / volume, eye colour, face width, background, clothes,
light direction and a small similarity transform (rotation +-5 deg, shift +-0.04, scale +-4 %).
Geometry and painting live in :mod:`facediff.data.synth_parts` (head, hair, body) and
:mod:`facediff.data.synth_features` (eyes, brows, nose, mouth, beard, glasses); the drawing primitives in
:mod:`facediff.data.synth_draw`; captions in :mod:`facediff.data.synth_text`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.data.prepared import PreparedWriter
from facediff.data.synth_draw import Canvas, Look, hsv, mix
from facediff.data.synth_features import paint_face
from facediff.data.synth_parts import AGE_HEAD
from facediff.data.synth_text import caption as make_caption
from facediff.data.synth_text import caption_heldout as make_caption_heldout
from facediff.errors import FacediffError
from facediff.registry import SYNTH_STYLES

STYLES: tuple[str, ...] = SYNTH_STYLES  # facediff.registry
#: Part ids of ``SynthFace.mask`` (index = id); each pixel holds the front-most part covering more than half of it.
PART_NAMES: tuple[str, ...] = ("background", "skin", "hair", "eyes", "brows", "nose", "mouth", "glasses",
                               "beard", "ears_neck", "clothes")
_KEY_LOOK, _KEY_TEXT = 0x5F0CE, 0x7E47  # independent random streams per image: look and caption wording

# Palettes: (name, RGB). Human hair never draws grey/white; age 4/5 turns it grey/white.
SKIN_HUMAN = ((0.99, 0.88, 0.80), (0.96, 0.81, 0.70), (0.92, 0.75, 0.62), (0.84, 0.64, 0.49),
              (0.76, 0.58, 0.43), (0.65, 0.47, 0.33), (0.50, 0.34, 0.23), (0.37, 0.25, 0.17))
SKIN_ANIME = ((1.00, 0.93, 0.87), (1.00, 0.89, 0.80), (0.98, 0.84, 0.74), (0.90, 0.72, 0.58), (0.74, 0.55, 0.42))
HAIR_HUMAN = (("black", (0.07, 0.06, 0.06)), ("black", (0.11, 0.09, 0.08)), ("brown", (0.24, 0.15, 0.09)),
              ("brown", (0.38, 0.25, 0.15)), ("blonde", (0.80, 0.64, 0.38)), ("blonde", (0.90, 0.78, 0.52)),
              ("red", (0.62, 0.24, 0.10)), ("auburn", (0.42, 0.16, 0.09)))
HAIR_ANIME = (("pink", (0.98, 0.55, 0.74)), ("blue", (0.28, 0.47, 0.93)), ("purple", (0.58, 0.38, 0.84)),
              ("green", (0.32, 0.76, 0.44)), ("silver", (0.80, 0.82, 0.90)), ("orange", (0.98, 0.58, 0.22)),
              ("red", (0.84, 0.16, 0.20)), ("teal", (0.18, 0.72, 0.74)), ("blonde", (0.98, 0.84, 0.40)),
              ("black", (0.14, 0.13, 0.20)), ("brown", (0.50, 0.31, 0.18)), ("light blue", (0.55, 0.78, 0.98)))
EYES_HUMAN = (("brown", (0.36, 0.21, 0.10)), ("dark brown", (0.20, 0.12, 0.07)), ("blue", (0.30, 0.50, 0.76)),
              ("green", (0.30, 0.54, 0.34)), ("hazel", (0.52, 0.40, 0.18)), ("grey", (0.50, 0.55, 0.60)))
EYES_ANIME = (("blue", (0.20, 0.45, 0.95)), ("green", (0.15, 0.70, 0.40)), ("purple", (0.55, 0.30, 0.85)),
              ("red", (0.85, 0.15, 0.20)), ("amber", (0.95, 0.60, 0.10)), ("pink", (0.95, 0.40, 0.65)),
              ("teal", (0.10, 0.70, 0.70)), ("brown", (0.55, 0.32, 0.18)))
#: Skin tone names (same order as the palettes), for captions and the labels row's skin_tone.
SKIN_NAMES_HUMAN = ("pale", "fair", "light", "olive", "tan", "light brown", "brown", "dark brown")
SKIN_NAMES_ANIME = ("porcelain", "fair", "peach", "tan", "bronze")
#: Hair colour names the renderer writes into hair_colour, per style (from the palettes above), and the
#: colours age forces on either style (4: grey, 5: grey or white).
HAIR_COLOURS: dict[str, tuple[str, ...]] = {
    "human": tuple(dict.fromkeys(name for name, _ in HAIR_HUMAN)),
    "anime": tuple(dict.fromkeys(name for name, _ in HAIR_ANIME)),
    "aged": ("grey", "white"),
}
FRAMES = ((0.05, 0.05, 0.06), (0.22, 0.12, 0.06), (0.08, 0.10, 0.28), (0.38, 0.05, 0.08), (0.20, 0.20, 0.22))


@dataclass
class SynthFace:
    """One rendered face: image, line drawing and part mask of the same geometry, and its label row."""
    image: np.ndarray  # uint8 (S, S, 3)
    sketch: np.ndarray  # uint8 (S, S): 255 = paper, 0 = ink
    mask: np.ndarray  # uint8 (S, S): ids of PART_NAMES
    label: dict  # the labels.jsonl row: file, split, attributes, caption, caption_heldout, style, hair_colour, ...


#: Rendering version written into each prepared set's manifest: bumped whenever the pictures of a given
#: (seed, index) change (2: bolder smiling levels 0-3, lips visible in beards and on dark skin) and whenever
#: the labels rows change (3: pictures as in 2; varied captions from 9 templates, caption_heldout from 4
#: held-out ones, skin_tone and face_shape fields).
GENERATOR = "facediff.synth/3"


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise FacediffError(f"unknown SynthFaces style {style!r}; use one of: {', '.join(STYLES)}")


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise FacediffError(f"SynthFaces size must be an integer >= 8, got {size!r}")


def _check_attrs(attributes: dict[str, int] | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, level in (attributes or {}).items():
        if name not in ATTRIBUTES:
            raise FacediffError(f"unknown attribute {name!r}; use one of: {', '.join(ATTRIBUTES)}")
        if not isinstance(level, (int, np.integer)) or not 0 <= int(level) < NUM_LEVELS:
            raise FacediffError(f"attribute {name}={level!r} is out of range; use an integer 0..{NUM_LEVELS - 1}")
        out[name] = int(level)
    return out


def make_look(seed: int, index: int, style: str = "human", attributes: dict[str, int] | None = None) -> Look:
    """All choices of face (seed, index), drawn in a fixed order; ``attributes`` override single levels."""
    u = np.random.default_rng([seed, index, _KEY_LOOK]).random(48)
    if style == "mixed":
        style = "anime" if u[0] < 0.5 else "human"
    anime = style == "anime"
    attrs = {name: min(int(u[1 + k] * NUM_LEVELS), NUM_LEVELS - 1) for k, name in enumerate(ATTRIBUTES)}
    gender = "female" if u[6] < 0.45 else "male"
    if gender == "female":
        attrs["beard"] = 0
    attrs.update(_check_attrs(attributes))
    if attrs["beard"] > 0:
        gender = "male"
    age = attrs["age"]
    skins = SKIN_ANIME if anime else SKIN_HUMAN
    skin = skins[int(u[7] * len(skins))]
    skin = tuple(min(1.0, c * (0.97 + 0.06 * u[8])) for c in skin)
    hairs = HAIR_ANIME if anime else HAIR_HUMAN
    hair_name, hair = hairs[int(u[9] * len(hairs))]
    if age == 4:  # salt and pepper
        hair, hair_name = mix(hair, (0.62, 0.62, 0.63), 0.6), "grey"
    elif age == 5:
        white = u[28] < 0.5
        hair, hair_name = ((0.93, 0.93, 0.92), "white") if white else ((0.72, 0.72, 0.73), "grey")
    # Hair length: women mostly long, men mostly short.
    cuts = (0.2, 0.55) if gender == "female" else (0.65, 0.92)
    length = "short" if u[10] < cuts[0] else ("medium" if u[10] < cuts[1] else "long")
    eyes = EYES_ANIME if anime else EYES_HUMAN
    eye_name, eye = eyes[int(u[11] * len(eyes))]
    face_w = 0.93 + 0.14 * u[12]
    pose = ((u[16] - 0.5) * math.radians(10), (u[17] - 0.5) * 0.08, (u[18] - 0.5) * 0.06 - 0.01,
            1.12 * AGE_HEAD[age] * (0.96 + 0.08 * u[19]))
    phi = (u[20] - 0.5) * math.radians(110)  # light azimuth, from above-left to above-right
    lv = np.array([math.sin(phi) * 0.7, -0.45, 0.65])
    light = tuple(lv / np.linalg.norm(lv))
    h = u[13]
    top = hsv(h, 0.12 + 0.35 * u[14], 0.55 + 0.4 * u[15])
    bottom = hsv((h + 0.08 * (u[14] - 0.5)) % 1.0, 0.15 + 0.35 * u[14], 0.35 + 0.4 * u[15])
    bg = (top, bottom, (u[21] - 0.5) * 1.2)
    clothes = hsv(u[22], 0.25 + 0.5 * u[23], 0.25 + 0.6 * u[24])
    frame = FRAMES[int(u[25] * len(FRAMES))]
    lip_base = (0.80, 0.38, 0.40) if anime else (0.72, 0.36, 0.36)
    lips = mix(skin, lip_base, 0.45 if gender == "female" else 0.28)
    if gender == "female" and u[26] < 0.35:
        lips = mix(lips, (0.70, 0.10, 0.22), 0.6)  # lipstick
    return Look(style, attrs, gender, skin, hair, hair_name, length, eye, eye_name, face_w, pose, light, bg,
                clothes, frame, lips, u)


def skin_tone(look: Look) -> str:
    """The name of the look's skin palette entry (the same draw that picked its colour)."""
    names = SKIN_NAMES_ANIME if look.style == "anime" else SKIN_NAMES_HUMAN
    return names[int(look.u[7] * len(names))]


def face_shape(look: Look) -> str:
    """'narrow' / 'oval' / 'wide' by the face width factor (0.93 .. 1.07), in thirds."""
    return "narrow" if look.face_w < 0.93 + 0.14 / 3 else ("wide" if look.face_w > 0.93 + 0.28 / 3 else "oval")


def _label(seed: int, index: int, look: Look) -> dict[str, Any]:
    # Wording comes only from the text stream: the training caption's draws first, then the held-out one's.
    text_rng = np.random.default_rng([seed, index, _KEY_TEXT])
    facts = dict(style=look.style, gender=look.gender, attributes=look.attrs, hair_colour=look.hair_name,
                 hair_length=look.hair_length, eye_colour=look.eye_name, skin_tone=skin_tone(look),
                 face_shape=face_shape(look), rng=text_rng)
    text = make_caption(**facts)
    return {
        "file": f"synth/{seed}/{index:07d}",
        "split": "val" if index % 10 == 9 else "train",
        "attributes": dict(look.attrs),
        "caption": text,
        "caption_heldout": make_caption_heldout(**facts),  # held-out templates only; for evaluation prompts
        "style": look.style,
        "hair_colour": look.hair_name,
        "hair_length": look.hair_length,
        "gender": look.gender,
        "eye_colour": look.eye_name,
        "skin_tone": facts["skin_tone"],
        "face_shape": facts["face_shape"],
        "seed": int(seed),
        "index": int(index),
    }


def _render_look(look: Look, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    angle, tx, ty, scale = look.pose
    cv = Canvas(size, angle, tx, ty, scale)
    paint_face(cv, look)
    img = np.clip(cv.img, 0.0, 1.0)
    img *= 255.0
    img += 0.5
    image = np.ascontiguousarray(img.transpose(1, 2, 0).astype(np.uint8))
    sketch = (255.5 - 255.0 * np.clip(cv.ink, 0.0, 1.0)).astype(np.uint8)
    return image, sketch, cv.mask


def _render(seed: int, index: int, size: int, style: str, attributes: dict[str, int] | None) -> SynthFace:
    if seed < 0 or index < 0:
        raise FacediffError(f"SynthFaces seed and index must be >= 0, got seed={seed}, index={index}")
    look = make_look(int(seed), int(index), style, attributes)
    image, sketch, mask = _render_look(look, size)
    return SynthFace(image, sketch, mask, _label(int(seed), int(index), look))


def render(seed: int, index: int, size: int = 64, style: str = "human") -> SynthFace:
    """Render face ``index`` of ``seed`` (style human | anime | mixed, mixed picking per index)."""
    _check_style(style)
    _check_size(size)
    return _render(seed, index, size, style, None)


def render_batch(seed: int, start: int, count: int, size: int = 64, style: str = "human",
                 attributes: dict[str, int] | None = None) -> list[SynthFace]:
    """Faces ``start .. start+count-1``; ``attributes`` forces those levels, all else as (seed, index) makes it."""
    _check_style(style)
    _check_size(size)
    _check_attrs(attributes)
    if count < 0:
        raise FacediffError(f"count must be >= 0, got {count}")
    return [_render(seed, i, size, style, attributes) for i in range(start, start + count)]


def render_images_at_sizes(seed: int, start: int, count: int, size: int, style: str,
                           render_sizes: tuple[int, ...]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Faces ``start .. start+count-1``, face i drawn at ``render_sizes[i % len]`` px and brought to ``size``
    by the toolkit's one resize (``resize_batch``, Lanczos): uint8 (count, size, size, 3) and the labels.

    For the oracle: a generated 64 px face is read through that resize, and a face drawn at 32 px is not the
    same picture as a 64 px face made small (the 32 px-only oracle read eyeglasses 99 % on the first, 91 % on
    the second), so it learns from both."""
    from facediff.data.imageio import resize_batch

    _check_style(style)
    for s in (size, *render_sizes):
        _check_size(s)
    images, labels = [], []
    for s in dict.fromkeys(render_sizes):  # each size once, in order
        idx = [i for i in range(start, start + count) if render_sizes[i % len(render_sizes)] == s]
        faces = [_render(seed, i, s, style, None) for i in idx]
        images += list(resize_batch(np.stack([f.image for f in faces]), size)) if faces else []
        labels += [(i, f.label) for i, f in zip(idx, faces)]
    order = np.argsort([i for i, _ in labels])
    return np.stack(images)[order], [labels[k][1] for k in order]


def write_synth_at_sizes(out: str | Path, n: int, size: int, style: str, seed: int,
                         render_sizes: tuple[int, ...], *, chunk: int = 1024) -> Path:
    """Images only (no sketches or masks): ``n`` faces drawn at ``render_sizes`` in turn, stored at ``size``
    (``render_images_at_sizes``); the manifest names the sizes, so held-out sets are drawn the same way."""
    writer = PreparedWriter(out, n, size, overwrite=True)
    for start in range(0, n, chunk):
        writer.add(*render_images_at_sizes(seed, start, min(chunk, n - start), size, style, render_sizes))
    return writer.close({"source": "synth", "style": style, "seed": int(seed), "crop": "none", "layout": "faces",
                         "generator": GENERATOR, "render_sizes": list(render_sizes)})


def write_synth(out: str | Path, n: int, size: int = 64, style: str = "human", seed: int = 0, *,
                chunk: int = 256, overwrite: bool = False, progress: Callable[[int, int], Any] | None = None,
                render_one: Callable[[int, int, int, str], SynthFace] | None = None, layout: str = "faces") -> Path:
    """Render ``n`` faces into a prepared data set at ``out`` (images, sketches, masks, labels, manifest).
    ``render_one(seed, index, size, style)`` replaces the centred face of each index (``data.synth_scene``
    passes its scenes this way, named ``layout`` in the manifest)."""
    _check_style(style)
    _check_size(size)
    if n < 1:
        raise FacediffError(f"SynthFaces n must be >= 1, got {n}")
    if chunk < 1:
        raise FacediffError(f"chunk must be >= 1, got {chunk}")
    if seed < 0:
        raise FacediffError(f"SynthFaces seed must be >= 0, got {seed}")
    writer = PreparedWriter(out, n, size, sketches=True, masks=True, overwrite=overwrite)
    done = 0
    while done < n:
        count = min(chunk, n - done)
        if render_one is not None:
            faces = [render_one(seed, i, size, style) for i in range(done, done + count)]
        else:
            faces = render_batch(seed, done, count, size, style)
        writer.add(np.stack([f.image for f in faces]), [f.label for f in faces],
                   np.stack([f.sketch for f in faces]), np.stack([f.mask for f in faces]))
        done += len(faces)
        if progress is not None:
            progress(done, n)
    return writer.close({"source": "synth", "style": style, "seed": int(seed), "crop": "none", "layout": layout,
                         "generator": GENERATOR, "part_names": list(PART_NAMES)})
