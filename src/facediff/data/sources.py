"""Real data sources for ``facediff data prepare``: celeba, celeba-dialog and folder.

``open_source(name, root)`` checks the layout (a missing root or required file is a one-line
FacediffError naming it and the expected layout) and returns a ``Source``: iterating it yields
``Record``s (file relative to the image folder, absolute path, split, attributes {name: level 0-5},
caption, extra label keys) in a deterministic order; ``len()`` counts them (a second, cheap pass over the
annotation files, so 200k records never sit in memory). Files are not opened here: a listed file that is
missing or broken is skipped, with its reason, by ``prepare``.

Paths never leave the image folder: a listed name that is absolute, contains ``..`` past the folder or a
NUL byte, or a symlink (file or folder) that resolves outside it, is yielded as a Record with ``skip`` set
to the reason and is never opened; a folder symlink to one of its ancestors (a loop) or to a folder
already listed is refused the same way, so the data set is never multiplied. Inputs that are used after
a conversion (a caption with invalid UTF-8, whose bytes are replaced with U+FFFD; a caption sidecar
outside the root, which is ignored) carry a line in ``Record.notes`` that ``prepare`` writes to the
manifest's "notes". Images on disk without a label row are marked ``Record.unlabelled`` (see each
source for whether they are kept).

This module owns the source registry (``open_source``) and the celeba and celeba-dialog readers; the
folder source is ``facediff.data.folder_source`` and the shared ``Record`` / ``Source`` types and path
checks are ``facediff.data.source_common``, all re-exported here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from facediff.config import ATTRIBUTES
from facediff.data.folder_source import FOLDER_LAYOUT, META_NAMES, folder
from facediff.data.source_common import (IMAGE_EXTENSIONS, SPLIT_ALIASES, Record, Source, _escape, _level,
                                         _lines, _read_bytes, _rows, _text, check_name, decode_text)
from facediff.errors import FacediffError
from facediff.registry import SOURCES as REGISTRY_SOURCES

__all__ = ["CELEBA_LAYOUT", "CELEBA_MAPPING", "CELEBA_PARTITION", "DIALOG_COLUMNS", "DIALOG_LAYOUT",
           "FOLDER_LAYOUT", "IMAGE_EXTENSIONS", "META_NAMES", "SOURCES", "SPLIT_ALIASES", "Record", "Source",
           "celeba", "celeba_dialog", "check_name", "decode_text", "dialog_caption", "folder", "open_source",
           "read_celeba_attributes", "read_partition"]

SOURCES: tuple[str, ...] = REGISTRY_SOURCES  # facediff.registry
CELEBA_PARTITION = {"0": "train", "1": "val", "2": "test"}  # list_eval_partition.txt codes

# CelebA's 40 binary attributes (+1 / -1) -> our five 0-5 levels. A coarse, documented choice: CelebA only
# says present / absent, so "present" maps to a typical CelebA-Dialog level of that attribute.
#   bangs       Bangs = 1      -> 5 (bangs covering the forehead), else 0
#   eyeglasses  Eyeglasses = 1 -> 3 (thick frame; CelebA's Eyeglasses also counts sunglasses), else 0
#   beard       No_Beard = -1  -> 4 (a clear beard), else 0
#   smiling     Smiling = 1    -> 3 (a clear smile), else 0
#   age         Young = 1      -> 1 (young adult), else 4 (older adult)
CELEBA_MAPPING: dict[str, tuple[str, bool, int, int]] = {  # ours: (CelebA name, value that counts, level if so, else)
    "bangs": ("Bangs", True, 5, 0),
    "eyeglasses": ("Eyeglasses", True, 3, 0),
    "beard": ("No_Beard", False, 4, 0),
    "smiling": ("Smiling", True, 3, 0),
    "age": ("Young", True, 1, 4),
}
# CelebA-Dialog (Jiang et al., Talk-to-Edit, ICCV 2021) fine-grained labels, levels 0-5. The header of
# combined_annotation.txt keeps CelebA's names, but the values are degrees of the attribute itself:
# "No_Beard" is the amount of beard (0 none .. 5 very long) and "Young" is the age level (0 youngest ..
# 5 oldest), so both map directly, not inverted.
DIALOG_COLUMNS: dict[str, tuple[str, ...]] = {  # ours: accepted header names (case-insensitive)
    "bangs": ("bangs",),
    "eyeglasses": ("eyeglasses", "glasses"),
    "beard": ("no_beard", "beard"),
    "smiling": ("smiling", "smile"),
    "age": ("young", "age"),
}


# ----------------------------------------------------------------------------------------------- helpers
def _first(root: Path, names: tuple[str, ...], want_dir: bool = False) -> Path | None:
    for n in names:
        p = root / n
        if (p.is_dir() if want_dir else p.is_file()):
            return p
    return None


def _image_dir(root: Path, names: tuple[str, ...], given: str | Path | None, layout: str) -> Path:
    if given is not None:
        d = Path(given)
        d = d if d.is_absolute() else root / d
        if not d.is_dir():
            raise FacediffError(f"image folder {d} not found; expected {layout}")
        return d
    d = _first(root, names, want_dir=True)
    if d is None:
        raise FacediffError(f"{root}: no image folder ({' or '.join(names)}); expected {layout}")
    nested = d / d.name  # Kaggle's archive nests img_align_celeba/img_align_celeba/
    return nested if nested.is_dir() and not any(p.is_file() for p in d.glob("*.jpg")) else d


def _resolve(image_dir: Path, name: str) -> Path:
    """image_dir/name, or the same stem with another image extension when only that exists."""
    p = image_dir / name
    if p.is_file():
        return p
    for ext in (".jpg", ".png", ".jpeg", ".webp"):
        q = p.with_suffix(ext)
        if q.is_file():
            return q
    return p



def read_partition(path: Path | None) -> dict[str, str]:
    """``list_eval_partition.txt``/``.csv``: {file: train|val|test}; {} when the file is absent."""
    out: dict[str, str] = {}
    if path is None:
        return out
    for i, row in _rows(path):
        if len(row) < 2 or (i == 1 and row[1] not in CELEBA_PARTITION):
            continue  # csv header "image_id,partition"
        if row[1] not in CELEBA_PARTITION:
            raise FacediffError(f"{path} line {i}: partition {row[1]!r} is not 0, 1 or 2 (train, val, test)")
        out[row[0]] = CELEBA_PARTITION[row[1]]
    return out


def read_celeba_attributes(path: Path) -> tuple[list[str], Iterator[tuple[int, str, list[int]]]]:
    """``list_attr_celeba.txt`` (count line, names line, rows) or Kaggle's ``.csv``: (names, rows iterator)."""
    rows = _rows(path)
    header: list[str] | None = None
    for i, row in rows:
        if len(row) == 1 and row[0].isdigit():
            continue  # the count line of the .txt
        header = row[1:] if path.suffix.lower() == ".csv" else row
        break
    if not header:
        raise FacediffError(f"{path}: no attribute-name line; expected the official list_attr_celeba.txt layout")
    names = list(header)

    def gen() -> Iterator[tuple[int, str, list[int]]]:
        for i, row in rows:
            if len(row) != len(names) + 1:
                raise FacediffError(f"{path} line {i}: {len(row) - 1} values for {len(names)} attributes; "
                                    "fix or re-download the file")
            try:
                yield i, row[0], [1 if int(v) > 0 else -1 for v in row[1:]]
            except ValueError:
                raise FacediffError(f"{path} line {i}: attribute values must be 1 / -1 (or 0)") from None
    return names, gen()


def _listed(real_dir: Path, name: str) -> tuple[Path, str | None]:
    """(path, None) for an annotation row's file name, or (a placeholder path, why it is refused)."""
    rel, why = check_name(name)
    if why:
        return real_dir, why
    path = _resolve(real_dir, rel)  # type: ignore[arg-type]
    return path, _escape(path, real_dir, rel)  # type: ignore[arg-type]


def _unlisted(real_dir: Path, covered: set[str], ann: Path) -> Iterator[Record]:
    """Images directly in the image folder that no annotation row names: skipped, counted as unlabelled."""
    try:
        entries = sorted(e.name for e in os.scandir(real_dir))
    except OSError:
        return
    for name in entries:
        if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS or name in covered:
            continue
        path = real_dir / name
        if not path.is_file():
            continue
        why = _escape(path, real_dir, name)
        yield Record(name, path, skip=why or f"no row in {ann.name} (unlabelled image, not used)", unlabelled=True)


def _covered(real_dir: Path, path: Path) -> str | None:
    return path.name if path.parent == real_dir else None


# ----------------------------------------------------------------------------------------------- celeba
CELEBA_LAYOUT = ("ROOT/img_align_celeba/*.jpg + ROOT/list_attr_celeba.txt "
                 "[+ ROOT/list_eval_partition.txt]")


def celeba(root: Path, images_dir: str | Path | None = None) -> Source:
    """Aligned CelebA (Liu et al. 2015): 40 binary attributes mapped to our five levels (CELEBA_MAPPING).

    Rows of list_attr_celeba.txt come first, in file order. Images in the image folder that have no row
    are yielded after them as skipped, ``unlabelled`` Records: they are not used (CelebA's labels are
    the point of this source; use the folder source for unlabelled images) but the manifest lists them
    under "skipped" and "unlabelled" and counts them in counts["unlabelled"].
    """
    image_dir = _image_dir(root, ("img_align_celeba", "images"), images_dir, CELEBA_LAYOUT)
    real_dir = Path(os.path.realpath(image_dir))
    attr_file = _first(root, ("list_attr_celeba.txt", "list_attr_celeba.csv", "Anno/list_attr_celeba.txt"))
    if attr_file is None:
        raise FacediffError(f"{root}: list_attr_celeba.txt not found; expected {CELEBA_LAYOUT} "
                            "(for unlabelled images use the folder source)")
    part_file = _first(root, ("list_eval_partition.txt", "list_eval_partition.csv", "Eval/list_eval_partition.txt"))
    names, _ = read_celeba_attributes(attr_file)
    missing = [c for c, *_ in CELEBA_MAPPING.values() if c not in names]
    if missing:
        raise FacediffError(f"{attr_file}: attribute column(s) {', '.join(missing)} missing from the names line")

    def records() -> Iterator[Record]:
        split = read_partition(part_file)
        names_, rows = read_celeba_attributes(attr_file)
        idx = {n: j for j, n in enumerate(names_)}
        covered: set[str] = set()
        for _, fname, vals in rows:
            attrs = {ours: (hit if (vals[idx[c]] > 0) == positive else miss)
                     for ours, (c, positive, hit, miss) in CELEBA_MAPPING.items()}
            path, why = _listed(real_dir, fname)
            if why is None and (name := _covered(real_dir, path)):
                covered.add(name)
            yield Record(fname, path, split.get(fname, "train"), attrs, "",
                         {"celeba_attributes": dict(zip(names_, vals))}, skip=why)
        yield from _unlisted(real_dir, covered, attr_file)

    info = {"image_dir": str(image_dir), "attributes_file": str(attr_file),
            "partition_file": str(part_file) if part_file else None,
            "splits_from": "list_eval_partition" if part_file else "none (all train)",
            "attribute_mapping": {k: f"{c}={'1' if pos else '-1'} -> {hit} else {miss}"
                                  for k, (c, pos, hit, miss) in CELEBA_MAPPING.items()}}
    return Source("celeba", root, image_dir, records, info)


# ----------------------------------------------------------------------------------------------- celeba-dialog
DIALOG_LAYOUT = ("ROOT/image/ (or img_align_celeba/) + ROOT/combined_annotation.txt "
                 "[+ ROOT/captions.json] [+ train.txt/val.txt/test.txt or list_eval_partition.txt]")


def _dialog_columns(path: Path) -> tuple[dict[str, int], int]:
    """Map our attributes to value columns (0-based after the file name) from the header line.

    Returns (columns, number of the last line before the data). Without a recognisable header the
    file's order is taken to be bangs, eyeglasses, beard, smiling, age.
    """
    for i, tokens in _lines(path):
        if len(tokens) == 1 and tokens[0].isdigit():
            continue  # an optional count line
        low = [t.lower().strip(",") for t in tokens]
        if all(t.lstrip("-").isdigit() for t in low[1:]):
            return {a: j for j, a in enumerate(ATTRIBUTES)}, i - 1
        cols: dict[str, int] = {}
        for ours, aliases in DIALOG_COLUMNS.items():
            hits = [j for j, t in enumerate(low) if t in aliases]
            if not hits:
                raise FacediffError(f"{path} line {i}: no {ours} column in the header "
                                    f"(expected name Bangs Eyeglasses No_Beard Smiling Young)")
            cols[ours] = hits[0]
        offset = 1 if len(low) == len(DIALOG_COLUMNS) else 0  # header without a name column
        return {k: v + offset - 1 for k, v in cols.items()}, i
    raise FacediffError(f"{path} is empty; expected a header line then `name b e beard s age` rows")


def _read_captions(path: Path | None) -> tuple[dict[str, Any], bool]:
    """captions.json as a dict, and whether it held invalid UTF-8 (replaced with U+FFFD)."""
    if path is None:
        return {}, False
    text, bad = decode_text(_read_bytes(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FacediffError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise FacediffError(f"{path}: expected an object {{\"000001.jpg\": {{\"overall_caption\": ...}}}}")
    return data, bad


def dialog_caption(entry: Any) -> tuple[str, dict[str, str]]:
    """(caption, attribute-wise captions) from one captions.json entry; ("", {}) for missing/null/empty.

    The caption is ``overall_caption``; when that is empty, the attribute-wise captions joined by spaces.
    """
    if isinstance(entry, str):
        return entry.strip(), {}
    if not isinstance(entry, dict):
        return "", {}
    wise_raw = entry.get("attribute_wise_captions")
    wise = {str(k): _text(v) for k, v in wise_raw.items()} if isinstance(wise_raw, dict) else {}
    wise = {k: v for k, v in wise.items() if v}
    caption = _text(entry.get("overall_caption")) or " ".join(wise.values())
    return caption, wise


def _split_lists(root: Path) -> tuple[dict[str, str], str | None]:
    """{file: split} from train/val/test list files (first token of each line), if any exist."""
    out: dict[str, str] = {}
    used = []
    for split, names in (("train", ("train.txt", "train_list.txt")), ("val", ("val.txt", "val_list.txt",
                         "valid.txt", "validation.txt")), ("test", ("test.txt", "test_list.txt"))):
        p = _first(root, names)
        if p is not None:
            used.append(p.name)
            for _, tokens in _lines(p):
                out[tokens[0]] = split
    return out, (", ".join(used) if used else None)


def celeba_dialog(root: Path, images_dir: str | Path | None = None) -> Source:
    """CelebA-Dialog (Jiang et al. 2021): five attributes with levels 0-5 and captions.

    Rows of combined_annotation.txt come first; images in the image folder without a row follow as
    skipped, ``unlabelled`` Records (listed under "skipped" and "unlabelled" in the manifest, counted in
    counts["unlabelled"], not used). A caption from a captions.json with invalid UTF-8 is kept with the
    bytes replaced by U+FFFD and a note naming the file.
    """
    image_dir = _image_dir(root, ("image", "images", "img_align_celeba", "CelebA-HQ-img"), images_dir, DIALOG_LAYOUT)
    real_dir = Path(os.path.realpath(image_dir))
    ann = _first(root, ("combined_annotation.txt", "classification_label/combined_annotation.txt"))
    if ann is None:
        raise FacediffError(f"{root}: combined_annotation.txt not found; expected {DIALOG_LAYOUT}")
    cap_file = _first(root, ("captions.json", "text/captions.json", "text/captions_hq.json"))
    cols, header_line = _dialog_columns(ann)
    lists, lists_used = _split_lists(root)
    part_file = _first(root, ("list_eval_partition.txt", "list_eval_partition.csv"))
    hq_map_file = _first(root, ("CelebA-HQ-to-CelebA-mapping.txt",))

    def records() -> Iterator[Record]:
        captions, bad_utf8 = _read_captions(cap_file)
        covered: set[str] = set()
        partition = read_partition(part_file) if not lists else {}
        hq = {}
        if partition and hq_map_file is not None:  # CelebA-HQ "idx orig_idx orig_file" -> CelebA split
            hq = {f"{r[0]}.jpg": r[2] for i, r in _lines(hq_map_file) if len(r) >= 3 and r[0].isdigit()}
        for i, tokens in _lines(ann):
            if i <= header_line:
                continue
            name, vals = tokens[0], tokens[1:]
            if len(vals) <= max(cols.values()):
                raise FacediffError(f"{ann} line {i}: {len(vals)} values, expected 5 levels after the file name")
            attrs = {a: _level(ann, f"line {i}", a, vals[j]) for a, j in cols.items()}
            caption, wise = dialog_caption(captions.get(name))
            split = lists.get(name) or partition.get(hq.get(name, name)) or "train"
            extra = {"attribute_captions": wise} if wise else {}
            notes: tuple[str, ...] = ()
            if bad_utf8 and ("\ufffd" in caption or any("\ufffd" in v for v in wise.values())):
                notes = (f"{cap_file}: invalid UTF-8 in this caption; bytes replaced with U+FFFD",)
            path, why = _listed(real_dir, name)
            if why is None and (base := _covered(real_dir, path)):
                covered.add(base)
            yield Record(name, path, split, attrs, caption, extra, skip=why, notes=notes)  # type: ignore[arg-type]
        yield from _unlisted(real_dir, covered, ann)

    splits_from = lists_used or ("list_eval_partition" + (" via CelebA-HQ mapping" if hq_map_file else "")
                                 if part_file else "none (all train)")
    info = {"image_dir": str(image_dir), "annotation_file": str(ann),
            "captions_file": str(cap_file) if cap_file else None, "splits_from": splits_from,
            "attribute_mapping": {a: f"column {j + 2} of combined_annotation.txt, level as is"
                                  for a, j in cols.items()}}
    return Source("celeba-dialog", root, image_dir, records, info)


def open_source(name: str, root: str | Path, images_dir: str | Path | None = None) -> Source:
    """Check a source's layout and return it; missing root/files are one-line FacediffErrors."""
    if name not in SOURCES:
        raise FacediffError(f"unknown source {name!r}: choose one of {', '.join(SOURCES)}")
    r = Path(root).expanduser()
    if not r.is_dir():
        layout = {"celeba": CELEBA_LAYOUT, "celeba-dialog": DIALOG_LAYOUT, "folder": FOLDER_LAYOUT}[name]
        raise FacediffError(f"{r}: data root not found; expected {layout}")
    r = r.resolve()
    return {"celeba": celeba, "celeba-dialog": celeba_dialog, "folder": folder}[name](r, images_dir)
