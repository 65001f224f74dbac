"""Reconstruction metrics for autoencoders: PSNR, SSIM (Wang et al. 2004) and LPIPS (Zhang et al. 2018).

PSNR and SSIM use torchmetrics' functional implementations (SSIM: 11x11 Gaussian window, sigma 1.5,
K1 = 0.01, K2 = 0.03, as Wang et al.), computed per image on [0, 1] RGB and averaged. LPIPS needs
pretrained backbone + linear-layer weights that cannot ship with facediff: it runs only when the user
gives them (``--lpips-weights``) and their environment has the ``lpips`` package.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from facediff.errors import FacediffError
from facediff.metrics.features import to_input


def _pair(a: Any, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Two image batches -> float64 (B, 3, H, W) in [0, 1] (uint8 (B, H, W, 3) or float in [-1, 1])."""
    x, y = to_input(a).double(), to_input(b).double()
    if x.shape != y.shape:
        raise FacediffError(f"image metrics: batches differ in shape {tuple(x.shape)} vs {tuple(y.shape)}")
    return ((x + 1) / 2).clamp(0, 1), ((y + 1) / 2).clamp(0, 1)


def psnr(a: Any, b: Any) -> float:
    """Mean over images of PSNR = 10 log10(1 / MSE) in dB on [0, 1] images (identical images: inf)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    x, y = _pair(a, b)
    vals = peak_signal_noise_ratio(x, y, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return float(vals.mean())


def ssim(a: Any, b: Any) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window 11, sigma 1.5) on [0, 1] images; 1 for identical images."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    x, y = _pair(a, b)
    return float(structural_similarity_index_measure(x, y, data_range=1.0, gaussian_kernel=True, sigma=1.5,
                                                     kernel_size=11, reduction="elementwise_mean"))


def load_lpips(weights: str | Path | None, net: str = "alex", what: str = "--lpips-weights") -> torch.nn.Module:
    """LPIPS (Zhang et al. 2018) with every weight from the user's ``.safetensors`` file (backbone + linear
    layers, the ``lpips`` package's state-dict keys): nothing is unpickled and nothing is downloaded."""
    if weights is None:
        raise FacediffError("LPIPS needs pretrained weights that facediff cannot download: pass "
                            f"{what} PATH (a .safetensors state dict of lpips.LPIPS) or drop lpips from --metrics")
    path = Path(weights)
    if not path.is_file():
        raise FacediffError(f"{what} {weights}: file not found")
    if path.suffix != ".safetensors":
        raise FacediffError(f"{what} {weights}: facediff loads weights from .safetensors only (it never unpickles "
                            "a .pth); convert it once, where you trust it, to .safetensors (safetensors.torch.save_file)")
    try:
        import lpips as lpips_pkg  # imports torchvision; only in the user's environment
        model = lpips_pkg.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
    except Exception:
        raise FacediffError("LPIPS needs the lpips package and a working torchvision: pip install lpips where "
                            "torchvision works, or drop lpips") from None
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(path)))
    except Exception as e:
        raise FacediffError(f"{what} {weights}: not an lpips.LPIPS({net!r}) state dict "
                            f"({str(e).splitlines()[0][:120]})") from None
    return model.eval().requires_grad_(False)


def lpips(a: Any, b: Any, weights: str | Path | None = None, net: str = "alex") -> float:
    """Mean LPIPS distance (Zhang et al. 2018) with the user's local weights (``load_lpips``)."""
    model = load_lpips(weights, net)
    x, y = to_input(a), to_input(b)
    with torch.no_grad():
        return float(model(x, y).mean())


def seam_ratio(images: Any, every_px: int, skip_every: int | None = None) -> float:
    """Mean absolute image gradient across the lines x, y = k * ``every_px`` (0 < x < W; the borders of
    composition windows) over the mean absolute gradient everywhere: 1 = the borders are as smooth as the rest,
    > 1 = visible seams (issue 26: <= 1.2). Lines at multiples of ``skip_every`` are left out (the borders
    between two regions, where the picture changes from one face to the next anyway). ``images``: uint8
    (n, H, W, 3)."""
    import numpy as np

    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or every_px < 1:
        raise FacediffError(f"seam ratio: expected images (n, H, W, 3) and every_px >= 1, got {x.shape}, {every_px}")
    gx, gy = np.abs(np.diff(x, axis=2)), np.abs(np.diff(x, axis=1))  # gx[:, :, i] is between columns i and i + 1
    keep = (lambda v: v % skip_every != 0) if skip_every else (lambda v: True)
    cols = [c - 1 for c in range(every_px, x.shape[2], every_px) if keep(c)]
    rows = [r - 1 for r in range(every_px, x.shape[1], every_px) if keep(r)]
    if not cols and not rows:
        raise FacediffError(f"seam ratio: no window border inside a {x.shape[2]}x{x.shape[1]} image every {every_px} px")
    at = np.concatenate([gx[:, :, cols].ravel(), gy[:, rows].ravel()])
    everywhere = np.concatenate([gx.ravel(), gy.ravel()])
    return float(at.mean() / max(everywhere.mean(), 1e-12))
