"""Face-parsing agreement: per-class IoU and mean IoU (mIoU), and the parsing fidelity of images to masks.

IoU_c = |P_c ∩ T_c| / |P_c ∪ T_c| is accumulated over every pixel of the batch (one confusion matrix, as in the
PASCAL VOC / Cityscapes benchmarks and torchmetrics' ``MulticlassJaccardIndex``), not averaged per image; mIoU is
the mean of IoU_c over the classes present in the prediction or the target (``average="macro"``).

``parsing_fidelity(images, masks, parser)`` parses the images with the face parser (the "mask oracle",
``facediff.models.parser``) and scores the result against the masks they should follow: for generated images
the masks they were conditioned on, for real images their own masks (the ceiling a mask model is compared to).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from facediff.data.parsing import PARSING_CLASSES
from facediff.errors import FacediffError


def _as_ids(a: Any, what: str) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise FacediffError(f"{what}: class ids must be integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def confusion_matrix(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """int64 (C, C): [target class, predicted class] pixel counts over the whole batch."""
    p, t = _as_ids(pred, "prediction"), _as_ids(target, "target")
    if p.shape != t.shape:
        raise FacediffError(f"prediction shape {p.shape} differs from target shape {t.shape}")
    for a, what in ((p, "prediction"), (t, "target")):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise FacediffError(f"{what} holds class {int(a.max() if a.max() >= num_classes else a.min())}; "
                                f"ids are 0-{num_classes - 1}")
    return np.bincount((t * num_classes + p).ravel(), minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def per_class_iou(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """float64 (C,): IoU of each class over the batch; NaN for a class absent from both prediction and target."""
    conf = confusion_matrix(pred, target, num_classes)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def mean_iou(pred: Any, target: Any, num_classes: int, ignore_absent: bool = True) -> float:
    """Mean over classes of the batch's per-class IoU. ``ignore_absent``: average over the classes present in
    the prediction or the target (torchmetrics' macro average); False: over all ``num_classes``, a class absent
    from both counting 0 (torchmetrics' ``zero_division=0``)."""
    iou = per_class_iou(pred, target, num_classes)
    if ignore_absent:
        present = ~np.isnan(iou)
        return float(iou[present].mean()) if present.any() else float("nan")
    return float(np.nan_to_num(iou, nan=0.0).mean())


def parsing_fidelity(images: np.ndarray, target_masks: np.ndarray, parser: Any = None, *,
                     batch_size: int = 256, classes: tuple[str, ...] = PARSING_CLASSES) -> dict[str, Any]:
    """How well ``images`` (uint8 (N, H, W, 3)) follow ``target_masks`` (parsing ids (N, H, W)) as read by
    ``parser`` (a ``FaceParser``; None = the bundled one): {"miou", "per_class": {class: IoU or None when
    absent}, "pixel_accuracy", "n"}."""
    images, masks = np.asarray(images), _as_ids(target_masks, "target masks")
    if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise FacediffError(f"parsing fidelity: images {images.shape} and masks {masks.shape} must be "
                            "(N, H, W, 3) and (N, H, W)")
    if parser is None:
        from facediff.models.parser import load_bundled_parser

        parser = load_bundled_parser()
    parser_classes = tuple(getattr(getattr(parser, "config", None), "classes", classes))
    if parser_classes != tuple(classes):
        raise FacediffError(f"the face parser predicts {', '.join(parser_classes)}, not {', '.join(classes)}")
    pred = parser.parse(images, batch_size=batch_size)
    iou = per_class_iou(pred, masks, len(classes))
    present = ~np.isnan(iou)
    return {"miou": float(iou[present].mean()) if present.any() else None,
            "per_class": {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, iou)},
            "pixel_accuracy": float((pred == masks).mean()) if masks.size else None, "n": int(len(images))}
