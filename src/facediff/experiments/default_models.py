"""The bundled models' recipe (issue 26): ``facediff experiment default-models --out DIR``.

Trains, within the budget and in this order, what ``src/facediff/assets`` ships at 64 px: the kl-f4-64
autoencoder, then on its latents the attribute model (``attr-64``, the default model), the sketch model
(``sketch-64``), the mask model (``mask-64``) and the composition model (``compose-64``: attributes + where the
faces are, on SynthFaces scenes) and the text model (``t2i-64``: its text encoder pretrained on free captions
first, ``facediff train text-encoder``, then taken frozen), each from its preset, on mixed-style SynthFaces
(seed 0); then measures each with ``facediff eval`` on held-out SynthFaces of seed 7 (n images, FD against a
real-vs-real floor of as many images; the text model prompted with their captions) beside the targets of issue 26.

Budget: the autoencoder gets 30 % of the training time, each of the five models a fifth of the rest (the text
encoder's pretraining, ~10 minutes, comes out of the text model's); 85 % of the budget trains, 15 % measures.
The default, 720 minutes (12 h on one thread of an AMX CPU: 184 min autoencoder, 86 min per model), is about
what the bundled models had (130 min autoencoder, 70-173 min per model).
A run that stops resumes where its models stand (a finished model is not retrained). Each export lands in
``OUT/runs/<name>/export``: copy it into ``src/facediff/assets/<name>`` and record its numbers with
``scripts/record_quality.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from facediff.experiments.common import Ctx, config_path, finish, fmt, md_table

# (bundled folder, preset, eval metrics beyond fd,attr,faces, what its own condition is measured by)
LATENT_MODELS = (("default_model", "attr-64", "", None),
                 ("sketch_model", "sketch-64", ",sketch", ("sketch", "edge_f1", "sketch edge F1")),
                 ("mask_model", "mask-64", ",parsing", ("parsing", "miou", "parsing mIoU")),
                 ("compose_model", "compose-64", "", None),  # renders its own scenes (the preset's synth_layout)
                 ("text_model", "t2i-64", ",prompt", ("prompt", "hair_colour", "prompt hair colour")))
TEXT_ENCODER_STEPS = 800  # `facediff train text-encoder` steps of 128 captions (~10 min; held-out rows then read ~100 %)
TRAIN_SHARE, AE_SHARE = 0.85, 0.30


def _data(ctx: Ctx, name: str, n: int, seed: int) -> Path:
    from facediff.data.synth import write_synth

    path = ctx.out / name
    if not (path / "manifest.json").is_file():
        write_synth(path, n=n, size=ctx.size, style="mixed", seed=seed, overwrite=True)
    return path


def _train(ctx: Ctx, kind: str, preset: str, run: Path, minutes: float, extra: list[str]) -> None:
    """Train one model into ``run`` for ``minutes`` (resuming a stopped run; nothing when it is exported)."""
    from facediff.training.run import train

    if (run / "export" / "model_index.json").is_file() or (run / "export" / "vae" / "config.json").is_file():
        return
    resume = (run / "state").is_dir() and any((run / "state").iterdir())
    over = extra + [f"train.time_budget_minutes={max(0.05, minutes):.3f}"]
    if ctx.tiny:
        over += ["train.max_steps=2", "train.checkpoint_every=0", "train.sample_every=0"]
    ctx.say(f"training {run.name} ({preset}, {minutes:.0f} min{', resumed' if resume else ''})")
    train(kind, config_path(preset), run, overrides=over, resume=resume, progress=ctx.progress)


def _number(value):
    """A metric's number: itself, or the ``accuracy`` of a per-value table (prompt hair colour)."""
    return value["accuracy"] if isinstance(value, dict) else value


def _text_encoder(ctx: Ctx, data: Path) -> list[str]:
    """Pretrain the text model's encoder once (resumed if stopped); the t2i overrides that take it frozen."""
    from facediff.config import load_config
    from facediff.training.text_encoder import train_text_encoder

    run = ctx.out / "runs" / "text_encoder"
    folder = run / "text_encoder"
    if not (folder / "model.safetensors").is_file():
        text = load_config("tiny-t2i" if ctx.tiny else "t2i-64").text
        ctx.say(f"pretraining the text encoder ({2 if ctx.tiny else TEXT_ENCODER_STEPS} steps)")
        train_text_encoder(data, run, text=text, steps=2 if ctx.tiny else TEXT_ENCODER_STEPS,
                           batch_size=8 if ctx.tiny else 128, eval_every=2 if ctx.tiny else 250,
                           resume=(run / "state").is_dir(), progress=ctx.progress)
    return [f"text.encoder={folder}"] + ([f"text.max_length={load_config('tiny-t2i').text.max_length}"]
                                         if ctx.tiny else [])


def run_default_models(ctx: Ctx) -> dict[str, Any]:
    from facediff.evaluation.evaluate import evaluate

    if not ctx.tiny:
        ctx.size = 64  # the bundled models' resolution, whatever --size says
    train_data = ctx.data or _data(ctx, "data", 64 if ctx.tiny else 16384, seed=0)
    eval_data = _data(ctx, "eval-data", 16 if ctx.tiny else 2 * (ctx.n_eval or 512), seed=7)
    size = [f"data.path={train_data}", f"data.size={ctx.size}"]
    scenes = [f"data.size={ctx.size}"] + (["data.synth_n=64"] if ctx.tiny else [])
    train_min = ctx.budget_minutes * TRAIN_SHARE
    ae = ctx.out / "runs" / "autoencoder"
    _train(ctx, "autoencoder", "tiny-kl" if ctx.tiny else "kl-f4-64", ae, train_min * AE_SHARE, size)
    models = {}
    for i, (name, preset, _, _) in enumerate(LATENT_MODELS):
        left = ctx.left_s() / 60 - ctx.budget_minutes * (1 - TRAIN_SHARE)
        run = ctx.out / "runs" / name
        tiny = ["model.block_out_channels=[8,16]", "model.attention_resolutions=[]", "model.norm_num_groups=4",
                "train.batch_size=4"] if ctx.tiny else []
        data = scenes if preset == "compose-64" else size
        kind, extra = "ldm", []
        if preset.startswith("t2i"):
            kind, extra = "t2i", _text_encoder(ctx, train_data) + ["text.caption_mode=free"]
            tiny += ["model.attention_resolutions=[2]", "model.attention_head_dim=8"] if ctx.tiny else []  # cross-attn
        _train(ctx, kind, preset, run, left / (len(LATENT_MODELS) - i),
               data + [f"latent.autoencoder={ae}"] + tiny + extra)
        models[name] = run
    n = ctx.n_eval or (8 if ctx.tiny else 512)
    rows, arms, grids, floors = [], [], {}, None
    for name, preset, metrics, own in LATENT_MODELS:
        ctx.say(f"measuring {name} on {n} held-out faces")
        m = evaluate(models[name], eval_data, metrics="fd,attr,faces" + metrics, n=n, steps=ctx.steps(25),
                     out=ctx.out / "evals" / name, progress=ctx.progress)
        f = m["floor_real_vs_real"]
        floors = floors or f
        per = m.get("attr", {}).get("per_attribute", {})
        own_txt = "" if own is None else (f"{own[2]} {fmt(_number(m[own[0]][own[1]]))} "
                                          f"(real {fmt(_number(f[own[0]][own[1]]))})")
        rows.append([name, preset, fmt(m.get("attr", {}).get("accuracy"), "pct"),
                     fmt(min((v["accuracy"] for v in per.values()), default=None), "pct"),
                     f"{fmt(m['fd_oracle'])} ({fmt(m['fd_oracle'] / f['fd_oracle'])}x floor {fmt(f['fd_oracle'])})",
                     f"{fmt(m['faces']['rate'], 'pct')} (real {fmt(f['faces']['rate'], 'pct')})", own_txt])
        arms.append({"name": name, "metrics": {k: v for k, v in m.items() if k != "floor_real_vs_real"}})
        grids[name] = ctx.out / "evals" / name / "report_files" / "samples.png"
    md = [f"{ctx.data_label()}: the bundled models trained from nothing, measured on held-out "
          f"mixed-style SynthFaces (seed 7, n = {n}, DPM-Solver++ {ctx.steps(25)} steps, each model's own guidance). Issue 26's "
          "targets: >= 97 % on every attribute, FD_oracle <= 1.3x the floor, face rate >= real; sketch >= 90 % of "
          "the attributes; parsing mIoU within 10 points of the real ceiling.", "",
          *md_table(["model", "preset", "attribute accuracy", "worst attribute", "FD_oracle", "MTCNN face rate",
                     "its own condition"], rows), "",
          f"Exports: {ctx.out / 'runs'}/<model>/export (copy into src/facediff/assets/<model>)."]
    return finish(ctx, {"seed": "issue 26", "arms": arms, "autoencoder": str(ae)}, md, grids, floors=floors)
