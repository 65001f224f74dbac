"""The prepared data set: the one on-disk format every trainer and metric reads.

A directory with
  images.npy     uint8 N x S x S x 3, read memory-mapped
  labels.jsonl   one JSON object per image: file, split, attributes {name: level}, caption (+ extras)
  sketches.npy   optional uint8 N x S x S line drawings (255 = paper, 0 = ink)
  masks.npy      optional uint8 N x S x S part labels (SynthFaces)
  manifest.json  source, size, crop, counts, and every skipped file with its reason

Writing is streamed: ``PreparedWriter`` fills pre-allocated .npy memmaps chunk by chunk, so a 200k-image
source never sits in memory. The manifest is written last; a directory without it is incomplete.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.errors import FacediffError


class PreparedWriter:
    """Stream images (+ labels, sketches, masks) into a prepared data set directory."""

    def __init__(self, out: str | Path, capacity: int, size: int, *, sketches: bool = False,
                 masks: bool = False, overwrite: bool = False):
        self.out = Path(out)
        if (self.out / "manifest.json").exists() and not overwrite:
            raise FacediffError(f"{self.out} already holds a prepared data set; pass --overwrite or pick another --out")
        if capacity < 1:
            raise FacediffError(f"{self.out}: nothing to write (0 images)")
        self.out.mkdir(parents=True, exist_ok=True)
        for old in ("manifest.json", "images.npy", "sketches.npy", "masks.npy", "labels.jsonl"):
            (self.out / old).unlink(missing_ok=True)  # stale outputs of an overwritten set
        self.size, self.capacity, self.count = size, capacity, 0
        self._images = np.lib.format.open_memmap(self.out / "images.npy.part", mode="w+", dtype=np.uint8,
                                                 shape=(max(capacity, 1), size, size, 3))
        self._sketches = (np.lib.format.open_memmap(self.out / "sketches.npy.part", mode="w+", dtype=np.uint8,
                                                    shape=(max(capacity, 1), size, size)) if sketches else None)
        self._masks = (np.lib.format.open_memmap(self.out / "masks.npy.part", mode="w+", dtype=np.uint8,
                                                 shape=(max(capacity, 1), size, size)) if masks else None)
        self._labels = open(self.out / "labels.jsonl", "w")
        self.skipped: list[dict[str, str]] = []

    def add(self, images: np.ndarray, labels: list[dict[str, Any]], sketches: np.ndarray | None = None,
            masks: np.ndarray | None = None) -> None:
        n = len(images)
        if self.count + n > self.capacity:
            raise FacediffError(f"internal: writer capacity {self.capacity} exceeded")
        sl = slice(self.count, self.count + n)
        self._images[sl] = images
        if self._sketches is not None and sketches is not None:
            self._sketches[sl] = sketches
        if self._masks is not None and masks is not None:
            self._masks[sl] = masks
        for lab in labels:
            self._labels.write(json.dumps(lab) + "\n")
        self.count += n

    def skip(self, file: str, reason: str) -> None:
        self.skipped.append({"file": file, "reason": reason})

    def close(self, manifest: dict[str, Any]) -> Path:
        """Truncate to the images written, rename the parts into place, write manifest.json last."""
        self._labels.close()
        for name, arr in (("images", self._images), ("sketches", self._sketches), ("masks", self._masks)):
            if arr is None:
                continue
            arr.flush()
            part = self.out / f"{name}.npy.part"
            del arr
            if self.count != self.capacity:
                src = np.load(part, mmap_mode="r")
                dst = np.lib.format.open_memmap(self.out / f"{name}.npy.trunc", mode="w+", dtype=np.uint8,
                                                shape=(self.count,) + src.shape[1:])
                for i in range(0, self.count, 4096):
                    dst[i:i + 4096] = src[i:min(i + 4096, self.count)]
                dst.flush()
                del dst, src
                os.replace(self.out / f"{name}.npy.trunc", part)
            os.replace(part, self.out / f"{name}.npy")
        self._images = self._sketches = self._masks = None
        labels = [json.loads(line) for line in open(self.out / "labels.jsonl")]
        counts: dict[str, Any] = {"images": self.count, "skipped": len(self.skipped), "splits": {}}
        for lab in labels:
            counts["splits"][lab.get("split", "train")] = counts["splits"].get(lab.get("split", "train"), 0) + 1
        full = {"format": "facediff-prepared/1", "size": self.size, **manifest, "counts": counts,
                "skipped": self.skipped}
        tmp = self.out / "manifest.json.tmp"
        tmp.write_text(json.dumps(full, indent=2))
        os.replace(tmp, self.out / "manifest.json")
        return self.out


class PreparedDataset:
    """Read a prepared data set (images memory-mapped); optionally restricted to one split."""

    def __init__(self, path: str | Path, split: str | None = None):
        self.path = Path(path)
        if not (self.path / "manifest.json").is_file():
            raise FacediffError(f"{self.path} is not a prepared data set (no manifest.json); "
                                "make one with `facediff data synth` or `facediff data prepare`")
        self.manifest = json.loads((self.path / "manifest.json").read_text())
        self._images = np.load(self.path / "images.npy", mmap_mode="r")
        self._sketches = (np.load(self.path / "sketches.npy", mmap_mode="r")
                          if (self.path / "sketches.npy").is_file() else None)
        self._masks = np.load(self.path / "masks.npy", mmap_mode="r") if (self.path / "masks.npy").is_file() else None
        self.all_labels = [json.loads(line) for line in open(self.path / "labels.jsonl")]
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
