"""The typed generation request: what `facediff sample | compose | panorama`, ``facediff.api`` and the UI are
asked to make, validated in one place, and its two forms inside every PNG facediff writes.

A ``Request`` is built from keyword arguments (API), command-line options (CLI) or a PNG's ``facediff`` chunk
(``Request.from_png``: `--from-png`, the UI's drop target); ``__post_init__`` checks and normalises every field,
so ``dataclasses.replace(req, seed=7)`` is checked the same way. ``png_text`` renders it as

- ``parameters``: AUTOMATIC1111's layout (prompt line, ``Negative prompt: ...``, then ``Steps: 25, Sampler: ...,
  CFG scale: ..., Seed: ..., Size: WxH, Model hash: <10 hex>, Model: <name>`` and facediff's own keys in the
  same ``Key: value`` form), which existing PNG-info readers show;
- ``facediff``: the whole request as JSON (``{"format": "facediff-request/1", ...}``), read back by
  ``from_png``. Reading parses text and JSON only (size-limited by ``imaging.read_png_text``).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from facediff.errors import FacediffError
from facediff.registry import INIT_NOISE, SAMPLERS, SAMPLING_PRECISION, WINDOW_WEIGHTS, check_choice

FORMAT = "facediff-request/1"  # the "format" key of the JSON chunk
COMMANDS: tuple[str, ...] = ("sample", "compose", "panorama")
DEFAULT_SAMPLER = {"sample": "dpmpp", "compose": "ddim", "panorama": "ddim"}
DEFAULT_N = {"sample": 16, "compose": 1, "panorama": 1}
MAX_SCALE = 16  # --scale: the largest enlargement
# A1111's names of diffusers' samplers (the `Sampler:` key of `parameters`)
A1111_SAMPLER = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp": "DPM++ 2M", "euler": "Euler", "heun": "Heun",
                 "unipc": "UniPC"}
_COMPOSE_KEYS = ("sampler", "steps", "seed", "guidance", "bootstrap", "window_weights")  # request fields that override the layout's


@dataclass
class Request:
    """One generation: the model, its conditions, the sampler and the output. None = the command's default
    (``__post_init__`` fills what it can; ``guidance`` None is the model's own default, filled when it runs)."""

    command: str = "sample"  # sample | compose | panorama
    model: str | None = None  # run / export folder, Stable Diffusion folder or hub id; None = the bundled model
    text: bool = False  # model None: the bundled text-to-face model (also chosen by a prompt)
    n: int | None = None  # images (sample: 16, compose / panorama: 1); image i uses seed + i
    seed: int | None = None  # seed of image 0 (compose: the layout's, else 0)
    attrs: dict[str, int] | None = None  # attribute levels {"smiling": 5} (or "smiling=5" text); the rest: don't care
    attr_scales: dict[str, float] | None = None  # per-attribute guidance scales {"smiling": 6}
    prompt: str | list[str] | None = None  # text models: one prompt, or one per image
    negative_prompt: str | None = None  # text models: what guidance steers away from
    lora: str | None = None  # LoRA file or folder (diffusers or kohya format)
    lora_scale: float = 1.0  # LoRA strength
    sketch: str | None = None  # sketch PNG (sketch-conditional models); "array:<sha256>" for an in-memory one
    conditions: dict[str, Any] | None = None  # values of any other condition kind, by kind name (plug-ins)
    sweep: bool = False  # sample: the attribute-sweep grid (one row per attribute, levels left to right)
    layout: dict | None = None  # compose: the layout's TOML tables (absolute file paths; ``layout_to_dict``)
    width: int | None = None  # panorama: canvas width in pixels
    height: int | None = None  # panorama: canvas height (None: the model's size)
    stride: int | None = None  # panorama: window stride in pixels (None: half the window)
    circular: bool = False  # panorama: wrap the left and right edges
    window_weights: str | None = None  # compose / panorama: a view's weight in the fused average, hann | uniform (None: the layout's, else hann)
    bootstrap: float | None = None  # compose: fraction of steps with bootstrapping (None: the layout's)
    sampler: str | None = None  # a facediff sampler (default: dpmpp for sample, ddim for compose / panorama)
    steps: int | None = None  # sampler steps (default 25; compose: the layout's)
    guidance: float | None = None  # classifier-free guidance scale (None: the model's default)
    eta: float = 0.0  # DDIM eta
    init_noise: str = "normal"  # x_T: normal | zero | constant (seed 003 ablation)
    step_noise: bool = True  # noise in ancestral steps (seed 003 ablation)
    batch_size: int = 64  # images per network batch (the images do not depend on it)
    precision: str = "no"  # the network's: no (fp32), bf16, auto
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    scale: int = 1  # saved images enlarged this many times (nearest neighbour); 1 = the size asked for
    ncol: int | None = None  # grid columns (None: a square-ish grid)
    # -- provenance: filled when the request runs (``stamped``); kept in the PNG, never read as settings
    model_name: str | None = None  # the model folder's name
    model_hash: str | None = None  # SHA-256 of the model's weights (``fsutil.content_sha256``)
    lora_hash: str | None = None  # SHA-256 of the LoRA file
    sketch_hash: str | None = None  # SHA-256 of the sketch file (or array)
    seeds: list[int] | None = None  # the seed of every image made
    version: str | None = None  # facediff's version
    notes: list[str] = field(default_factory=list)  # what the run filled in or left empty, said in the output

    def __post_init__(self) -> None:
        check_choice("command", self.command, COMMANDS)
        c = self.command
        self.n = _int("n", DEFAULT_N[c] if self.n is None else self.n, 1)
        self.attrs = _attrs(self.attrs)
        self.attr_scales = _scales(self.attr_scales)
        for key in ("prompt", "negative_prompt"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str) and not (
                    isinstance(value, (list, tuple)) and all(isinstance(p, str) for p in value)):
                raise FacediffError(f"{key} = {value!r}: give a text (or, for prompt, one text per image)")
            if isinstance(value, tuple):
                setattr(self, key, list(value))
        for key in ("model", "lora", "sketch"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, str(value))
        if self.conditions is not None:
            if not isinstance(self.conditions, dict) or not all(isinstance(k, str) for k in self.conditions):
                raise FacediffError(f"conditions = {self.conditions!r}: give {{kind name: value}}")
            from facediff.conditioning.registry import kind_class

            for name in self.conditions:
                kind_class(name)  # a registered kind (one-line error naming the known ones)
            self.conditions = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.conditions.items()} or None
        self.lora_scale = _number("lora_scale", self.lora_scale)
        self.eta = _number("eta", self.eta, 0.0)
        self.batch_size = _int("batch_size", self.batch_size, 1)
        self.scale = _int("scale", self.scale, 1)
        if self.scale > MAX_SCALE:
            raise FacediffError(f"scale = {self.scale}: at most {MAX_SCALE}")
        if self.ncol is not None:
            self.ncol = _int("ncol", self.ncol, 1)
        check_choice("init_noise", self.init_noise, INIT_NOISE)
        check_choice("precision", self.precision, SAMPLING_PRECISION)
        if not isinstance(self.device, str) or not self.device:
            raise FacediffError(f"device = {self.device!r}: give auto, cpu, cuda or cuda:N")
        if c != "sample" and self.sweep:
            raise FacediffError(f"sweep: only `facediff sample` makes the attribute sweep, not {c}")
        if c == "compose":
            self._resolve_layout()
        elif self.layout is not None:
            raise FacediffError(f"layout: only `facediff compose` takes a layout, not {c}")
        if c == "panorama":
            if self.width is None:
                raise FacediffError("panorama: give the canvas --width in pixels")
            self.width = _int("width", self.width, 1)
            self.height = None if self.height is None else _int("height", self.height, 1)
            self.stride = None if self.stride is None else _int("stride", self.stride, 1)
            if self.window_weights is None:  # the layout's default, recorded so that the PNG re-runs as made
                from facediff.pipelines.layout import Layout

                self.window_weights = Layout.window_weights
        elif any(v is not None for v in (self.width, self.height, self.stride)) or self.circular:
            raise FacediffError(f"width / height / stride / circular: panorama settings, not {c} ones")
        if c == "sample" and self.window_weights is not None:
            raise FacediffError("window_weights: a compose / panorama setting, not a sample one")
        if self.window_weights is not None:
            check_choice("window_weights", self.window_weights, WINDOW_WEIGHTS)
        if c != "compose" and self.bootstrap is not None:
            raise FacediffError(f"bootstrap: a compose setting, not a {c} one")
        self.sampler = DEFAULT_SAMPLER[c] if self.sampler is None else self.sampler
        check_choice("sampler", self.sampler, SAMPLERS)
        self.steps = _int("steps", 25 if self.steps is None else self.steps, 1)
        self.seed = _int("seed", 0 if self.seed is None else self.seed, None)
        if self.guidance is not None:
            self.guidance = _number("guidance", self.guidance)

    def _resolve_layout(self) -> None:
        """compose: the request's sampler / steps / seed / guidance / bootstrap override the layout's; what the
        request leaves None is read from the layout (so both say the same afterwards)."""
        from facediff.pipelines.layout import Layout, layout_from_dict, layout_to_dict

        if not isinstance(self.layout, dict):
            raise FacediffError("compose: give a layout (a TOML file, or its tables)")
        defaults = {f.name: f.default for f in fields(Layout)}
        layout = dict(self.layout)
        for key in _COMPOSE_KEYS:
            if getattr(self, key) is not None:
                layout[key] = getattr(self, key)
            setattr(self, key, layout.get(key, defaults[key]))
        if self.bootstrap is not None:
            self.bootstrap = _number("bootstrap", self.bootstrap, 0.0)
        # checked now (one-line errors before a model is loaded) and kept in its normal form: condition values
        # under "conditions", file paths absolute
        self.layout = layout_to_dict(layout_from_dict(layout, "layout"))

    # -- forms -------------------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The fields that say what to make (no provenance): the JSON chunk's body and the UI's state."""
        skip = {"notes"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def to_json(self) -> str:
        """The JSON chunk: the settings, and the run's notes (e.g. which conditions were null; not read back)."""
        return json.dumps({"format": FORMAT, **self.settings(), "notes": list(self.notes)}, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, where: str = "the request") -> "Request":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise FacediffError(f"{where}: the facediff settings are not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            fmt = data.get("format") if isinstance(data, dict) else None
            raise FacediffError(f"{where}: settings of format {fmt!r}; this facediff reads {FORMAT}")
        data.pop("format")
        data.pop("notes", None)  # what the earlier run said, not a setting
        known = {f.name for f in fields(cls)} - {"notes"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FacediffError(f"{where}: unknown setting {unknown[0]!r} (made by a newer facediff?)")
        if "window_weights" not in data and data.get("command") in ("compose", "panorama"):
            data["window_weights"] = "uniform"  # made before the Hann weights: re-run as it was made
        try:
            return cls(**data)
        except FacediffError as e:
            raise FacediffError(f"{where}: {e}") from None

    @classmethod
    def from_png(cls, path: str | Path) -> "Request":
        """The request saved in a PNG facediff wrote (one-line error for any other file)."""
        text = png_settings(path)
        if "facediff" not in text:
            raise FacediffError(f"{path}: no facediff settings in this PNG (it was not made by facediff"
                                + (", only A1111 parameters" if "parameters" in text else "") + ")")
        return cls.from_json(text["facediff"], str(path))

    def replace(self, **changes: Any) -> "Request":
        """A copy with ``changes`` (checked like a new request); provenance is cleared for the new run."""
        known = {f.name for f in fields(self)}
        for key in changes:
            if key not in known:
                raise FacediffError(f"unknown setting {key!r}; known: {', '.join(sorted(known - {'notes'}))}")
        cleared = dict(model_name=None, model_hash=None, lora_hash=None, sketch_hash=None, seeds=None,
                       version=None, notes=[])
        return dataclasses.replace(self, **{**cleared, **changes})

    def parameters(self, size: tuple[int, int]) -> str:
        """AUTOMATIC1111's ``parameters`` text for images of ``size`` (width, height)."""
        prompt = self.prompt if isinstance(self.prompt, str) else "; ".join(self.prompt or [])
        if self.command == "compose":
            prompt = prompt or " | ".join(r.get("prompt", "") for r in self.layout.get("region", []) if r.get("prompt"))
        lines = [prompt] if prompt else []  # no prompt line at all: readers take the last line as the settings
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        keys: list[tuple[str, Any]] = [
            ("Steps", self.steps), ("Sampler", A1111_SAMPLER.get(self.sampler, self.sampler)),
            ("CFG scale", self.guidance), ("Seed", self.seeds[0] if self.seeds else self.seed),
            ("Size", f"{size[0]}x{size[1]}"), ("Model hash", (self.model_hash or "")[:10] or None),
            ("Model", self.model_name), ("Attributes", _pairs(self.attrs)),
            ("Attribute scales", _pairs(self.attr_scales)),
            ("Conditions", _pairs(self.conditions)),
            ("LoRA", Path(self.lora).name if self.lora else None),
            ("LoRA scale", self.lora_scale if self.lora else None),
            ("LoRA hash", (self.lora_hash or "")[:10] or None), ("Sketch hash", (self.sketch_hash or "")[:10] or None),
            ("Eta", self.eta or None), ("Facediff command", self.command), ("Version", self.version),
            ("Null conditions", ", ".join(n.split(":")[0] for n in self.notes if "null value" in n) or None)]
        lines.append(", ".join(f"{k}: {_a1111_value(v)}" for k, v in keys if v is not None))
        return "\n".join(lines)

    def png_text(self, size: tuple[int, int]) -> dict[str, str]:
        """The PNG text chunks of an image of ``size`` made by this request."""
        return {"parameters": self.parameters(size), "facediff": self.to_json()}


def png_settings(path: str | Path) -> dict[str, str]:
    """The ``parameters`` / ``facediff`` chunks of a PNG (others ignored); one-line error for a non-PNG."""
    from facediff.imaging import read_png_text

    path = Path(path)
    if not path.is_file():
        raise FacediffError(f"{path}: no such file")
    try:
        text = read_png_text(path)
    except Exception as e:  # noqa: BLE001 - any decoder error of an untrusted file is a user error here
        raise FacediffError(f"{path}: not a readable PNG ({' '.join(str(e).split())[:120] or type(e).__name__})") from None
    return {k: v for k, v in text.items() if k in ("parameters", "facediff")}


# ------------------------------------------------------------------------------------------------ checks
def _int(key: str, value: Any, low: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                          and not value.is_integer()):
        raise FacediffError(f"{key} = {value!r}: give a whole number")
    if low is not None and value < low:
        raise FacediffError(f"{key} = {value}: must be at least {low}")
    return int(value)


def _number(key: str, value: Any, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FacediffError(f"{key} = {value!r}: give a finite number")
    if low is not None and value < low:
        raise FacediffError(f"{key} = {value}: must be at least {low}")
    return float(value)


def _attrs(value: Any) -> dict[str, int] | None:
    from facediff.conditioning.attributes import parse_attrs

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return parse_attrs(value)
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
                                       for k, v in value.items()):
        return dict(value) or None
    raise FacediffError(f"attrs = {value!r}: give name=level pairs, e.g. smiling=5,eyeglasses=3")


def _scales(value: Any) -> dict[str, float] | None:
    from facediff.conditioning.attributes import parse_scales

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return parse_scales(value)
    if isinstance(value, dict):
        return {str(k): _number(f"attr_scales {k}", v) for k, v in value.items()} or None
    raise FacediffError(f"attr_scales = {value!r}: give name=scale pairs, e.g. smiling=6,age=2")


def _pairs(d: dict | None) -> str | None:
    return None if not d else ", ".join(f"{k}={v}" for k, v in d.items())


def _a1111_value(v: Any) -> str:
    """A1111 quotes a value that holds a comma or colon (as JSON)."""
    text = f"{v:g}" if isinstance(v, float) else str(v)
    return json.dumps(text) if ("," in text or ":" in text) else text
