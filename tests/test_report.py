"""Report: self-contained HTML (every image embedded), Markdown with its image files, floors columns,
plot helpers."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from facediff.errors import FacediffError
from facediff.report.html import (confusion_matrix_figure, confusion_plots, flatten_metrics, loss_curve_figure,
                                  to_png, write_report)


def test_write_report_self_contained(tmp_path):
    jsonl = tmp_path / "metrics.jsonl"
    jsonl.write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 30)) + "\nnot json\n")
    grid = np.zeros((20, 30, 3), np.uint8)
    grid[:, :10] = 255
    metrics = {"fd_oracle": 12.5, "attributes": {"accuracy": 0.9, "per_attribute": {
        "smiling": {"accuracy": 0.8, "per_level": [1.0, None, 0.5], "confusion": [[2, 0], [1, 1]]}}},
        "faces": {"rate": 1.0, "per_image": [{"faces": 1}] * 20}, "note": "a<b"}
    floors = {"untrained": {"fd_oracle": 300.0}, "real images": {"fd_oracle": 0.1, "attributes": {"accuracy": 0.99}}}
    plots = confusion_plots(metrics["attributes"])
    path = write_report(tmp_path / "out", metrics, grids={"samples guidance 3": grid}, plots=plots,
                        config={"train": {"lr": 1e-3}}, loss_curve=jsonl, floors=floors)
    page = path.read_text()
    assert path.name == "report.html"
    srcs = re.findall(r"src='([^']*)'", page)
    assert len(srcs) == 3 and all(s.startswith("data:image/png;base64,") for s in srcs)  # grid, confusion, loss
    assert not re.search(r"(href|src)=['\"](?!data:)", page) and "<script" not in page
    png = base64.b64decode(srcs[0].split(",", 1)[1])
    from PIL import Image
    import io

    back = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.array_equal(back, grid)  # the grid is embedded losslessly
    assert "<th>untrained</th>" in page and "<th>real images</th>" in page
    assert "<td>attributes.accuracy</td><td>0.9</td><td>—</td><td>0.99</td>" in page
    assert "a&lt;b" in page and "per_image" not in page  # escaped; long per-image lists left out
    md = (tmp_path / "out" / "report.md").read_text()
    for name in re.findall(r"\]\((report_files/[^)]+)\)", md):
        assert (tmp_path / "out" / name).is_file()
    assert "| fd_oracle | 12.5 | 300 | 0.1 |" in md and '"lr": 0.001' in md
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics


def test_flat_floors_and_helpers(tmp_path):
    write_report(tmp_path, {"psnr": 30.0}, floors={"psnr": 10.0}, write_metrics_json=False)
    assert "<th>floor</th>" in (tmp_path / "report.html").read_text()
    assert not (tmp_path / "metrics.json").exists()
    flat = flatten_metrics({"a": {"b": np.float32(2.0), "c": list(range(20))}, "d": [1, 2]})
    assert flat == {"a.b": 2.0, "d": [1, 2]}
    fig = confusion_matrix_figure([[3, 1], [0, 4]], "x")
    assert to_png(fig)[:4] == b"\x89PNG"
    assert to_png(loss_curve_figure([3.0, 2.0, 1.0]))[:4] == b"\x89PNG"
    with pytest.raises(FacediffError):
        to_png(b"GIF89a....")
    with pytest.raises(FacediffError, match="metrics.jsonl"):
        loss_curve_figure(tmp_path / "missing.jsonl")
