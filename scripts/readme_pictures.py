"""The README pictures of the bundled text and mask models, from their commands (run from the repository root):

    python scripts/readme_pictures.py prompts --out docs/results/text_model_prompts.png   # the text model
    python scripts/readme_pictures.py mask --out docs/results/mask_to_face.png            # the mask model

``prompts``: one row per prompt (free phrasing, tags, negation, a negative prompt), six seeds each, the prompt
written beside its row. ``mask``: held-out SynthFaces (seed 7): the parsing map, the real face it came from, and
two faces the mask model draws from the map alone. Both use the bundled models unless ``--model`` names another.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# (prompt, negative prompt): what a new user types, and what negation / a negative prompt should remove
PROMPTS = (("a photo of a smiling woman with long blonde hair", None),
           ("1girl, anime, purple hair, glasses", None),
           ("a 70-year-old man with a full beard", None),
           ("a photo of a man, clean-shaven, not smiling", None),
           ("a photo of an older man", "beard, glasses"),
           ("an anime drawing of a girl with pink hair and no bangs", None))


def _labelled_rows(rows: list[np.ndarray], labels: list[str], scale: int) -> Image.Image:
    """Rows of uint8 (k, H, W, 3) tiles, each with its label underneath (one line, small font)."""
    font = ImageFont.load_default()
    h, w = rows[0].shape[1] * scale, rows[0].shape[2] * scale
    k, pad, text_h = rows[0].shape[0], 2, 14
    canvas = Image.new("RGB", (k * (w + pad) + pad, len(rows) * (h + text_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (tiles, label) in enumerate(zip(rows, labels)):
        y = pad + r * (h + text_h + pad)
        for c, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile).resize((w, h), Image.NEAREST), (pad + c * (w + pad), y))
        draw.text((pad + 2, y + h + 1), label, fill=(0, 0, 0), font=font)
    return canvas


def prompts(model: str | None, out: Path, seeds: int, scale: int) -> None:
    from facediff import api

    pipe = api.load(model, text=True)
    rows, labels = [], []
    for prompt, negative in PROMPTS:
        rows.append(pipe(seeds=list(range(seeds)), prompt=prompt, negative_prompt=negative, steps=20).images)
        labels.append(f'"{prompt}"' + (f'  negative prompt: "{negative}"' if negative else ""))
    _labelled_rows(rows, labels, scale).save(out)


def mask(model: str | None, out: Path, n: int, scale: int) -> None:
    import tempfile

    from facediff import api
    from facediff.data.parsing import colorize
    from facediff.data.prepared import PreparedDataset
    from facediff.data.synth import write_synth
    from facediff.imaging import make_grid

    data = PreparedDataset(write_synth(Path(tempfile.mkdtemp()) / "faces", n=n, size=64, style="mixed", seed=7))
    pipe = api.load(model or "src/facediff/assets/mask_model")
    tiles = []
    for i in range(n):
        parsing = data.parsing([i])[0]
        faces = pipe(seeds=[1, 2], conditions={"mask": parsing}, steps=25).images
        tiles += [colorize(parsing).astype(np.uint8), data.images()[i], *faces]
    make_grid(np.stack(tiles), 4, pad=0, scale=scale).save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("picture", choices=("prompts", "mask"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default=None, help="model folder (default: the bundled text / mask model)")
    ap.add_argument("--scale", type=int, default=2, help="upscaling of each 64 px face (nearest)")
    a = ap.parse_args()
    if a.picture == "prompts":
        prompts(a.model, a.out, seeds=6, scale=a.scale)
    else:
        mask(a.model, a.out, n=6, scale=a.scale)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
