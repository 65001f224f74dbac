"""Face-parsing maps: the one class list of the mask condition, and conversions into it.

``PARSING_CLASSES`` is the class list every face-parsing map in facediff uses (prepared ``masks.npy`` of real
sets, ``PreparedDataset.parsing``, the mask oracle, the mask condition). Two sources map onto it:

* SynthFaces part masks (``facediff.data.synth.PART_NAMES``, by name in ``SYNTH_PARTS``): ``to_parsing``.
* CelebAMask-HQ (Lee et al. 2020, "MaskGAN"): 19 labels, ids in the order of its ``g_mask.py`` (background 0,
  then skin, nose, eye_g, ... cloth; ``CELEBAMASK_HQ``). face-parsing.PyTorch's preprocessing writes another
  order (skin, l_brow, r_brow, ...): such PNGs must be renumbered first. CelebAMask-HQ has no beard class
  (beards are labelled skin), so a prepared CelebAMask-HQ set never holds ``beard``.

Label files: ``read_label_png`` (one PNG of class ids per image) and ``read_part_masks`` (CelebAMask-HQ's
``CelebAMask-HQ-mask-anno/K/NNNNN_part.png`` binary masks, composed as ``g_mask.py`` does: later labels
overwrite earlier ones); ``LabelIndex`` finds the label file(s) of an image in a folder. ``colorize`` and
``parsing_from_rgb`` turn a map into a picture in the fixed ``PALETTE`` and back (users draw masks in
these colours).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from facediff.data.imageio import CropSpec, crop_box
from facediff.errors import FacediffError

#: Face-parsing classes (index = id) of every parsing map facediff reads or writes.
PARSING_CLASSES: tuple[str, ...] = ("background", "skin", "hair", "eyes", "brows", "nose", "mouth", "glasses",
                                    "beard")
NUM_PARSING_CLASSES = len(PARSING_CLASSES)

#: SynthFaces part (in PART_NAMES order) -> parsing class. ears and neck are skin (as CelebAMask-HQ's
#: l_ear / r_ear / neck become skin below); clothes are background (CelebAMask-HQ's cloth too): the mask
#: condition describes the face, not the outfit.
SYNTH_PARTS: dict[str, str] = {
    "background": "background", "skin": "skin", "hair": "hair", "eyes": "eyes", "brows": "brows", "nose": "nose",
    "mouth": "mouth", "glasses": "glasses", "beard": "beard", "ears_neck": "skin", "clothes": "background"}

#: CelebAMask-HQ label (id = position, as its g_mask.py writes them) -> parsing class. eye_g (eyeglasses) ->
#: glasses; lips and mouth -> mouth; ears and neck -> skin; hat, cloth and accessories (ear_r earring, neck_l
#: necklace) -> background.
CELEBAMASK_HQ: dict[str, str] = {
    "background": "background", "skin": "skin", "nose": "nose", "eye_g": "glasses", "l_eye": "eyes",
    "r_eye": "eyes", "l_brow": "brows", "r_brow": "brows", "l_ear": "skin", "r_ear": "skin", "mouth": "mouth",
    "u_lip": "mouth", "l_lip": "mouth", "hair": "hair", "hat": "background", "ear_r": "background",
    "neck_l": "background", "neck": "skin", "cloth": "background"}
CELEBAMASK_HQ_NAMES: tuple[str, ...] = tuple(CELEBAMASK_HQ)

#: RGB colour of each parsing class in pictures and in masks users draw (``parsing_from_rgb`` inverts it).
PALETTE = np.array([(0, 0, 0), (232, 186, 150), (110, 60, 25), (0, 90, 255), (30, 190, 40), (255, 140, 0),
                    (220, 20, 60), (0, 230, 230), (150, 40, 200)], dtype=np.uint8)

LABEL_SOURCES = ("celebamask-hq", "facediff")  # what the values of a label PNG are ids of


def class_lut(names: Iterable[str]) -> np.ndarray:
    """uint8 look-up table: stored class id (position in ``names``) -> parsing id. Names are parsing classes,
    SynthFaces parts or CelebAMask-HQ labels; anything else is a one-line FacediffError."""
    lut = []
    for name in names:
        target = name if name in PARSING_CLASSES else SYNTH_PARTS.get(name, CELEBAMASK_HQ.get(name))
        if target is None:
            raise FacediffError(f"mask class {name!r} has no face-parsing class; known: "
                                f"{', '.join(PARSING_CLASSES)} (+ SynthFaces parts, CelebAMask-HQ labels)")
        lut.append(PARSING_CLASSES.index(target))
    return np.array(lut, dtype=np.uint8)


_SYNTH_LUT = class_lut(SYNTH_PARTS)
_CELEBA_LUT = class_lut(CELEBAMASK_HQ_NAMES)


def to_parsing(part_mask: np.ndarray) -> np.ndarray:
    """SynthFaces part ids (``SynthFace.mask``, any shape) -> parsing ids (uint8, same shape)."""
    m = np.asarray(part_mask)
    if m.size and (m.min() < 0 or m.max() >= len(_SYNTH_LUT)):
        raise FacediffError(f"part mask holds id {int(m.max())}; SynthFaces part ids are 0-{len(_SYNTH_LUT) - 1}")
    return _SYNTH_LUT[m.astype(np.int64)]


def as_parsing(stored: np.ndarray, classes: Iterable[str], where: str = "masks.npy") -> np.ndarray:
    """Stored class ids (index into ``classes``) -> parsing ids (uint8, same shape)."""
    classes = tuple(classes)
    if not classes:
        raise FacediffError(f"{where}: manifest.json names no \"mask_classes\"; re-prepare the data set")
    if classes == PARSING_CLASSES:
        return np.asarray(stored, dtype=np.uint8)
    lut = class_lut(classes)
    if stored.size and int(stored.max()) >= len(lut):
        raise FacediffError(f"{where}: holds id {int(stored.max())}, but mask_classes lists {len(lut)} classes; "
                            "re-prepare the data set")
    return lut[stored.astype(np.int64)]


def colorize(parsing: np.ndarray) -> np.ndarray:
    """Parsing ids (..., H, W) -> uint8 RGB (..., H, W, 3) in ``PALETTE``."""
    p = np.asarray(parsing)
    if p.size and (p.min() < 0 or p.max() >= NUM_PARSING_CLASSES):
        raise FacediffError(f"parsing map holds id {int(p.max())}; ids are 0-{NUM_PARSING_CLASSES - 1}")
    return PALETTE[p.astype(np.int64)]


def parsing_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB(A) (..., H, W, 3|4) drawn in ``PALETTE`` colours -> parsing ids (uint8): each pixel takes the
    nearest palette colour (so anti-aliased strokes and JPEG noise still read); transparent pixels (alpha
    < 128) are background."""
    a = np.asarray(rgb)
    if a.ndim < 3 or a.shape[-1] not in (3, 4):
        raise FacediffError(f"a drawn mask must be RGB or RGBA (..., H, W, 3|4); got shape {a.shape}")
    colours = a[..., :3].astype(np.int32)
    d = ((colours[..., None, :] - PALETTE.astype(np.int32)) ** 2).sum(-1)
    out = d.argmin(-1).astype(np.uint8)
    if a.shape[-1] == 4:
        out[a[..., 3] < 128] = 0
    return out


# ----------------------------------------------------------------------------------------------- label files
def _open_png(path: Path) -> Image.Image:
    """The decoded PNG at ``path``; anything else is a one-line FacediffError."""
    try:
        img = Image.open(path)
    except FileNotFoundError:
        raise FacediffError(f"{path}: no such label file") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FacediffError(f"{path}: not a readable PNG label map ({why})") from None
    if img.format != "PNG":
        img.close()
        raise FacediffError(f"{path}: a {img.format or 'non-PNG'} file; label maps must be PNG (lossless class ids)")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        img.close()
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FacediffError(f"{path}: truncated or corrupt PNG ({why})") from None
    return img


def _label_values(img: Image.Image, path: Path) -> np.ndarray:
    """The stored integer values of a label PNG (palette indices for mode P); (H, W) int64."""
    if img.mode == "P":
        a = np.asarray(img)
    elif img.mode in ("RGB", "RGBA", "LA"):
        a = np.asarray(img)
        chans = a[..., :3] if img.mode != "LA" else a[..., :1]
        if (chans != chans[..., :1]).any():
            raise FacediffError(f"{path}: a colour picture, not a label map; store one grey value (the class id) "
                                "per pixel")
        a = chans[..., 0]
    else:
        a = np.asarray(img)
    if a.ndim != 2:
        raise FacediffError(f"{path}: mode {img.mode} is not a single-channel label map")
    return a.astype(np.int64)


def _frame_box(shape: tuple[int, int], box: tuple[float, float, float, float] | None,
               frame: tuple[int, int] | None) -> tuple[float, float, float, float]:
    """``box`` (in the pixels of an image of size ``frame``; None = the centred square) in a label map of
    ``shape`` (H, W)."""
    h, w = shape
    if frame is not None and abs(w / h - frame[0] / frame[1]) > 0.01:
        raise FacediffError(f"label map is {w}x{h} px, not the shape of its {frame[0]}x{frame[1]} image")
    if box is None:
        fb, _ = crop_box(w, h, CropSpec("center"))
        return fb  # type: ignore[return-value]
    if frame is None:
        return box
    sx, sy = w / frame[0], h / frame[1]
    return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy


def _resize_ids(ids: np.ndarray, size: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """Nearest-neighbour crop + resize of a uint8 id map."""
    img = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8), "L")
    return np.asarray(img.resize((size, size), Image.Resampling.NEAREST, box=box), dtype=np.uint8).copy()


def read_label_png(path: str | Path, size: int, *, box: tuple[float, float, float, float] | None = None,
                   frame: tuple[int, int] | None = None, classes: str = "celebamask-hq") -> np.ndarray:
    """A label PNG (one class id per pixel: grey values or palette indices) -> parsing ids, uint8 (size, size).

    ``classes``: what the stored values are ids of: ``celebamask-hq`` (0-18, g_mask.py order) or
    ``facediff`` (``PARSING_CLASSES``). ``box``: the crop (x0, y0, x1, y1) in the pixels of the image the map
    belongs to, whose size is ``frame`` (W, H) (CelebAMask-HQ maps are 512 px for 1024 px images); None =
    the centred square. Resized by nearest neighbour. A non-PNG file or a value out of range is a one-line
    FacediffError.
    """
    if classes not in LABEL_SOURCES:
        raise FacediffError(f"label classes {classes!r}: choose one of {', '.join(LABEL_SOURCES)}")
    p = Path(path)
    with _open_png(p) as img:
        values = _label_values(img, p)
    lut = _CELEBA_LUT if classes == "celebamask-hq" else np.arange(NUM_PARSING_CLASSES, dtype=np.uint8)
    if values.size and (values.min() < 0 or values.max() >= len(lut)):
        raise FacediffError(f"{p}: holds value {int(values.max())}; {classes} label ids are 0-{len(lut) - 1}")
    return _resize_ids(lut[values], size, _frame_box(values.shape, box, frame))


def read_part_masks(parts: dict[str, str | Path], size: int, *, box: tuple[float, float, float, float] | None = None,
                    frame: tuple[int, int] | None = None) -> np.ndarray:
    """CelebAMask-HQ per-part binary PNGs ({label name: path}, e.g. ``00012_hair.png``) -> parsing ids
    (uint8, (size, size)). Composed in g_mask.py's order (a later label overwrites an earlier one); pixels
    no mask covers are background. ``box`` / ``frame`` as in ``read_label_png``."""
    ids: np.ndarray | None = None
    for cid, name in enumerate(CELEBAMASK_HQ_NAMES):
        if name not in parts:
            continue
        p = Path(parts[name])
        with _open_png(p) as img:
            on = np.asarray(img.convert("L")) > 127
        if ids is None:
            ids = np.zeros(on.shape, dtype=np.int64)
        elif on.shape != ids.shape:
            raise FacediffError(f"{p}: {on.shape[1]}x{on.shape[0]} px, unlike the other part masks of this image")
        ids[on] = cid
    if ids is None:
        raise FacediffError(f"no CelebAMask-HQ part mask among {', '.join(sorted(parts))}")
    return _resize_ids(_CELEBA_LUT[ids], size, _frame_box(ids.shape, box, frame))


_PART_FILE = re.compile(r"(\d+)_(" + "|".join(sorted(CELEBAMASK_HQ_NAMES, key=len, reverse=True)) + r")")


class LabelIndex:
    """The label files of a folder, found for an image by its path: ``REL.png`` (same relative path), else
    ``STEM.png`` anywhere in the folder (when one file has that stem), else CelebAMask-HQ part masks
    ``NNNNN_part.png`` (any subfolder) for a numeric stem (image ``12.jpg`` -> ``00012_*.png``)."""

    def __init__(self, folder: str | Path):
        self.root = Path(folder)
        if not self.root.is_dir():
            raise FacediffError(f"--masks {self.root}: not a folder; give the folder of label PNGs")
        self.by_rel: dict[str, Path] = {}
        self.by_stem: dict[str, list[Path]] = {}
        self.parts: dict[int, dict[str, Path]] = {}
        for d, dirs, files in os.walk(self.root):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            for f in sorted(files):
                if f.startswith(".") or not f.lower().endswith(".png"):
                    continue
                path = Path(d) / f
                stem = f[:-4]
                m = _PART_FILE.fullmatch(stem)
                if m:
                    self.parts.setdefault(int(m.group(1)), {})[m.group(2)] = path
                    continue
                self.by_rel[path.relative_to(self.root).as_posix()[:-4]] = path
                self.by_stem.setdefault(stem, []).append(path)
        if not self.by_rel and not self.parts:
            raise FacediffError(f"--masks {self.root}: no .png label files found")
        self.layout = " + ".join(n for n, has in (("label PNGs", self.by_rel),
                                                  ("CelebAMask-HQ part masks", self.parts)) if has)

    def find(self, image_file: str) -> tuple[Path | dict[str, Path] | None, str | None]:
        """(label PNG path | {part: path}, None) for an image's relative path, or (None, why not)."""
        rel = image_file.rsplit(".", 1)[0] if "." in Path(image_file).name else image_file
        if rel in self.by_rel:
            return self.by_rel[rel], None
        stem = Path(rel).name
        found = self.by_stem.get(stem, [])
        if len(found) == 1:
            return found[0], None
        if len(found) > 1:
            return None, (f"{len(found)} label files named {stem}.png in --masks {self.root}; put them at the "
                          "image's relative path")
        if stem.isdigit() and int(stem) in self.parts:
            return self.parts[int(stem)], None
        return None, f"no label file {stem}.png (or CelebAMask-HQ part masks) in --masks {self.root}"

    def read(self, found: Path | dict[str, Path], size: int, box: tuple[float, float, float, float] | None,
             frame: tuple[int, int] | None) -> np.ndarray:
        """Parsing ids (size, size) of what ``find`` returned."""
        if isinstance(found, dict):
            return read_part_masks(found, size, box=box, frame=frame)
        return read_label_png(found, size, box=box, frame=frame)
