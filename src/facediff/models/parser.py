"""Face-parsing estimator (the "mask oracle"): image -> per-pixel ``PARSING_CLASSES`` logits.

A small U-Net (Ronneberger et al. 2015) built from diffusers' ``UNet2DModel`` blocks (ResNet down/up blocks,
no attention) with ``out_channels`` = the number of classes, called at a constant timestep 0, so its time
embedding is a learned bias: a segmentation network, not a denoiser. It is trained with per-pixel cross-entropy
(``facediff.training.parser``) on SynthFaces ground truth; its mIoU on real images against their own masks is the
ceiling a mask-conditioned model is measured against (``facediff.metrics.parsing``).

Inputs of another side than ``config.size`` are resized to it (smaller ones, e.g. 32 px, bicubic; larger ones
bilinear, antialiased) and the logits resized back (to a smaller side by area averaging: each output pixel
averages exactly the logits of the pixels it covers), so the output always has the input's H x W.

Weights are ``model.safetensors`` beside ``config.json`` (never pickle); ``load_bundled_parser`` reads the copy
shipped in ``facediff/assets/parser``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facediff.data.parsing import PARSING_CLASSES
from facediff.errors import FacediffError

FORMAT = "facediff-parser/1"


@dataclass(frozen=True)
class ParserConfig:
    size: int = 64  # the network's input side; other sides are resized to it and the logits back
    classes: tuple[str, ...] = PARSING_CLASSES  # output classes (index = id)
    block_out_channels: tuple[int, ...] = (16, 32, 64)  # U-Net widths; each level after the first halves H, W
    layers_per_block: int = 1  # ResNet blocks per down level (up levels have one more)
    norm_num_groups: int = 8  # GroupNorm groups


def build_unet(cfg: ParserConfig) -> nn.Module:
    from diffusers import UNet2DModel

    n = len(cfg.block_out_channels)
    if n < 1 or cfg.size % (2 ** (n - 1)):
        raise FacediffError(f"parser config: size {cfg.size} must be divisible by 2^(levels - 1) = {2 ** (n - 1)}")
    return UNet2DModel(sample_size=cfg.size, in_channels=3, out_channels=len(cfg.classes),
                       block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                       down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                       norm_num_groups=cfg.norm_num_groups, add_attention=False)


def upsample(x: torch.Tensor, size: int) -> torch.Tensor:
    """Images in [-1, 1] enlarged to ``size`` (bicubic, clamped): how the parser reads small inputs."""
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(-1.0, 1.0)


class FaceParser(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> logits (B, classes, H, W)."""

    def __init__(self, config: ParserConfig | None = None):
        super().__init__()
        self.config = config or ParserConfig()
        self.unet = build_unet(self.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.size
        h, w = x.shape[-2:]
        if (h, w) != (s, s):
            x = upsample(x, s) if h < s and w < s else F.interpolate(x, size=(s, s), mode="bilinear",
                                                                     align_corners=False, antialias=True)
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # constant: the embedding is a bias
        logits = self.unet(x, t).sample
        if (h, w) != (s, s):
            logits = F.interpolate(logits, size=(h, w), mode="area") if h < s and w < s else F.interpolate(
                logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Arg-max class ids (int64, (B, H, W)) in eval mode, without changing the module's mode."""
        was = self.training
        self.eval()
        try:
            return self(x).argmax(1)
        finally:
            self.train(was)

    @torch.no_grad()
    def parse(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """uint8 RGB images (N, H, W, 3) -> uint8 parsing maps (N, H, W)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise FacediffError(f"face parser: images must be uint8 (N, H, W, 3); got shape {images.shape}")
        device = next(self.parameters()).device
        out = []
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)
            x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
            out.append(self.predict(x).to(torch.uint8).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), dtype=np.uint8)


def config_to_dict(cfg: ParserConfig) -> dict:
    return {"format": FORMAT, **json.loads(json.dumps(dataclasses.asdict(cfg)))}


def config_from_dict(raw: dict, source: str = "config.json") -> ParserConfig:
    """A ParserConfig; unknown keys are errors."""
    raw = dict(raw)
    fmt = raw.pop("format", None)
    if fmt != FORMAT:
        raise FacediffError(f"{source}: format {fmt!r} is not {FORMAT!r}; this is not a facediff face parser")
    unknown = sorted(set(raw) - {f.name for f in dataclasses.fields(ParserConfig)})
    if unknown:
        raise FacediffError(f"{source}: unknown face-parser config key(s) {', '.join(unknown)}")
    return ParserConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def save_parser(model: FaceParser, directory: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (tensors stored as ``dtype``; float16 halves a bundle)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().to(dtype if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(d / "model.safetensors"), metadata={"format": FORMAT})
    (d / "config.json").write_text(json.dumps(config_to_dict(model.config), indent=2))
    return d


def load_parser(directory: str | Path, device: str | torch.device = "cpu") -> FaceParser:
    """Load a parser saved by ``save_parser`` (a ``RUN/parser`` folder, or the run directory itself), in eval
    mode and float32."""
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / "model.safetensors").is_file() and (d / "parser" / "model.safetensors").is_file():
        d = d / "parser"
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise FacediffError(f"{d} is not a face parser (needs config.json and model.safetensors); "
                            "train one with `facediff train parser`")
    try:
        raw = json.loads((d / "config.json").read_text())
    except ValueError as e:
        raise FacediffError(f"{d / 'config.json'}: not valid JSON ({e})") from None
    model = FaceParser(config_from_dict(raw, source=str(d / "config.json")))
    try:
        state = {k: v.float() for k, v in load_file(str(d / "model.safetensors"), device="cpu").items()}
        model.load_state_dict(state)
    except Exception as e:  # safetensors header errors, shape mismatches
        raise FacediffError(f"{d / 'model.safetensors'} does not match {d / 'config.json'}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return model.to(device).eval()


def bundled_parser_dir() -> Path:
    """Directory of the bundled face parser (``facediff/assets/parser``)."""
    return Path(str(resources.files("facediff") / "assets" / "parser"))


def load_bundled_parser(device: str | torch.device = "cpu") -> FaceParser:
    """The face parser shipped with facediff (trained on mixed-style SynthFaces; its measured held-out mIoU
    and the command that trained it are in ``assets/parser/metrics.json``)."""
    d = bundled_parser_dir()
    if not (d / "model.safetensors").is_file():
        raise FacediffError(f"no bundled face parser in {d}; reinstall facediff or train one with "
                            "`facediff train parser`")
    return load_parser(d, device)
