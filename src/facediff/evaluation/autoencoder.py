"""``facediff eval`` of an autoencoder: PSNR, SSIM, codebook usage/perplexity (+ LPIPS with user weights),
FD_oracle of the reconstructions, and a report with originals over reconstructions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facediff.data.imageio import resize_batch
from facediff.data.prepared import PreparedDataset
from facediff.errors import FacediffError
from facediff.imaging import make_grid, to_uint8
from facediff.metrics.reconstruction import reconstruct_images, reconstruction_metrics
from facediff.models.autoencoder import is_vq, vae_downsample
from facediff.training.autoencoder import load_autoencoder


def evaluate_autoencoder(model: str | Path, data: str | Path, *, n: int = 256, split: str = "val", batch: int = 64,
                         lpips_weights: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Reconstruction metrics of an autoencoder run/export dir on up to ``n`` images of a prepared data set's
    ``split`` ("" = all), resized to the autoencoder's sample size when they differ."""
    if n < 1:
        raise FacediffError(f"--n {n}: must be at least 1")
    ae = load_autoencoder(model, device=device)
    ds = PreparedDataset(data, split=split or None)
    images = resize_batch(ds.images(np.arange(min(n, len(ds)))), int(ae.config.sample_size))
    res = reconstruction_metrics(ae, images, batch=batch, lpips_weights=lpips_weights)
    return {**res, "model": str(model), "data": str(data), "split": split or "all",
            "ae_kind": "vq" if is_vq(ae) else "kl", "downsample": vae_downsample(ae)}


def evaluate_autoencoder_report(model: str | Path, data: str | Path, *, n: int, split: str | None,
                                out: str | Path | None, lpips_weights: str | None = None) -> dict[str, Any]:
    """``evaluate_autoencoder`` + (with ``out``) report.html / metrics.json with a reconstruction grid."""
    from facediff.report.html import write_report

    res = evaluate_autoencoder(model, data, n=n, split=split or "", lpips_weights=lpips_weights)
    if out is not None:
        ae = load_autoencoder(model)
        imgs = resize_batch(PreparedDataset(data, split=split).images(np.arange(16)), int(ae.config.sample_size))
        x, x_hat, _ = reconstruct_images(ae, imgs)
        grid = make_grid(np.concatenate([to_uint8(x), to_uint8(x_hat)]), 16, scale=max(1, 64 // imgs.shape[1]))
        write_report(out, res, grids={"originals (top) and reconstructions (bottom)": grid},
                     title=f"facediff evaluation: autoencoder {model}")
    return res
