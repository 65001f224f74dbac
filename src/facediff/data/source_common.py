"""What every real data source shares: the ``Record`` and ``Source`` types and the low-level helpers.

Owns: ``Record`` (one image of a source, before it is opened) and ``Source`` (a checked source: iterate
for Records, ``len()`` for their number); the path-safety checks used by every reader (``check_name`` for
a listed file name, ``_within`` / ``_escape`` for a path that must stay inside the image folder); and the
annotation-file readers (``_lines``, ``_rows``, ``decode_text``, ``_read_bytes``, ``_level``, ``_text``).
It imports no other ``facediff.data`` module, so ``sources`` and ``folder_source`` can both build on it.
The readers themselves live in ``facediff.data.sources`` (celeba, celeba-dialog, ``open_source``) and
``facediff.data.folder_source`` (folder).
"""
from __future__ import annotations

import csv
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from facediff.config import NUM_LEVELS
from facediff.errors import FacediffError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


@dataclass(frozen=True)
class Record:
    """One image of a source, before it is opened."""

    file: str  # path relative to the source's image folder (posix), written as the label's "file"
    path: Path  # absolute path of the image file
    split: str = "train"  # train | val | test (or a folder source's own split name)
    attributes: dict[str, int] = field(default_factory=dict)  # {attribute: level 0-5}; {} = unconditional
    caption: str = ""  # text description; "" when none
    extra: dict[str, Any] = field(default_factory=dict)  # more label keys (celeba_attributes, ...)
    skip: str | None = None  # refused by the source (never opened): the reason for manifest "skipped"
    notes: tuple[str, ...] = ()  # conversions / ignored parts for manifest "notes"
    unlabelled: bool = False  # an image on disk that has no label row in the source's annotations


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


# ----------------------------------------------------------------------------------------------- path safety
def _within(path: str | Path, boundary: str | Path) -> bool:
    """Whether ``path`` (already resolved) lies in ``boundary`` (resolved) or is it."""
    path, boundary = str(path), str(boundary)
    return path == boundary or path.startswith(boundary.rstrip(os.sep) + os.sep)


def check_name(name: str, folder: str = "") -> tuple[str | None, str | None]:
    """A listed file name (relative to ``folder``, itself relative to the image folder) -> (normalised
    posix path relative to the image folder, None) or (None, why it is refused)."""
    if "\x00" in name:
        return None, "file name contains a NUL byte"
    if not name.strip():
        return None, "empty file name"
    if posixpath.isabs(name) or os.path.isabs(name) or (len(name) > 2 and name[1] == ":" and name[2] in "/\\"):
        return None, f"absolute path {name!r}; give it relative to the image folder"
    norm = posixpath.normpath(f"{folder}/{name}" if folder else name)
    if norm == ".." or norm.startswith("../"):
        return None, f"path {name!r} leaves the image folder (..); give a path inside --root"
    if norm == ".":
        return None, f"file name {name!r} names the folder itself"
    return norm, None


def _escape(path: Path, boundary: Path, rel: str) -> str | None:
    """None when ``path`` (under ``boundary``) resolves inside it, else why it is refused."""
    if "/" not in rel and not os.path.islink(path):
        return None  # a plain entry of the (resolved) folder: nothing to resolve
    real = os.path.realpath(path)
    if _within(real, boundary):
        return None
    return f"symlink resolves outside --root (-> {real}); refused"


def _unreadable(path: Path, e: OSError) -> FacediffError:
    return FacediffError(f"{path}: cannot read it ({e.strerror or type(e).__name__}); check the file and its permissions")


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace tokens) of the non-blank lines of a text file (double spaces, CRLF, trailing space ok)."""
    try:
        fh = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        raise _unreadable(path, e) from None
    with fh:
        for i, line in enumerate(fh, 1):
            tokens = line.split()
            if tokens:
                yield i, tokens


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Rows of a whitespace .txt or comma .csv annotation file, as (line number, fields)."""
    if path.suffix.lower() == ".csv":
        try:
            fh = open(path, newline="", encoding="utf-8", errors="replace")
        except OSError as e:
            raise _unreadable(path, e) from None
        with fh:
            for i, row in enumerate(csv.reader(fh), 1):
                row = [c.strip() for c in row]
                if any(row):
                    yield i, row
    else:
        yield from _lines(path)

def decode_text(raw: bytes) -> tuple[str, bool]:
    """UTF-8 bytes (a BOM allowed) -> (text, whether invalid bytes were replaced with U+FFFD)."""
    try:
        return raw.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8-sig", errors="replace"), True


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise _unreadable(path, e) from None


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v.strip()
    if isinstance(v, list):  # several captions: the first non-empty one
        return next((s.strip() for s in v if isinstance(s, str) and s.strip()), "")
    return ""


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
