"""Attribute estimator: shapes, safetensors round-trip, config errors, a tiny training run that must learn,
the oracle feature extractor, and the bundled SynthFaces oracle."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facediff.data.imageio import resize_batch
from facediff.data.prepared import PreparedWriter
from facediff.data.synth import render_images_at_sizes
from facediff.errors import FacediffError
from facediff.models.estimator import AttributeEstimator, EstimatorConfig, load_estimator, save_estimator


def _toy_set(path: Path, n: int = 360, size: int = 16, seed: int = 0) -> Path:
    """Images whose levels are plainly drawn: smiling = length of a bottom bar, age = brightness of a
    central square, style = background colour; every 6th image is in the val split."""
    rng = np.random.default_rng(seed)
    w = PreparedWriter(path, n, size)
    imgs, labs = np.zeros((n, size, size, 3), np.uint8), []
    for i in range(n):
        s, a, st = int(rng.integers(6)), int(rng.integers(6)), ["human", "anime"][int(rng.integers(2))]
        imgs[i] = (60, 30, 30) if st == "human" else (30, 30, 90)
        imgs[i, 12:14, 1:1 + 2 * s + 2] = 255
        imgs[i, 4:9, 5:10] = 30 + 40 * a
        labs.append({"file": f"{i}.png", "split": "val" if i % 6 == 0 else "train", "style": st,
                     "attributes": {"smiling": s, "age": a}, "caption": ""})
    w.add(imgs, labs)
    return w.close({"source": "toy"})


def test_shapes_any_size_and_heads():
    m = AttributeEstimator(EstimatorConfig(size=16, widths=(8, 16), feature_dim=32, styles=("a", "b"),
                                           hair_colours=("x", "y", "z"))).eval()
    for s in (16, 40):
        out = m(torch.rand(3, 3, s, s) * 2 - 1)
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            **{a: (3, 6) for a in m.config.attributes}, "style": (3, 2), "hair_colour": (3, 3)}
    assert m.features(torch.zeros(2, 3, 16, 16)).shape == (2, 32)
    plain = AttributeEstimator(EstimatorConfig(size=16, widths=(8,), feature_dim=8))
    assert set(plain.heads) == set(plain.config.attributes)


def test_save_load_round_trip_and_config_errors(tmp_path):
    m = AttributeEstimator(EstimatorConfig(size=16, widths=(8, 16), feature_dim=32, styles=("a", "b"))).eval()
    save_estimator(m, tmp_path / "e")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["config.json", "model.safetensors"]
    m2 = load_estimator(tmp_path / "e")
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert m2.config == m.config
    assert torch.equal(m.features(x), m2.features(x))
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    (tmp_path / "e" / "config.json").write_text(json.dumps({**cfg, "depth": 3}))
    with pytest.raises(FacediffError, match="depth"):
        load_estimator(tmp_path / "e")
    (tmp_path / "e" / "config.json").write_text(json.dumps({**cfg, "feature_dim": 64}))
    with pytest.raises(FacediffError, match="does not match"):
        load_estimator(tmp_path / "e")
    with pytest.raises(FacediffError, match="not an attribute estimator"):
        load_estimator(tmp_path / "nothing")


@pytest.fixture
def one_thread():
    """Tiny convolutions run faster on one thread, and much faster when the CPU is shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_training_learns_toy_attributes(tmp_path, one_thread):
    from facediff.training.estimator import train_estimator

    data = _toy_set(tmp_path / "toy")
    calls = []
    m = train_estimator(data, tmp_path / "run", steps=200, batch_size=32, lr=3e-3, size=16, seed=0,
                        config=EstimatorConfig(widths=(16, 32), feature_dim=64), eval_every=50,
                        progress=lambda task, s, t, **info: calls.append((s, t, info.get("loss"))))
    calls = [c for c in calls if c[2] is not None]  # the loop's first call (step 0) has no loss yet
    assert len(calls) == 200 and calls[-1][:2] == (200, 200) and all(np.isfinite(c[2]) for c in calls)
    assert np.mean([c[2] for c in calls[-20:]]) < np.mean([c[2] for c in calls[:20]]) / 2
    v = m["val"]
    assert set(v["per_attribute"]) == {"smiling", "age"}  # heads only for attributes the data has
    assert v["per_attribute"]["smiling"]["accuracy"] > 0.8 and v["per_attribute"]["age"]["accuracy"] > 0.8
    assert v["style_accuracy"] > 0.95
    assert np.array(v["per_attribute"]["age"]["confusion"]).sum() == 60
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["val"]["mean_accuracy"] == pytest.approx(v["mean_accuracy"])
    est = load_estimator(tmp_path / "run" / "estimator")
    assert est.config.styles == ("anime", "human") and est.config.attributes == ("smiling", "age")

    from facediff.metrics.attributes import attribute_accuracy
    from facediff.metrics.features import OracleFeatures
    from facediff.data.prepared import PreparedDataset

    ds = PreparedDataset(data, split="val")
    imgs, req = ds.images(), ds.attribute_levels(("smiling", "age"))
    r = attribute_accuracy(imgs, req, est)
    assert r["per_attribute"]["age"]["accuracy"] == pytest.approx(v["per_attribute"]["age"]["accuracy"])
    shuffled = attribute_accuracy(imgs, np.roll(req, 7, axis=0), est)  # requests that do not match the images
    assert shuffled["accuracy"] < r["accuracy"] - 0.4
    f = OracleFeatures(est, batch_size=7)
    feats = f(imgs)
    assert feats.shape == (60, 64) and feats.dtype == np.float64
    assert np.allclose(feats, OracleFeatures(est, batch_size=100)(imgs), atol=1e-5)  # batch-size invariant
    big = np.stack([np.kron(im, np.ones((2, 2, 1), np.uint8)) for im in imgs[:5]])  # read through resize_batch
    assert big.shape[1] == 2 * imgs.shape[1] and est.config.size == imgs.shape[1]
    assert np.array_equal(f(big), f(resize_batch(big, est.config.size)))
    floats = torch.from_numpy(big).permute(0, 3, 1, 2).float() / 127.5 - 1  # float input: the same reading
    assert np.allclose(f(floats), f(big), atol=1e-6)


def test_bad_training_arguments(tmp_path):
    from facediff.training.estimator import train_estimator

    with pytest.raises(FacediffError):
        train_estimator(tmp_path, tmp_path / "o", steps=0)
    with pytest.raises(FacediffError, match="not a prepared data set"):
        train_estimator(tmp_path / "missing", tmp_path / "o", steps=1)


def _bundled():
    from facediff.metrics.features import load_oracle, oracle_dir

    if not (oracle_dir() / "model.safetensors").is_file():
        pytest.skip("the bundled oracle has not been trained into src/facediff/assets/oracle yet")
    return load_oracle(), json.loads((oracle_dir() / "metrics.json").read_text()), oracle_dir()


def test_bundled_oracle_matches_current_synthfaces():
    """The bundled oracle loads, is small, and its recorded held-out accuracy still holds on freshly rendered
    SynthFaces (fails when SynthFaces' rendering changed after the oracle was trained: retrain it)."""
    from facediff.metrics.attributes import attribute_accuracy

    m, metrics, d = _bundled()
    assert (d / "model.safetensors").stat().st_size < 5 * 2 ** 20
    held = metrics["heldout"]["per_attribute"]
    assert set(held) == set(m.config.attributes)
    recipe = metrics.get("recipe", {})
    imgs, labels = render_images_at_sizes(987_654, 0, 150, m.config.size, recipe.get("style", "mixed"),
                                          tuple(recipe.get("render_sizes", [m.config.size])))
    req = np.array([[lab["attributes"][a] for a in m.config.attributes] for lab in labels])
    now = attribute_accuracy(imgs, req, m)["per_attribute"]
    for a in m.config.attributes:  # 150 images: binomial sd <= 0.041
        assert abs(now[a]["accuracy"] - held[a]["accuracy"]) < 0.15, a


@pytest.mark.parametrize("drawn_at", [32, 64])
def test_bundled_oracle_reaches_97_percent_per_attribute(drawn_at):
    """Issue goal: >= 97 % level accuracy on every attribute, measured here on 1000 freshly rendered SynthFaces
    of a seed no oracle run trained on (2-5 s of rendering), drawn at 32 px and at 64 px (the bundled models'
    size, read through the resize). At n = 1000 a true 97 % is observed below 95.5 % with probability < 0.3 %,
    so each attribute must reach 95.5 % and the mean 97 %."""
    from facediff.metrics.attributes import attribute_accuracy

    from facediff.data.synth import render_batch

    m, _, _ = _bundled()
    faces = render_batch(424_242, 0, 1000, drawn_at, "mixed")  # as a model of that size outputs them
    imgs = np.stack([f.image for f in faces])
    req = np.array([[f.label["attributes"][a] for a in m.config.attributes] for f in faces])
    res = attribute_accuracy(imgs, req, m)
    per = {a: v["accuracy"] for a, v in res["per_attribute"].items()}
    assert min(per.values()) >= 0.955 and res["accuracy"] >= 0.97, per
