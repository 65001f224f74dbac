"""Typed, frozen run configuration.

A run is described by one TOML file with sections ``[data]``, ``[model]``, ``[diffusion]``,
``[train]`` (and ``[sample]`` defaults for grids). Unknown keys are errors; ``--set section.key=value``
overrides single fields. The resolved config is written to ``RUN_DIR/config.json``.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from facediff.errors import FacediffError

ATTRIBUTES: tuple[str, ...] = ("bangs", "eyeglasses", "beard", "smiling", "age")  # CelebA-Dialog attributes
NUM_LEVELS: int = 6  # CelebA-Dialog levels 0..5


KINDS: tuple[str, ...] = ("ddpm", "autoencoder", "ldm")  # what a run trains


class ConfigError(FacediffError):
    """A user-facing configuration error (one line, names the key and what to do)."""


@dataclass(frozen=True)
class DataConfig:
    path: str = ""  # prepared data set directory; "" = render SynthFaces into the run's cache
    synth_n: int = 4096  # SynthFaces: number of images rendered when path == ""
    synth_style: str = "human"  # SynthFaces style: human | anime | mixed
    synth_seed: int = 0  # SynthFaces seed (the same seed + index always gives the same face)
    size: int = 32  # image side in pixels fed to the model
    split: str = "train"  # split of labels.jsonl to train on ("" = all rows)
    hflip: bool = True  # random horizontal flip augmentation


@dataclass(frozen=True)
class ModelConfig:
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # channels per U-Net level
    layers_per_block: int = 1  # ResNet blocks per level
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sides (px) that get self-attention
    attention_head_dim: int = 32  # channels per attention head
    norm_num_groups: int = 8  # GroupNorm groups
    dropout: float = 0.0  # dropout inside ResNet blocks
    conditioning: str = "attributes"  # none | attributes
    attributes: tuple[str, ...] = ATTRIBUTES  # conditioned attributes, concatenated one-hots (null = zeros)
    num_levels: int = NUM_LEVELS  # levels per attribute
    in_channels: int = 3  # input channels (3 for pixels, latent channels for LDMs)


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: str = "linear"  # beta schedule: linear | scaled_linear | cosine
    num_train_timesteps: int = 1000  # T
    beta_start: float = 1e-4  # beta_1 (linear / scaled_linear)
    beta_end: float = 0.02  # beta_T (linear / scaled_linear)
    prediction_type: str = "epsilon"  # network target: epsilon | v_prediction | sample (x0)
    loss_weighting: str = "none"  # none | min_snr (Hang et al. 2023, Min-SNR-gamma)
    snr_gamma: float = 5.0  # gamma of Min-SNR-gamma
    cond_drop_prob: float = 0.1  # p of dropping the whole condition (classifier-free guidance training)
    attr_drop_prob: float = 0.1  # p of dropping each attribute alone (enables per-attribute guidance)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # images per optimizer step per process (before accumulation)
    grad_accum: int = 1  # gradient accumulation steps
    max_steps: int = 1000  # optimizer steps
    time_budget_minutes: float = 0.0  # stop early (checkpoint + export) after this many minutes (0 = no limit)
    lr: float = 2e-4  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # linear warmup steps
    lr_schedule: str = "constant"  # after warmup: constant | cosine (decay to 0 at max_steps)
    grad_clip: float = 1.0  # max gradient norm (0 = off)
    ema_decay: float = 0.999  # EMA decay of the weights used for sampling
    ema_start: int = 0  # step after which EMA starts following the weights
    mixed_precision: str = "no"  # no | bf16 | fp16 (fp16 on CUDA only)
    seed: int = 0  # seed of data order, noise, timesteps and condition dropout
    log_every: int = 10  # steps between metrics.jsonl rows
    sample_every: int = 0  # steps between sample grids (0 = only at the end)
    checkpoint_every: int = 500  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # checkpoints kept on disk
    max_nonfinite: int = 10  # stop after this many non-finite losses in a row
    sample_steps: int = 25  # sampler steps for the grids written during training
    sample_sampler: str = "dpmpp"  # sampler for the grids written during training


@dataclass(frozen=True)
class AutoencoderConfig:
    kind: str = "vq"  # vq (VQ-VAE / VQGAN, van den Oord 2017; Esser 2021) | kl (Rombach 2022)
    block_out_channels: tuple[int, ...] = (64, 128, 128)  # channels per level; f = 2 ** (levels - 1)
    layers_per_block: int = 1  # ResNet blocks per level
    latent_channels: int = 3  # channels of the latent z
    num_vq_embeddings: int = 512  # VQ codebook size K
    vq_embed_dim: int = 3  # VQ code vector dimension
    norm_num_groups: int = 32  # GroupNorm groups
    l1_weight: float = 1.0  # weight of |x - x_hat|
    l2_weight: float = 0.0  # weight of (x - x_hat)^2
    perceptual_weight: float = 0.1  # perceptual loss weight (LPIPS with user weights, else oracle features)
    lpips_weights: str = ""  # path to LPIPS weights (optional; "" = oracle-feature perceptual loss)
    commitment_beta: float = 0.25  # VQ commitment weight beta
    kl_weight: float = 1e-6  # KL weight for kind = kl
    disc_weight: float = 0.5  # PatchGAN hinge loss weight (0 = no discriminator)
    disc_start: int = 2000  # step at which the discriminator starts
    disc_channels: int = 64  # PatchGAN base channels
    dead_code_restart: int = 200  # steps between restarts of unused codes (0 = off)
    eval_every: int = 0  # steps between held-out PSNR/SSIM/codebook evaluations (0 = only at the end)
    eval_n: int = 256  # held-out images evaluated (the data set's val split; train images if it has none)


@dataclass(frozen=True)
class LatentConfig:
    autoencoder: str = ""  # autoencoder run or export directory the LDM works in
    scale_factor: float = 0.0  # latent scale (0 = 1/std of the training latents, computed once)
    sketch: bool = False  # concatenate the downsampled sketch to the latent input (latent-diffusion "concat")
    sketch_drop_prob: float = 0.1  # p of dropping the sketch (classifier-free guidance over the sketch)


@dataclass(frozen=True)
class RunConfig:
    kind: str = "ddpm"  # what is trained: ddpm | autoencoder | ldm
    data: DataConfig = field(default_factory=DataConfig)  # [data]
    model: ModelConfig = field(default_factory=ModelConfig)  # [model]
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # [diffusion]
    train: TrainConfig = field(default_factory=TrainConfig)  # [train]
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)  # [autoencoder]
    latent: LatentConfig = field(default_factory=LatentConfig)  # [latent]


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "train": TrainConfig,
             "autoencoder": AutoencoderConfig, "latent": LatentConfig}
_CHOICES = {
    ("data", "synth_style"): ("human", "anime", "mixed"),
    ("model", "conditioning"): ("none", "attributes"),
    ("diffusion", "schedule"): ("linear", "scaled_linear", "cosine"),
    ("diffusion", "prediction_type"): ("epsilon", "v_prediction", "sample"),
    ("diffusion", "loss_weighting"): ("none", "min_snr"),
    ("train", "mixed_precision"): ("no", "bf16", "fp16"),
    ("train", "lr_schedule"): ("constant", "cosine"),
    ("autoencoder", "kind"): ("vq", "kl"),
}


def _coerce(section: str, name: str, ftype: Any, value: Any) -> Any:
    """Convert a TOML / --set value to the field's declared type, or raise ConfigError."""
    t = str(ftype)
    try:
        if t.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            inner = str if "str" in t else int
            return tuple(inner(v.strip().strip("'\"")) if isinstance(v, str) else inner(v) for v in value)
        if t == "bool":
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return bool(value)
        if t == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if t == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"[{section}] {name} = {value!r} is not a valid {t}") from None


def _check(section: str, name: str, value: Any) -> None:
    choices = _CHOICES.get((section, name))
    if choices and value not in choices:
        raise ConfigError(f"[{section}] {name} = {value!r}: choose one of {', '.join(choices)}")


def from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a RunConfig from nested dicts; unknown sections/keys are errors."""
    top: dict[str, Any] = {}
    for key, val in raw.items():
        if key == "kind":
            if val not in KINDS:
                raise ConfigError(f"{source}: kind = {val!r}: choose one of {', '.join(KINDS)}")
            top["kind"] = str(val)
            continue
        if key not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section [{key}] (known: {', '.join(_SECTIONS)}, kind)")
        if not isinstance(val, dict):
            raise ConfigError(f"{source}: [{key}] must be a table")
        cls = _SECTIONS[key]
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for name, v in val.items():
            if name not in known:
                raise ConfigError(f"{source}: unknown key [{key}] {name} (known: {', '.join(known)})")
            kwargs[name] = _coerce(key, name, known[name].type, v)
            _check(key, name, kwargs[name])
        top[key] = cls(**kwargs)
    return RunConfig(**top)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def apply_overrides(cfg: RunConfig, overrides: list[str] | None) -> RunConfig:
    """Apply ``section.key=value`` overrides (the CLI's ``--set``)."""
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.lr=1e-4")
        path, value = item.split("=", 1)
        section, name = path.strip().split(".", 1)
        if section == "kind" or section not in _SECTIONS:
            raise ConfigError(f"--set {item!r}: unknown section {section!r} (known: {', '.join(_SECTIONS)})")
        cls = _SECTIONS[section]
        known = {f.name: f for f in fields(cls)}
        if name not in known:
            raise ConfigError(f"--set {item!r}: unknown key {name!r} in [{section}] (known: {', '.join(known)})")
        new_val = _coerce(section, name, known[name].type, value)
        _check(section, name, new_val)
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: new_val})})
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML config (or defaults when path is None) and apply overrides."""
    if path is None:
        cfg = RunConfig()
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML ({e})") from None
        cfg = from_dict(raw, source=str(p))
    return apply_overrides(cfg, overrides)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(cfg), indent=2))


def load_config_json(path: str | Path) -> RunConfig:
    raw = json.loads(Path(path).read_text())
    return from_dict(raw, source=str(path))


def cond_dim(model: ModelConfig) -> int:
    """Length of the concatenated one-hot attribute vector (0 for unconditional models)."""
    return 0 if model.conditioning == "none" else len(model.attributes) * model.num_levels
