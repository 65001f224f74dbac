"""The ``facediff`` command line: a thin shell over ``facediff.api``.

Every user mistake becomes one line on stderr (``error: ...``) and exit code 2 — never a traceback.
"""
from __future__ import annotations

import enum
import errno
import functools
import json
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer

from facediff import registry
from facediff.cli.progress import Reporter
from facediff.errors import FacediffError


def _choices(name: str, values: tuple[str, ...]) -> type[enum.Enum]:
    """A str Enum of registry choices: typer validates the value and lists the choices in --help."""
    return enum.Enum(name, {v: v for v in values}, type=str)


Sampler = _choices("Sampler", registry.SAMPLERS)
InitNoise = _choices("InitNoise", registry.INIT_NOISE)
Precision = _choices("Precision", registry.SAMPLING_PRECISION)
TrainPrecision = _choices("TrainPrecision", registry.MIXED_PRECISION)
DEVICE_HELP = "where the network runs: auto = the GPU when torch sees one, else cpu; cpu; cuda; cuda:N"
PRECISION_HELP = "the network's precision: no = fp32 (same images on every machine), bf16, auto = bf16 where measured faster here"
Style = _choices("Style", registry.SYNTH_STYLES)
Source = _choices("Source", registry.SOURCES)
SketchMethod = _choices("SketchMethod", registry.SKETCH_METHODS)
AEKind = _choices("AEKind", registry.AE_KINDS)
Recipe = _choices("Recipe", ("list", *registry.RECIPES))

class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (an unknown option, a value outside the choices) as one line on stderr, exit code 2."""

    def main(self, *args, **kwargs):
        kwargs.pop("standalone_mode", None)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as e:  # typer's (vendored click) usage errors: public base class only
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
                typer.echo(ctx.get_help() if ctx else str(e))
                sys.exit(0)
            where = f"{ctx.command_path}: " if ctx is not None else ""
            message = e.format_message() if hasattr(e, "format_message") else str(e)
            typer.echo(f"error: {where}{' '.join(message.split())}", err=True)
            sys.exit(2)
        if isinstance(rv, int) and rv:  # typer.Exit(code) inside a command, returned in this mode
            sys.exit(rv)
        return rv


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Train, sample, compose and evaluate diffusion models that generate faces.")
data_app = typer.Typer(no_args_is_help=True, help="Make SynthFaces, prepare real data sets, inspect them.")
train_app = typer.Typer(no_args_is_help=True, help="Train models into a run directory.")
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")


def user_errors(fn: Callable) -> Callable:
    """Turn FacediffError (and a missing file) into one line on stderr with exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FacediffError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except OSError as e:  # writing an output: full disk, read-only or missing folder, no permission
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            if e.filename is None and not full:
                raise
            what = "the disk is full" if full else e.strerror
            where = f"cannot write {e.filename}" if e.filename else "cannot write the outputs"
            typer.echo(f"error: {where}: {what}; free space (or choose another --out) and run again", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


# ------------------------------------------------------------------------------------------------ data
@data_app.command("synth")
@user_errors
def data_synth(out: Path = typer.Option(..., help="output directory (a prepared data set)"),
               n: int = typer.Option(1024, help="number of faces"),
               size: int = typer.Option(64, help="image side in pixels"),
               style: Style = typer.Option("human", help="SynthFaces style"),
               seed: int = typer.Option(0, help="seed; (seed, index) fixes each face"),
               overwrite: bool = typer.Option(False, help="replace an existing data set in --out")):
    """Render SynthFaces (images, labels, captions, sketches, part masks)."""
    from facediff import api

    with Reporter() as rep:
        path = api.synth(out, n=n, size=size, style=style.value, seed=seed, overwrite=overwrite, progress=rep)
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
                 overwrite: bool = typer.Option(False, help="replace an existing data set in --out")):
    """Prepare a real data set (streamed; bad files are skipped and listed in manifest.json)."""
    from facediff import api

    with Reporter() as rep:
        path = api.prepare(source.value, root, out, size=size, crop=crop, sketch=sketch.value if sketch else None,
                           limit=limit, overwrite=overwrite, progress=rep)
    manifest = json.loads((path / "manifest.json").read_text())
    c = manifest["counts"]
    typer.echo(f"wrote {c['images']} images to {path}; skipped {c['skipped']} (reasons in manifest.json)")


@data_app.command("inspect")
@user_errors
def data_inspect(path: Path = typer.Argument(..., help="a prepared data set"),
                 out: Optional[Path] = typer.Option(None, help="contact sheet PNG (default PATH/contact_sheet.png)"),
                 n: int = typer.Option(64, help="faces on the sheet")):
    """Write a labelled contact sheet and print counts per attribute level."""
    from facediff import api

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
                method: SketchMethod = typer.Option("xdog", help="line-drawing extractor")):
    """Extract a line drawing from a photo (for sketch-conditional models)."""
    from facediff import api

    typer.echo(f"wrote {api.sketch(image, out, method.value)}")


# ------------------------------------------------------------------------------------------------ train
def _train(kind: str, config: Optional[str], sets: List[str], out: Path, resume: bool,
           data: Optional[Path] = None) -> None:
    from facediff import api

    if data is not None:
        sets = [f"data.path={data}"] + list(sets)
    with Reporter() as rep:
        summary = api.train(kind, config, out, overrides=sets, resume=resume, progress=rep)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))


@train_app.command("ddpm")
@user_errors
def train_ddpm(config: Optional[str] = typer.Option(None, help="preset name (e.g. tiny-ddpm) or TOML file"),
               set_: List[str] = typer.Option([], "--set", help="override: section.key=value (repeatable)"),
               data: Optional[Path] = typer.Option(None, help="prepared data set (default: SynthFaces)"),
               out: Path = typer.Option(..., help="run directory"),
               resume: bool = typer.Option(False, help="continue the run in --out from its last checkpoint")):
    """Train a pixel DDPM (unconditional or attribute-conditional, classifier-free guidance)."""
    _train("ddpm", config, set_, out, resume, data)


@train_app.command("autoencoder")
@user_errors
def train_autoencoder(config: Optional[str] = typer.Option(None, help="preset name (e.g. tiny-vq) or TOML file"),
                      kind: Optional[AEKind] = typer.Option(None, help="overrides [autoencoder] kind"),
                      set_: List[str] = typer.Option([], "--set", help="override: section.key=value"),
                      data: Optional[Path] = typer.Option(None, help="prepared data set (default: SynthFaces)"),
                      out: Path = typer.Option(..., help="run directory"),
                      resume: bool = typer.Option(False, help="continue the run in --out")):
    """Train a VQ or KL autoencoder (L1/L2, perceptual, PatchGAN, codebook) for latent diffusion."""
    _train("autoencoder", config, ([f"autoencoder.kind={kind.value}"] if kind else []) + list(set_), out, resume, data)


@train_app.command("ldm")
@user_errors
def train_ldm(autoencoder: Optional[Path] = typer.Option(None, help="trained autoencoder run or export dir"),
              config: Optional[str] = typer.Option(None, help="preset name (e.g. tiny-ldm) or TOML file"),
              set_: List[str] = typer.Option([], "--set", help="override: section.key=value"),
              data: Optional[Path] = typer.Option(None, help="prepared data set (default: SynthFaces)"),
              out: Path = typer.Option(..., help="run directory"),
              resume: bool = typer.Option(False, help="continue the run in --out")):
    """Train a latent diffusion model (attributes and/or sketch conditioning) in a frozen autoencoder's space."""
    extra = [f"latent.autoencoder={autoencoder}"] if autoencoder else []
    _train("ldm", config, extra + list(set_), out, resume, data)


@train_app.command("t2i")
@user_errors
def train_t2i(autoencoder: Optional[Path] = typer.Option(None, help="trained autoencoder run or export dir"),
              config: Optional[str] = typer.Option(None, help="preset name (e.g. t2i-64, tiny-t2i) or TOML file"),
              set_: List[str] = typer.Option([], "--set", help="override: section.key=value"),
              data: Optional[Path] = typer.Option(None, help="prepared data set with captions (default: SynthFaces)"),
              out: Path = typer.Option(..., help="run directory"),
              resume: bool = typer.Option(False, help="continue the run in --out")):
    """Train a text-to-face latent model from scratch (tokenizer from the captions, CLIP text encoder,
    cross-attention U-Net); the export is a plain Stable Diffusion pipeline folder."""
    extra = [f"latent.autoencoder={autoencoder}"] if autoencoder else []
    _train("t2i", config, extra + list(set_), out, resume, data)


@train_app.command("lora")
@user_errors
def train_lora(base: Optional[str] = typer.Option(None, help="Stable-Diffusion-format folder or hub id"),
               rank: Optional[int] = typer.Option(None, help="LoRA rank r ([lora] rank)"),
               alpha: Optional[float] = typer.Option(None, help="LoRA alpha ([lora] alpha; update = alpha/r B A)"),
               targets: Optional[str] = typer.Option(None, help="U-Net modules, e.g. to_q,to_k,to_v,to_out.0"),
               text_encoder_rank: Optional[int] = typer.Option(None, help="LoRA rank on the text encoder (0 = off)"),
               full: bool = typer.Option(False, help="fine-tune the whole U-Net instead (with EMA)"),
               shuffle_caption: bool = typer.Option(False, help="kohya: shuffle comma-separated caption tags"),
               keep_tokens: Optional[int] = typer.Option(None, help="kohya: leading tags kept in place"),
               gradient_checkpointing: bool = typer.Option(False, help="less memory, ~30 % slower"),
               resolution: Optional[int] = typer.Option(None, help="training side in px (default: the base's)"),
               config: Optional[str] = typer.Option(None, help="preset name (e.g. lora) or TOML file"),
               set_: List[str] = typer.Option([], "--set", help="override: section.key=value"),
               data: Optional[Path] = typer.Option(None, help="prepared data set or image folder with captions"),
               out: Path = typer.Option(..., help="run directory"),
               resume: bool = typer.Option(False, help="continue the run in --out")):
    """LoRA (or --full) fine-tuning of any Stable-Diffusion-format model on captioned images; exports
    pytorch_lora_weights.safetensors (diffusers) and kohya_lora.safetensors (kohya UIs)."""
    extra = [f"lora.{k}={v}" for k, v in (("base", base), ("rank", rank), ("alpha", alpha), ("targets", targets),
                                          ("text_encoder_rank", text_encoder_rank), ("keep_tokens", keep_tokens),
                                          ("resolution", resolution))
             if v is not None]
    extra = [e.replace("lora.keep_tokens", "text.keep_tokens") for e in extra]
    extra += ["lora.full=true"] * full + ["text.shuffle_caption=true"] * shuffle_caption
    extra += ["lora.gradient_checkpointing=true"] * gradient_checkpointing
    if data is not None and data.is_dir() and not (data / "manifest.json").is_file():
        from facediff import api

        prepared = out / "cache" / "prepared"
        if not (prepared / "manifest.json").is_file():
            typer.echo(f"preparing the image folder {data} into {prepared}")
            api.prepare("folder", data, prepared, size=resolution or 512)
        data = prepared
    _train("lora", config, extra + list(set_), out, resume, data)


@train_app.command("estimator")
@user_errors
def train_estimator(data: Path = typer.Option(..., help="prepared data set with attribute labels"),
                    out: Path = typer.Option(..., help="output directory (OUT/estimator, OUT/metrics.json)"),
                    steps: int = typer.Option(3000, help="optimizer steps"),
                    batch_size: int = typer.Option(64, help="batch size"),
                    lr: float = typer.Option(1e-3, help="Adam learning rate"),
                    size: int = typer.Option(32, help="input side in pixels"),
                    seed: int = typer.Option(0, help="seed"),
                    budget_minutes: Optional[float] = typer.Option(None, help="stop after this many minutes"),
                    eval_every: int = typer.Option(250, help="steps between validations (and checkpoints)"),
                    precision: TrainPrecision = typer.Option("auto", help="mixed precision: auto = bf16 only where "
                                                             "a start-up probe measures it faster here; no = fp32"),
                    resume: bool = typer.Option(False, help="continue the run in --out")):
    """Train the multi-head attribute estimator (seed 002; the oracle on SynthFaces)."""
    from facediff import api

    with Reporter() as rep:
        res = api.train_estimator(data, out, steps=steps, batch_size=batch_size, lr=lr, size=size, seed=seed,
                                  budget_minutes=budget_minutes, eval_every=eval_every,
                                  precision=precision.value, resume=resume, progress=rep)
    typer.echo(json.dumps(res.get("heldout", res.get("val", {})), indent=1, default=str)[:4000])


# ------------------------------------------------------------------------------------------------ sample
def _precision_note(res: dict) -> str:
    return " (network in bf16)" if res.get("precision") == "bf16" else ""


@app.command("sample")
@user_errors
def sample(model: Optional[str] = typer.Option(None, help="run or export dir, SD folder or hub id (default: "
                                                        "the bundled model; with --prompt the bundled text model)"),
           attrs: Optional[str] = typer.Option(None, help="condition, e.g. smiling=5,eyeglasses=3"),
           prompt: Optional[str] = typer.Option(None, help="text prompt (text-to-face models)"),
           negative_prompt: Optional[str] = typer.Option(None, help="negative prompt (text-to-face models)"),
           lora: Optional[Path] = typer.Option(None, help="LoRA file or folder (diffusers or kohya format)"),
           lora_scale: float = typer.Option(1.0, help="LoRA strength"),
           attr_scales: Optional[str] = typer.Option(None, help="per-attribute guidance, e.g. smiling=6,age=2"),
           guidance: float = typer.Option(3.0, help="classifier-free guidance scale (1 = none)"),
           n: int = typer.Option(16, help="number of faces"),
           sampler: Sampler = typer.Option("dpmpp", help="sampler (a diffusers scheduler)"),
           steps: int = typer.Option(25, help="sampler steps"),
           eta: float = typer.Option(0.0, help="DDIM eta"),
           seed: int = typer.Option(0, help="image i uses seed + i"),
           init_noise: InitNoise = typer.Option("normal", help="x_T (seed 003 ablation)"),
           no_step_noise: bool = typer.Option(False, help="no noise in ancestral steps (seed 003 ablation)"),
           sweep: bool = typer.Option(False, help="grid: one row per attribute, levels 0..5"),
           sketch: Optional[Path] = typer.Option(None, help="sketch PNG (sketch-conditional latent models)"),
           batch_size: int = typer.Option(64, help="images per network batch"),
           precision: Precision = typer.Option("no", help=PRECISION_HELP),
           device: str = typer.Option("auto", help=DEVICE_HELP),
           out: Path = typer.Option(Path("faces.png"), help="grid PNG")):
    """Generate a grid of faces."""
    from facediff import api

    with Reporter() as rep:
        res = api.sample(model, n=n, attrs=attrs, prompt=prompt, negative_prompt=negative_prompt, lora=lora,
                         lora_scale=lora_scale, guidance=guidance, attr_scales=attr_scales, sampler=sampler.value,
                         steps=steps, seed=seed, eta=eta, init_noise=init_noise.value, step_noise=not no_step_noise,
                         sweep=sweep, sketch=sketch, batch_size=batch_size, precision=precision.value,
                         device=device, out=out, progress=rep)
    typer.echo(f"wrote {len(res['images'])} faces to {res['path']}{_precision_note(res)}")


@app.command("compose")
@user_errors
def compose(model: Optional[str] = typer.Option(None, help="run or export dir, SD folder or hub id (default: the "
                                                         "bundled text model if a region has a prompt, else the "
                                                         "bundled attribute model)"),
            layout: Path = typer.Option(..., help="layout TOML: canvas, background, [[region]] boxes or masks"),
            n: int = typer.Option(1, help="compositions (image i uses seed + i)"),
            steps: Optional[int] = typer.Option(None, help="sampler steps (default: the layout's, else 25)"),
            sampler: Optional[Sampler] = typer.Option(None, help="sampler (default: the layout's, else ddim)"),
            seed: Optional[int] = typer.Option(None, help="seed (default: the layout's, else 0)"),
            bootstrap: Optional[float] = typer.Option(None, help="fraction of steps with bootstrapping (0..1)"),
            save_masks: bool = typer.Option(False, help="also write the masks over the result (OUT-masks.png)"),
            precision: Precision = typer.Option("no", help=PRECISION_HELP),
            device: str = typer.Option("auto", help=DEVICE_HELP),
            out: Path = typer.Option(Path("composition.png"), help="output PNG")):
    """Compose one image from regions, each with its own prompt / attributes / sketch (MultiDiffusion)."""
    from facediff import api

    if n < 1 or (steps is not None and steps < 1):
        raise FacediffError(f"--n {n} / --steps {steps}: each must be at least 1")
    with Reporter() as rep:
        res = api.compose(model, layout, n=n, steps=steps, sampler=None if sampler is None else sampler.value,
                          seed=seed, bootstrap=bootstrap, out=out, save_masks=save_masks,
                          precision=precision.value, device=device, progress=rep)
    extra = f" and the masks to {res['masks_path']}" if res["masks_path"] else ""
    typer.echo(f"wrote {len(res['images'])} composition(s) ({res['views']} views, {res['paths']} paths per step) "
               f"to {res['path']}{extra}{_precision_note(res)}")


@app.command("panorama")
@user_errors
def panorama(model: Optional[str] = typer.Option(None, help="run or export dir, SD folder or hub id (default: "
                                                          "the bundled model; with --prompt the bundled text model)"),
             prompt: Optional[str] = typer.Option(None, help="text prompt (text-to-face models)"),
             negative_prompt: Optional[str] = typer.Option(None, help="negative prompt (text-to-face models)"),
             attrs: Optional[str] = typer.Option(None, help="attributes, e.g. smiling=5 (attribute models)"),
             width: int = typer.Option(..., help="canvas width in pixels"),
             height: Optional[int] = typer.Option(None, help="canvas height in pixels (default: the model's size)"),
             stride: Optional[int] = typer.Option(None, help="window stride in pixels (default: half the window)"),
             circular: bool = typer.Option(False, help="wrap the left and right edges (360-degree panorama)"),
             guidance: float = typer.Option(3.0, help="classifier-free guidance scale"),
             steps: int = typer.Option(25, help="sampler steps"),
             sampler: Sampler = typer.Option("ddim", help="sampler"),
             seed: int = typer.Option(0, help="image i uses seed + i"),
             n: int = typer.Option(1, help="panoramas"),
             precision: Precision = typer.Option("no", help=PRECISION_HELP),
             device: str = typer.Option("auto", help=DEVICE_HELP),
             out: Path = typer.Option(Path("panorama.png"), help="output PNG")):
    """A wide canvas under one condition: overlapping windows fused at every step."""
    from facediff import api

    if n < 1 or steps < 1:
        raise FacediffError(f"--n {n} / --steps {steps}: each must be at least 1")
    with Reporter() as rep:
        res = api.panorama(model, width=width, height=height, prompt=prompt, negative_prompt=negative_prompt,
                           attrs=attrs, circular=circular, stride=stride, steps=steps, sampler=sampler.value,
                           guidance=guidance, seed=seed, n=n, precision=precision.value, device=device, out=out,
                           progress=rep)
    typer.echo(f"wrote {len(res['images'])} panorama(s) ({res['views']} views per step) to {res['path']}"
               f"{_precision_note(res)}")


@app.command("convert")
@user_errors
def convert(old: Path = typer.Argument(..., help="an export or run folder, e.g. one with facediff.json"),
            new: Path = typer.Argument(..., help="the new export folder (must not exist or be empty)")):
    """Rewrite a model folder in the current export format (a diffusers FacediffPipeline folder)."""
    from facediff import api

    typer.echo(f"wrote {api.convert(old, new)}")


@app.command("eval")
@user_errors
def eval_(model: Optional[Path] = typer.Option(None, help="run or export dir (default: the bundled model)"),
          data: Path = typer.Option(..., help="prepared data set (the real images and their conditions)"),
          metrics: str = typer.Option(",".join(registry.METRICS), help="comma list of: " + ", ".join(registry.METRICS)),
          n: int = typer.Option(256, help="generated images"),
          sampler: Sampler = typer.Option("dpmpp", help="sampler (a diffusers scheduler)"),
          steps: int = typer.Option(25, help="sampler steps"),
          guidance: float = typer.Option(3.0, help="classifier-free guidance scale"),
          seed: int = typer.Option(0, help="seed"),
          split: Optional[str] = typer.Option(None, help="only this split of the data set"),
          prompts: str = typer.Option("caption", help="text models: labels field of the prompts (caption | "
                                                      "caption_heldout: SynthFaces' held-out paraphrases)"),
          clip: Optional[str] = typer.Option(None, help="CLIP model folder or hub id for the CLIP score"),
          text: bool = typer.Option(False, help="without --model: the bundled text-to-face model"),
          device: str = typer.Option("auto", help=DEVICE_HELP + " (the oracle runs on the CPU)"),
          out: Path = typer.Option(..., help="output directory: metrics.json, report.html, report.md")):
    """Score a model against a data set (FD/KID in oracle space, attribute accuracy, faces, ...) with a report."""
    from facediff import api

    with Reporter() as rep:
        res = api.evaluate(model, data, metrics=metrics, n=n, sampler=sampler.value, steps=steps, guidance=guidance,
                           seed=seed, split=split, prompts=prompts, clip=clip, text=text, device=device, out=out,
                           progress=rep)
    keys = ("fd_oracle", "kid_oracle", "diversity")
    brief = {k: res[k] for k in keys if k in res}
    if "attr" in res:
        brief["attr_accuracy"] = res["attr"]["accuracy"]
    if "faces" in res:
        brief["face_rate"] = res["faces"].get("rate")
    if "prompt" in res:
        p = res["prompt"]
        brief["prompt_attr_accuracy"] = p.get("attr", {}).get("mean_over_attributes")
        brief.update({f"prompt_{k}_accuracy": (p[k] or {}).get("accuracy") for k in ("hair_colour", "style")})
    if "clip" in res:
        brief["clip_score"] = res["clip"].get("clip_score", res["clip"].get("note"))
    typer.echo(json.dumps(brief, indent=1))
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")


@app.command("experiment")
@user_errors
def experiment(name: Recipe = typer.Argument(..., help="recipe name ('list' prints them)"),
               out: Optional[Path] = typer.Option(None, help="output directory (default runs/exp-NAME)"),
               data: Optional[Path] = typer.Option(None, help="prepared data set (default: SynthFaces)"),
               budget_minutes: Optional[float] = typer.Option(None, help="CPU budget (default: the recipe's)"),
               size: int = typer.Option(32, help="image size: 32 or 64 (the seeds' resolution)"),
               model: Optional[Path] = typer.Option(None, help="model of sampling recipes (default: the bundled one), "
                                                    "or the base of lora-style / the extra arm of seed002-baselines"),
               n_eval: Optional[int] = typer.Option(None, help="generated images per arm (default: by budget)")):
    """Run a seed's table as a recipe: results.json, results.md (with the seed's numbers), report.html."""
    name = name.value
    if name == "list":
        for key, rec in registry.RECIPES.items():
            typer.echo(f"{key:<18} {rec.budget_minutes:>4.0f} min  {rec.summary}")
        return
    from facediff import api

    out = out or Path("runs") / f"exp-{name}"
    with Reporter() as rep:
        api.experiment(name, out, data=data, budget_minutes=budget_minutes, size=size, model=model, n_eval=n_eval,
                       progress=rep)
    typer.echo((out / "results.md").read_text() if (out / "results.md").is_file() else f"wrote {out}")


def _close_process_group() -> None:
    """Under torchrun / accelerate launch: leave the process group cleanly (gloo can hang at interpreter exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main() -> None:
    try:
        app()
    except FacediffError as e:  # raised outside a command (e.g. while parsing)
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except Exception as e:  # a bug, not a user mistake: one line here, the traceback in a log file
        import tempfile
        import traceback

        log = Path(tempfile.gettempdir()) / "facediff-crash.log"
        log.write_text(traceback.format_exc())
        typer.echo(f"error: unexpected {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''} "
                   f"(full traceback in {log}; please report it)", err=True)
        sys.exit(1)
    finally:
        _close_process_group()


if __name__ == "__main__":
    main()
