"""`facediff data ...`: SynthFaces, real data sets, contact sheets, sketches."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from facediff.cli.common import OVERWRITE_HELP, SketchMethod, Source, Style, SynthLayout, data_app, user_errors
from facediff.cli.progress import Reporter


@data_app.command("synth")
@user_errors
def data_synth(out: Path = typer.Option(..., help="output directory (a prepared data set)"),
               n: int = typer.Option(1024, help="number of faces"),
               size: int = typer.Option(64, help="image side in pixels"),
               style: Style = typer.Option("human", help="SynthFaces style"),
               seed: int = typer.Option(0, help="seed; (seed, index) fixes each face"),
               layout: SynthLayout = typer.Option("faces", help="faces: one centred face per image; scenes: also "
                                                  "off-centre faces, small groups, background only"),
               overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing data set in --out")):
    """Render SynthFaces.

    Images, labels, captions, sketches and part masks."""
    from facediff import api

    with Reporter() as rep:
        path = api.synth(out, n=n, size=size, style=style.value, seed=seed, layout=layout.value,
                         overwrite=overwrite, progress=rep)
    typer.echo(f"wrote {n} faces to {path}")


@data_app.command("prepare")
@user_errors
def data_prepare(source: Source = typer.Option(..., help="the kind of source"),
                 root: Path = typer.Option(..., help="where the source lives"),
                 out: Path = typer.Option(..., help="output directory (a prepared data set)"),
                 size: int = typer.Option(64, help="image side in pixels"),
                 crop: str = typer.Option("center", help="center | celeba | x0,y0,x1,y1"),
                 sketch: Optional[SketchMethod] = typer.Option(None, help="also extract sketches"),
                 limit: Optional[int] = typer.Option(None, help="at most this many images"),
                 masks: Optional[Path] = typer.Option(None, help="folder of face-parsing label PNGs "
                                                      "(CelebAMask-HQ ids, same file stem as each image)"),
                 overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing data set in --out")):
    """Prepare a real data set.

    Streamed; bad files are skipped and listed in manifest.json."""
    from facediff import api

    with Reporter() as rep:
        path = api.prepare(source.value, root, out, size=size, crop=crop, sketch=sketch.value if sketch else None,
                           limit=limit, overwrite=overwrite, masks=masks, progress=rep)
    manifest = json.loads((path / "manifest.json").read_text())
    c = manifest["counts"]
    typer.echo(f"wrote {c['images']} images to {path}; skipped {c['skipped']} (reasons in manifest.json)")


@data_app.command("inspect")
@user_errors
def data_inspect(path: Path = typer.Argument(..., help="a prepared data set"),
                 out: Optional[Path] = typer.Option(None, help="contact sheet PNG (default PATH/contact_sheet.png)"),
                 n: int = typer.Option(64, help="faces on the sheet"),
                 overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Write a contact sheet and count attribute levels."""
    from facediff import api

    api.check_output(out or path / "contact_sheet.png", "--out", overwrite)

    info = api.inspect(path, out, n=n)
    typer.echo(f"{info['n']} images; splits: " + ", ".join(f"{k} {v}" for k, v in info.get("splits", {}).items()))
    if info.get("styles"):
        typer.echo("styles: " + ", ".join(f"{k} {v}" for k, v in info["styles"].items()))
    for attr, counts in info.get("attributes", {}).items():
        typer.echo(f"{attr:>10}: " + "  ".join(f"{lvl}:{c}" for lvl, c in sorted(counts.items())))
    typer.echo(f"contact sheet: {info.get('png', out or path / 'contact_sheet.png')}")


@data_app.command("sketch")
@user_errors
def data_sketch(image: Path = typer.Argument(..., help="a photo"),
                out: Path = typer.Option(..., "-o", "--out", help="sketch PNG"),
                method: SketchMethod = typer.Option("xdog", help="line-drawing extractor"),
                overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Extract a line drawing from a photo.

    For sketch-conditional models."""
    from facediff import api

    api.check_output(out, "--out", overwrite)

    typer.echo(f"wrote {api.sketch(image, out, method.value)}")
