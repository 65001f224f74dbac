"""Real data sources for ``facediff data prepare``: celeba, celeba-dialog and folder.

``open_source(name, root)`` checks the layout (a missing root or required file is a one-line
FacediffError naming it and the expected layout) and returns a ``Source``: iterating it yields
``Record``s (file relative to the image folder, absolute path, split, attributes {name: level 0-5},
caption, extra label keys) in a deterministic order; ``len()`` counts them (a second, cheap pass over the
annotation files, so 200k records never sit in memory). Files are not opened here: a listed file that is
missing or broken is skipped, with its reason, by ``prepare``.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.errors import FacediffError
from facediff.registry import SOURCES as REGISTRY_SOURCES

SOURCES: tuple[str, ...] = REGISTRY_SOURCES  # facediff.registry
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}
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


@dataclass(frozen=True)
class Record:
    """One image of a source, before it is opened."""

    file: str  # path relative to the source's image folder (posix), written as the label's "file"
    path: Path  # absolute path of the image file
    split: str = "train"  # train | val | test (or a folder source's own split name)
    attributes: dict[str, int] = field(default_factory=dict)  # {attribute: level 0-5}; {} = unconditional
    caption: str = ""  # text description; "" when none
    extra: dict[str, Any] = field(default_factory=dict)  # more label keys (celeba_attributes, ...)


@dataclass
class Source:
    """A checked data source: iterate for Records, len() for their number, ``info`` for the manifest."""

    name: str
    root: Path
    image_dir: Path
    _records: Callable[[], Iterator[Record]]
    info: dict[str, Any] = field(default_factory=dict)  # files used, split origin, attribute mapping
    _len: int | None = None

    def __iter__(self) -> Iterator[Record]:
        return self._records()

    def __len__(self) -> int:
        if self._len is None:
            self._len = sum(1 for _ in self._records())
        return self._len


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


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace tokens) of the non-blank lines of a text file (double spaces, CRLF, trailing space ok)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            tokens = line.split()
            if tokens:
                yield i, tokens


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Rows of a whitespace .txt or comma .csv annotation file, as (line number, fields)."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            for i, row in enumerate(csv.reader(fh), 1):
                row = [c.strip() for c in row]
                if any(row):
                    yield i, row
    else:
        yield from _lines(path)


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


def _level(path: Path, where: str, key: str, value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        v = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        v = None
    if isinstance(value, bool) or v is None or not 0 <= v < NUM_LEVELS:
        raise FacediffError(f"{path} {where}: {key} = {value!r} is not a level 0-{NUM_LEVELS - 1}")
    return v


# ----------------------------------------------------------------------------------------------- celeba
CELEBA_LAYOUT = ("ROOT/img_align_celeba/*.jpg + ROOT/list_attr_celeba.txt "
                 "[+ ROOT/list_eval_partition.txt]")


def celeba(root: Path, images_dir: str | Path | None = None) -> Source:
    """Aligned CelebA (Liu et al. 2015): 40 binary attributes mapped to our five levels (CELEBA_MAPPING)."""
    image_dir = _image_dir(root, ("img_align_celeba", "images"), images_dir, CELEBA_LAYOUT)
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
        for _, fname, vals in rows:
            attrs = {ours: (hit if (vals[idx[c]] > 0) == positive else miss)
                     for ours, (c, positive, hit, miss) in CELEBA_MAPPING.items()}
            yield Record(fname, _resolve(image_dir, fname), split.get(fname, "train"), attrs, "",
                         {"celeba_attributes": dict(zip(names_, vals))})

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


def _read_captions(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as e:
        raise FacediffError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise FacediffError(f"{path}: expected an object {{\"000001.jpg\": {{\"overall_caption\": ...}}}}")
    return data


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, list):  # several captions: the first non-empty one
        return next((s.strip() for s in v if isinstance(s, str) and s.strip()), "")
    return ""


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
    """CelebA-Dialog (Jiang et al. 2021): five attributes with levels 0-5 and captions."""
    image_dir = _image_dir(root, ("image", "images", "img_align_celeba", "CelebA-HQ-img"), images_dir, DIALOG_LAYOUT)
    ann = _first(root, ("combined_annotation.txt", "classification_label/combined_annotation.txt"))
    if ann is None:
        raise FacediffError(f"{root}: combined_annotation.txt not found; expected {DIALOG_LAYOUT}")
    cap_file = _first(root, ("captions.json", "text/captions.json", "text/captions_hq.json"))
    cols, header_line = _dialog_columns(ann)
    lists, lists_used = _split_lists(root)
    part_file = _first(root, ("list_eval_partition.txt", "list_eval_partition.csv"))
    hq_map_file = _first(root, ("CelebA-HQ-to-CelebA-mapping.txt",))

    def records() -> Iterator[Record]:
        captions = _read_captions(cap_file)
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
            yield Record(name, _resolve(image_dir, name), split, attrs, caption, extra)  # type: ignore[arg-type]

    splits_from = lists_used or ("list_eval_partition" + (" via CelebA-HQ mapping" if hq_map_file else "")
                                 if part_file else "none (all train)")
    info = {"image_dir": str(image_dir), "annotation_file": str(ann),
            "captions_file": str(cap_file) if cap_file else None, "splits_from": splits_from,
            "attribute_mapping": {a: f"column {j + 2} of combined_annotation.txt, level as is"
                                  for a, j in cols.items()}}
    return Source("celeba-dialog", root, image_dir, records, info)


# ----------------------------------------------------------------------------------------------- folder
FOLDER_LAYOUT = ("ROOT/**/*.{jpg,png,webp,...} [+ metadata.jsonl with file_name, text, bangs..age, split] "
                 "[or IMAGE.txt captions beside each image]")


def _walk_images(root: Path) -> list[Path]:
    found = []
    for d, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in files:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(d) / f)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _read_metadata(root: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """All metadata.jsonl / metadata.csv under root: {file relative to root: row}, files used."""
    meta: dict[str, dict[str, Any]] = {}
    used: list[str] = []
    for d, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for fname in ("metadata.jsonl", "metadata.csv"):
            if fname not in files:
                continue
            path = Path(d) / fname
            used.append(path.relative_to(root).as_posix())
            if fname.endswith(".jsonl"):
                rows = []
                for i, line in enumerate(open(path, encoding="utf-8", errors="replace"), 1):
                    if line.strip():
                        try:
                            rows.append((i, json.loads(line)))
                        except json.JSONDecodeError as e:
                            raise FacediffError(f"{path} line {i}: not valid JSON ({e.msg})") from None
            else:
                with open(path, newline="", encoding="utf-8", errors="replace") as fh:
                    rows = [(i + 2, r) for i, r in enumerate(csv.DictReader(fh))]
            for i, row in rows:
                if not isinstance(row, dict) or not row.get("file_name"):
                    raise FacediffError(f"{path} line {i}: every row needs a \"file_name\" (HF imagefolder layout)")
                rel = (Path(d) / str(row["file_name"])).relative_to(root).as_posix()
                meta[rel] = {**row, "_where": (path, i)}
    return meta, used


def _sidecar(image: Path) -> str:
    for ext in (".txt", ".caption"):
        p = image.with_suffix(ext)
        if p.is_file():
            return p.read_text(encoding="utf-8", errors="replace").strip()
    return ""


def folder(root: Path, images_dir: str | Path | None = None) -> Source:
    """Any folder of images; labels from HF-imagefolder metadata or kohya-style sidecar captions."""
    base = Path(images_dir) if images_dir is not None else root
    base = base if base.is_absolute() else root / base
    if not base.is_dir():
        raise FacediffError(f"{base} is not a folder; expected {FOLDER_LAYOUT}")
    meta, meta_used = _read_metadata(base)  # parse (and validate) once up front

    def records() -> Iterator[Record]:
        meta_, _ = _read_metadata(base)
        on_disk = _walk_images(base)
        rels = [p.relative_to(base).as_posix() for p in on_disk]
        missing = sorted(set(meta_) - set(rels))
        for rel in rels + missing:
            row = meta_.get(rel, {})
            where = row.get("_where", (base, 0))
            nested = row.get("attributes") if isinstance(row.get("attributes"), dict) else {}
            attrs = {}
            for a in ATTRIBUTES:
                v = _level(where[0], f"line {where[1]}", a, row.get(a, nested.get(a)))
                if v is not None:
                    attrs[a] = v
            caption = _text(row.get("text")) or _text(row.get("caption")) or _sidecar(base / rel)
            top = rel.split("/", 1)[0].lower() if "/" in rel else ""
            split = str(row.get("split") or SPLIT_ALIASES.get(top, "train"))
            yield Record(rel, base / rel, SPLIT_ALIASES.get(split.lower(), split), attrs, caption)

    info = {"image_dir": str(base), "metadata_files": meta_used,
            "labels_from": "metadata" if meta_used else "sidecar captions / none"}
    return Source("folder", root, base, records, info)


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
