"""The prepared data set: the one on-disk format every trainer and metric reads.

A directory with
  images.npy     uint8 N x S x S x 3, read memory-mapped
  labels.jsonl   one JSON object per image: file, split, attributes {name: level}, caption (+ extras)
  sketches.npy   optional uint8 N x S x S line drawings (255 = paper, 0 = ink)
  masks.npy      optional uint8 N x S x S class ids: SynthFaces part ids, or face-parsing ids of a set prepared
                 with --masks; manifest "mask_classes" names the classes (index = id), and
                 ``PreparedDataset.parsing`` reads either as ``facediff.data.parsing.PARSING_CLASSES`` ids
  manifest.json  source, size, crop, counts, every skipped file with its reason ("skipped"), every image
                 kept without a label row ("unlabelled") and every input that was converted or partly
                 ignored on the way ("notes", e.g. a caption whose invalid UTF-8 bytes were replaced)

Writing is streamed: ``PreparedWriter`` fills .npy memmaps chunk by chunk, so a 200k-image source never
sits in memory. The writer never touches ``out`` until the new set is complete:
  * everything is written into a temporary sibling folder ``OUT.tmp-<pid>`` (same parent, same disk);
  * the .npy files get their disk space for real before any pixel is written (``os.posix_fallocate``,
    or zeros written in chunks where the file system cannot), so a full disk is an ``OSError`` at
    allocation, never a SIGBUS from a sparse memmap;
  * only after manifest.json is written is the folder swapped in: an old ``out`` is renamed to a backup,
    the new folder renamed to ``out``, files of the old folder that are not part of a prepared set
    (e.g. a contact sheet) moved over, and the backup deleted.
Any failure (a full disk, a bad input, Ctrl-C) removes the temporary folder and leaves ``out`` exactly as
it was; a full disk is the one-line FacediffError "disk full while writing OUT/FILE; free N MB or choose
another --out". Temporary folders of killed runs (their pid gone) are removed by the next writer.
The disk helpers (allocation, in-place shrinking, stale-temp cleanup) are in ``facediff.data.prepared_io``.
"""
from __future__ import annotations

import json
import os
import shutil
import weakref
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.data.parsing import as_parsing
from facediff.data.prepared_io import (_FULL, _allocated_memmap, _mb_short, _remove_stale_temps, _shrink_npy,
                                       _write_bytes, one_line)
from facediff.errors import FacediffError

ARTIFACTS = ("images.npy", "sketches.npy", "masks.npy", "labels.jsonl", "manifest.json")


class PreparedWriter:
    """Stream images (+ labels, sketches, masks) into a prepared data set directory (see the module doc)."""

    def __init__(self, out: str | Path, capacity: int, size: int, *, sketches: bool = False,
                 masks: bool = False, overwrite: bool = False):
        self.out = Path(out)
        if not self.out.exists():
            _remove_stale_temps(Path(os.path.abspath(self.out)))  # a swap killed half-way: restore it first
        if (self.out / "manifest.json").exists() and not overwrite:
            raise FacediffError(one_line(f"{self.out} already holds a prepared data set; "
                                         "pass --overwrite or pick another --out"))
        if self.out.exists() and not self.out.is_dir():
            raise FacediffError(one_line(f"--out {self.out} is a file, not a folder; pick another --out"))
        if capacity < 1:
            raise FacediffError(one_line(f"{self.out}: nothing to write (0 images)"))
        self.size, self.capacity, self.count = size, capacity, 0
        self.skipped: list[dict[str, str]] = []
        self.unlabelled: list[str] = []
        self.notes: list[dict[str, str]] = []
        self._images = self._sketches = self._masks = None
        self._labels = None
        self._closed = False
        self._has_masks = masks
        self._target = Path(os.path.realpath(self.out)) if self.out.is_symlink() else Path(os.path.abspath(self.out))
        shapes = {"images.npy": (capacity, size, size, 3)}
        if sketches:
            shapes["sketches.npy"] = (capacity, size, size)
        if masks:
            shapes["masks.npy"] = (capacity, size, size)
        self._need = sum(int(np.prod(s)) for s in shapes.values()) + 4096 * len(shapes) + 512 * capacity
        self.tmp = self._target.parent / f"{self._target.name}.tmp-{os.getpid()}"
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.tmp), True)
        with self._guard("images.npy"):
            self._target.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(self._target)
            if self.tmp.exists():
                shutil.rmtree(self.tmp)
            self.tmp.mkdir()
            self._images = _allocated_memmap(self.tmp / "images.npy.part", shapes["images.npy"])
        with self._guard("sketches.npy"):
            if sketches:
                self._sketches = _allocated_memmap(self.tmp / "sketches.npy.part", shapes["sketches.npy"])
        with self._guard("masks.npy"):
            if masks:
                self._masks = _allocated_memmap(self.tmp / "masks.npy.part", shapes["masks.npy"])
        with self._guard("labels.jsonl"):
            self._labels = open(self.tmp / "labels.jsonl", "w", encoding="utf-8")

    # ------------------------------------------------------------------------------------------ failure
    def _guard(self, name: str) -> "_Guard":
        return _Guard(self, name)

    def abort(self) -> None:
        """Drop the unfinished set: close the files and delete the temporary folder; ``out`` is untouched."""
        self._closed = True
        try:
            if self._labels is not None:
                self._labels.close()
        except OSError:
            pass
        self._labels = None
        self._images = self._sketches = self._masks = None
        self._cleanup()

    def _fail(self, name: str, e: OSError) -> FacediffError:
        self.abort()
        where = f"{self.out}/{name}"
        if e.errno in _FULL:
            return FacediffError(one_line(f"disk full while writing {where}; free "
                                          f"{_mb_short(self._target.parent, self._need)} MB or choose another --out"))
        return FacediffError(one_line(f"cannot write {where}: {e.strerror or e}; choose another --out"))

    # ------------------------------------------------------------------------------------------ writing
    def add(self, images: np.ndarray, labels: list[dict[str, Any]], sketches: np.ndarray | None = None,
            masks: np.ndarray | None = None) -> None:
        n = len(images)
        if self._closed:
            raise FacediffError(f"internal: writer for {self.out} is closed")
        if self.count + n > self.capacity:
            raise FacediffError(f"internal: writer capacity {self.capacity} exceeded")
        sl = slice(self.count, self.count + n)
        with self._guard("images.npy"):
            self._images[sl] = images
        with self._guard("sketches.npy"):
            if self._sketches is not None and sketches is not None:
                self._sketches[sl] = sketches
        with self._guard("masks.npy"):
            if self._masks is not None and masks is not None:
                self._masks[sl] = masks
        with self._guard("labels.jsonl"):
            for lab in labels:
                self._labels.write(json.dumps(lab) + "\n")
        self.count += n

    def skip(self, file: str, reason: str) -> None:
        self.skipped.append({"file": file, "reason": reason})

    def unlabelled_file(self, file: str) -> None:
        """An image kept in the set although its source has no label row for it."""
        self.unlabelled.append(file)

    def note(self, file: str, note: str) -> None:
        """An input used after a conversion or with a part ignored (kept in manifest.json "notes")."""
        self.notes.append({"file": file, "note": note})

    def close(self, manifest: dict[str, Any]) -> Path:
        """Truncate to the images written, write manifest.json last, then swap the new set in as ``out``."""
        if self._closed:
            raise FacediffError(f"internal: writer for {self.out} is closed")
        with self._guard("labels.jsonl"):
            self._labels.close()
            self._labels = None
        for name in ("images", "sketches", "masks"):
            arr = getattr(self, f"_{name}")
            if arr is None:
                continue
            with self._guard(f"{name}.npy"):
                arr.flush()
                setattr(self, f"_{name}", None)
                del arr
                part = self.tmp / f"{name}.npy.part"
                if self.count != self.capacity:
                    _shrink_npy(part, self.count)
                os.replace(part, self.tmp / f"{name}.npy")
        with self._guard("labels.jsonl"):
            splits: dict[str, int] = {}
            with open(self.tmp / "labels.jsonl", encoding="utf-8") as fh:
                for line in fh:
                    s = json.loads(line).get("split", "train")
                    splits[s] = splits.get(s, 0) + 1
        if self._has_masks:  # the classes of masks.npy (SynthFaces passes its part_names)
            classes = manifest.get("mask_classes") or manifest.get("part_names")
            if not classes:
                self.abort()
                raise FacediffError(f"internal: {self.out}: masks.npy needs mask_classes in the manifest")
            manifest = {**manifest, "mask_classes": list(classes)}
        counts: dict[str, Any] = {"images": self.count, "skipped": len(self.skipped),
                                  "unlabelled": len(self.unlabelled), "notes": len(self.notes), "splits": splits}
        full = {"format": "facediff-prepared/1", "size": self.size, **manifest, "counts": counts,
                "skipped": self.skipped, "unlabelled": self.unlabelled, "notes": self.notes}
        with self._guard("manifest.json"):
            _write_bytes(self.tmp / "manifest.json", json.dumps(full, indent=2).encode("utf-8"))
        with self._guard("manifest.json"):
            self._install()
        self._closed = True
        self._cleanup.detach()
        return self.out

    def _install(self) -> None:
        """Swap the complete temporary folder in as ``out`` (old set -> backup -> deleted)."""
        target = self._target
        if not target.exists():
            os.rename(self.tmp, target)
            return
        if not (target / "manifest.json").exists() and any(target.iterdir()):
            # a folder that holds other things but no prepared set: add our files, leave the rest alone
            for name in ARTIFACTS:
                if name != "manifest.json":
                    (target / name).unlink(missing_ok=True)
                    if (self.tmp / name).exists():
                        os.replace(self.tmp / name, target / name)
            os.replace(self.tmp / "manifest.json", target / "manifest.json")
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        backup = target.parent / f"{target.name}.old-{os.getpid()}"
        if backup.exists():
            shutil.rmtree(backup)
        os.rename(target, backup)
        try:
            os.rename(self.tmp, target)
        except BaseException:
            os.rename(backup, target)
            raise
        for p in list(backup.iterdir()):  # the user's own files beside an old set (contact sheet, notes)
            if p.name not in ARTIFACTS and not p.name.endswith((".part", ".tmp")):
                try:
                    os.replace(p, target / p.name)
                except OSError:
                    pass
        shutil.rmtree(backup, ignore_errors=True)


class _Guard:
    """``with writer._guard(name)``: an OSError inside aborts the writer and becomes a one-line FacediffError;
    any other exception (Ctrl-C included) aborts it and propagates."""

    def __init__(self, writer: PreparedWriter, name: str):
        self.writer, self.name = writer, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, FacediffError):
            self.writer.abort()
            return False
        if isinstance(exc, OSError):
            raise self.writer._fail(self.name, exc) from None
        self.writer.abort()
        return False


class PreparedDataset:
    """Read a prepared data set (images memory-mapped); optionally restricted to one split."""

    def __init__(self, path: str | Path, split: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            _remove_stale_temps(Path(os.path.abspath(self.path)))  # a swap killed half-way: restore it first
        if not (self.path / "manifest.json").is_file():
            raise FacediffError(f"{self.path} is not a prepared data set (no manifest.json); "
                                "make one with `facediff data synth` or `facediff data prepare`")
        name = "manifest.json"
        try:
            self.manifest = json.loads((self.path / name).read_text(encoding="utf-8"))
            name = "images.npy"
            self._images = np.load(self.path / name, mmap_mode="r")
            name = "sketches.npy"
            self._sketches = np.load(self.path / name, mmap_mode="r") if (self.path / name).is_file() else None
            name = "masks.npy"
            self._masks = np.load(self.path / name, mmap_mode="r") if (self.path / name).is_file() else None
            name = "labels.jsonl"
            with open(self.path / name, encoding="utf-8") as fh:
                self.all_labels = [json.loads(line) for line in fh if line.strip()]
        except (OSError, ValueError, EOFError) as e:  # missing, truncated or corrupt file
            msg = getattr(e, "strerror", None) or str(e).splitlines()[0] if str(e) else type(e).__name__
            raise FacediffError(one_line(f"{self.path / name}: unreadable ({msg}); re-prepare the data set")) from None
        if len(self.all_labels) != len(self._images):
            raise FacediffError(f"{self.path}: labels.jsonl has {len(self.all_labels)} rows but images.npy "
                                f"{len(self._images)}; re-prepare the data set")
        if split:
            self.indices = np.array([i for i, l in enumerate(self.all_labels) if l.get("split", "train") == split],
                                    dtype=np.int64)
            if len(self.indices) == 0:
                splits = sorted({l.get("split", "train") for l in self.all_labels})
                raise FacediffError(f"{self.path}: no images in split {split!r} (splits: {', '.join(splits)})")
        else:
            self.indices = np.arange(len(self._images), dtype=np.int64)
        self.labels = [self.all_labels[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def size(self) -> int:
        return int(self._images.shape[1])

    @property
    def has_sketches(self) -> bool:
        return self._sketches is not None

    def images(self, idx: Iterable[int] | None = None) -> np.ndarray:
        """uint8 (n, S, S, 3) for positions ``idx`` within this split (all when None)."""
        sel = self.indices if idx is None else self.indices[np.asarray(idx)]
        return np.asarray(self._images[sel])

    def sketches(self, idx: Iterable[int] | None = None) -> np.ndarray:
        if self._sketches is None:
            raise FacediffError(f"{self.path} has no sketches.npy; prepare it with --sketch xdog|canny")
        sel = self.indices if idx is None else self.indices[np.asarray(idx)]
        return np.asarray(self._sketches[sel])

    def masks(self, idx: Iterable[int] | None = None) -> np.ndarray:
        if self._masks is None:
            raise FacediffError(f"{self.path} has no masks.npy")
        sel = self.indices if idx is None else self.indices[np.asarray(idx)]
        return np.asarray(self._masks[sel])

    @property
    def mask_classes(self) -> tuple[str, ...] | None:
        """Class names of masks.npy (index = id; a SynthFaces set's "part_names" before "mask_classes" existed)."""
        return None if self._masks is None else tuple(self.manifest.get("mask_classes") or
                                                      self.manifest.get("part_names") or ())

    def parsing(self, idx: Iterable[int] | None = None) -> np.ndarray:
        """uint8 (n, S, S) ``PARSING_CLASSES`` ids for positions ``idx`` (all when None), whatever masks.npy holds."""
        if self._masks is None:
            raise FacediffError(f"{self.path} has no masks.npy; render SynthFaces or prepare it with --masks")
        return as_parsing(self.masks(idx), self.mask_classes, f"{self.path}/masks.npy")

    def attribute_levels(self, attributes: tuple[str, ...] = ATTRIBUTES) -> np.ndarray:
        """int64 (n, len(attributes)); -1 where the label does not give that attribute."""
        out = np.full((len(self.labels), len(attributes)), -1, dtype=np.int64)
        for i, lab in enumerate(self.labels):
            attrs = lab.get("attributes") or {}
            for j, name in enumerate(attributes):
                v = attrs.get(name)
                if v is not None and 0 <= int(v) < NUM_LEVELS:
                    out[i, j] = int(v)
        return out

    def captions(self) -> list[str]:
        return [lab.get("caption") or "" for lab in self.labels]
