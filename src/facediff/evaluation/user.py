"""Score the user's own prompts and images with the oracle (``facediff eval --prompts FILE.txt`` / ``--images DIR``).

A prompts file holds one prompt per line, an attrs file one set of attribute levels per line
(``smiling=5,eyeglasses=0``); blank lines and lines starting with '#' are skipped. Each line gets K images: K
generated from seeds seed..seed+K-1 (``evaluate_prompts``), or the user's images in name order, consecutive
groups of K (``evaluate_images``). The oracle reads the properties each line names off its images
(``metrics.prompts.per_prompt_agreement``): per line and property the share of its K images that show it.
Outputs: prompts.json, prompts.md (one row per line) and prompts.png (one row of K images per line).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facediff.data.captions import ParsedCaption, parse_caption
from facediff.errors import FacediffError
from facediff.progress import Progress, report

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
NOTHING = "names nothing the oracle reads"
TASK = "eval prompts"  # the progress task of both modes


class Oracle:
    """The SynthFaces oracle (or an estimator you trained: its folder as ``estimator``) on a batch of images.

    ``predict(images)``: per property one value per image; ``score_prompts`` / ``score_attrs``: per line the
    share of its images where the oracle reads what the line names (several images per line: consecutive
    groups of equal size). Images: uint8 (n, H, W, 3), any size (the oracle resizes to ``size``)."""

    def __init__(self, estimator: Any = None, device: str = "cpu"):
        from facediff.metrics.features import OracleFeatures
        from facediff.models.estimator import load_estimator

        model = load_estimator(estimator, device) if isinstance(estimator, (str, Path)) else estimator
        self.features = OracleFeatures(model, device=device)
        self.config = self.features.model.config

    @property
    def size(self) -> int:
        """The oracle's input side in pixels."""
        return int(self.config.size)

    def properties(self) -> list[str]:
        """What it reads, in head order: the attributes, then hair_colour and style where it has those heads."""
        heads = [("hair_colour", self.config.hair_colours), ("style", self.config.styles)]
        return list(self.config.attributes) + [k for k, classes in heads if classes]

    def predict(self, images: Any) -> dict[str, np.ndarray]:
        """{property: (n,) array}: attribute levels (int64), hair_colour and style as class names (str)."""
        from facediff.metrics.prompts import readings

        return {k: np.asarray(v) for k, v in readings(self.features.predict(images), self.config).items()}

    def score_prompts(self, images: Any, prompts: Sequence[str]) -> dict[str, Any]:
        """Agreement of each prompt (``parse_caption``: attribute levels, hair colour, style) with its images."""
        return self.score(images, [parse_caption(p) for p in prompts], list(prompts))

    def score_attrs(self, images: Any, attrs: Sequence[dict[str, int] | str]) -> dict[str, Any]:
        """Agreement of each set of attribute levels ({"smiling": 5} or "smiling=5") with its images."""
        dicts = [self._attrs(a) for a in attrs]
        return self.score(images, [ParsedCaption(attributes=d) for d in dicts],
                          [",".join(f"{k}={v}" for k, v in d.items()) for d in dicts])

    def _attrs(self, a: dict[str, int] | str) -> dict[str, int]:
        from facediff.conditioning.attributes import attr_vector, parse_attrs

        if isinstance(a, str):
            return parse_attrs(a, self.config.attributes, self.config.num_levels)
        attr_vector(a, self.config.attributes, self.config.num_levels)  # checks names and levels
        return {k: int(v) for k, v in a.items()}

    def score(self, images: Any, wanted: Sequence[ParsedCaption], texts: Sequence[str]) -> dict[str, Any]:
        """{"per_prompt": K, "prompts": [one row per line], "overall": means + the pooled oracle scores}."""
        from facediff.metrics.prompts import accuracy_from_parsed, per_prompt_agreement

        k = group_size(len(images), len(texts), "lines")
        pred = self.features.predict(images)
        groups = [range(i * k, (i + 1) * k) for i in range(len(texts))]
        rows = []
        for i, (text, row) in enumerate(zip(texts, per_prompt_agreement(wanted, groups, pred, self.config))):
            hits = {p: int(sum(r == row["names"][p] for r in got)) for p, got in row["read"].items()}
            rows.append({"index": i + 1, "text": text, "n_images": k, **row, "hits": hits,
                         **({} if row["names"] else {"note": NOTHING})})
        pooled = accuracy_from_parsed([pc for pc in wanted for _ in range(k)], pred, self.config)
        return {"per_prompt": k, "prompts": rows, "overall": self._overall(rows, pooled)}

    def _overall(self, rows: list[dict[str, Any]], pooled: dict[str, Any]) -> dict[str, Any]:
        """Mean agreement over the lines that name something, per property over the lines naming it; and the
        pooled scores of ``facediff eval``'s "prompt" metric (attribute accuracy, hair colour, style)."""
        scored = [r for r in rows if r["mean"] is not None]
        per = {p: [r["agreement"][p] for r in scored if p in r["agreement"]] for p in self.properties()}
        return {"agreement": float(np.mean([r["mean"] for r in scored])) if scored else None,
                "n_prompts": len(rows), "n_scored": len(scored),
                "per_property": {p: {"agreement": float(np.mean(v)), "n_prompts": len(v)} for p, v in per.items() if v},
                "oracle_scores": pooled}


def group_size(n_images: int, n_lines: int, what: str = "prompts") -> int:
    """K images per line: the image count must be a positive multiple of the line count."""
    if n_lines < 1 or n_images < n_lines or n_images % n_lines:
        raise FacediffError(f"{n_images} images for {n_lines} {what}: give one image per line, or the same "
                            f"number for each (a multiple of {n_lines})")
    return n_images // n_lines


def read_lines(path: str | Path, what: str = "--prompts") -> list[tuple[int, str]]:
    """(line number, text) of the lines of a UTF-8 text file, without blank lines and '#' comments."""
    path = Path(path)
    if path.is_dir():
        raise FacediffError(f"{what} {path}: a folder; give a text file with one line per image group")
    if not path.is_file():
        raise FacediffError(f"{what} {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise FacediffError(f"{what} {path}: not UTF-8 text; save it as UTF-8") from None
    lines = [(i + 1, s.strip()) for i, s in enumerate(text.splitlines())]
    lines = [(i, s) for i, s in lines if s and not s.startswith("#")]
    if not lines:
        raise FacediffError(f"{what} {path}: empty (blank lines and lines starting with # are skipped)")
    return lines


def read_attrs(path: str | Path, oracle: Oracle) -> list[dict[str, int]]:
    """One dict of attribute levels per line of an attrs file; a bad line is an error naming it."""
    out = []
    for i, line in read_lines(path, "--attrs"):
        try:
            out.append(oracle._attrs(line))
        except FacediffError as e:
            raise FacediffError(f"--attrs {path} line {i}: {str(e).removeprefix('--attrs ')}") from None
    return out


def _natural(p: Path) -> tuple:
    """Name order with numbers compared as numbers (img2 before img10)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)], p.name


def list_images(folder: str | Path) -> list[Path]:
    """The png / jpg / webp files of ``folder`` (not its subfolders) in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FacediffError(f"--images {folder}: no such folder")
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural)
    if not files:
        raise FacediffError(f"--images {folder}: no images ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})")
    return files


def load_images(files: Sequence[Path], size: int, progress: Progress | None = None) -> np.ndarray:
    """uint8 (n, size, size, 3): each file centre-cropped to a square and resized (Lanczos) to ``size``."""
    from facediff.data.imageio import load_rgb, square_resize

    out = []
    for i, f in enumerate(files):
        arr, reason = load_rgb(f)
        if arr is None:
            raise FacediffError(f"--images: cannot read {f} ({reason}); fix or remove it")
        out.append(square_resize(arr, size))
        report(progress, TASK, i + 1, len(files))
    return np.stack(out)


def _lines(prompts: str | Path | Sequence[str]) -> tuple[list[str], str | None]:
    """Prompt texts from a file (and its path) or a list of strings."""
    if isinstance(prompts, (str, Path)):
        return [s for _, s in read_lines(prompts)], str(prompts)
    texts = [str(p) for p in prompts]
    if not texts:
        raise FacediffError("--prompts: no prompts given")
    return texts, None


def evaluate_prompts(prompts: str | Path | Sequence[str], *, model: str | Path | None = None, per_prompt: int = 4,
                     seed: int = 0, sampler: str = "dpmpp", steps: int = 25, guidance: float | None = None,
                     batch_size: int = 64, device: str = "auto", data: str | Path | None = None,
                     out: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Generate ``per_prompt`` images per prompt (seeds seed..seed+K-1) with a text-to-face ``model`` (None: the
    bundled one) and score each prompt with the oracle; ``data``: also FD_oracle against its images."""
    from facediff.pipelines.load import load_pipeline, resolve_device

    texts, source = _lines(prompts)
    if per_prompt < 1:
        raise FacediffError(f"--per-prompt {per_prompt}: at least 1 image per prompt")
    oracle = Oracle()
    pipe = load_pipeline(model, resolve_device(device), text=True)
    if not pipe.takes_text:
        raise FacediffError(f"--model {model}: not a text-to-face model; --prompts FILE.txt needs one "
                            "(or score images you have with --images DIR)")
    from facediff.pipelines.load import resolve_guidance

    guidance = resolve_guidance(pipe, guidance)  # None: the model's own default
    seeds = [seed + j for _ in texts for j in range(per_prompt)]
    images = pipe(seeds=seeds, prompt=[t for t in texts for _ in range(per_prompt)], guidance=guidance,
                  sampler=sampler, steps=steps, batch_size=batch_size,
                  progress=lambda _task, done, total, **info: report(progress, TASK, done, total, **info)).images
    res = {"mode": "prompts", "model": str(getattr(pipe, "model_dir", None) or model), "prompts_file": source,
           "seeds": [seed, seed + per_prompt - 1], "sampler": sampler, "steps": steps, "guidance": guidance,
           "image_size": int(images.shape[1]), **oracle.score_prompts(images, texts)}
    return _finish(res, images, oracle, data, out)


def evaluate_images(images: str | Path | np.ndarray, *, prompts: str | Path | Sequence[str] | None = None,
                    attrs: str | Path | Sequence[dict[str, int] | str] | None = None, data: str | Path | None = None,
                    out: str | Path | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Score images you have (a folder, or uint8 (n, H, W, 3)) against ``prompts`` or ``attrs`` (a file or a
    list): line i <-> image i, or consecutive groups of K images when there are K times as many images."""
    if (prompts is None) == (attrs is None):
        raise FacediffError("--images needs --prompts FILE.txt or --attrs FILE.txt (one of the two)")
    oracle = Oracle()
    if attrs is not None:
        dicts = read_attrs(attrs, oracle) if isinstance(attrs, (str, Path)) else [oracle._attrs(a) for a in attrs]
        source, n_lines = (str(attrs) if isinstance(attrs, (str, Path)) else None), len(dicts)
    else:
        texts, source = _lines(prompts)
        n_lines = len(texts)
    files = None
    if isinstance(images, (str, Path)):
        files = list_images(images)
        group_size(len(files), n_lines, "lines in " + (source or "the list"))  # before decoding any image
        pics = load_images(files, oracle.size, progress)
    else:
        pics = np.asarray(images)
    scored = oracle.score_attrs(pics, dicts) if attrs is not None else oracle.score_prompts(pics, texts)
    if files is not None:
        for row in scored["prompts"]:
            row["images"] = [files[(row["index"] - 1) * scored["per_prompt"] + j].name for j in range(row["n_images"])]
    res = {"mode": "attrs" if attrs is not None else "prompts",
           "images": str(images) if files is not None else None, ("attrs_file" if attrs is not None else
                                                                   "prompts_file"): source, **scored}
    return _finish(res, pics, oracle, data, out)


def _finish(res: dict[str, Any], images: np.ndarray, oracle: Oracle, data: str | Path | None,
            out: str | Path | None) -> dict[str, Any]:
    if data is not None:  # FD_oracle of these images against up to 2048 images of the data set
        from facediff.data.prepared import PreparedDataset
        from facediff.metrics.fd import fd_from_features

        ds = PreparedDataset(data)
        idx = np.sort(np.random.default_rng(0).permutation(len(ds))[:2048])
        res["fd_oracle"] = {"value": fd_from_features(oracle.features(ds.images(idx)), oracle.features(images)),
                            "n_images": len(images), "n_real": len(idx), "data": str(data),
                            "note": "few images give a high, noisy FD; compare runs of equal size"}
    if out is not None:
        write_outputs(out, res, images)
    return res


def write_outputs(out: str | Path, res: dict[str, Any], images: np.ndarray) -> Path:
    """prompts.json, prompts.md and prompts.png (one row of K images per line, labelled with its number)."""
    from facediff.imaging import make_grid, save_png

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prompts.json").write_text(json.dumps(res, indent=1))
    (out / "prompts.md").write_text(markdown(res))
    labels = [str(r["index"]) for r in res["prompts"]]
    save_png(make_grid(images, res["per_prompt"], scale=max(1, 64 // images.shape[1]), row_labels=labels),
             out / "prompts.png")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(res: dict[str, Any]) -> str:
    """One row per line: its number, text, one column per named property ("smiling=5: 3/4"), its agreement."""
    rows, overall = res["prompts"], res["overall"]
    cols = [p for p in overall["per_property"]]
    what = "attributes" if res["mode"] == "attrs" else "prompt"
    source = res.get("model") or res.get("images")
    lines = [f"# Oracle agreement: {source}", "",
             f"{res['per_prompt']} image(s) per line. A cell counts the images where the oracle reads what the "
             "line names; agreement: the mean share over the properties it names. What the oracle read per image: "
             "prompts.json.", "",
             "| " + " | ".join(["#", what, *cols, "agreement"]) + " |", "|" + "---|" * (len(cols) + 3)]
    for r in rows:
        cells = [f"{p}={r['names'][p]}: {r['hits'][p]}/{r['n_images']}" if p in r["names"] else "" for p in cols]
        last = NOTHING if r["mean"] is None else f"{r['mean']:.2f}"
        lines.append("| " + " | ".join([str(r["index"]), _cell(r["text"]), *cells, last]) + " |")
    means = [f"{overall['per_property'][p]['agreement']:.2f}" for p in cols]
    total = "n/a" if overall["agreement"] is None else f"{overall['agreement']:.2f}"
    lines.append("| " + " | ".join(["", "**mean**", *means, f"**{total}**"]) + " |")
    if "fd_oracle" in res:
        fd = res["fd_oracle"]
        lines += ["", f"FD_oracle against {fd['data']}: {fd['value']:.2f} ({fd['n_images']} images)"]
    return "\n".join(lines) + "\n"
