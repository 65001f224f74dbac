"""The models the UI offers and keeps loaded: the bundled ones, then every run / export folder under
``--models-dir``; the controls of a model come from the condition kinds it declares (``ui_control``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facediff.errors import FacediffError
from facediff.ui.limits import inside

ASSETS = Path(__file__).resolve().parent.parent / "assets"
MODEL_FILES = ("model_index.json", "facediff.json")  # a folder holding one of these is a model


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model picker."""

    label: str  # what the picker shows
    path: str  # the folder passed to ``api.load`` (absolute)


def _is_model(folder: Path) -> bool:
    return any((folder / f).is_file() for f in MODEL_FILES)


def bundled_models() -> list[ModelChoice]:
    """The models shipped in ``facediff/assets`` (the default attribute model first)."""
    found = [p for p in sorted(ASSETS.iterdir()) if p.is_dir() and _is_model(p)]
    found.sort(key=lambda p: p.name != "default_model")
    return [ModelChoice(f"bundled: {p.name.replace('_', ' ')}", str(p)) for p in found]


def compose_choice(choices: list[ModelChoice]) -> str:
    """The Compose tab's first model: a --model the server was started with, else the bundled model that knows
    where faces are (compose_model) when there is one, else the first choice."""
    if choices and not choices[0].label.endswith("(--model)"):
        for c in choices:
            if Path(c.path).name == "compose_model":
                return c.path
    return choices[0].path


def model_choices(models_dir: str | Path | None, extra: str | Path | None = None) -> list[ModelChoice]:
    """``extra`` (``--model``) first, then the bundled models, then every model folder under ``models_dir``
    (a run folder counts through its ``export/``; links that lead outside the folder are left out)."""
    choices = []
    if extra is not None:
        p = Path(extra).resolve()
        choices.append(ModelChoice(f"{p.parent.name if p.name == 'export' else p.name} (--model)", str(p)))
    choices += bundled_models()
    if models_dir is not None:
        root = Path(models_dir)
        if not root.is_dir():
            raise FacediffError(f"--models-dir {root}: no such folder")
        for index in sorted(root.rglob("model_index.json")):
            folder = index.parent
            try:
                folder = inside(root, folder)
            except FacediffError:
                continue
            rel = folder.relative_to(root.resolve())
            name = str(rel.parent if rel.name == "export" and len(rel.parts) > 1 else rel)
            choices.append(ModelChoice(name, str(folder)))
    seen, unique = set(), []
    for c in choices:
        if c.path not in seen:
            seen.add(c.path)
            unique.append(c)
    return unique


def allowed_model(path: str, choices: list[ModelChoice]) -> str:
    """``path`` if it is one of ``choices`` (a request cannot name any other folder)."""
    for c in choices:
        if c.path == path or c.label == path:
            return c.path
    raise FacediffError(f"model {path}: not one this server offers; pick one of the listed models")


class ModelCache:
    """Loaded pipelines, the ``size`` most recently used (key: folder, LoRA file, LoRA scale); one lock per key,
    so that two sessions asking for the same model load it once."""

    def __init__(self, size: int = 2, device: str = "auto"):
        self.size, self.device = size, device
        self._pipes: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, lora: str | None = None, lora_scale: float = 1.0):
        from facediff.api import load

        key = (path, lora, float(lora_scale) if lora else None)
        with self._lock:
            if key in self._pipes:
                self._pipes.move_to_end(key)
                return self._pipes[key]
            pipe = load(path, self.device, lora=lora, lora_scale=lora_scale)
            self._pipes[key] = pipe
            while len(self._pipes) > self.size:
                self._pipes.popitem(last=False)
            return pipe


def controls_of(pipe) -> list[tuple[str, dict[str, Any]]]:
    """(kind name, its ``ui_control``) for every condition kind the model declares, in declared order."""
    return [(k.name, k.ui_control()) for k in pipe.condition_kinds]
