"""CLIP score (Hessel et al. 2021, "CLIPScore"; seed 002's CLIP-S): 100 * max(cos(E_img(x), E_txt(y)), 0), the
mean over image-prompt pairs, with a CLIP model the user provides (a local folder or a hub id in the local cache:
CLIP weights cannot be downloaded here).

Computed from ``CLIPModel.get_image_features`` / ``get_text_features`` directly rather than torchmetrics'
``CLIPScore``, which breaks with transformers 5.x; preprocessing is the model's own ``CLIPImageProcessor`` and
tokenizer, so the number matches torchmetrics' for the same model.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from facediff.errors import FacediffError


class CLIPScorer:
    """``scorer(images uint8 (n, H, W, 3), prompts) -> mean CLIP score``."""

    def __init__(self, source: str | Path, device: str | torch.device = "cpu", batch_size: int = 64):
        from transformers import CLIPModel, CLIPProcessor
        from transformers.utils import logging as tlog

        verbosity = tlog.get_verbosity()
        tlog.set_verbosity_error()
        try:
            self.model = CLIPModel.from_pretrained(str(source), use_safetensors=True).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(str(source))
        except (OSError, ValueError) as e:
            raise FacediffError(f"--clip {source}: cannot load a CLIP model and processor from it "
                                f"({str(e).splitlines()[0][:160]})") from None
        finally:
            tlog.set_verbosity(verbosity)
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def per_pair(self, images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        if len(images) != len(prompts):
            raise FacediffError(f"CLIP score: {len(images)} images but {len(prompts)} prompts")
        scores = []
        for i in range(0, len(images), self.batch_size):
            batch = self.processor(text=list(prompts[i:i + self.batch_size]), images=list(images[i:i + self.batch_size]),
                                   return_tensors="pt", padding=True, truncation=True)
            img = self.model.get_image_features(pixel_values=batch["pixel_values"].to(self.device))
            txt = self.model.get_text_features(input_ids=batch["input_ids"].to(self.device),
                                               attention_mask=batch["attention_mask"].to(self.device))
            img, txt = _features(img), _features(txt)
            cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
            scores.append((100.0 * cos.clamp(min=0)).cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)

    def __call__(self, images: np.ndarray, prompts: Sequence[str]) -> float:
        return float(self.per_pair(images, prompts).mean())


def _features(out) -> torch.Tensor:
    """transformers 5 returns a model output (pooler_output = the projected features); 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output
