"""Fréchet distance and kernel distance between two sets of feature vectors — the pure math.

* Fréchet distance (Heusel et al. 2017, "GANs trained by a two time-scale update rule converge to a
  local Nash equilibrium"), between Gaussians N(mu1, S1) and N(mu2, S2) fitted to the features:
      d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).
  With Inception-v3 pool features this is FID; with the oracle's features facediff calls it FD_oracle.
* Kernel distance, KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the unbiased estimate of the
  squared MMD with the polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
  (mean and standard deviation reported, as in the paper and torch-fidelity / torchmetrics).
* FD paired by condition (seed 002, Sec. 3.2): real and generated images are grouped by the condition
  they share; FD is computed per group and averaged over groups.

Everything is float64 numpy; feature extraction lives in ``facediff.metrics.features``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import linalg

from facediff.errors import FacediffError


def _as_features(f: Any, name: str) -> np.ndarray:
    a = np.asarray(f, dtype=np.float64)
    if a.ndim != 2:
        raise FacediffError(f"{name}: expected a 2-D (n, d) feature array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise FacediffError(f"{name}: features contain NaN or inf (the images or the extractor are broken)")
    return a


def stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of an (n, d) feature array, float64."""
    f = _as_features(features, "features")
    if len(f) < 2:
        raise FacediffError(f"Fréchet distance needs at least 2 images per set, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017).

    ``(S1 S2)^{1/2}`` by ``scipy.linalg.sqrtm``; when the product is singular (non-finite result, e.g. fewer
    samples than dimensions) ``eps * I`` is added to both covariances, as in the reference TTUR / pytorch-fid
    code. A negligible imaginary part from round-off is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise FacediffError(f"Fréchet distance: shapes do not match (mu {mu1.shape} vs {mu2.shape}, "
                            f"sigma {s1.shape} vs {s2.shape})")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            # Large imaginary parts only come from badly conditioned covariances; regularise and retry.
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
        covmean = covmean.real
    fd = diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)
    return float(max(fd, 0.0))


def fd_from_features(f1: Any, f2: Any) -> float:
    """Fréchet distance between the Gaussians fitted to two (n, d) feature arrays."""
    return frechet_distance(*stats(f1), *stats(f2))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    """Unbiased MMD^2 with k(a, b) = (gamma a.b + coef0)^degree (Binkowski et al. 2018, Eq. 2)."""
    m, n = len(x), len(y)
    kxx = (gamma * x @ x.T + coef0) ** degree
    kyy = (gamma * y @ y.T + coef0) ** degree
    kxy = (gamma * x @ y.T + coef0) ** degree
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(f1: Any, f2: Any, subsets: int = 100, subset_size: int = 1000, *, degree: int = 3,
        gamma: float | None = None, coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): (mean, std) of the unbiased MMD^2 over subsets.

    Each of ``subsets`` draws ``subset_size`` rows without replacement from each set (``subset_size`` is
    capped at the smaller set). Polynomial kernel with ``gamma = 1/d`` unless given.
    """
    x, y = _as_features(f1, "features 1"), _as_features(f2, "features 2")
    if x.shape[1] != y.shape[1]:
        raise FacediffError(f"KID: feature lengths differ ({x.shape[1]} vs {y.shape[1]})")
    size = min(subset_size, len(x), len(y))
    if size < 2:
        raise FacediffError(f"KID needs at least 2 images per set, got {len(x)} and {len(y)}")
    g = 1.0 / x.shape[1] if gamma is None else gamma
    rng = np.random.default_rng(seed)
    vals = np.array([_mmd2_unbiased(x[rng.choice(len(x), size, replace=False)],
                                    y[rng.choice(len(y), size, replace=False)], degree, g, coef0)
                     for _ in range(max(1, subsets))])
    return float(vals.mean()), float(vals.std())


def fd_by_condition(real_features: Any, real_conditions: Any, gen_features: Any, gen_conditions: Any,
                    *, columns: Sequence[int] | None = None, min_group: int = 2,
                    names: Sequence[str] | None = None) -> dict[str, Any]:
    """FD paired by condition (seed 002): group both sets by condition, FD per group, mean over groups.

    ``*_conditions`` are int arrays (n, A) of attribute levels; ``columns`` selects which attributes form
    the grouping key (all by default; e.g. ``[3]`` groups by smiling level only). A group enters the mean
    only when both sets hold at least ``min_group`` (>= 2) images of it; the others are listed under
    ``skipped`` with their counts and ignored. FD from few images is biased upwards (Chong & Forsyth 2020,
    "Effectively unbiased FID"), so compare values only between runs with the same group sizes.

    Returns ``{"fd": unweighted mean, "fd_weighted": mean weighted by generated count, "groups": k,
    "per_group": {key: {"fd", "n_real", "n_gen"}}, "skipped": [...]}``.
    """
    fr, fg = _as_features(real_features, "real features"), _as_features(gen_features, "generated features")
    cr, cg = np.asarray(real_conditions, np.int64), np.asarray(gen_conditions, np.int64)
    cr, cg = cr.reshape(len(cr), -1), cg.reshape(len(cg), -1)
    if len(cr) != len(fr) or len(cg) != len(fg):
        raise FacediffError("FD by condition: as many conditions as feature rows are needed in each set")
    if min_group < 2:
        raise FacediffError(f"FD by condition: min_group = {min_group} must be at least 2")
    cols = list(range(cr.shape[1])) if columns is None else list(columns)
    names = list(names) if names is not None else [str(c) for c in range(cr.shape[1])]

    def key(row: np.ndarray) -> str:
        return ",".join(f"{names[c]}={int(row[c])}" for c in cols)

    groups_r: dict[str, list[int]] = {}
    groups_g: dict[str, list[int]] = {}
    for i, row in enumerate(cr):
        groups_r.setdefault(key(row), []).append(i)
    for i, row in enumerate(cg):
        groups_g.setdefault(key(row), []).append(i)
    per_group: dict[str, dict[str, float]] = {}
    skipped = []
    for k in sorted(set(groups_r) | set(groups_g)):
        nr, ng = len(groups_r.get(k, [])), len(groups_g.get(k, []))
        if nr < min_group or ng < min_group:
            skipped.append({"group": k, "n_real": nr, "n_gen": ng})
            continue
        per_group[k] = {"fd": fd_from_features(fr[groups_r[k]], fg[groups_g[k]]), "n_real": nr, "n_gen": ng}
    if not per_group:
        raise FacediffError(f"FD by condition: no condition has >= {min_group} real and generated images; "
                            "generate more images per condition or group by fewer attributes")
    fds = np.array([g["fd"] for g in per_group.values()])
    w = np.array([g["n_gen"] for g in per_group.values()], dtype=np.float64)
    return {"fd": float(fds.mean()), "fd_weighted": float((fds * w).sum() / w.sum()), "groups": len(per_group),
            "per_group": per_group, "skipped": skipped}
