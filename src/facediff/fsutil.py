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
