"""Feature extractors for the distribution metrics, kept apart from the math in ``fd.py``.

* :class:`OracleFeatures` — the attribute estimator's feature vector (``AttributeEstimator.features``);
  with the bundled SynthFaces oracle this is the space of **FD_oracle**, oracle KID and diversity.
* :class:`InceptionFeatures` — the standard Inception-v3 pool3 features of FID (Heusel et al. 2017) via
  torch-fidelity, only where the user's environment has it and its weights (it needs torchvision).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facediff.data.imageio import resize_batch
from facediff.errors import FacediffError
from facediff.models.estimator import AttributeEstimator, load_estimator

INCEPTION_MESSAGE = ("Inception FID needs torch-fidelity and its weights: pip install torch-fidelity on a machine "
                     "where torchvision works, or use fd_oracle")


def oracle_dir() -> Path:
    """Directory of the bundled SynthFaces oracle (``facediff/assets/oracle``)."""
    return Path(str(resources.files("facediff") / "assets" / "oracle"))


def load_oracle(device: str | torch.device = "cpu") -> AttributeEstimator:
    """The bundled SynthFaces oracle estimator (eval mode)."""
    d = oracle_dir()
    if not (d / "model.safetensors").is_file():
        raise FacediffError(f"the bundled oracle is missing from {d}; reinstall facediff or train one with "
                            "facediff.experiments.oracle.train_oracle")
    return load_estimator(d, device=device)


def to_input(images: Any) -> torch.Tensor:
    """Images -> float32 (B, 3, H, W) in [-1, 1].

    Accepts uint8 arrays/tensors (B, H, W, 3) or (B, 3, H, W) in 0..255, or float tensors/arrays
    (B, 3, H, W) already in [-1, 1].
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim != 4:
        raise FacediffError(f"images: expected a 4-D batch, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.permute(0, 3, 1, 2)
        x = x.float() / 127.5 - 1.0
    else:
        x = x.float()
        if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            raise FacediffError("float images must be (B, 3, H, W) in [-1, 1]; pass uint8 for (B, H, W, 3)")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


class OracleFeatures:
    """Feature vectors (float64 numpy (n, feature_dim)) of an attribute estimator, in batches, no grad."""

    def __init__(self, model: AttributeEstimator | None = None, batch_size: int = 256,
                 device: str | torch.device = "cpu"):
        self.model = (model if model is not None else load_oracle(device)).to(device).eval()
        self.batch_size, self.device = batch_size, device

    @property
    def dim(self) -> int:
        return self.model.config.feature_dim

    def _input(self, images: Any) -> torch.Tensor:
        """A batch as the estimator was trained on it: images of another size than its input go through the
        toolkit's one resize (``resize_batch``: square crop + Lanczos, on uint8), as its training images did.
        The estimator's own antialiased-bilinear resize is for differentiable use (a perceptual loss): the oracle
        read 64 px SynthFaces through it at 89 % smiling, through this at 98.5 %."""
        x = to_input(images)
        s = self.model.config.size
        if tuple(x.shape[-2:]) != (s, s):
            u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            x = to_input(resize_batch(u8, s))
        return x.to(self.device)

    @torch.no_grad()
    def __call__(self, images: Any) -> np.ndarray:
        out = [self.model.features(self._input(images[i:i + self.batch_size])).double().cpu()
               for i in range(0, len(images), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim))

    @torch.no_grad()
    def predict(self, images: Any) -> dict[str, np.ndarray]:
        """Arg-max class per head (int64 numpy (n,)) in batches."""
        parts: dict[str, list[np.ndarray]] = {}
        for i in range(0, len(images), self.batch_size):
            for k, v in self.model.predict(self._input(images[i:i + self.batch_size])).items():
                parts.setdefault(k, []).append(v.cpu().numpy())
        return {k: np.concatenate(v) for k, v in parts.items()}


class InceptionFeatures:
    """Inception-v3 pool3 (2048-d) features as in FID, through torch-fidelity ("inception-v3-compat").

    ``weights``: local path of torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``; None lets
    torch-fidelity use its cache (it downloads there when online). Raises FacediffError when torch-fidelity,
    torchvision or the weights are unavailable.
    """

    def __init__(self, weights: str | Path | None = None, batch_size: int = 64, device: str | torch.device = "cpu"):
        if weights is not None and not Path(weights).is_file():
            raise FacediffError(f"Inception weights {weights} not found; {INCEPTION_MESSAGE}")
        if weights is not None:
            weights = self._from_safetensors(Path(weights))
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except Exception:  # ImportError, or torchvision failing to import beside this torch
            raise FacediffError(INCEPTION_MESSAGE) from None
        try:
            self.model = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048"],
                **({"feature_extractor_weights_path": str(weights)} if weights is not None else {}))
        except Exception:
            raise FacediffError(INCEPTION_MESSAGE) from None
        self.model = self.model.to(device).eval()
        self.batch_size, self.device = batch_size, device

    @staticmethod
    def _from_safetensors(path: Path) -> Path:
        """torch-fidelity reads a torch.save file; facediff never unpickles a user's file, so the user gives a
        .safetensors (converted once from torch-fidelity's .pth) and torch-fidelity reads our own re-save of
        its tensors (a plain tensor dict that we wrote, loaded with torch.load's weights_only default)."""
        import tempfile

        from safetensors.torch import load_file

        if path.suffix != ".safetensors":
            raise FacediffError(f"Inception weights {path}: facediff loads .safetensors only (it never unpickles "
                                "a .pth); convert it once, where you trust it, to .safetensors (safetensors.torch.save_file)")
        out = Path(tempfile.mkdtemp(prefix="facediff-inception-")) / "weights.pth"
        torch.save(load_file(str(path)), out)
        return out

    @property
    def dim(self) -> int:
        return 2048

    @torch.no_grad()
    def __call__(self, images: Any) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = to_input(images[i:i + self.batch_size])
            x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).to(self.device)  # it expects uint8
            out.append(self.model(x)[0].double().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim))
