"""`facediff eval | experiment | convert`: score models and images, run the seeds' recipes, convert old folders."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from facediff import registry
from facediff.cli.common import DEVICE_HELP, OVERWRITE_HELP, Sampler, app, user_errors
from facediff.cli.progress import Reporter


@app.command("convert")
@user_errors
def convert(old: Path = typer.Argument(..., help="an export or run folder, e.g. one with facediff.json"),
            new: Path = typer.Argument(..., help="the new export folder (must not exist or be empty)")):
    """Rewrite an old model folder in the current format.

    The current format is a diffusers FacediffPipeline folder."""
    from facediff import api

    typer.echo(f"wrote {api.convert(old, new)}")


PROMPTS_HELP = ("a prompts file (FILE.txt, one prompt per line): score a text model or --images on it; "
                "else the labels field of --data that prompts a text model: caption, or caption_heldout "
                "(SynthFaces' held-out paraphrases)")


def _prompts_file(value: str) -> Optional[Path]:
    """--prompts FILE: an existing file or a name ending in .txt; anything else is a labels field."""
    return Path(value) if Path(value).is_file() or value.lower().endswith(".txt") else None


@app.command("eval")
@user_errors
def eval_(ctx: typer.Context, model: Optional[Path] = typer.Option(None, help="run or export dir (default: the bundled model; "
                                                          "with a prompts file, the bundled text model)"),
          data: Optional[Path] = typer.Option(None, help="prepared data set (the real images and their "
                                                         "conditions); with a prompts file or --images: FD only"),
          metrics: str = typer.Option(",".join(registry.METRICS), help="comma list of: " + ", ".join(registry.METRICS)),
          n: int = typer.Option(256, help="generated images"),
          sampler: Sampler = typer.Option("dpmpp", help="sampler (a diffusers scheduler)"),
          steps: int = typer.Option(25, help="sampler steps"),
          guidance: Optional[float] = typer.Option(None, help="classifier-free guidance scale (default: the "
                                                    "model's own, else 3)"),
          seed: int = typer.Option(0, help="seed"),
          split: Optional[str] = typer.Option(None, help="only this split of the data set"),
          prompts: str = typer.Option("caption", help=PROMPTS_HELP),
          per_prompt: int = typer.Option(4, help="K, the images per line of a prompts file (seeds SEED to SEED+K-1)"),
          images: Optional[Path] = typer.Option(None, help="score the images in this folder (png, jpg, webp; by "
                                                           "name) against a prompts file or --attrs; no model"),
          attrs: Optional[Path] = typer.Option(None, help="with --images: a file of attribute levels, one line "
                                                          "per image or group, e.g. smiling=5,eyeglasses=0"),
          clip: Optional[str] = typer.Option(None, help="CLIP model folder or hub id for the CLIP score"),
          text: bool = typer.Option(False, "--text", help="without --model: the bundled text-to-face model"),
          device: str = typer.Option("auto", help=DEVICE_HELP + " (the oracle runs on the CPU)"),
          overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
          out: Path = typer.Option(..., help="output directory: metrics.json, report.html, report.md; with a "
                                             "prompts file or --images: prompts.json, .md, .png")):
    """Score a model on a data set, or your own prompts and images.

    With --data: FD and KID in oracle space, attribute accuracy, face detection, prompt agreement and more.
    With --prompts FILE.txt: K images per prompt, each prompt scored by the oracle. With --images DIR and
    --prompts FILE.txt or --attrs FILE.txt: your images scored the same way. See docs/evaluation.md."""
    from facediff import api
    from facediff.errors import FacediffError

    prompts_file = _prompts_file(prompts)
    if images is not None or attrs is not None or prompts_file is not None:
        if attrs is not None and images is None:
            raise FacediffError("--attrs FILE.txt scores images you have: give --images DIR too")
        if images is not None and model is not None:
            raise FacediffError("--images scores images you have, without a model: drop --model or --images")
        unused = [f"--{k}" for k in ("metrics", "n", "split", "clip", "text")
                  if ctx.get_parameter_source(k) is not None and ctx.get_parameter_source(k).name == "COMMANDLINE"]
        if unused:
            raise FacediffError(f"{', '.join(unused)}: not used when scoring a prompts file or --images "
                                "(--per-prompt sets the images per prompt)")
        with Reporter() as rep:
            if images is not None:
                api.evaluate_images(images, prompts=prompts_file, attrs=attrs, data=data, out=out,
                                    overwrite=overwrite, progress=rep)
            else:
                api.evaluate_prompts(prompts_file, model=model, per_prompt=per_prompt, seed=seed,
                                     sampler=sampler.value, steps=steps, guidance=guidance, device=device, data=data,
                                     out=out, overwrite=overwrite, progress=rep)
        typer.echo((out / "prompts.md").read_text())
        typer.echo(f"wrote {out / 'prompts.json'}, prompts.md and prompts.png")
        return
    if data is None:
        raise FacediffError("--data DIR is needed to score a model against a data set (or give --prompts FILE.txt "
                            "or --images DIR)")
    with Reporter() as rep:
        res = api.evaluate(model, data, metrics=metrics, n=n, sampler=sampler.value, steps=steps, guidance=guidance,
                           seed=seed, split=split, prompts=prompts, clip=clip, text=text, device=device, out=out,
                           overwrite=overwrite, progress=rep)
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
    if "parsing" in res:
        brief["parsing_miou"] = res["parsing"]["miou"]
    if "clip" in res:
        brief["clip_score"] = res["clip"].get("clip_score", res["clip"].get("note"))
    typer.echo(json.dumps(brief, indent=1))
    typer.echo(f"wrote {out / 'metrics.json'} and {out / 'report.html'}")


@app.command("experiment")
@user_errors
def experiment(name: str = typer.Argument(..., metavar="NAME", help="recipe: list (prints them), " + ", ".join(registry.RECIPES)),
               out: Optional[Path] = typer.Option(None, help="output directory (default runs/exp-NAME)"),
               data: Optional[Path] = typer.Option(None, help="prepared data set (default: SynthFaces)"),
               budget_minutes: Optional[float] = typer.Option(None, help="CPU budget (default: the recipe's)"),
               size: int = typer.Option(32, help="image size: 32 or 64 (the seeds' resolution)"),
               model: Optional[Path] = typer.Option(None, help="model of sampling recipes (default: the bundled one), "
                                                    "or the base of lora-style / the extra arm of seed002-baselines"),
               n_eval: Optional[int] = typer.Option(None, help="generated images per arm (default: by budget)")):
    """Run a seed's table as a recipe.

    Writes results.json, results.md (with the seed's numbers) and report.html."""
    if name != "list":
        registry.check_choice("recipe", name, tuple(registry.RECIPES))
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
