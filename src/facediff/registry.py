"""The one list of every choice a user can make by name.

Config validation (``facediff.config``), the samplers, the CLI help and its choices (``facediff.cli``) and
the UI all read these tuples, so a new sampler, schedule, kind or recipe is added here once. This module
imports only facediff.errors (for ``check_choice``): it sits just above the base layer.
"""
from __future__ import annotations

from dataclasses import dataclass

# ------------------------------------------------------------------------------------------- training
KINDS: tuple[str, ...] = ("ddpm", "autoencoder", "ldm", "t2i", "lora", "estimator", "parser",
                          "text_encoder")  # what `facediff train KIND` trains (parser: the face-parsing mask
# oracle; text_encoder: a t2i model's text encoder, pretrained on what captions say)
CONDITIONING: tuple[str, ...] = ("none", "attributes", "text")  # [model] conditioning of a denoiser
SCHEDULES: tuple[str, ...] = ("linear", "scaled_linear", "cosine")  # [diffusion] schedule (beta_t)
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")  # [diffusion] network target
LOSS_WEIGHTINGS: tuple[str, ...] = ("none", "min_snr")  # [diffusion] loss_weighting
MIXED_PRECISION: tuple[str, ...] = ("auto", "no", "bf16", "fp16")  # [train] mixed_precision (fp16: CUDA only)
SAMPLING_PRECISION: tuple[str, ...] = ("no", "bf16", "auto")  # the network's at sampling: fp32, bf16, measured
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")  # [train] lr_schedule after warmup
HOST_SYNC: tuple[str, ...] = ("auto", "step", "log")  # [train] host_sync (training.host_sync)
CAPTION_MODES: tuple[str, ...] = ("fixed", "free")  # [text] caption_mode: the data's captions, or free ones per step
AE_KINDS: tuple[str, ...] = ("vq", "kl")  # [autoencoder] kind
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # [lora] targets: the attention projections

# ------------------------------------------------------------------------------------------- data
SYNTH_STYLES: tuple[str, ...] = ("human", "anime", "mixed")  # SynthFaces styles
# SynthFaces layouts: one centred face each, or the scenes a composition window meets (data/synth_scene.py)
SYNTH_LAYOUTS: tuple[str, ...] = ("faces", "scenes")
SOURCES: tuple[str, ...] = ("celeba", "celeba-dialog", "folder")  # `facediff data prepare --source`
SKETCH_METHODS: tuple[str, ...] = ("xdog", "canny")  # line-drawing extractors for real photos

# ------------------------------------------------------------------------------------------- sampling
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim", "dpmpp", "euler", "heun", "unipc")  # diffusers schedulers
INIT_NOISE: tuple[str, ...] = ("normal", "zero", "constant")  # x_T: N(0, I) | zeros | one value per channel
WINDOW_WEIGHTS: tuple[str, ...] = ("hann", "uniform")  # compose / panorama: a view's weight in the fused average

# ------------------------------------------------------------------------------------------- evaluation
METRICS: tuple[str, ...] = ("fd", "kid", "fd_by_condition", "attr", "prompt", "clip", "faces", "diversity", "sketch",
                             "parsing", "timing")  # prompt: oracle agreement with the prompt (text models); clip:
# CLIP-S; sketch / parsing: how the faces follow their sketch / face-parsing mask (the kind names its metric)


@dataclass(frozen=True)
class RecipeInfo:
    """What `facediff experiment NAME` runs (the code is in ``facediff.experiments``)."""

    seed: str  # the write-up (and table) it reproduces
    summary: str  # one line for `facediff experiment list`
    budget_minutes: float  # default wall-clock budget (2 CPU cores, 32x32)
    trains: bool  # True: trains its own models (``--model`` refused); False: samples ``--model``
    model_optional: bool = False  # trains, yet takes ``--model`` (an extra arm / the base it fine-tunes)


RECIPES: dict[str, RecipeInfo] = {
    "seed003-timesteps": RecipeInfo("003 Q1", "T = 100 / 300 / 500, same budget each (unconditional anime DDPM)",
                                    30.0, True),
    "seed003-noise": RecipeInfo("003 Q2", "initial noise zeroed / step noise removed / both, on one model",
                                20.0, False),
    "seed002-grid": RecipeInfo("002 Table 4.1", "GA x T x Min-SNR x channels, 16 short runs, best per metric",
                               30.0, True),
    "seed002-baselines": RecipeInfo("002 Table 3.1", "untrained model vs ground truth on every metric", 15.0, True,
                                    model_optional=True),
    "sampler-sweep": RecipeInfo("002 Sec. 2.1", "DDPM-1000 vs DDIM / DPM-Solver++ / UniPC at 10, 20, 50 steps",
                                30.0, False),
    "seed000": RecipeInfo("000", "VQ autoencoder + sketch-conditional LDM on anime faces (PSNR vs the seed's 25.31)",
                          30.0, True),
    # the bundled oracle: 40 000 faces, --budget-minutes 45 on one thread (2026-12-07)
    "oracle": RecipeInfo("002 Sec. 3.2", "train the SynthFaces oracle (attribute estimator; faces drawn at "
                                         "32 / 64 / 128 px) within the budget", 40.0, True),
    "seed001": RecipeInfo("001", "group photo: 2x2 faces with their own attributes (or prompts), bootstrapping "
                          "k = 0 / 20 / 40 %, views aligned to the faces, plain sampling: per-region accuracy, "
                          "leakage", 20.0, False),
    "seed004-hair": RecipeInfo("004 Fig. 2", "prompts differing only in hair colour / haircut: per-colour accuracy, "
                               "what else changes (text model)", 15.0, False),
    "lora-style": RecipeInfo("002 Table 4.3", "human text model -> LoRA r = 2/4/8 on anime faces: style, FD, "
                             "parameters (--model: SD base)", 40.0, True, model_optional=True),
    "text-understanding": RecipeInfo("issue 26 Sec. 2", "text model: free phrasing and held-out paraphrases, "
                                     "negation, --negative-prompt, diversity against real faces (--model: the "
                                     "bundled text model if not given)", 15.0, False),
    "seed002-compare": RecipeInfo("002 Table 4.4", "attribute DDPM vs text model (+ LoRA) on every metric",
                                  45.0, True),
    "sweep-isolation": RecipeInfo("issue 26 Sec. 4", "sweep grids of an attribute model: how often moving one "
                                  "attribute changes another (oracle-read, same seeds; real SynthFaces beside)", 10.0, False),
    # the bundled 64 px models: 184 min autoencoder + 107 min per latent model on one AMX thread
    "default-models": RecipeInfo("issue 26", "kl-f4-64 autoencoder + attribute / sketch / mask / composition "
                                 "/ text models at 64 px (the bundled ones), each measured on n = 512 held-out faces",
                                 720.0, True),
}


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a one-line FacediffError naming ``what`` and the choices."""
    if value not in choices:
        from facediff.errors import FacediffError

        raise FacediffError(f"{what} {value!r}: choose one of {', '.join(choices)}")
    return value
