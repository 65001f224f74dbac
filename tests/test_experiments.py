"""Every experiment recipe end to end in tiny mode: files, table structure (rows per arm, seed columns)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from facediff.errors import FacediffError
from facediff.experiments.registry import RECIPES, run_experiment

# recipe -> (number of arms, text that must appear in results.md: the seed's published numbers or claims)
EXPECTED = {
    "seed003-timesteps": (3, ["seed 003 claim (manga 64px, paper)", "\"low quality images\"", "| 500 |"]),
    "seed003-noise": (6, ["seed 003 claim (manga, paper)", "\"don't show diversity\"", "| zero | no |"]),
    "seed002-grid": (16, ["seed 002 (CelebA-Dialog 64px, paper)", "83.4184", "99.64 %", "**"]),
    "seed002-baselines": (2, ["seed 002 (CelebA-Dialog 64px, paper): Untrained DDPM", "387.9992", "82.85 %",
                              "ground truth (real vs real)"]),
    "sampler-sweep": (10, ["seed 002 (paper): ancestral DDPM", "| ddpm | 100 |", "| dpmpp | 20 |"]),
    "oracle": (5, ["seed 002 (CelebA-Dialog, paper)", "82.85 %"]),
    "seed000": (3, ["seed 000 (Danbooru faces, paper)", "25.31", "sketch fidelity: edge F1"]),
    "sweep-isolation": (5, ["| smiling |", "eyeglasses changes", "Target <= 3%"]),
    "default-models": (5, ["| default_model | attr-64 |", "| compose_model | compose-64 |", "| text_model | t2i-64 |", "prompt hair colour", "sketch edge F1", "parsing mIoU", "<= 1.3x the floor"]),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two threads contend and run several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def tiny_oracle(tmp_path_factory):
    """A random tiny attribute estimator standing in for the bundled oracle (tests never depend on it)."""
    from facediff.models.estimator import AttributeEstimator, EstimatorConfig, save_estimator

    d = save_estimator(AttributeEstimator(EstimatorConfig(size=16, widths=(8, 16), feature_dim=24)),
                       tmp_path_factory.mktemp("oracle") / "oracle")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("facediff.metrics.features.oracle_dir", lambda: d)
        yield d


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, one_thread) -> Path:
    """A 2-step tiny attribute-conditional run: the model of the sampling-only recipes."""
    from facediff import api
    from facediff.data.synth import write_synth

    root = tmp_path_factory.mktemp("exp_model")
    data = write_synth(root / "data", n=64, size=16, style="human")
    api.train("ddpm", "tiny-ddpm", root / "run",
              overrides=[f"data.path={data}", "train.max_steps=2", "train.checkpoint_every=0",
                         "train.sample_steps=1"])
    return root / "run"


def _fake_train_oracle(out, budget_minutes=30.0, *, size=32, data_dir=None, work_dir=None, **_):
    """train_oracle's contract (weights + metrics.json in ``out``) at 2 estimator steps on 64 faces."""
    import shutil

    from facediff.data.synth import write_synth
    from facediff.models.estimator import EstimatorConfig
    from facediff.training.estimator import train_estimator

    work = Path(work_dir)
    data = data_dir or write_synth(work / "data", n=64, size=16, style="mixed", overwrite=True)
    m = train_estimator(data, work / "run", steps=2, batch_size=8, size=16, eval_every=1, heldout_n=16,
                        config=EstimatorConfig(widths=(8, 16), feature_dim=16))
    Path(out).mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(work / "run" / "estimator" / name, Path(out) / name)
    return m


@pytest.mark.parametrize("name", list(EXPECTED))
def test_recipe_writes_its_table(name, tmp_path, tiny_model, monkeypatch):
    if name == "oracle":
        monkeypatch.setattr("facediff.experiments.oracle.train_oracle", _fake_train_oracle)
    model = None if RECIPES[name].trains and name != "seed002-baselines" else tiny_model
    run_experiment(name, tmp_path / name, size=16, model=model, n_eval=8, budget_minutes=1,
                         tiny=True)
    for f in ("results.json", "results.md", "report.html"):
        assert (tmp_path / name / f).is_file(), f
    saved = json.loads((tmp_path / name / "results.json").read_text())
    arms, must = EXPECTED[name]
    assert saved["recipe"] == name and len(saved["arms"]) == arms
    md = (tmp_path / name / "results.md").read_text()
    for text in must:
        assert text in md, text
    assert "ours (SynthFaces 16px" in md
    table_rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table_rows) >= arms + 1  # a header and one row per arm at least
    html = (tmp_path / name / "report.html").read_text()
    if name != "oracle":  # sample grids are embedded
        assert "data:image/png;base64" in html
        if name == "sweep-isolation":  # leakage shares, not FD
            assert all(0 <= v <= 1 for a in saved["arms"] for row in a["metrics"]["leakage"].values() for v in row)
        else:
            assert all(a["metrics"]["fd_oracle"] is not None for a in saved["arms"] if not a.get("error"))
    if name == "seed002-grid":
        assert {(a["GA"], a["T"], a["min_snr"], a["channels"]) for a in saved["arms"]}.__len__() == 16
        assert set(saved["best"]) >= {"FID", "MTCNN", "Att. estimator"}
    if name == "seed002-baselines":  # random weights: exported after 0 optimizer steps
        assert saved["arms"][0]["name"] == "untrained" and saved["arms"][0]["train"]["steps"] == 0


def test_unknown_experiment_and_bad_arguments(tmp_path):
    with pytest.raises(FacediffError, match="unknown experiment 'nope'.*seed002-grid"):
        run_experiment("nope", tmp_path)
    with pytest.raises(FacediffError, match="--size 48"):
        run_experiment("seed002-grid", tmp_path, size=48)
    with pytest.raises(FacediffError, match="trains its own models"):
        run_experiment("seed002-grid", tmp_path, model="runs/x")


def test_sweep_leakage_counts_only_changes_caused_by_the_swept_attribute(monkeypatch):
    """A fake model draws the requested levels into the pixels; a fake oracle reads them back, except that it
    reads beard one level up whenever smiling is 5: exactly that cell leaks, in one level of six."""
    from types import SimpleNamespace

    import numpy as np

    from facediff.experiments import sweep_isolation

    names = ("bangs", "eyeglasses", "beard", "smiling", "age")

    class FakePipe:
        attributes, num_levels, conditional = names, 6, True

        def __call__(self, seeds, attrs, steps, guidance, progress=None):
            img = np.zeros((len(attrs), 8, 8, 3), np.uint8)
            for k, c in enumerate(attrs):
                img[k, 0, :len(names), 0] = [c[a] for a in names]
            return SimpleNamespace(images=img)

    class FakeOracle:
        def predict(self, images):
            out = {a: images[:, 0, j, 0].astype(np.int64) for j, a in enumerate(names)}
            out["beard"] = np.where(out["smiling"] == 5, (out["beard"] + 1) % 6, out["beard"])
            return out

    monkeypatch.setattr("facediff.metrics.features.OracleFeatures", FakeOracle)
    monkeypatch.setattr("facediff.pipelines.load.resolve_guidance", lambda pipe, g: 3.0)
    from facediff.conditioning.attributes import attribute_sweep

    seeds = list(range(16))
    res = sweep_isolation.sweep_leakage(FakePipe(), seeds, steps=1, guidance=None)
    p5 = np.mean([attribute_sweep(names, 6, s)[0][0]["smiling"] == 5 for s in seeds])  # base smiling = 5
    # seeds whose base smiling is not 5 change their beard reading at smiling = 5; those whose base is 5, at
    # every other level
    assert res["leakage"]["smiling"]["beard"] == pytest.approx([p5] * 5 + [1 - p5])
    others = [v for a, row in res["leakage"].items() for b, vals in row.items() for v in vals
              if (a, b) != ("smiling", "beard")]
    assert max(others) == 0.0 and res["worst"] == max(p5, 1 - p5) and not res["met"]
    assert res["own_accuracy"]["beard"] == pytest.approx(1 - p5)  # beard's own row misread at base smiling 5
    assert all(res["own_accuracy"][a] == 1.0 for a in names if a != "beard")
    # population view: beard's accuracy is 0 at smiling 5 and 1 elsewhere; nothing else moves
    assert res["held_spread"]["smiling"]["beard"] == 1.0 and res["worst_held_spread"] == 1.0
    assert sum(v for row in res["held_spread"].values() for v in row.values()) == 1.0

    # the floor renders SynthFaces' own grids: face s with each tile's levels, so the fake model (which draws
    # exactly the levels) sits on it, the oracle's smile-beard confusion included; an autoencoder that loses
    # the smile (codes it as 0) makes the smile's own row wrong and hides that confusion
    from facediff.data import synth

    def render(seed, start, count, size, style, attributes):
        img = np.zeros((8, 8, 3), np.uint8)
        img[0, :len(names), 0] = [attributes[a] for a in names]
        assert seed == 7 and count == 1 and size == 8
        return [SimpleNamespace(image=img)]

    class DropSmile:
        def encode(self, x):
            return x

        def decode(self, z):
            z = z.clone()
            z[:, 0, 0, names.index("smiling")] = -1.0  # level 0 after the uint8 round trip
            return z

    monkeypatch.setattr(synth, "render_batch", render)
    floor = sweep_isolation.real_sweep_leakage(names, 6, seeds, size=8)
    assert floor["leakage"] == res["leakage"] and floor["held_spread"] == res["held_spread"]
    lossy = sweep_isolation.real_sweep_leakage(names, 6, seeds, size=8, space=DropSmile())
    assert lossy["own_accuracy"]["smiling"] == pytest.approx(1 / 6) and lossy["worst"] == 0.0
