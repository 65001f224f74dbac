"""Evaluation report: metrics + sample grids + plots + config -> one self-contained ``report.html``
(every image base64-embedded, no external file or script) and ``report.md`` (images beside it in
``report_files/``).

``floors`` puts reference values beside each metric, as seed 002's Table 3.1 puts the untrained model
(the floor) and real images (the ceiling) beside the trained models.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from facediff.errors import FacediffError


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_png(item: Any) -> bytes:
    """PNG bytes of a matplotlib figure, a PIL image, a uint8 array (H, W[, 3|4]) or PNG bytes."""
    if isinstance(item, (bytes, bytearray)):
        if not bytes(item[:8]) == b"\x89PNG\r\n\x1a\n":
            raise FacediffError("report: image bytes are not a PNG")
        return bytes(item)
    if hasattr(item, "savefig"):
        buf = io.BytesIO()
        item.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        _mpl().close(item)
        return buf.getvalue()
    from PIL import Image

    if isinstance(item, np.ndarray):
        a = item
        if a.dtype != np.uint8:
            a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8) if a.max() <= 1.0 else a.clip(0, 255).astype(
                np.uint8)
        item = Image.fromarray(a)
    if isinstance(item, Image.Image):
        buf = io.BytesIO()
        item.save(buf, format="PNG")
        return buf.getvalue()
    raise FacediffError(f"report: cannot turn a {type(item).__name__} into a PNG")


def confusion_matrix_figure(confusion: Any, title: str = "", labels: Sequence[str] | None = None):
    """Row-normalised confusion matrix heat map (rows = requested level, columns = estimated), counts written in."""
    plt = _mpl()
    c = np.asarray(confusion, dtype=np.float64)
    rows = c.sum(1, keepdims=True)
    norm = np.divide(c, rows, out=np.zeros_like(c), where=rows > 0)
    fig, ax = plt.subplots(figsize=(3.2, 3.0))
    ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    for i in range(c.shape[0]):
        for j in range(c.shape[1]):
            if c[i, j]:
                ax.text(j, i, str(int(c[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ticks = list(labels) if labels is not None else [str(i) for i in range(c.shape[0])]
    ax.set_xticks(range(c.shape[1]), ticks)
    ax.set_yticks(range(c.shape[0]), ticks)
    ax.set_xlabel("estimated level")
    ax.set_ylabel("requested level")
    ax.set_title(title, fontsize=9)
    return fig


def confusion_plots(attribute_result: Mapping[str, Any], prefix: str = "confusion") -> dict[str, Any]:
    """One confusion figure per attribute of an ``attribute_accuracy`` / estimator-evaluation result."""
    out = {}
    for name, r in (attribute_result.get("per_attribute") or {}).items():
        if r.get("confusion") is not None:
            acc = r.get("accuracy")
            title = f"{name}" + (f" (acc {acc:.1%})" if acc is not None else "")
            out[f"{prefix} {name}"] = confusion_matrix_figure(r["confusion"], title)
    return out


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl file (blank and unparsable lines are skipped)."""
    p = Path(path)
    if not p.is_file():
        raise FacediffError(f"{p} not found; point at a run's logs/metrics.jsonl")
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def loss_curve_figure(source: str | Path | Sequence[Any], keys: Sequence[str] = ("loss",), x_key: str = "step",
                      title: str = "training loss"):
    """Plot ``keys`` against ``x_key`` from a metrics.jsonl path, a list of row dicts, or a list of numbers."""
    plt = _mpl()
    rows = read_jsonl(source) if isinstance(source, (str, Path)) else list(source)
    fig, ax = plt.subplots(figsize=(5, 3))
    ys: list[float] = []
    if rows and not isinstance(rows[0], Mapping):
        ys = [float(v) for v in rows]
        ax.plot(range(1, len(ys) + 1), ys, label=keys[0] if keys else "loss")
    else:
        for k in keys:
            pts = [(r[x_key] if x_key in r else i, float(r[k])) for i, r in enumerate(rows)
                   if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            if pts:
                ax.plot(*zip(*pts), label=k)
                ys += [y for _, y in pts]
    ax.set_xlabel(x_key)
    if ys and min(ys) > 0 and max(ys) / min(ys) > 10:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return fig


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics -> {"a.b.c": scalar}; lists longer than 8 or holding non-numbers are left out."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_metrics(v, key + "."))
        elif isinstance(v, (list, tuple)):
            if len(v) <= 8 and all(x is None or isinstance(x, (int, float, np.generic)) for x in v):
                out[key] = list(v)
        elif isinstance(v, (int, float, str, bool, np.generic)) or v is None:
            out[key] = v.item() if isinstance(v, np.generic) else v
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "image"


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}"
        "figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:12px;color:#555}"
        "img{image-rendering:pixelated;max-width:100%}pre{background:#f6f6f6;padding:8px;font-size:12px}")


def write_report(out_dir: str | Path, metrics: Mapping[str, Any], *, grids: Mapping[str, Any] | None = None,
                 plots: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
                 loss_curve: str | Path | Sequence[Any] | None = None, floors: Mapping[str, Any] | None = None,
                 title: str = "facediff evaluation", write_metrics_json: bool = True) -> Path:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``report_files/*.png``) into ``out_dir``.

    ``grids``: name -> sample grid (uint8 array, PIL image or PNG bytes). ``plots``: name -> matplotlib
    figure or PNG bytes. ``loss_curve``: metrics.jsonl path / rows / numbers, plotted as "loss curve".
    ``floors``: reference columns beside each metric, either {reference: {metric: value}} (e.g.
    {"untrained": {...}, "real images": {...}}) or one flat {metric: value} shown as "floor".
    With ``write_metrics_json`` also writes ``metrics.json``. Returns the path of report.html.
    """
    out = Path(out_dir)
    files = out / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    flat = flatten_metrics(metrics)
    refs: dict[str, dict[str, Any]] = {}
    if floors:
        if all(isinstance(v, Mapping) for v in floors.values()):
            refs = {name: flatten_metrics(v) for name, v in floors.items()}
        else:
            refs = {"floor": flatten_metrics(floors)}
    images: list[tuple[str, str, bytes]] = []  # (section, name, png)
    for name, g in (grids or {}).items():
        images.append(("Samples", name, to_png(g)))
    all_plots = dict(plots or {})
    if loss_curve is not None:
        all_plots["loss curve"] = loss_curve_figure(loss_curve)
    for name, p in all_plots.items():
        images.append(("Plots", name, to_png(p)))

    head = ["metric", "value", *refs]
    rows = [[k, _fmt(v), *(_fmt(r.get(k)) for r in refs.values())] for k, v in flat.items()]
    h = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
         f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><h2>Metrics</h2><table><tr>"
         + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
    h.append("</table>")
    md = [f"# {title}", "", "## Metrics", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    used: set[str] = set()
    for section in ("Samples", "Plots"):
        sec = [(n, png) for s, n, png in images if s == section]
        if not sec:
            continue
        h.append(f"<h2>{section}</h2>")
        md += ["", f"## {section}", ""]
        for name, png in sec:
            fname = _slug(name)
            while fname in used:
                fname += "_"
            used.add(fname)
            (files / f"{fname}.png").write_bytes(png)
            b64 = base64.b64encode(png).decode("ascii")
            h.append(f"<figure><img alt='{html.escape(name, quote=True)}' src='data:image/png;base64,{b64}'>"
                     f"<figcaption>{html.escape(name)}</figcaption></figure>")
            md.append(f"![{name}](report_files/{fname}.png)")
    if config is not None:
        cfg = json.dumps(config, indent=2, default=_json_default)
        h.append(f"<h2>Config</h2><pre>{html.escape(cfg)}</pre>")
        md += ["", "## Config", "", "```json", cfg, "```"]
    h.append("</body></html>")
    (out / "report.html").write_text("\n".join(h), encoding="utf-8")
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    if write_metrics_json:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=_json_default))
    return out / "report.html"
