"""Folder writes that never lose the previous copy: write into a temporary sibling, then swap it in.

Used for exports (diffusion pipelines, autoencoders); checkpoints and prepared data sets follow the same rule
with their own manifests (training/checkpoint.py, data/prepared.py).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from facediff.errors import FacediffError


def disk_message(e: BaseException) -> str:
    """'the disk is full' for ENOSPC / EDQUOT (also inside library error texts), else the error's first line."""
    text = str(e)
    if getattr(e, "errno", None) in (28, 122) or "No space left" in text or "os error 28" in text:
        return "the disk is full"
    return text.splitlines()[0][:200] if text else type(e).__name__


@contextlib.contextmanager
def replace_folder(out: str | Path, what: str = "the export") -> Iterator[Path]:
    """``with replace_folder(OUT) as tmp:`` write everything into ``tmp``; on success it becomes OUT (the old OUT
    is set aside first and deleted last); on failure ``tmp`` is removed, OUT is unchanged, and a one-line
    FacediffError says so."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
    except FacediffError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FacediffError(f"could not write {what} {out} ({disk_message(e)}); the previous copy is unchanged; "
                            "free space and run again") from None
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------------------------------- content hashes
_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 hex: hash each file once


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, cached per (path, size, mtime)."""
    import hashlib

    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def content_sha256(path: str | Path) -> str:
    """SHA-256 of a model: a file's own hash; for a folder, the hash of its weight files' (relative path, hash)
    pairs in sorted order (``*.safetensors``, or every file if it has none), so that renaming or moving the
    folder keeps the hash and changing any weight changes it."""
    import hashlib

    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    files = sorted(p for p in path.rglob("*.safetensors") if p.is_file()) or \
        sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path).as_posix()}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def check_output(path: str | Path, what: str = "--out", overwrite: bool = True) -> Path:
    """Fail before the work, not after it: ``path`` must be creatable (its first existing ancestor a writable
    folder, nothing on the way a file) and, unless ``overwrite``, not there yet."""
    path = Path(path)
    if path.is_dir() and what == "--out" and path.suffix:
        raise FacediffError(f"{what} {path}: a folder; give a file name")
    if not overwrite and path.exists():
        raise FacediffError(f"{what} {path}: exists; pass --overwrite to replace it (or choose another name)")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FacediffError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise FacediffError(f"{what} {path}: {parent} is not writable")
    return path
