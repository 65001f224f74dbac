"""Sample diversity: mean pairwise distance between images in the oracle feature space.

A mode-collapsed generator repeats the same faces and its samples sit close together; this is the
feature-space analogue of the pairwise-distance diversity scores used in conditional generation (e.g. the
LPIPS diversity of Zhu et al. 2017, "Toward multimodal image-to-image translation"). Compare a model's value
with the same number computed on real images (``facediff eval`` reports both).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from facediff.errors import FacediffError


def mean_pairwise_distance(features: Any, *, metric: str = "euclidean", max_images: int = 2000,
                           seed: int = 0) -> float:
    """Mean distance over all unordered pairs i < j of (n, d) features (a random ``max_images`` subset when
    larger). ``metric``: "euclidean" or "cosine" (1 - cosine similarity)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise FacediffError(f"diversity needs at least 2 feature vectors (n, d), got shape {f.shape}")
    if len(f) > max_images:
        f = f[np.random.default_rng(seed).choice(len(f), max_images, replace=False)]
    if metric == "euclidean":
        sq = (f * f).sum(1)
        d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0))
    elif metric == "cosine":
        u = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        d = 1.0 - u @ u.T
    else:
        raise FacediffError(f"diversity metric {metric!r}: choose euclidean or cosine")
    iu = np.triu_indices(len(f), k=1)
    return float(d[iu].mean())


def diversity(images: Any, extractor: Any = None, **kwargs: Any) -> float:
    """Mean pairwise oracle-feature distance of images; ``extractor`` defaults to the bundled oracle."""
    from facediff.metrics.features import OracleFeatures

    return mean_pairwise_distance((extractor or OracleFeatures())(images), **kwargs)
