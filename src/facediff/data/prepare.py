"""``facediff data prepare``: a real source (celeba, celeba-dialog, folder) -> a prepared data set.

Records stream from the source in chunks: each chunk is decoded (imageio: any mode -> RGB, broken files
skipped with a reason), square-cropped, resized to size x size and, with ``sketch``, turned into a line
drawing; then it is appended to the ``PreparedWriter`` memmaps. Memory stays at one chunk whatever the
source size. The manifest lists the source, root, size, crop, sketch method, counts, every skipped
file with its reason ("skipped": unreadable, missing, refused paths such as ``../`` or symlinks leaving
the root, images without a label row in celeba / celeba-dialog), the images kept without a metadata
row ("unlabelled", folder source; counts["unlabelled"] counts both kinds) and every input converted on
the way ("notes", e.g. invalid UTF-8 in a caption replaced with U+FFFD).

Nothing in ``out`` changes until the new set is complete (PreparedWriter writes into a temporary
sibling folder and swaps it in), so a failed ``--overwrite`` run -- a full disk, a bad annotation row,
Ctrl-C -- leaves the previous data set as it was. Every user-facing failure is a one-line FacediffError.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from facediff.data.imageio import MIN_SIDE, load_crops, parse_crop
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


def prepare(source: str, root: str | Path, size: int, out: str | Path, *, crop: str = "center",
            sketch: str | None = None, chunk: int = 512, limit: int | None = None, overwrite: bool = False,
            progress: Callable[[int, int], None] | None = None, images_dir: str | Path | None = None,
            workers: int = 0, min_side: int = MIN_SIDE) -> Path:
    try:
        return _prepare(source, root, size, out, crop=crop, sketch=sketch, chunk=chunk, limit=limit,
                        overwrite=overwrite, progress=progress, images_dir=images_dir, workers=workers,
                        min_side=min_side)
    except FacediffError as e:
        msg = str(e)
        if msg.isprintable():
            raise
        raise FacediffError(one_line(msg)) from None


def _prepare(source: str, root: str | Path, size: int, out: str | Path, *, crop: str, sketch: str | None,
             chunk: int, limit: int | None, overwrite: bool, progress: Callable[[int, int], None] | None,
             images_dir: str | Path | None, workers: int, min_side: int) -> Path:
    """Prepare ``source`` found at ``root`` as a prepared data set in ``out``; returns ``out``.

    crop: ``center`` | ``celeba`` | ``x0,y0,x1,y1`` (see imageio).
    sketch: None | ``xdog`` | ``canny``, drawn from the crop at up to 256 px (never upscaled beyond its own
    pixels), then sized to size. chunk: images decoded and written at a time.
    limit: stop after this many images written. progress(done, total): called after every chunk.
    images_dir: image folder when not the source's default. workers: decoding threads (0 = up to 4).
    """
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
    spec = parse_crop(crop)
    out_dir = Path(out)
    if (out_dir / "manifest.json").exists() and not overwrite:
        raise FacediffError(f"{out_dir} already holds a prepared data set; pass --overwrite or pick another --out")
    src = open_source(source, root, images_dir)
    total = len(src)
    if total == 0:
        raise FacediffError(f"{src.root}: no images listed or found for source {source!r}")
    cap = total if limit is None else min(total, limit)
    sizes = (size, max(size, WORK_SIDE)) if sketch else (size,)
    n_workers = workers if workers > 0 else min(4, os.cpu_count() or 1)

    def load(rec: Record) -> tuple[list[np.ndarray] | None, str | None, str | None]:
        if rec.skip:  # refused by the source (path outside the root, no label row, ...): never opened
            return None, rec.skip, None
        return load_crops(rec.path, sizes, spec, min_side=min_side, native_cap=True)

    writer: PreparedWriter | None = None
    skipped: list[tuple[str, str]] = []
    unlabelled: list[str] = []
    notes: list[tuple[str, str]] = []
    written = processed = fallbacks = 0
    pool = ThreadPoolExecutor(n_workers) if n_workers > 1 else None
    try:
        for batch in _chunks(iter(src), chunk):
            results = list(pool.map(load, batch)) if pool else [load(r) for r in batch]
            imgs: list[np.ndarray] = []
            sks: list[np.ndarray] = []
            labels: list[dict[str, Any]] = []
            for rec, (arrays, reason, used) in zip(batch, results):
                if written + len(imgs) >= cap:
                    break
                processed += 1
                if rec.unlabelled:
                    unlabelled.append(rec.file)
                if arrays is None:
                    skipped.append((rec.file, reason or "unreadable"))
                    continue
                notes.extend((rec.file, n) for n in rec.notes)
                fallbacks += spec.kind == "celeba" and used != "celeba"
                imgs.append(arrays[0])
                if sketch:
                    sks.append(extract_sketch(arrays[1], sketch, size=size))
                labels.append(_label(rec))
            if imgs:
                if writer is None:  # writes into a temporary sibling; out is replaced only by close()
                    writer = PreparedWriter(out_dir, cap, size, sketches=sketch is not None, overwrite=overwrite)
                writer.add(np.stack(imgs), labels, np.stack(sks) if sketch else None)
                written += len(imgs)
            if progress is not None:
                progress(min(processed if limit is None else written, cap), cap)
            if written >= cap:
                break
    except BaseException:
        if writer is not None:
            writer.abort()  # out stays as it was; the temporary folder goes
        raise
    finally:
        if pool is not None:
            pool.shutdown()
    if writer is None:
        reasons = "; ".join(f"{f}: {r}" for f, r in skipped[:3])
        raise FacediffError(one_line(f"{src.root}: none of the {len(skipped)} {source} images could be used "
                                     f"({reasons}); check the files and the layout"))
    for f, r in skipped:
        writer.skip(f, r)
    for f in unlabelled:
        writer.unlabelled_file(f)
    for f, n in notes:
        writer.note(f, n)
    manifest = {"source": source, "root": str(src.root), **src.info, "crop": str(spec), "sketch": sketch,
                "records": total, "limit": limit, "crop_fallbacks": int(fallbacks)}
    return writer.close(manifest)
