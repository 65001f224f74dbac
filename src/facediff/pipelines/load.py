"""Find and load a model folder: a run directory, an export folder, or the bundled default model.

Formats, newest first:
* ``model_index.json`` (``FacediffPipeline`` or a plain ``DDPMPipeline``): every export since the pipeline
  redesign; components in diffusers folders, the condition layout in the pipeline config.
* ``facediff.json`` + ``unet/`` (+ ``vae/``) with ``"format": "facediff-export/1"``: exports written before it;
  loaded as they are (``load_legacy``). ``facediff convert OLD NEW`` rewrites one in the new format.
* ``model_index.json`` of a ``StableDiffusionPipeline`` (our text-to-face exports, or a user's Stable
  Diffusion 1.x / 2.x folder or hub id): its unet, vae, scheduler, tokenizer and text encoder in a
  ``FacediffPipeline`` (``load_sd_components``); the safety checker is not loaded.
* ``vae/`` only (an autoencoder export): not a diffusion model; a one-line error says so.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path

import torch

from facediff.errors import FacediffError
from facediff.pipelines.facediff import TRAINING_CONFIG, FacediffPipeline

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL_DIR = ASSETS / "default_model"
DEFAULT_TEXT_MODEL_DIR = ASSETS / "text_model"  # the bundled text-to-face model (used for --prompt without --model)
LEGACY_META = "facediff.json"
SD_CLASSES = ("StableDiffusionPipeline",)  # model_index classes loaded as text models


def resolve_device(device: str | torch.device) -> torch.device:
    """``--device``: "auto" = the GPU when torch sees one, else the CPU; "cuda" / "cuda:N" / "cpu" as given.
    The initial noise is drawn on the CPU from the seeds either way, so a seed means the same x_T everywhere."""
    if isinstance(device, torch.device):
        return device
    name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise FacediffError(f"--device {device}: torch sees no CUDA device on this machine; use --device cpu "
                                "(or auto)")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise FacediffError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(name)
    raise FacediffError(f"--device {device!r}: unknown (use auto, cpu, cuda or cuda:N)")


def bundled_for(kinds: set[str]) -> Path | None:
    """The bundled model that declares every condition kind in ``kinds`` (the fewest other kinds first), None
    when none does: `facediff sample --cond mask=...` without --model picks the bundled mask model."""
    found = []
    for folder in sorted(ASSETS.iterdir()):
        index = folder / "model_index.json"
        if not index.is_file():
            continue
        try:
            declared = {c.get("kind") for c in json.loads(index.read_text()).get("conditions") or []}
        except (ValueError, AttributeError):
            continue
        if kinds <= declared:
            found.append((len(declared - kinds), folder.name, folder))
    return min(found)[2] if found else None


def resolve_model_dir(path: str | Path | None, *, text: bool = False) -> Path:
    """A run directory -> its export/; an export folder as is; None -> the bundled default model (the bundled
    text-to-face model when ``text``)."""
    if path is None:
        default = DEFAULT_TEXT_MODEL_DIR if text else DEFAULT_MODEL_DIR
        if not (default / "model_index.json").is_file():
            raise FacediffError(f"the bundled {'text-to-face' if text else 'default'} model is missing from "
                                f"{default}; reinstall facediff or pass --model")
        return default
    p = Path(path)
    if not p.exists():
        raise FacediffError(f"--model {p}: no such file or directory")
    if not p.is_dir():
        raise FacediffError(f"--model {p}: a file; pass a run directory or an export folder")
    for folder in (p, p / "export"):
        if (folder / "model_index.json").is_file() or (folder / LEGACY_META).is_file():
            return folder
        if (folder / "vae" / "config.json").is_file() and not (folder / "unet").is_dir():
            raise FacediffError(f"--model {p}: an autoencoder, not a diffusion model; pass a ddpm or ldm run "
                                "(autoencoders are used with `facediff train ldm --autoencoder` and `facediff eval`)")
    if (p / "config.json").is_file():
        try:
            kind = json.loads((p / "config.json").read_text()).get("kind")
        except ValueError:
            kind = None
        if kind == "parser":
            raise FacediffError(f"--model {p}: a face-parser run, not a diffusion model; it scores masks in "
                                "`facediff eval` (metrics.parsing), it is not sampled")
        if kind == "estimator":
            raise FacediffError(f"--model {p}: an attribute-estimator run, not a diffusion model; it is used by "
                                "`facediff eval` through the oracle, not sampled")
        raise FacediffError(f"--model {p}: this run has no export yet (training not finished); "
                            "finish it with `facediff train ... --resume`")
    raise FacediffError(f"--model {p}: not a facediff run or export folder (no model_index.json)")


def load_pipeline(path: str | Path | None = None, device: str | torch.device = "cpu", *,
                  text: bool = False) -> FacediffPipeline:
    """The ``FacediffPipeline`` of a run directory, an export folder, a Stable Diffusion folder / hub id or
    (None) the bundled default model (the bundled text-to-face model when ``text``)."""
    from diffusers.utils import logging as dlogging

    if path is not None and not Path(path).exists() and _looks_like_hub_id(str(path)):
        pipe = load_sd_components(str(path))
        pipe.model_dir = None
        return pipe.to(device)
    lora_run = _lora_export(path)
    if lora_run is not None:  # a LoRA run: its base, with the run's adapters
        try:
            base = json.loads((lora_run / "lora_config.json").read_text())["base"]
        except (ValueError, KeyError):
            raise FacediffError(f"{lora_run / 'lora_config.json'}: damaged (no 'base'); re-export the LoRA run") from None
        if not Path(base).exists() and not _looks_like_hub_id(base):
            raise FacediffError(f"--model {path}: a LoRA run whose base {base} is not there; pass "
                                f"--model BASE --lora {lora_run}")
        pipe = load_pipeline(base, device)
        apply_lora(pipe, lora_run, 1.0)
        pipe.model_dir = lora_run
        return pipe
    folder = resolve_model_dir(path, text=text)
    if not (folder / "model_index.json").is_file():
        pipe = load_legacy(folder)
    elif _index(folder).get("_class_name") in SD_CLASSES:
        pipe = load_sd_components(folder)
    else:
        _check_index(folder)
        was = dlogging.is_progress_bar_enabled()
        dlogging.disable_progress_bar()
        try:
            pipe = FacediffPipeline.from_pretrained(folder, use_safetensors=True)
        except (OSError, ValueError, KeyError) as e:
            raise FacediffError(f"--model {folder}: cannot load it ({str(e).splitlines()[0][:200]})") from None
        finally:
            if was:
                dlogging.enable_progress_bar()
    if (folder / TRAINING_CONFIG).is_file():
        pipe.training_config = json.loads((folder / TRAINING_CONFIG).read_text())
    defaults = sampling_defaults(folder)
    pipe.default_guidance = defaults.get("guidance")
    pipe.prompt_whole_tokens = defaults.get("prompt_whole_tokens")  # None: the tokenizer's length
    pipe.prompt_chunk_tokens = defaults.get("prompt_chunk_tokens")  # None: prompt_whole_tokens
    pipe.negative_words_as_negation = defaults.get("negative_words_as_negation", False)  # data.captions
    pipe.model_dir = folder
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# optional, beside the components: {"guidance": 5.0, "measured": "...", and for text models that read long prompts
# in chunks "prompt_whole_tokens":
# 60 (the longest prompt encoded whole), "prompt_chunk_tokens": 28 (the chunks of longer ones; conditioning.text),
# "negative_words_as_negation": true (a negative prompt's bare "glasses" / "smile" / "bangs" / "beard" read as the
# prompt's "no glasses" / ...: data.captions.negative_as_negation)}
SAMPLING_DEFAULTS = "sampling_defaults.json"


DEFAULT_GUIDANCE = 3.0  # a model's guidance scale when it names none


def resolve_guidance(pipe, guidance: float | None) -> float:
    """``guidance``, or (None) the model's own default from ``sampling_defaults.json``, else DEFAULT_GUIDANCE."""
    if guidance is not None:
        return float(guidance)
    return float(getattr(pipe, "default_guidance", None) or DEFAULT_GUIDANCE)


def sampling_defaults(folder: Path) -> dict:
    """The model's own sampling defaults (its guidance scale, chosen by measurement; a text model's prompt chunk
    length), {} if none."""
    path = Path(folder) / SAMPLING_DEFAULTS
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise FacediffError(f"{path}: not valid JSON; fix or delete it") from None
    data = data if isinstance(data, dict) else {}
    guidance = data.get("guidance")
    if guidance is not None and (isinstance(guidance, bool) or not isinstance(guidance, (int, float))):
        raise FacediffError(f"{path}: guidance = {guidance!r}: give a number")
    for key in ("prompt_whole_tokens", "prompt_chunk_tokens"):
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 8):
            raise FacediffError(f"{path}: {key} = {v!r}: give a whole number of tokens >= 8")
    v = data.get("negative_words_as_negation")
    if v is not None and not isinstance(v, bool):
        raise FacediffError(f"{path}: negative_words_as_negation = {v!r}: give true or false")
    return data


def _lora_export(path: str | Path | None) -> Path | None:
    """The export folder of a LoRA run (``lora_config.json`` beside the adapter files), else None."""
    if path is None:
        return None
    for folder in (Path(path), Path(path) / "export"):
        if (folder / "lora_config.json").is_file():
            return folder
    return None


def apply_lora(pipe: FacediffPipeline, lora: str | Path, scale: float = 1.0) -> dict:
    """Load a LoRA file or folder (diffusers ``pytorch_lora_weights.safetensors`` with its adapter config, or a
    kohya ``lora_unet_*`` file) into a text model's U-Net (+ text encoder) at strength ``scale``."""
    from facediff.models.lora import load_lora

    if not pipe.takes_text:
        raise FacediffError(f"--lora {lora}: the model is not a text-to-image model (no text encoder); LoRA files "
                            "apply to Stable-Diffusion-format models")
    return load_lora(lora, pipe.unet, pipe.text_encoder, scale=scale)


def _looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))


def _index(folder: Path) -> dict:
    try:
        return json.loads((folder / "model_index.json").read_text())
    except ValueError:
        raise FacediffError(f"{folder / 'model_index.json'}: not valid JSON; re-export the model") from None


@contextmanager
def quiet_hf():
    """No progress bars or info/warning chatter from diffusers / transformers while loading or saving (the
    CLI shows its own progress; e.g. transformers warns at import that torchvision is absent)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    state = (dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled(), dlog.get_verbosity(), tlog.get_verbosity())
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        (dlog.enable_progress_bar if state[0] else dlog.disable_progress_bar)()
        (tlog.enable_progress_bar if state[1] else tlog.disable_progress_bar)()
        dlog.set_verbosity(state[2])
        tlog.set_verbosity(state[3])


def load_sd_components(source: str | Path) -> FacediffPipeline:
    """unet, vae, scheduler, tokenizer and text encoder of a Stable-Diffusion-format folder or hub id (safetensors
    only; no safety checker) as a ``FacediffPipeline``. A hub id must already be in the local Hugging Face cache
    when the machine is offline."""
    try:
        with quiet_hf():
            from diffusers import StableDiffusionPipeline

            sd = StableDiffusionPipeline.from_pretrained(str(source), use_safetensors=True, safety_checker=None,
                                                         feature_extractor=None, requires_safety_checker=False)
    except (OSError, ValueError, KeyError, EnvironmentError) as e:
        raise FacediffError(f"--model {source}: cannot load it as a Stable Diffusion pipeline "
                            f"({str(e).splitlines()[0][:200]})") from None
    return FacediffPipeline(unet=sd.unet, scheduler=sd.scheduler, vae=sd.vae, tokenizer=sd.tokenizer,
                            text_encoder=sd.text_encoder)


def save_sd_pipeline(pipe: FacediffPipeline, out: str | Path, training_config: dict | None = None) -> Path:
    """Write a text model as a plain ``StableDiffusionPipeline`` folder (model_index.json, tokenizer/,
    text_encoder/, unet/, vae/, scheduler/; no safety checker) + ``training_config.json``, swapped in when
    complete."""
    from facediff.conditioning.text import save_tokenizer
    from facediff.fsutil import replace_folder

    with quiet_hf(), replace_folder(out, "the export") as tmp:
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        # plain diffusers users get DPM-Solver++ (good at 20 steps) over the training betas; facediff itself
        # reads only the betas from this config and builds the sampler chosen per call
        scheduler = DPMSolverMultistepScheduler.from_config({**dict(pipe.scheduler.config), "steps_offset": 1})
        sd = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                     unet=pipe.unet, scheduler=scheduler, safety_checker=None,
                                     feature_extractor=None, requires_safety_checker=False)
        sd.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(pipe.tokenizer, tmp / "tokenizer")
        cfg = training_config if training_config is not None else pipe.training_config
        if cfg is not None:
            (tmp / TRAINING_CONFIG).write_text(json.dumps(cfg, indent=1))
    return Path(out)


def _check_index(folder: Path) -> None:
    index = _index(folder)
    if index.get("_class_name") not in ("FacediffPipeline", "DDPMPipeline"):
        raise FacediffError(f"{folder}: a {index.get('_class_name')!r} folder; facediff samples FacediffPipeline, "
                            "DDPMPipeline and StableDiffusionPipeline exports")
    for name in ("unet", "vae"):
        if name in index and index[name][0] is not None:
            if not (folder / name / "diffusion_pytorch_model.safetensors").is_file():
                raise FacediffError(f"{folder / name} has no diffusion_pytorch_model.safetensors "
                                    "(facediff loads safetensors only); re-export the model")


def load_legacy(folder: Path) -> FacediffPipeline:
    """An export of the ``facediff-export/1`` format (``facediff.json`` + ``unet/`` [+ ``vae/``])."""
    from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

    from facediff.models.autoencoder import load_vae

    try:
        meta = json.loads((folder / LEGACY_META).read_text())
    except ValueError:
        raise FacediffError(f"{folder / LEGACY_META}: not valid JSON; re-export the model") from None
    if meta.get("kind") == "autoencoder":
        raise FacediffError(f"--model {folder}: an autoencoder, not a diffusion model; pass a ddpm or ldm run")
    if meta.get("kind") not in ("ddpm", "ldm") or not (folder / "unet" / "config.json").is_file():
        raise FacediffError(f"{folder}: {LEGACY_META} describes no ddpm/ldm export (kind = {meta.get('kind')!r})")
    conditional = meta.get("conditioning", "none") != "none"
    if not (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file():
        raise FacediffError(f"{folder / 'unet'} has no diffusion_pytorch_model.safetensors (facediff loads "
                            "safetensors only); re-export the model")
    cls = UNet2DConditionModel if conditional else UNet2DModel
    unet = cls.from_pretrained(folder / "unet", use_safetensors=True)
    scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
    vae = None
    if meta.get("kind") == "ldm":
        vae = load_vae(folder / "vae")
        vae.register_to_config(scaling_factor=float(meta["scale_factor"]))
    pipe = FacediffPipeline(unet=unet, scheduler=scheduler, vae=vae,
                            attributes=tuple(meta.get("attributes", ())) if conditional else (),
                            num_levels=int(meta.get("num_levels", 6)), sketch=bool(meta.get("sketch", False)))
    pipe.training_config = meta.get("config")
    return pipe


def save_pipeline(pipe: FacediffPipeline, out: str | Path, training_config: dict | None = None) -> Path:
    """Write ``pipe`` as a diffusers folder (safetensors) + ``training_config.json``, swapped in when complete
    (a full disk or a kill leaves the previous export as it was)."""
    from facediff.fsutil import replace_folder

    if pipe.takes_text:
        return save_sd_pipeline(pipe, out, training_config)
    with replace_folder(out, "the export") as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        cfg = training_config if training_config is not None else pipe.training_config
        if cfg is not None:
            (tmp / TRAINING_CONFIG).write_text(json.dumps(cfg, indent=1))
    return Path(out)
