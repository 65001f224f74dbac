"""Attribute estimator: a small CNN that reads the attribute levels of a face image.

Seed 002 (Sec. 3.2) estimates each CelebA-Dialog attribute with its own classifier head — 20 % dropout
followed by one linear layer with as many outputs as levels — on top of a shared feature extractor
(there a ResNet-50). Here the trunk is a small residual CNN sized for 32/64 px faces, so that it trains
on a CPU in minutes. The trunk's output vector is also the **oracle feature space** in which
facediff measures FD_oracle, KID and diversity (the role Inception-v3's pool features play in FID,
Heusel et al. 2017).

Weights are stored as ``model.safetensors`` beside ``config.json`` (never pickle).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.errors import FacediffError

FORMAT = "facediff-estimator/1"


@dataclass(frozen=True)
class EstimatorConfig:
    size: int = 32  # inputs are resized (antialiased bilinear) to size x size before the trunk
    in_channels: int = 3  # image channels
    widths: tuple[int, ...] = (16, 32, 64, 128)  # channels of the trunk stages; each stage after the first halves H, W
    feature_dim: int = 256  # length of the feature vector (the oracle feature space)
    pool: int = 2  # the last feature map is average-pooled to pool x pool and flattened (keeps coarse layout)
    norm_groups: int = 8  # GroupNorm groups in the trunk
    dropout: float = 0.2  # dropout before each head (seed 002: 20 %)
    attributes: tuple[str, ...] = ATTRIBUTES  # one head per attribute
    num_levels: int = NUM_LEVELS  # outputs per attribute head
    styles: tuple[str, ...] = ()  # class names of the optional style head (e.g. human, anime); () = no head
    hair_colours: tuple[str, ...] = ()  # class names of the optional hair-colour head; () = no head


class _ResBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016, "Identity mappings in deep residual networks")."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.n1 = nn.GroupNorm(min(groups, cin), cin)
        self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.n2 = nn.GroupNorm(min(groups, cout), cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.skip = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class AttributeEstimator(nn.Module):
    """Shared trunk -> feature vector -> (dropout -> linear) per attribute (+ optional style / hair heads).

    Input: float images in [-1, 1], shape (B, C, H, W), any H, W (resized to ``config.size``).
    """

    def __init__(self, config: EstimatorConfig | None = None):
        super().__init__()
        self.config = cfg = config or EstimatorConfig()
        if not cfg.widths:
            raise FacediffError("estimator config: widths must list at least one stage width")
        self.stem = nn.Conv2d(cfg.in_channels, cfg.widths[0], 3, padding=1, bias=False)
        blocks, cin = [], cfg.widths[0]
        for i, w in enumerate(cfg.widths):
            blocks.append(_ResBlock(cin, w, stride=1 if i == 0 else 2, groups=cfg.norm_groups))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.GroupNorm(min(cfg.norm_groups, cin), cin)
        self.proj = nn.Linear(cin * cfg.pool * cfg.pool, cfg.feature_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict({a: nn.Linear(cfg.feature_dim, cfg.num_levels) for a in cfg.attributes})
        if cfg.styles:
            self.heads["style"] = nn.Linear(cfg.feature_dim, len(cfg.styles))
        if cfg.hair_colours:
            self.heads["hair_colour"] = nn.Linear(cfg.feature_dim, len(cfg.hair_colours))

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) feature vectors: the oracle feature space (no dropout involved)."""
        h = self.blocks(self.stem(self._resize(x)))
        h = F.silu(self.norm(h))
        h = F.adaptive_avg_pool2d(h, self.config.pool).flatten(1)
        return F.silu(self.proj(h))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head: {attribute: (B, num_levels), ["style"], ["hair_colour"]}."""
        f = self.drop(self.features(x))
        return {name: head(f) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Arg-max class per head (int64, (B,)); runs in eval mode without changing the module's mode."""
        was = self.training
        self.eval()
        try:
            return {k: v.argmax(1) for k, v in self(x).items()}
        finally:
            self.train(was)


def config_to_dict(cfg: EstimatorConfig) -> dict:
    return {"format": FORMAT, **json.loads(json.dumps(dataclasses.asdict(cfg)))}


def config_from_dict(raw: dict, source: str = "config.json") -> EstimatorConfig:
    """Build an EstimatorConfig; unknown keys are errors."""
    raw = dict(raw)
    fmt = raw.pop("format", FORMAT)
    if fmt != FORMAT:
        raise FacediffError(f"{source}: format {fmt!r} is not {FORMAT!r}; this is not a facediff estimator")
    known = {f.name: f for f in dataclasses.fields(EstimatorConfig)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise FacediffError(f"{source}: unknown estimator config key(s) {', '.join(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return EstimatorConfig(**kwargs)


def save_estimator(model: AttributeEstimator, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``directory`` (created if needed)."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(d / "model.safetensors"), metadata={"format": FORMAT})
    (d / "config.json").write_text(json.dumps(config_to_dict(model.config), indent=2))
    return d


def load_estimator(directory: str | Path, device: str | torch.device = "cpu") -> AttributeEstimator:
    """Load an estimator saved by :func:`save_estimator` (eval mode)."""
    from safetensors.torch import load_file

    d = Path(directory)
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise FacediffError(f"{d} is not an attribute estimator (needs config.json and model.safetensors); "
                            "train one with `facediff train estimator`")
    cfg = config_from_dict(json.loads((d / "config.json").read_text()), source=str(d / "config.json"))
    model = AttributeEstimator(cfg)
    try:
        model.load_state_dict(load_file(str(d / "model.safetensors"), device="cpu"))
    except RuntimeError as e:
        raise FacediffError(f"{d / 'model.safetensors'} does not match {d / 'config.json'}: "
                            f"{str(e).splitlines()[0]}") from None
    return model.to(device).eval()
