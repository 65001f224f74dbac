"""Held-out reconstruction quality of an autoencoder: PSNR, SSIM and (VQ) codebook usage / perplexity.

The reconstruction is the deterministic x_hat = D(q(E(x))) (VQ: nearest code; KL: posterior mean), clamped
to [-1, 1] as a user would see it, compared with x on [0, 1] RGB (``facediff.metrics.image``: PSNR =
10 log10(1 / MSE) per image, averaged; SSIM of Wang et al. 2004). LPIPS (Zhang et al. 2018) is added when
the user gives its weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from facediff.errors import FacediffError
from facediff.imaging import from_uint8
from facediff.metrics.image import lpips as lpips_distance
from facediff.metrics.image import psnr, ssim
from facediff.models.autoencoder import Autoencoder, code_counts, codebook, codebook_stats, is_vq, reconstruct


@torch.no_grad()
def reconstruct_images(ae: Autoencoder, images_uint8: np.ndarray, batch: int = 64
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(x, x_hat, code counts): float (N, 3, H, W) in [-1, 1] originals and clamped reconstructions."""
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3 or images_uint8.dtype != np.uint8:
        raise FacediffError(f"reconstruction metrics need uint8 images (N, H, W, 3), got {images_uint8.dtype} "
                            f"{tuple(images_uint8.shape)}")
    was = ae.training
    ae.eval()
    device = next(ae.parameters()).device
    xs, outs, counts = [], [], None
    try:
        for i in range(0, len(images_uint8), max(1, batch)):
            x = from_uint8(images_uint8[i:i + batch]).to(device)
            x_hat, idx = reconstruct(ae, x)
            xs.append(x.cpu())
            outs.append(x_hat.float().clamp(-1, 1).cpu())
            if idx is not None:
                c = code_counts(idx.cpu(), codebook(ae).shape[0])
                counts = c if counts is None else counts + c
    finally:
        ae.train(was)
    return torch.cat(xs), torch.cat(outs), counts


def reconstruction_metrics(ae: Autoencoder, images_uint8: np.ndarray, batch: int = 64,
                           lpips_weights: str | Path | None = None) -> dict[str, Any]:
    """{"psnr" (dB), "ssim", "codebook_usage", "perplexity"} (+ "lpips" with weights) on ``images_uint8``.

    PSNR is the mean of per-image PSNR on [0, 1] images (inf when every image is reconstructed exactly).
    Codebook entries are None for KL autoencoders.
    """
    if len(images_uint8) == 0:
        raise FacediffError("reconstruction metrics: no images to evaluate")
    x, x_hat, counts = reconstruct_images(ae, images_uint8, batch)
    out: dict[str, Any] = {"psnr": psnr(x, x_hat), "ssim": ssim(x, x_hat), "n": len(x)}
    if is_vq(ae) and counts is not None:
        out.update(codebook_stats(counts))
        out["codebook_size"] = int(codebook(ae).shape[0])
    else:
        out.update({"codebook_usage": None, "perplexity": None})
    if lpips_weights:
        out["lpips"] = lpips_distance(x, x_hat, weights=lpips_weights)
    out["fd_oracle"] = None  # FD between originals and reconstructions in the oracle's feature space
    if len(x) >= 4:
        try:
            from facediff.metrics.fd import fd_from_features
            from facediff.metrics.features import OracleFeatures

            ex = OracleFeatures()
            out["fd_oracle"] = fd_from_features(ex(x), ex(x_hat))
        except FacediffError:  # no bundled oracle in this install
            pass
    return out
