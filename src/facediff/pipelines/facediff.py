"""``FacediffPipeline``: the one object that samples a trained model (CLI, evaluation, experiments, UI).

A ``diffusers.DiffusionPipeline`` with the modules ``unet`` (UNet2DModel or UNet2DConditionModel), ``scheduler``
(the training noise schedule as scheduler config; the sampler is chosen per call), for latent models ``vae``
(VQModel / AutoencoderKL with its ``scaling_factor``) and for text models ``tokenizer`` + ``text_encoder``
(any Stable-Diffusion-format model: ours, or a user's SD 1.x / 2.x folder, loaded by ``load_pipeline``;
text exports are written as plain ``StableDiffusionPipeline`` folders by ``save_pipeline``); the conditioner (which condition fields the
U-Net takes) is built from the pipeline config (``attributes``, ``num_levels``, ``sketch``). ``save_pretrained``
/ ``from_pretrained`` are diffusers' own, so every export is a folder plain diffusers reads component by
component, and an unconditional pixel export loads as a plain ``DDPMPipeline``.

``__call__`` generates in chunks of ``batch_size``; image i uses seed ``seeds[i]`` whatever the chunking.
``callback_on_step_end(pipe, step_index, timestep, {"latents": x, "denoised": x0_hat})`` runs after every step,
with diffusers' signature (``denoised``: the step's estimate of the clean sample, k-diffusion's name, for live
previews); it may return {"latents": ...} to replace them; ``pipe.num_timesteps`` is the step count of the
current chunk; setting ``pipe.interrupt = True`` (e.g. from a UI's cancel button, inside that callback or
from another thread) stops after the current step and returns what is there.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from facediff.conditioning.conditioner import Conditioner
from facediff.conditioning.kinds import ConditionKind, Grid
from facediff.conditioning.registry import kind_class
from facediff.conditioning.text import PromptEncoder
from facediff.errors import FacediffError
from facediff.imaging import to_uint8
from facediff.models.unet import unet_call
from facediff.pipelines.spaces import LatentSpace, PixelSpace
from facediff.progress import Progress, report
from facediff.sampling.guidance import guided_denoiser
from facediff.sampling.precision import autocast_model, sampling_precision
from facediff.sampling.preview import RememberDenoised
from facediff.sampling.samplers import sample

TRAINING_CONFIG = "training_config.json"  # the run's resolved config, written beside the components


@dataclass
class FacediffOutput(BaseOutput):
    images: Any  # uint8 (N, H, W, 3) for output_type "np"; float (N, 3, H, W) in [-1, 1] for "pt"
    interrupted: bool = False  # True when pipe.interrupt stopped sampling early
    precision: str = "no"  # the network's precision: "no" (fp32) or "bf16" (autocast)
    notes: tuple[str, ...] = ()  # how the inputs were read (e.g. a negative prompt's words as the prompt's negation)


class FacediffPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae", "tokenizer", "text_encoder"]

    def __init__(self, unet, scheduler, vae=None, tokenizer=None, text_encoder=None, attributes=(), num_levels=6,
                 sketch=False, conditions=None):
        super().__init__()
        if (tokenizer is None) != (text_encoder is None):
            raise FacediffError("a text model needs both a tokenizer and a text_encoder")
        # vae None: a pixel model; tokenizer/text_encoder None: no text input
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae, tokenizer=tokenizer, text_encoder=text_encoder)
        extra = {"attributes": list(attributes), "num_levels": int(num_levels)} if attributes else {}
        if sketch:
            extra["sketch"] = True
        if conditions:  # the declared condition kinds (descriptions), in channel / vector order
            extra["conditions"] = [dict(d) for d in conditions]
        if extra:
            self.register_to_config(**extra)
        self._conditions = [dict(d) for d in conditions or []]
        self._attributes = tuple(attributes)
        self._num_levels = int(num_levels)
        self._sketch = bool(sketch)
        self.interrupt = False
        self.num_timesteps = 0  # network calls of the current chunk (diffusers' pipelines have the same)
        self.network_evaluations = 0  # U-Net calls (a guided batch counts once), for timing metrics
        self.training_config: dict[str, Any] | None = None  # the run's config, when known

    # -- what the model is ---------------------------------------------------------------------------
    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def space(self) -> PixelSpace | LatentSpace:
        """The encoder/decoder between images and the diffusion space (identity for pixel models)."""
        return LatentSpace(self.vae) if self.vae is not None else PixelSpace()

    @property
    def grid(self) -> Grid:
        return Grid(self.sample_size, self.latent_shape[1])

    @property
    def condition_kinds(self) -> tuple[ConditionKind, ...]:
        """The model's condition kinds: its ``conditions`` config (descriptions, in channel / vector order),
        or for models saved before it the keys ``attributes`` / ``sketch`` and a text encoder."""
        text = PromptEncoder(self.tokenizer, self.text_encoder, getattr(self, "prompt_chunk_tokens", None),
                             getattr(self, "prompt_whole_tokens", None),
                             bool(getattr(self, "negative_words_as_negation", False))) if self.takes_text else None
        if not self._conditions:
            return Conditioner.from_parts(self._attributes, self._num_levels,
                                          self.latent_shape[1] if self._sketch else None, text, self.grid).kinds
        return tuple(kind_class(d["kind"]).from_description(d, self.grid, prompt_encoder=text)
                     for d in self._conditions)

    @property
    def conditioner(self) -> Conditioner:
        return Conditioner(self.condition_kinds, self.grid)

    @property
    def takes_text(self) -> bool:
        return getattr(self, "text_encoder", None) is not None

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.conditioner.attributes if self._conditions else self._attributes

    @property
    def num_levels(self) -> int:
        return self.conditioner.num_levels if self._conditions else self._num_levels

    @property
    def conditional(self) -> bool:
        """Attribute-conditional?"""
        return bool(self.attributes)

    @property
    def takes_sketch(self) -> bool:
        return self.conditioner.takes_sketch

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the space the diffusion runs in (pixels for pixel models)."""
        s = int(self.unet.config.sample_size)
        return (int(self.unet.config.out_channels), s, s)

    @property
    def sample_size(self) -> int:
        """Side in pixels of the generated images."""
        return self.latent_shape[1] * self.space.downsample

    # -- one network call ----------------------------------------------------------------------------
    def denoise_fn(self, x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        """f(x_t, t, **condition) with the pipeline's U-Net."""
        self.network_evaluations += 1
        return unet_call(self.unet, x, t, **cond)

    # -- generation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, n: int = 1, *, attrs: Mapping[str, int] | Sequence[Mapping[str, int] | None] | None = None,
                 sketch: str | Path | np.ndarray | torch.Tensor | None = None,
                 prompt: str | Sequence[str] | None = None, negative_prompt: str | Sequence[str] | None = None,
                 guidance: float = 3.0,
                 attr_scales: Mapping[str, float] | None = None, sampler: str = "dpmpp", steps: int = 25,
                 seed: int = 0, seeds: Sequence[int] | None = None, eta: float = 0.0, init_noise: str = "normal",
                 step_noise: bool = True, batch_size: int = 64, output_type: str = "np",
                 precision: str = "no", callback_on_step_end: Callable[..., dict | None] | None = None,
                 progress: Progress | None = None, conditions: Mapping[str, Any] | None = None) -> FacediffOutput:
        """Generate ``n`` faces (or ``len(seeds)``). ``conditions``: {kind name: one value for all images, or
        one per image} for any condition kind the model declares; the built-in kinds also by keyword:
        ``attrs``: one dict for all images or one per image;
        ``sketch``: a PNG path / uint8 array (dark lines on light paper) or ink maps (n or 1, 1, h, w);
        ``prompt`` / ``negative_prompt``: one text for all images or one per image (text models);
        ``precision``: the network's, "no" (fp32), "bf16" (autocast) or "auto" (bf16 where measured faster
        on this machine; ``sampling.precision``)."""
        seeds = list(seeds) if seeds is not None else [seed + i for i in range(n)]
        n = len(seeds)
        if n < 1 or steps < 1 or batch_size < 1:
            raise FacediffError(f"n = {n}, steps = {steps}, batch_size = {batch_size}: each must be at least 1")
        if not np.isfinite(guidance):
            raise FacediffError(f"guidance = {guidance}: must be a finite number (1 = no guidance)")
        if output_type not in ("np", "pt"):
            raise FacediffError(f"output_type = {output_type!r}: choose np or pt")
        conditioner = self.conditioner
        values = conditioner.gather(n, conditions, attrs=attrs, sketch=sketch, prompt=prompt)
        negatives = conditioner.per_image("negative prompt", negative_prompt, n)  # checked by branches()
        values, negatives, notes = conditioner.read_negatives(values, negatives)
        device = self.device
        mixed, _ = sampling_precision(precision, device)
        model_fn = autocast_model(self.denoise_fn, mixed, device)
        self.interrupt = False
        outs, interrupted = [], False
        chunks = [slice(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
        done_before = [0]

        for sl in chunks:
            m = sl.stop - sl.start
            chunk_neg = None if all(p is None for p in negatives[sl]) else [p or "" for p in negatives[sl]]
            cond = conditioner.encode_values(m, {name: rows[sl] for name, rows in values.items()})
            denoise = RememberDenoised(guided_denoiser(model_fn, conditioner.branches(cond, guidance, attr_scales,
                                                                      chunk_neg)), self.scheduler.config)

            def on_step(done: int, total: int, t: torch.Tensor, x: torch.Tensor) -> bool:
                self.num_timesteps = total
                if callback_on_step_end is not None:
                    changed = callback_on_step_end(self, done - 1, t, {"latents": x, "denoised": denoise.denoised()})
                    if changed and "latents" in changed:
                        x.copy_(changed["latents"])
                report(progress, "sample", done_before[0] + done, total * len(chunks), preview=x)
                return bool(self.interrupt)

            z = sample(denoise, (m, *self.latent_shape), scheduler_config=dict(self.scheduler.config),
                       sampler=sampler, steps=steps, seeds=seeds[sl], eta=eta, init_noise=init_noise,
                       step_noise=step_noise, device=device, callback=on_step)
            done_before[0] += _calls_per_sample(sampler, steps)
            outs.append(self.space.decode(z).float().clamp(-1, 1).cpu())
            if self.interrupt:
                interrupted = True
                break
        images = torch.cat(outs)
        return FacediffOutput(images=to_uint8(images) if output_type == "np" else images, interrupted=interrupted,
                              precision=mixed, notes=tuple(notes))


def _calls_per_sample(sampler: str, steps: int) -> int:
    """Network calls (= progress units) of one chunk: Heun's first interval is one Euler step."""
    return 2 * steps - 2 if sampler == "heun" and steps > 1 else steps
