"""Inspect a prepared data set: a labelled contact sheet and counts per attribute level and style."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError

# Short tags printed under each tile: b=bangs g=eyeglasses d=beard s=smiling a=age.
_TAGS = {"bangs": "b", "eyeglasses": "g", "beard": "d", "smiling": "s", "age": "a"}


def count_levels(labels: list[dict[str, Any]]) -> dict[str, Any]:
    """{"n": N, "attributes": {attr: {level: count}}, "styles": {style: count}, "splits": {split: count}}.

    Rows without a level for an attribute are counted under level -1."""
    attrs: dict[str, dict[int, int]] = {a: {lvl: 0 for lvl in range(NUM_LEVELS)} for a in ATTRIBUTES}
    styles: dict[str, int] = {}
    splits: dict[str, int] = {}
    for lab in labels:
        given = lab.get("attributes") or {}
        for a in ATTRIBUTES:
            v = given.get(a)
            lvl = int(v) if v is not None and 0 <= int(v) < NUM_LEVELS else -1
            attrs[a][lvl] = attrs[a].get(lvl, 0) + 1
        st = str(lab.get("style", "unknown"))
        styles[st] = styles.get(st, 0) + 1
        sp = str(lab.get("split", "train"))
        splits[sp] = splits.get(sp, 0) + 1
    return {"n": len(labels), "attributes": attrs, "styles": styles, "splits": splits}


def format_counts(counts: dict[str, Any]) -> str:
    """Readable multi-line summary of :func:`count_levels`."""
    lines = [f"{counts['n']} images; styles: " + ", ".join(f"{k} {v}" for k, v in sorted(counts["styles"].items()))]
    for a, per in counts["attributes"].items():
        lines.append(f"  {a:<10} " + "  ".join(f"{lvl}:{c}" for lvl, c in sorted(per.items())))
    return "\n".join(lines)


def contact_sheet(images: np.ndarray, captions: list[str], cols: int = 8, min_tile: int = 96) -> Image.Image:
    """Tile uint8 (n, S, S, 3) images (nearest-upscaled to at least ``min_tile`` px) with one text line under each."""
    n, size = len(images), images.shape[1]
    scale = max(1, -(-min_tile // size))
    tile = size * scale
    text_h = 12
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    sheet = Image.new("RGB", (cols * tile, rows * (tile + text_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k in range(n):
        r, c = divmod(k, cols)
        im = Image.fromarray(np.ascontiguousarray(images[k]))
        if scale > 1:
            im = im.resize((tile, tile), Image.NEAREST)
        x, y = c * tile, r * (tile + text_h)
        sheet.paste(im, (x, y))
        draw.text((x + 2, y + tile), captions[k], fill=(0, 0, 0), font=font)
    return sheet


def inspect_dataset(path: str | Path, out_png: str | Path, n: int = 64, *, quiet: bool = False) -> dict[str, Any]:
    """Write a contact sheet of the first ``n`` images of the prepared data set at ``path`` to ``out_png``.

    Each tile shows its attribute levels underneath (b=bangs g=eyeglasses d=beard s=smiling a=age). Returns
    (and, unless ``quiet``, prints) the counts of :func:`count_levels` over the whole data set plus ``png``."""
    if n < 1:
        raise FacediffError(f"inspect: n must be >= 1, got {n}")
    ds = PreparedDataset(path)
    labels = ds.all_labels
    k = min(n, len(labels))
    images = ds.images(np.arange(k))  # first k rows (no split filter)
    tags = []
    for lab in labels[:k]:
        given = lab.get("attributes") or {}
        tags.append(" ".join(f"{_TAGS[a]}{given[a]}" for a in ATTRIBUTES if a in given))
    out_png = Path(out_png)
    if out_png.parent and not out_png.parent.exists():
        out_png.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(images, tags).save(out_png)
    counts = count_levels(labels)
    counts["png"] = str(out_png)
    if not quiet:
        print(format_counts(counts))
        print(f"contact sheet: {out_png}")
    return counts
