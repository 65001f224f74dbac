"""Attribute accuracy: does a generated image show the attribute levels it was asked for?

Seed 002 (Sec. 3.2) scores conditioning with an attribute estimator: the share of (image, attribute)
pairs whose estimated level equals the requested one (as Palette, Saharia et al. 2022, scored its outputs
with a task classifier). Here also per level, the confusion matrices (rows = requested, columns =
estimated), the mean absolute level error and the share of images with every attribute right.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.errors import FacediffError


def confusion_matrix(requested: np.ndarray, predicted: np.ndarray, num_levels: int = NUM_LEVELS) -> np.ndarray:
    """int64 (L, L) counts; row = requested level, column = predicted level; entries with requested < 0 skipped."""
    r, p = np.asarray(requested, np.int64).ravel(), np.asarray(predicted, np.int64).ravel()
    keep = (r >= 0) & (r < num_levels) & (p >= 0) & (p < num_levels)
    return np.bincount(r[keep] * num_levels + p[keep], minlength=num_levels * num_levels).reshape(num_levels,
                                                                                                  num_levels)


def accuracy_from_predictions(requested: Any, predicted: Any, attributes: Sequence[str] = ATTRIBUTES,
                              num_levels: int = NUM_LEVELS) -> dict[str, Any]:
    """Score predicted levels (n, A) against requested levels (n, A); requested -1 = "don't care" (skipped).

    Returns ``{"accuracy": mean over scored (image, attribute) pairs, "mean_over_attributes", "exact_match":
    share of images with all scored attributes right, "mae": mean |requested - predicted|,
    "per_attribute": {name: {"accuracy", "n", "mae", "per_level": [acc or None] * L,
    "confusion": L x L list}}}``.
    """
    req, pred = np.asarray(requested, np.int64), np.asarray(predicted, np.int64)
    req, pred = req.reshape(len(req), -1), pred.reshape(len(pred), -1)
    if req.shape != pred.shape or req.shape[1] != len(attributes):
        raise FacediffError(f"attribute accuracy: requested {req.shape} and predicted {pred.shape} must both be "
                            f"(n, {len(attributes)})")
    scored = req >= 0
    if not scored.any():
        raise FacediffError("attribute accuracy: no attribute was requested (all levels are -1)")
    correct = (req == pred) & scored
    per_attribute: dict[str, Any] = {}
    for j, name in enumerate(attributes):
        conf = confusion_matrix(req[:, j], pred[:, j], num_levels)
        rows = conf.sum(1)
        n = int(scored[:, j].sum())
        per_attribute[name] = {
            "accuracy": float(np.trace(conf) / n) if n else None,
            "n": n,
            "mae": float(np.abs(req[scored[:, j], j] - pred[scored[:, j], j]).mean()) if n else None,
            "per_level": [float(conf[i, i] / rows[i]) if rows[i] else None for i in range(num_levels)],
            "confusion": conf.tolist(),
        }
    accs = [v["accuracy"] for v in per_attribute.values() if v["accuracy"] is not None]
    any_scored = scored.any(1)
    return {
        "accuracy": float(correct.sum() / scored.sum()),
        "mean_over_attributes": float(np.mean(accs)),
        "exact_match": float((correct | ~scored).all(1)[any_scored].mean()),
        "mae": float(np.abs(req - pred)[scored].mean()),
        "per_attribute": per_attribute,
    }


def attribute_accuracy(images: Any, requested: Any, estimator: Any = None,
                       attributes: Sequence[str] | None = None) -> dict[str, Any]:
    """Estimate the levels of ``images`` (uint8 (n, H, W, 3) or float (n, 3, H, W) in [-1, 1]) and score them.

    ``estimator``: an ``AttributeEstimator``, an ``OracleFeatures``, or None for the bundled oracle.
    ``attributes`` defaults to the estimator's attributes, in the column order of ``requested``.
    """
    from facediff.metrics.features import OracleFeatures
    from facediff.models.estimator import AttributeEstimator

    if estimator is None or isinstance(estimator, AttributeEstimator):
        estimator = OracleFeatures(estimator)
    names = tuple(attributes or estimator.model.config.attributes)
    missing = [a for a in names if a not in estimator.model.config.attributes]
    if missing:
        raise FacediffError(f"attribute accuracy: the estimator has no head for {', '.join(missing)}")
    pred = estimator.predict(images)
    predicted = np.stack([pred[a] for a in names], 1)
    return accuracy_from_predictions(requested, predicted, names, estimator.model.config.num_levels)
