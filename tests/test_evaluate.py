"""facediff eval: metrics.json + self-contained report, real-vs-real floors, timing, sketch fidelity."""
from __future__ import annotations

import json

import numpy as np
import pytest

from facediff import api
from facediff.errors import FacediffError
from facediff.evaluation.evaluate import sketch_fidelity


def test_evaluate_tiny_run_writes_metrics_and_report(tiny_run, synth16, tmp_path):
    out = tmp_path / "eval"
    res = api.evaluate(tiny_run, synth16, n=8, steps=3, out=out,
                       metrics="fd,kid,fd_by_condition,attr,faces,diversity,timing")
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["fd_oracle"] == pytest.approx(res["fd_oracle"])
    assert res["fd_oracle"] > 0 and "floor_real_vs_real" in res
    assert res["fd_oracle"] > res["floor_real_vs_real"]["fd_oracle"]  # a 6-step model is far from the floor
    assert set(res["attr"]["per_attribute"]) == {"bangs", "eyeglasses", "beard", "smiling", "age"}
    assert 0.0 <= res["faces"]["rate"] <= 1.0
    # guidance 3 on a batch of 8: one batched network call per sampler step
    assert res["timing"]["network_evaluations"] == 3
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img src=\"report_files" not in html


def test_unknown_metric_is_an_error(tiny_run, synth16):
    with pytest.raises(FacediffError, match="unknown"):
        api.evaluate(tiny_run, synth16, metrics="fd,fid_magic", n=8)


def test_sketch_fidelity_identity_and_shift():
    from facediff.data.synth import render

    imgs = np.stack([render(0, i, 64).image for i in range(3)])
    same = sketch_fidelity(imgs, imgs)
    assert same["edge_f1"] == pytest.approx(1.0) and same["chamfer_px"] == pytest.approx(0.0)
    shifted = np.roll(imgs, 6, axis=2)
    worse = sketch_fidelity(shifted, imgs)
    assert worse["edge_f1"] < 0.8 and worse["chamfer_px"] > 1.0
