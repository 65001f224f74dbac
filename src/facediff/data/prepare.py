"""``facediff data prepare``: a real source (celeba, celeba-dialog, folder) -> a prepared data set.

Records stream from the source in chunks: each chunk is decoded (imageio: any mode -> RGB, broken files
skipped with a reason), square-cropped, resized to size x size and, with ``sketch``, turned into a line
drawing; then it is appended to the ``PreparedWriter`` memmaps. Memory stays at one chunk whatever the
source size. The manifest lists the source, root, size, crop, sketch method, counts, every skipped
file with its reason ("skipped": unreadable, missing, refused paths such as ``../`` or symlinks leaving
the root, images without a label row in celeba / celeba-dialog), the images kept without a metadata
row ("unlabelled", folder source; counts["unlabelled"] counts both kinds) and every input converted on
the way ("notes", e.g. invalid UTF-8 in a caption replaced with U+FFFD).

With ``masks`` (a folder of face-parsing labels, ``facediff.data.parsing.LabelIndex``) each image needs its
label file -- ``REL.png`` / ``STEM.png`` holding CelebAMask-HQ ids, or CelebAMask-HQ's per-part binary masks
``NNNNN_part.png`` -- cut with the image's own crop (scaled to the label's resolution) and resized by nearest
neighbour; ``masks.npy`` then holds ``PARSING_CLASSES`` ids (manifest "mask_classes"). An image without a
label file, or with an unreadable one, is skipped with the reason.

Nothing in ``out`` changes until the new set is complete (PreparedWriter writes into a temporary
sibling folder and swaps it in), so a failed ``--overwrite`` run -- a full disk, a bad annotation row,
Ctrl-C -- leaves the previous data set as it was. Every user-facing failure is a one-line FacediffError.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from PIL import Image

from facediff.data.imageio import MIN_SIDE, CropSpec, crop_box, load_crops, parse_crop
from facediff.data.parsing import PARSING_CLASSES, LabelIndex
from facediff.data.prepared import PreparedWriter, one_line
from facediff.data.sketch import METHODS as SKETCH_METHODS
from facediff.data.sketch import WORK_SIDE, extract_sketch
from facediff.data.sources import Record, open_source
from facediff.errors import FacediffError


def _chunks(records: Iterator[Record], n: int) -> Iterator[list[Record]]:
    buf: list[Record] = []
    for r in records:
        buf.append(r)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def _label(rec: Record) -> dict[str, Any]:
    return {"file": rec.file, "split": rec.split, "attributes": dict(rec.attributes), "caption": rec.caption,
            **rec.extra}


def _image_frame(path: Path) -> tuple[int, int]:
    """(width, height) of an image as displayed (EXIF orientations 5-8 swap them), from its header."""
    with Image.open(path) as img:
        w, h = img.size
        try:
            rotated = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        except Exception:  # malformed EXIF: load_crops keeps the stored orientation too
            rotated = False
    return (h, w) if rotated else (w, h)


@dataclass
class _Loaded:
    """One record after decoding: the crops (image[, sketch source]) and the parsing map, or why not."""

    arrays: list[np.ndarray] | None
    reason: str | None = None
    used: str | None = None
    mask: np.ndarray | None = None


def _loader(size: int, sizes: tuple[int, ...], spec: CropSpec, min_side: int,
            labels: LabelIndex | None) -> Callable[[Record], _Loaded]:
    def load(rec: Record) -> _Loaded:
        if rec.skip:  # refused by the source (path outside the root, no label row, ...): never opened
            return _Loaded(None, rec.skip)
        found = None
        if labels is not None:
            found, why = labels.find(rec.file)
            if found is None:
                return _Loaded(None, why)
        arrays, reason, used = load_crops(rec.path, sizes, spec, min_side=min_side, native_cap=True)
        if arrays is None or labels is None:
            return _Loaded(arrays, reason, used)
        try:
            frame = _image_frame(rec.path)
            box, _ = crop_box(frame[0], frame[1], spec)
            mask = labels.read(found, size, box, frame)
        except FacediffError as e:
            return _Loaded(None, f"face-parsing label: {e}")
        except OSError as e:
            return _Loaded(None, f"face-parsing label: cannot read it ({e.strerror or e})")
        return _Loaded(arrays, None, used, mask)
    return load


@dataclass
class _Run:
    """What a prepare run has written and set aside so far."""

    out: Path
    cap: int
    size: int
    sketch: str | None
    masks: bool
    overwrite: bool
    writer: PreparedWriter | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    written: int = 0
    processed: int = 0
    fallbacks: int = 0

    def add_chunk(self, batch: list[Record], results: list[_Loaded], celeba_crop: bool) -> None:
        imgs: list[np.ndarray] = []
        sks: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        labels: list[dict[str, Any]] = []
        for rec, res in zip(batch, results):
            if self.written + len(imgs) >= self.cap:
                break
            self.processed += 1
            if rec.unlabelled:
                self.unlabelled.append(rec.file)
            if res.arrays is None:
                self.skipped.append((rec.file, res.reason or "unreadable"))
                continue
            self.notes.extend((rec.file, n) for n in rec.notes)
            self.fallbacks += celeba_crop and res.used != "celeba"
            imgs.append(res.arrays[0])
            if self.sketch:
                sks.append(extract_sketch(res.arrays[1], self.sketch, size=self.size))
            if self.masks:
                masks.append(res.mask)
            labels.append(_label(rec))
        if imgs:
            if self.writer is None:  # writes into a temporary sibling; out is replaced only by close()
                self.writer = PreparedWriter(self.out, self.cap, self.size, sketches=self.sketch is not None,
                                             masks=self.masks, overwrite=self.overwrite)
            self.writer.add(np.stack(imgs), labels, np.stack(sks) if self.sketch else None,
                            np.stack(masks) if self.masks else None)
            self.written += len(imgs)


def prepare(source: str, root: str | Path, size: int, out: str | Path, *, crop: str = "center",
            sketch: str | None = None, chunk: int = 512, limit: int | None = None, overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None, images_dir: str | Path | None = None,
            workers: int = 0, min_side: int = MIN_SIDE, masks: str | Path | None = None) -> Path:
    try:
        return _prepare(source, root, size, out, crop=crop, sketch=sketch, chunk=chunk, limit=limit,
                        overwrite=overwrite, progress=progress, images_dir=images_dir, workers=workers,
                        min_side=min_side, masks=masks)
    except FacediffError as e:
        msg = str(e)
        if msg.isprintable():
            raise
        raise FacediffError(one_line(msg)) from None


def _check_options(size: int, chunk: int, limit: int | None, sketch: str | None) -> str | None:
    if not isinstance(size, int) or size < 8:
        raise FacediffError(f"--size {size!r}: give an image side of at least 8 px, e.g. 64")
    if chunk < 1:
        raise FacediffError(f"--chunk {chunk}: give a positive number of images per chunk, e.g. 512")
    if limit is not None and limit < 1:
        raise FacediffError(f"--limit {limit}: give a positive number of images (or no limit)")
    if sketch in ("", "none"):
        sketch = None
    if sketch is not None and sketch not in SKETCH_METHODS:
        raise FacediffError(f"--sketch {sketch!r}: choose one of none, {', '.join(SKETCH_METHODS)}")
    return sketch


def _prepare(source: str, root: str | Path, size: int, out: str | Path, *, crop: str, sketch: str | None,
             chunk: int, limit: int | None, overwrite: bool, progress: Callable[[int, int], None] | None,
             images_dir: str | Path | None, workers: int, min_side: int, masks: str | Path | None) -> Path:
    """Prepare ``source`` found at ``root`` as a prepared data set in ``out``; returns ``out``.

    crop: ``center`` | ``celeba`` | ``x0,y0,x1,y1`` (see imageio).
    sketch: None | ``xdog`` | ``canny``, drawn from the crop at up to 256 px (never upscaled beyond its own
    pixels), then sized to size. chunk: images decoded and written at a time.
    limit: stop after this many images written. progress(done, total): called after every chunk.
    images_dir: image folder when not the source's default. workers: decoding threads (0 = up to 4).
    masks: folder of face-parsing label PNGs (see the module doc); None = no masks.npy.
    """
    sketch = _check_options(size, chunk, limit, sketch)
    spec = parse_crop(crop)
    out_dir = Path(out)
    if (out_dir / "manifest.json").exists() and not overwrite:
        raise FacediffError(f"{out_dir} already holds a prepared data set; pass --overwrite or pick another --out")
    labels = LabelIndex(masks) if masks is not None else None
    src = open_source(source, root, images_dir)
    total = len(src)
    if total == 0:
        raise FacediffError(f"{src.root}: no images listed or found for source {source!r}")
    cap = total if limit is None else min(total, limit)
    load = _loader(size, (size, max(size, WORK_SIDE)) if sketch else (size,), spec, min_side, labels)
    run = _Run(out_dir, cap, size, sketch, labels is not None, overwrite)
    n_workers = workers if workers > 0 else min(4, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
    try:
        for batch in _chunks(iter(src), chunk):
            run.add_chunk(batch, list(pool.map(load, batch)) if pool else [load(r) for r in batch],
                          spec.kind == "celeba")
            if progress is not None:
                progress(min(run.processed if limit is None else run.written, cap), cap)
            if run.written >= cap:
                break
    except BaseException:
        if run.writer is not None:
            run.writer.abort()  # out stays as it was; the temporary folder goes
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    return _finish(run, src, source, spec, limit, total, labels)


def _finish(run: _Run, src: Any, source: str, spec: CropSpec, limit: int | None, total: int,
            labels: LabelIndex | None) -> Path:
    writer = run.writer
    if writer is None:
        reasons = "; ".join(f"{f}: {r}" for f, r in run.skipped[:3])
        raise FacediffError(one_line(f"{src.root}: none of the {len(run.skipped)} {source} images could be used "
                                     f"({reasons}); check the files and the layout"))
    for f, r in run.skipped:
        writer.skip(f, r)
    for f in run.unlabelled:
        writer.unlabelled_file(f)
    for f, n in run.notes:
        writer.note(f, n)
    manifest = {"source": source, "root": str(src.root), **src.info, "crop": str(spec), "sketch": run.sketch,
                "records": total, "limit": limit, "crop_fallbacks": int(run.fallbacks)}
    if labels is not None:
        manifest.update({"masks": str(labels.root), "mask_layout": labels.layout, "mask_source": "celebamask-hq",
                         "mask_classes": list(PARSING_CLASSES)})
    return writer.close(manifest)
