"""The folder source: any folder of images, labels from HF-imagefolder metadata or kohya sidecar captions.

Owns ``folder()`` and its parts: the safe directory walk (``_scan``: sorted, hidden entries skipped,
symlinks checked), the ``metadata.jsonl`` / ``metadata.csv`` reader (``_read_metadata``) and the kohya
``IMAGE.txt`` / ``IMAGE.caption`` sidecar captions (``_sidecar``: the first line, as kohya reads it).
``open_source("folder", ...)`` in ``facediff.data.sources`` is the way in; the shared ``Record`` /
``Source`` types and path checks come from ``facediff.data.source_common``.

Paths never leave the folder: a metadata ``file_name`` that is absolute, contains ``..`` past the folder
or a NUL byte, or a symlink (file or folder) that resolves outside it, is yielded as a Record with
``skip`` set to the reason and is never opened; a folder symlink to one of its ancestors (a loop) or to a
folder already listed, and a file symlink to an image already listed, are refused the same way, so the
data set is never multiplied. A caption sidecar that resolves outside the folder is ignored, with a note.
"""
from __future__ import annotations

import csv
import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from facediff.config import ATTRIBUTES
from facediff.data.captions import first_line
from facediff.data.source_common import (IMAGE_EXTENSIONS, SPLIT_ALIASES, Record, Source, _level, _read_bytes,
                                         _text, _within, check_name, decode_text)
from facediff.errors import FacediffError


FOLDER_LAYOUT = ("ROOT/**/*.{jpg,png,webp,...} [+ metadata.jsonl with file_name, text, bangs..age, split] "
                 "[or IMAGE.txt captions beside each image]")


META_NAMES = ("metadata.jsonl", "metadata.csv")


@dataclass
class _Scan:
    """One walk of a folder source: images (rel, path, reached through a symlink), metadata files, refusals."""

    images: list[tuple[str, Path, bool]] = field(default_factory=list)
    metadata: list[tuple[str, Path]] = field(default_factory=list)  # (folder rel ("" = base), file)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (rel, reason)


def _unlinked_folders(base: Path) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of every folder under ``base`` reachable without following any symlink (hidden skipped)."""
    real_dirs: set[tuple[int, int]] = set()
    for d, dirs, _ in os.walk(base):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        try:
            st = os.stat(d)
            real_dirs.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    return real_dirs


def _refuse_duplicate_links(out: _Scan) -> None:
    """Move to ``out.refused`` every image reached through a symlink that is the same file as a listed image."""
    owner: dict[str, str] = {}
    for r, path, via in out.images:
        if not via:
            owner.setdefault(str(path), r)
    keep = []
    for r, path, via in out.images:
        if via:
            real = os.path.realpath(path)
            if real in owner:
                out.refused.append((r, f"symlink to {owner[real]}, which is already listed; refused (a duplicate)"))
                continue
            owner[real] = r
        keep.append((r, path, via))
    out.images = keep


def _scan(base: Path) -> _Scan:
    """Walk ``base`` (resolved) in sorted order, hidden entries skipped, symlinks checked (see module doc)."""
    out = _Scan()
    real_dirs = _unlinked_folders(base)  # the folders reachable without following any symlink
    entered: set[tuple[int, int]] = set()

    def rel_of(real: str) -> str:
        return "." if real == str(base) else os.path.relpath(real, base).replace(os.sep, "/")

    def visit(d: Path, rel: str, linked: bool) -> None:
        try:
            st = os.stat(d)
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            out.refused.append((rel + "/", f"cannot list folder ({e.strerror or e})"))
            return
        entered.add((st.st_dev, st.st_ino))
        for e in entries:
            if e.name.startswith("."):
                continue
            r = f"{rel}/{e.name}" if rel else e.name
            path = d / e.name
            wanted = Path(e.name).suffix.lower() in IMAGE_EXTENSIONS or e.name in META_NAMES
            via = linked
            if e.is_symlink():
                try:
                    real = os.path.realpath(path, strict=True)
                    is_dir = os.path.isdir(real)
                except OSError as err:  # a dangling link, or a link loop (a -> b -> a)
                    if wanted or err.errno == errno.ELOOP:
                        why = "symlink loop" if err.errno == errno.ELOOP else "broken symlink (target missing)"
                        out.refused.append((r, f"{why}; refused"))
                    continue
                if not _within(real, base):
                    if is_dir or wanted:
                        out.refused.append((r + ("/" if is_dir else ""),
                                            f"symlink resolves outside --root (-> {real}); refused"))
                    continue
                if is_dir:
                    tst = os.stat(real)
                    key = (tst.st_dev, tst.st_ino)
                    if key in real_dirs or key in entered:
                        if _within(os.path.realpath(d), real):
                            why = f"symlink loop: points to its own ancestor folder {rel_of(real)}; refused"
                        else:
                            why = f"symlink to folder {rel_of(real)}, which is already listed; refused (a duplicate)"
                        out.refused.append((r + "/", why))
                        continue
                    visit(path, r, True)
                    continue
                via = True
            elif e.is_dir(follow_symlinks=False):
                visit(path, r, linked)
                continue
            if e.name in META_NAMES:
                out.metadata.append((rel, path))
            elif Path(e.name).suffix.lower() in IMAGE_EXTENSIONS:
                out.images.append((r, path, via))

    visit(base, "", False)
    out.images.sort(key=lambda t: t[0])
    # a file symlink (or a file under a linked folder) that is the same file as another listed image
    _refuse_duplicate_links(out)
    return out


def _read_metadata(base: Path, scan: _Scan) -> tuple[dict[str, dict[str, Any]], list[str], list[tuple[str, str]]]:
    """metadata.jsonl / metadata.csv rows of a scan: {file relative to base: row}, files used, refused names.

    A row whose file_name is absolute, leaves ``base`` (``..``) or holds a NUL byte is refused (returned
    with its reason, never opened). Rows read from invalid UTF-8 carry ``_notes``.
    """
    meta: dict[str, dict[str, Any]] = {}
    used: list[str] = []
    refused: list[tuple[str, str]] = []
    for d_rel, path in scan.metadata:
        shown = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
        used.append(shown)
        text, bad = decode_text(_read_bytes(path))
        rows: list[tuple[int, Any, bool]] = []
        if path.name.endswith(".jsonl"):
            for i, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append((i, json.loads(line), bad and "\ufffd" in line))
                    except json.JSONDecodeError as e:
                        raise FacediffError(f"{path} line {i}: not valid JSON ({e.msg})") from None
        else:
            reader = csv.DictReader(text.splitlines())
            rows = [(i + 2, r, bad and any("\ufffd" in str(v) for v in r.values())) for i, r in enumerate(reader)]
        for i, row, replaced in rows:
            if not isinstance(row, dict) or not row.get("file_name"):
                raise FacediffError(f"{path} line {i}: every row needs a \"file_name\" (HF imagefolder layout)")
            name = str(row["file_name"])
            rel, why = check_name(name, d_rel)
            if why is not None:
                refused.append((name, f"{shown} line {i}: {why}"))
                continue
            notes = (f"{shown} line {i}: invalid UTF-8; bytes replaced with U+FFFD",) if replaced else ()
            meta[rel] = {**row, "_where": (path, i), "_notes": notes}  # type: ignore[index]
    return meta, used, refused


def _sidecar(image: Path, base: Path) -> tuple[str, tuple[str, ...]]:
    """(kohya caption from IMAGE.txt / IMAGE.caption, notes); a sidecar resolving outside ``base`` is ignored.

    As kohya sd-scripts reads it, the caption is the sidecar's first line; further lines are dropped (noted).
    """
    for ext in (".txt", ".caption"):
        p = image.with_suffix(ext)
        if not p.is_file():
            continue
        rel = p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p)
        if not _within(os.path.realpath(p), base):
            return "", (f"caption sidecar {rel} resolves outside --root (-> {os.path.realpath(p)}); ignored",)
        try:
            text, bad = decode_text(p.read_bytes())
        except OSError as e:
            return "", (f"caption sidecar {rel}: cannot read it ({e.strerror or e}); ignored",)
        notes = (f"caption sidecar {rel}: invalid UTF-8; bytes replaced with U+FFFD",) if bad else ()
        rest = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[1:] if line.strip()]
        if rest:
            notes += (f"caption sidecar {rel}: only its first line is the caption (as kohya reads it); "
                      f"{len(rest)} further line(s) ignored",)
        return first_line(text), notes
    return "", ()


def folder(root: Path, images_dir: str | Path | None = None) -> Source:
    """Any folder of images; labels from HF-imagefolder metadata or kohya-style sidecar captions.

    Every image found is used. When the folder has metadata files, an image without a row is still used
    (unconditional, with its sidecar caption if any) but marked ``unlabelled``: the manifest lists it
    under "unlabelled" and counts it in counts["unlabelled"]. Metadata rows naming a file not on disk
    are yielded too (and skipped as "file not found" by prepare). Paths are confined to the folder.
    """
    base = Path(images_dir) if images_dir is not None else root
    base = base if base.is_absolute() else root / base
    if not base.is_dir():
        raise FacediffError(f"{base} is not a folder; expected {FOLDER_LAYOUT}")
    base = Path(os.path.realpath(base))
    scan0 = _scan(base)
    _, meta_used, _ = _read_metadata(base, scan0)  # parse (and validate) once up front

    def records() -> Iterator[Record]:
        scan = _scan(base)
        meta_, _, refused_names = _read_metadata(base, scan)
        rels = [r for r, _, _ in scan.images]
        refused = {r.rstrip("/"): why for r, why in scan.refused}
        listed = set(rels)
        real_of = {os.path.realpath(p) for _, p, _ in scan.images}
        missing = sorted(set(meta_) - listed)
        for rel in rels + missing:
            row = meta_.get(rel, {})
            where = row.get("_where", (base, 0))
            skip = None
            if rel not in listed:  # named by metadata only: it must not reach outside or repeat an image
                path = base / rel
                bad = next((why for r, why in refused.items() if rel == r or rel.startswith(r + "/")), None)
                real = os.path.realpath(path)
                if bad is not None:
                    skip = f"{bad.split(';')[0]} ({where[0].name} line {where[1]}); refused"
                elif not _within(real, base):
                    skip = f"resolves outside --root (-> {real}); refused"
                elif real in real_of and os.path.exists(path):
                    skip = "the same file as another listed image; refused (a duplicate)"
            nested = row.get("attributes") if isinstance(row.get("attributes"), dict) else {}
            attrs = {}
            for a in ATTRIBUTES:
                v = _level(where[0], f"line {where[1]}", a, row.get(a, nested.get(a)))
                if v is not None:
                    attrs[a] = v
            notes = tuple(row.get("_notes", ()))
            caption = _text(row.get("text")) or _text(row.get("caption"))
            if not caption and skip is None:
                caption, side_notes = _sidecar(base / rel, base)
                notes += side_notes
            top = rel.split("/", 1)[0].lower() if "/" in rel else ""
            split = str(row.get("split") or SPLIT_ALIASES.get(top, "train"))
            yield Record(rel, base / rel, SPLIT_ALIASES.get(split.lower(), split), attrs, caption,
                         skip=skip, notes=notes, unlabelled=bool(meta_) and rel not in meta_)
        for rel, why in scan.refused:
            yield Record(rel, base, skip=why)
        for name, why in refused_names:
            yield Record(name, base, skip=why)

    info = {"image_dir": str(base), "metadata_files": meta_used,
            "labels_from": "metadata" if meta_used else "sidecar captions / none"}
    return Source("folder", root, base, records, info)
