"""`facediff sample | compose | panorama | info`: make faces, save PNGs that carry their settings, read them back.

Each command turns its options into one ``facediff.request.Request`` (``request_fields``); `--from-png FILE`
starts from the request saved in FILE, and the options given beside it override single settings.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from facediff.cli.common import (DEVICE_HELP, FROM_PNG_HELP, OVERWRITE_HELP, PRECISION_HELP, SAVE_EACH_HELP, SCALE_HELP,
                                 InitNoise, Precision, Sampler, WindowWeights, app, precision_note, request_fields, say_notes,
                                 user_errors)
from facediff.cli.progress import Reporter
from facediff.errors import FacediffError

MODEL_HELP = ("run or export folder, Stable Diffusion folder or hub id (default: the bundled model; with "
              "--prompt the bundled text-to-face model)")
GUIDANCE_HELP = "classifier-free guidance scale (1 = none; default: the model's own, else 3)"
NEGATIVE_HELP = "negative prompt: what guidance steers away from (text-to-face models)"
WINDOW_WEIGHTS_HELP = ("a view's weight in the fused average: hann (a cross-fade over each overlap, no seam at the "
                       "views' borders) or uniform (the MultiDiffusion paper); default: the layout's, else hann")
COND_HELP = ("a value of any condition kind the model declares, KIND=VALUE (repeatable; e.g. a plug-in's "
             "kind, see docs/extending.md)")


def _conditions(pairs: list[str]) -> dict[str, str] | None:
    """--cond KIND=VALUE ... -> {kind: value} (each kind's own parse checks the value when it runs)."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise FacediffError(f"--cond {pair!r}: give KIND=VALUE, e.g. --cond sketch=face.png")
        out[name.strip()] = value
    return out or None


def _from_png(from_png: Optional[Path], command: str):
    """The request saved in ``from_png`` (None: start from nothing); it must be one of ``command``."""
    if from_png is None:
        return None
    from facediff import api

    req = api.request_from_png(from_png)
    if req.command != command:
        raise FacediffError(f"--from-png {from_png}: made by `facediff {req.command}`; run that command with it")
    return req


@app.command("sample")
@user_errors
def sample(ctx: typer.Context,
           from_png: Optional[Path] = typer.Option(None, "--from-png", help=FROM_PNG_HELP),
           model: Optional[str] = typer.Option(None, help=MODEL_HELP),
           attrs: Optional[str] = typer.Option(None, help="attribute levels, e.g. smiling=5,eyeglasses=3"),
           prompt: Optional[str] = typer.Option(None, help="text prompt (text-to-face models)"),
           negative_prompt: Optional[str] = typer.Option(None, help=NEGATIVE_HELP),
           lora: Optional[Path] = typer.Option(None, help="LoRA file or folder (diffusers or kohya format)"),
           lora_scale: float = typer.Option(1.0, help="LoRA strength"),
           attr_scales: Optional[str] = typer.Option(None, help="per-attribute guidance, e.g. smiling=6,age=2"),
           guidance: Optional[float] = typer.Option(None, help=GUIDANCE_HELP),
           n: int = typer.Option(16, help="number of faces"),
           sampler: Sampler = typer.Option("dpmpp", help="sampler (a diffusers scheduler)"),
           steps: int = typer.Option(25, help="sampler steps"),
           eta: float = typer.Option(0.0, help="DDIM eta"),
           seed: int = typer.Option(0, help="image i uses seed + i"),
           init_noise: InitNoise = typer.Option("normal", help="x_T (seed 003 ablation)"),
           step_noise: bool = typer.Option(True, "--step-noise/--no-step-noise",
                                           help="noise in ancestral steps (off: seed 003 ablation)"),
           sweep: bool = typer.Option(False, "--sweep", help="grid: one row per attribute, its levels 0..5"),
           sketch: Optional[Path] = typer.Option(None, help="sketch PNG (sketch-conditional latent models)"),
           cond: List[str] = typer.Option([], help=COND_HELP),
           mask: Optional[Path] = typer.Option(None, help="face-parsing mask PNG (mask models; = --cond mask=FILE)"),
           batch_size: int = typer.Option(64, help="images per network batch"),
           precision: Precision = typer.Option("no", help=PRECISION_HELP),
           device: str = typer.Option("auto", help=DEVICE_HELP),
           scale: int = typer.Option(1, help=SCALE_HELP),
           out: Path = typer.Option(Path("faces.png"), help="grid PNG"),
           save_each: Optional[Path] = typer.Option(None, help=SAVE_EACH_HELP),
           overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Generate a grid of faces.

    The PNG carries its settings: see `facediff info`."""
    from facediff import api

    fields = request_fields(ctx, dict(
        model=model, attrs=attrs, prompt=prompt, negative_prompt=negative_prompt, lora=lora, lora_scale=lora_scale,
        attr_scales=attr_scales, guidance=guidance, n=n, sampler=sampler, steps=steps, eta=eta, seed=seed,
        init_noise=init_noise, step_noise=step_noise, sweep=sweep, sketch=sketch,
        conditions=_conditions(cond + ([f"mask={mask}"] if mask is not None else [])), batch_size=batch_size,
        precision=precision, device=device, scale=scale), from_png, aliases={"conditions": "cond"})
    with Reporter() as rep:
        res = api.sample(_from_png(from_png, "sample"), out=out, save_each=save_each, overwrite=overwrite,
                         progress=rep, **fields)
    say_notes(res)
    typer.echo(f"wrote {len(res['images'])} faces to {res['path']}{precision_note(res)} "
               f"({res['request'].model_name}, guidance {res['request'].guidance:g})")
    if res["each"]:
        typer.echo(f"wrote {len(res['each'])} single images to {save_each}")


@app.command("compose")
@user_errors
def compose(ctx: typer.Context,
            from_png: Optional[Path] = typer.Option(None, "--from-png", help=FROM_PNG_HELP),
            model: Optional[str] = typer.Option(None, help="run or export folder, SD folder or hub id (default: the "
                                                "bundled text model if a region has a prompt, else the bundled "
                                                "attribute model)"),
            layout: Optional[Path] = typer.Option(None, help="layout TOML: canvas, background, [[region]] boxes "
                                                  "or masks"),
            n: int = typer.Option(1, help="compositions (image i uses seed + i)"),
            steps: Optional[int] = typer.Option(None, help="sampler steps (default: the layout's, else 25)"),
            sampler: Optional[Sampler] = typer.Option(None, help="sampler (default: the layout's, else ddim)"),
            guidance: Optional[float] = typer.Option(None, help="guidance scale of every region without its own "
                                                     "(default: the layout's, else 3)"),
            seed: Optional[int] = typer.Option(None, help="seed (default: the layout's, else 0)"),
            bootstrap: Optional[float] = typer.Option(None, help="fraction of steps with bootstrapping (0..1)"),
            window_weights: Optional[WindowWeights] = typer.Option(None, help=WINDOW_WEIGHTS_HELP),
            save_masks: bool = typer.Option(False, "--save-masks", help="also write the masks over the result "
                                            "(OUT-masks.png)"),
            precision: Precision = typer.Option("no", help=PRECISION_HELP),
            device: str = typer.Option("auto", help=DEVICE_HELP),
            scale: int = typer.Option(1, help=SCALE_HELP),
            out: Path = typer.Option(Path("composition.png"), help="output PNG (the canvas size; a grid if --n > 1)"),
            save_each: Optional[Path] = typer.Option(None, help=SAVE_EACH_HELP),
            overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Compose faces in regions of one canvas (MultiDiffusion).

    Each region has its own prompt, attributes or sketch."""
    from facediff import api

    if layout is None and from_png is None:
        raise FacediffError("give --layout LAYOUT.toml (or --from-png FILE)")
    fields = request_fields(ctx, dict(model=model, layout=layout, n=n, steps=steps, sampler=sampler, guidance=guidance,
                                      seed=seed, bootstrap=bootstrap, window_weights=window_weights, precision=precision, device=device,
                                      scale=scale), from_png)
    with Reporter() as rep:
        res = api.compose(_from_png(from_png, "compose"), out=out, save_each=save_each, save_masks=save_masks,
                          overwrite=overwrite, progress=rep, **fields)
    say_notes(res)
    extra = f" and the masks to {res['masks_path']}" if res["masks_path"] else ""
    typer.echo(f"wrote {len(res['images'])} composition(s) ({res['views']} views, {res['paths']} paths per step) "
               f"to {res['path']}{extra}{precision_note(res)}")


@app.command("panorama")
@user_errors
def panorama(ctx: typer.Context,
             from_png: Optional[Path] = typer.Option(None, "--from-png", help=FROM_PNG_HELP),
             model: Optional[str] = typer.Option(None, help=MODEL_HELP),
             prompt: Optional[str] = typer.Option(None, help="text prompt (text-to-face models)"),
             negative_prompt: Optional[str] = typer.Option(None, help=NEGATIVE_HELP),
             attrs: Optional[str] = typer.Option(None, help="attributes, e.g. smiling=5 (attribute models)"),
             cond: List[str] = typer.Option([], help=COND_HELP),
             width: Optional[int] = typer.Option(None, help="canvas width in pixels (required)"),
             height: Optional[int] = typer.Option(None, help="canvas height in pixels (default: the model's size)"),
             stride: Optional[int] = typer.Option(None, help="window stride in pixels (default: half the window)"),
             circular: bool = typer.Option(False, "--circular", help="wrap the left and right edges "
                                           "(360-degree panorama)"),
             window_weights: Optional[WindowWeights] = typer.Option(None, help=WINDOW_WEIGHTS_HELP),
             guidance: Optional[float] = typer.Option(None, help=GUIDANCE_HELP),
             steps: int = typer.Option(25, help="sampler steps"),
             sampler: Sampler = typer.Option("ddim", help="sampler"),
             seed: int = typer.Option(0, help="image i uses seed + i"),
             n: int = typer.Option(1, help="panoramas"),
             precision: Precision = typer.Option("no", help=PRECISION_HELP),
             device: str = typer.Option("auto", help=DEVICE_HELP),
             scale: int = typer.Option(1, help=SCALE_HELP),
             out: Path = typer.Option(Path("panorama.png"), help="output PNG (width x height; a grid if --n > 1)"),
             save_each: Optional[Path] = typer.Option(None, help=SAVE_EACH_HELP),
             overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP)):
    """Make a wide canvas under one condition.

    Overlapping windows are fused at every step."""
    from facediff import api

    fields = request_fields(ctx, dict(model=model, prompt=prompt, negative_prompt=negative_prompt, attrs=attrs,
                                      conditions=_conditions(cond), width=width, height=height, stride=stride, circular=circular,
                                      window_weights=window_weights, guidance=guidance,
                                      steps=steps, sampler=sampler, seed=seed, n=n, precision=precision, device=device,
                                      scale=scale), from_png, aliases={"conditions": "cond"})
    with Reporter() as rep:
        res = api.panorama(_from_png(from_png, "panorama"), out=out, save_each=save_each, overwrite=overwrite,
                           progress=rep, **fields)
    say_notes(res)
    typer.echo(f"wrote {len(res['images'])} panorama(s) ({res['views']} views per step) to {res['path']}"
               f"{precision_note(res)}")


@app.command("info")
@user_errors
def info(image: Path = typer.Argument(..., help="a PNG made by facediff (or another tool that saves settings)"),
         as_json: bool = typer.Option(False, "--json", help="print only the facediff settings, as JSON")):
    """Print the settings an image was made with.

    Re-run them with `facediff sample --from-png`."""
    from facediff.request import png_settings

    text = png_settings(image)
    if not text:
        raise FacediffError(f"{image}: no generation settings in this PNG")
    if as_json:
        if "facediff" not in text:
            raise FacediffError(f"{image}: no facediff settings in this PNG (only A1111 parameters)")
        typer.echo(json.dumps(json.loads(text["facediff"]), indent=1))
        return
    if "parameters" in text:
        typer.echo(text["parameters"])
    if "facediff" in text:
        from facediff.request import Request

        req = Request.from_json(text["facediff"], str(image))
        typer.echo("")
        typer.echo(f"re-run: facediff {req.command} --from-png {image}")
