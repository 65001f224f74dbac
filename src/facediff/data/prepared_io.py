"""Disk helpers of the prepared-set writer (``facediff.data.prepared``): allocation, shrinking, stale temps.

Blocks of the .npy files are reserved for real before any pixel is written (``reserve``), so a full disk is an
``OSError`` at allocation; temporary folders of killed writers are cleaned up (``_remove_stale_temps``).
"""
from __future__ import annotations

import errno
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np

_ZERO_CHUNK = 1 << 22  # bytes written at a time where posix_fallocate is unsupported
_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def one_line(message: str) -> str:
    """A message with any line breaks / control characters escaped, so it prints as one line."""
    if message.isprintable():
        return message
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def reserve(path: str | Path, start: int, end: int) -> None:
    """Give bytes start..end of an existing file real disk blocks (an OSError ENOSPC when they do not fit)."""
    if end <= start:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate = getattr(os, "posix_fallocate", None)
        if fallocate is not None:
            try:
                fallocate(fd, start, end - start)
                return
            except OSError as e:
                if e.errno not in _NO_FALLOCATE:
                    raise
        zeros = bytes(min(_ZERO_CHUNK, end - start))
        pos = start
        while pos < end:
            n = os.pwrite(fd, zeros[: min(len(zeros), end - pos)], pos)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            pos += n
        os.fsync(fd)
    finally:
        os.close(fd)


def _allocated_memmap(path: Path, shape: tuple[int, ...]) -> np.memmap:
    """A uint8 .npy memmap of ``shape`` whose data blocks are allocated on disk (not sparse)."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    offset = arr.offset
    del arr
    reserve(path, offset, offset + int(np.prod(shape)))
    return np.lib.format.open_memmap(path, mode="r+")


def _shrink_npy(path: Path, n: int) -> None:
    """Cut a C-ordered .npy file to its first ``n`` rows in place (rewrite the header, truncate the data)."""
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        data_start = fh.tell()
        prefix = 8 + (2 if version == (1, 0) else 4)  # magic + version + header length field
        header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": bool(fortran),
                       "shape": (n, *shape[1:])})
        room = data_start - prefix - 1
        if fortran or len(header) > room:
            raise OSError(errno.EINVAL, "cannot shrink this .npy header in place", str(path))
        fh.seek(prefix)
        fh.write((header + " " * (room - len(header)) + "\n").encode("latin1"))
        fh.truncate(data_start + n * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_temps(out: Path) -> None:
    """Temporary folders of earlier writers into ``out`` whose process is gone (killed runs).

    A kill between the two renames of the swap leaves no ``out`` but a complete new set (``.tmp-``, with its
    manifest) and the old one (``.old-``): the complete new set, else the old one, is put back as ``out``
    first, so the only good copy is never deleted."""
    pattern = re.compile(re.escape(out.name) + r"\.(tmp|old)-(\d+)")
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return
    if not out.exists():
        dead = [(m.group(1), q) for q in siblings if (m := pattern.fullmatch(q.name)) and q.is_dir()
                and not _pid_alive(int(m.group(2)))]
        for kind in ("tmp", "old"):
            found = next((q for k, q in dead if k == kind and (q / "manifest.json").is_file()), None)
            if found is not None:
                os.replace(found, out)
                siblings = list(out.parent.iterdir())
                break
    for p in siblings:
        m = pattern.fullmatch(p.name)
        if m and int(m.group(2)) != os.getpid() and not _pid_alive(int(m.group(2))) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _mb_short(path: Path, need: int) -> int:
    """MB (at least 1) still missing on the disk of ``path`` for ``need`` bytes."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        free = 0
    return max(1, math.ceil((need - free) / 1e6))


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
