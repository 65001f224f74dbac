"""The progress callback every long-running library function takes (display lives in ``facediff.cli``).

``progress(task, done, total, **info)``: ``task`` names the phase ("train ddpm", "encode latents", "sample"),
``done`` of ``total`` units are finished, ``info`` carries numbers to show (``loss=...``) and, for sampling,
``preview`` (the current model-space sample x_t: latents for latent models, for the UI to decode). A callback may be called with a new ``total`` when a
function learns it on the way. ``None`` means no progress is reported.
"""
from __future__ import annotations

from typing import Any, Protocol


class Progress(Protocol):
    def __call__(self, task: str, done: int, total: int, **info: Any) -> None: ...


def report(progress: Progress | None, task: str, done: int, total: int, **info: Any) -> None:
    """Call ``progress`` if there is one."""
    if progress is not None:
        progress(task, done, total, **info)
