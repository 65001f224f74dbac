"""`facediff train ...`: every kind trains through the one loop into a run directory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from facediff.cli.common import AEKind, TrainPrecision, train_app, user_errors
from facediff.cli.progress import Reporter

RESUME_HELP = "continue the run in --out from its last checkpoint"


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
               resume: bool = typer.Option(False, "--resume", help=RESUME_HELP)):
    """Train a pixel DDPM.

    Unconditional or attribute-conditional, with classifier-free guidance."""
    _train("ddpm", config, set_, out, resume, data)


@train_app.command("autoencoder")
@user_errors
def train_autoencoder(config: Optional[str] = typer.Option(None, help="preset name (e.g. tiny-vq) or TOML file"),
                      kind: Optional[AEKind] = typer.Option(None, help="overrides [autoencoder] kind"),
                      set_: List[str] = typer.Option([], "--set", help="override: section.key=value"),
                      data: Optional[Path] = typer.Option(None, help="prepared data set (default: SynthFaces)"),
                      out: Path = typer.Option(..., help="run directory"),
                      resume: bool = typer.Option(False, "--resume", help=RESUME_HELP)):
    """Train a VQ or KL autoencoder for latent diffusion.

    Losses: L1/L2, perceptual, PatchGAN, codebook."""
    _train("autoencoder", config, ([f"autoencoder.kind={kind.value}"] if kind else []) + list(set_), out, resume, data)


@train_app.command("ldm")
@user_errors
def train_ldm(autoencoder: Optional[Path] = typer.Option(None, help="trained autoencoder run or export dir"),
              config: Optional[str] = typer.Option(None, help="preset name (e.g. tiny-ldm) or TOML file"),
              set_: List[str] = typer.Option([], "--set", help="override: section.key=value"),
              data: Optional[Path] = typer.Option(None, help="prepared data set (default: SynthFaces)"),
              out: Path = typer.Option(..., help="run directory"),
              resume: bool = typer.Option(False, "--resume", help=RESUME_HELP)):
    """Train a latent diffusion model.

    Attribute and/or sketch conditioning, in a frozen autoencoder's space."""
    extra = [f"latent.autoencoder={autoencoder}"] if autoencoder else []
    _train("ldm", config, extra + list(set_), out, resume, data)


@train_app.command("t2i")
@user_errors
def train_t2i(autoencoder: Optional[Path] = typer.Option(None, help="trained autoencoder run or export dir"),
              text_encoder: Optional[Path] = typer.Option(None, help="pretrained text encoder, taken frozen "
                                                          "(OUT/text_encoder of `train text-encoder`)"),
              config: Optional[str] = typer.Option(None, help="preset name (e.g. t2i-64, tiny-t2i) or TOML file"),
              set_: List[str] = typer.Option([], "--set", help="override: section.key=value"),
              data: Optional[Path] = typer.Option(None, help="prepared data set with captions (default: SynthFaces)"),
              out: Path = typer.Option(..., help="run directory"),
              resume: bool = typer.Option(False, "--resume", help=RESUME_HELP)):
    """Train a text-to-face latent model from scratch.

    Tokenizer from the captions, CLIP text encoder, cross-attention U-Net; the export is a plain
    Stable Diffusion pipeline folder."""
    extra = [f"latent.autoencoder={autoencoder}"] if autoencoder else []
    extra += [f"text.encoder={text_encoder}"] if text_encoder else []
    _train("t2i", config, extra + list(set_), out, resume, data)


@train_app.command("lora")
@user_errors
def train_lora(base: Optional[str] = typer.Option(None, help="Stable-Diffusion-format folder or hub id"),
               rank: Optional[int] = typer.Option(None, help="LoRA rank r ([lora] rank)"),
               alpha: Optional[float] = typer.Option(None, help="LoRA alpha ([lora] alpha; update = alpha/r B A)"),
               targets: Optional[str] = typer.Option(None, help="U-Net modules, e.g. to_q,to_k,to_v,to_out.0"),
               text_encoder_rank: Optional[int] = typer.Option(None, help="LoRA rank on the text encoder (0 = off)"),
               full: bool = typer.Option(False, "--full", help="fine-tune the whole U-Net instead (with EMA)"),
               shuffle_caption: bool = typer.Option(False, "--shuffle-caption", help="kohya: shuffle comma-separated caption tags"),
               keep_tokens: Optional[int] = typer.Option(None, help="kohya: leading tags kept in place"),
               gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing", help="less memory, ~30 % slower"),
               resolution: Optional[int] = typer.Option(None, help="training side in px (default: the base's)"),
               config: Optional[str] = typer.Option(None, help="TOML file with [lora] / [train] settings (default: the built-in LoRA recipe)"),
               set_: List[str] = typer.Option([], "--set", help="override: section.key=value"),
               data: Optional[Path] = typer.Option(None, help="prepared data set or image folder with captions"),
               out: Path = typer.Option(..., help="run directory"),
               resume: bool = typer.Option(False, "--resume", help=RESUME_HELP)):
    """Fine-tune any Stable Diffusion model with LoRA (or --full).

    Trains on captioned images; exports pytorch_lora_weights.safetensors (diffusers) and
    kohya_lora.safetensors (kohya UIs)."""
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
                    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP)):
    """Train the attribute estimator.

    The multi-head estimator of seed 002 (on SynthFaces: the oracle)."""
    from facediff import api

    with Reporter() as rep:
        res = api.train_estimator(data, out, steps=steps, batch_size=batch_size, lr=lr, size=size, seed=seed,
                                  budget_minutes=budget_minutes, eval_every=eval_every,
                                  precision=precision.value, resume=resume, progress=rep)
    typer.echo(json.dumps(res.get("heldout", res.get("val", {})), indent=1, default=str)[:4000])


@train_app.command("parser")
@user_errors
def train_parser(data: Path = typer.Option(..., help="prepared data set with masks.npy (e.g. SynthFaces)"),
                 out: Path = typer.Option(..., help="output directory (OUT/parser, OUT/metrics.json)"),
                 steps: int = typer.Option(4000, help="optimizer steps"),
                 batch_size: int = typer.Option(16, help="batch size"),
                 lr: float = typer.Option(2e-3, help="Adam learning rate"),
                 size: int = typer.Option(64, help="input side in pixels"),
                 seed: int = typer.Option(0, help="seed"),
                 budget_minutes: Optional[float] = typer.Option(None, help="stop after this many minutes"),
                 eval_every: int = typer.Option(250, help="steps between validations (and checkpoints)"),
                 heldout_n: int = typer.Option(500, help="held-out SynthFaces per size (SynthFaces data)"),
                 lowres_p: float = typer.Option(0.4, help="share of images resampled 2x down and up"),
                 precision: TrainPrecision = typer.Option("auto", help="mixed precision: auto = bf16 only where "
                                                          "a start-up probe measures it faster here; no = fp32"),
                 resume: bool = typer.Option(False, "--resume", help=RESUME_HELP)):
    """Train the face parser (the mask oracle).

    A small U-Net with per-pixel cross-entropy over the face-parsing classes."""
    from facediff import api

    with Reporter() as rep:
        res = api.train_parser(data, out, steps=steps, batch_size=batch_size, lr=lr, size=size, seed=seed,
                               budget_minutes=budget_minutes, eval_every=eval_every, heldout_n=heldout_n,
                               lowres_p=lowres_p, precision=precision.value, resume=resume, progress=rep)
    typer.echo(json.dumps(res.get("heldout", res.get("val", {})), indent=1, default=str)[:4000])


@train_app.command("text-encoder")
@user_errors
def train_text_encoder(data: Path = typer.Option(..., help="prepared SynthFaces set (its labels.jsonl)"),
                       out: Path = typer.Option(..., help="output directory (OUT/text_encoder, OUT/metrics.json)"),
                       config: Optional[str] = typer.Option(None, help="preset or TOML whose [text] section sets "
                                                            "the encoder (default t2i-64)"),
                       steps: int = typer.Option(3000, help="optimizer steps"),
                       batch_size: int = typer.Option(128, help="captions per step"),
                       lr: float = typer.Option(1e-3, help="AdamW learning rate (cosine to 0)"),
                       seed: int = typer.Option(0, help="seed"),
                       budget_minutes: Optional[float] = typer.Option(None, help="stop after this many minutes"),
                       eval_every: int = typer.Option(250, help="steps between validations (and checkpoints)"),
                       resume: bool = typer.Option(False, "--resume", help=RESUME_HELP)):
    """Pretrain the text encoder of a text-to-face model.

    Free-phrased captions (negation, tags, numbers, partial) of SynthFaces labels; a t2i run takes the result
    frozen: --set text.encoder=OUT/text_encoder."""
    from facediff import api

    with Reporter() as rep:
        res = api.train_text_encoder(data, out, config=config, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                     budget_minutes=budget_minutes, eval_every=eval_every, resume=resume,
                                     progress=rep)
    typer.echo(json.dumps(res.get("val", res), indent=1, default=str)[:4000])
