"""facediff eval on your own prompts and images: the oracle's per-line agreement (prompts.json / .md / .png).

The images are SynthFaces renders at the oracle's size, so their true attribute levels and captions are known:
the right lines must score high and shifted (wrong) lines low, which a scorer that ignores the lines fails.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facediff import api
from facediff.cli.main import app
from facediff.evaluation.user import NOTHING

runner = CliRunner()
N = 12  # face10 and face11 sort after face9 only in name order with numbers as numbers


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in res.output, err
    return err


def _attr_line(label: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in label["attributes"].items())


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> tuple[Path, list[dict], np.ndarray]:
    """N SynthFaces (both styles) as PNGs in ROOT/imgs, with their labels and pixels."""
    from facediff.data.synth import render

    root = tmp_path_factory.mktemp("faces")
    (root / "imgs").mkdir()
    size = api.oracle().size
    labels, pixels = [], []
    for i in range(N):
        face = render(5, i, size, "mixed")
        Image.fromarray(face.image).save(root / "imgs" / f"face{i}.png")
        labels.append(face.label)
        pixels.append(face.image)
    assert {lb["style"] for lb in labels} == {"human", "anime"}
    (root / "imgs" / "notes.txt").write_text("not an image: ignored")
    return root, labels, np.stack(pixels)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("# a comment line\n\n" + "\n".join(lines) + "\n")
    return path


def _eval(args: list[str]) -> dict:
    res = runner.invoke(app, ["eval", *args])
    assert res.exit_code == 0, res.output
    out = Path(args[args.index("--out") + 1])
    for name in ("prompts.json", "prompts.md", "prompts.png"):
        assert (out / name).is_file(), name
    return json.loads((out / "prompts.json").read_text())


def test_images_with_their_attribute_levels_score_high_and_wrong_levels_low(faces, tmp_path):
    root, labels, _ = faces
    right = _write(tmp_path / "right.txt", [_attr_line(lb) for lb in labels])
    wrong = _write(tmp_path / "wrong.txt", [_attr_line(lb) for lb in labels[1:] + labels[:1]])
    res = _eval(["--images", str(root / "imgs"), "--attrs", str(right), "--out", str(tmp_path / "r")])
    assert res["per_prompt"] == 1 and len(res["prompts"]) == N
    assert res["prompts"][10]["images"] == ["face10.png"]
    assert res["overall"]["agreement"] >= 0.8
    assert set(res["overall"]["per_property"]) == {"bangs", "eyeglasses", "beard", "smiling", "age"}
    row = res["prompts"][0]
    assert row["names"] == labels[0]["attributes"] and set(row["read"]) == set(row["names"])
    md = (tmp_path / "r" / "prompts.md").read_text()
    assert f"| 1 | {_attr_line(labels[0])} |" in md and f"smiling={labels[0]['attributes']['smiling']}: " in md
    bad = _eval(["--images", str(root / "imgs"), "--attrs", str(wrong), "--out", str(tmp_path / "w")])
    assert bad["overall"]["agreement"] < 0.5


def test_images_with_their_captions_score_high_and_wrong_captions_low(faces, tmp_path):
    root, labels, _ = faces
    caps = [lb["caption"] for lb in labels]
    right = _write(tmp_path / "caps.txt", caps)
    res = _eval(["--images", str(root / "imgs"), "--prompts", str(right), "--out", str(tmp_path / "r")])
    assert res["overall"]["agreement"] >= 0.8 and res["prompts"][3]["text"] == caps[3]
    assert {"hair_colour", "style"} <= set(res["overall"]["per_property"])
    assert res["overall"]["oracle_scores"]["style"]["accuracy"] >= 0.8
    wrong = _write(tmp_path / "wrong.txt", caps[N // 2:] + caps[:N // 2])
    bad = _eval(["--images", str(root / "imgs"), "--prompts", str(wrong), "--out", str(tmp_path / "w")])
    assert bad["overall"]["agreement"] < 0.5


def test_oracle_api_reads_a_batch_and_scores_groups(faces, tmp_path):
    root, labels, pixels = faces
    oracle = api.oracle()
    pred = oracle.predict(pixels)
    assert set(pred) == {"bangs", "eyeglasses", "beard", "smiling", "age", "style", "hair_colour"}
    assert all(len(v) == N for v in pred.values()) and pred["style"].dtype.kind == "U"
    truth = np.array([[lb["attributes"][a] for a in oracle.config.attributes] for lb in labels])
    assert (np.stack([pred[a] for a in oracle.config.attributes], 1) == truth).mean() >= 0.8
    # two images per line: consecutive groups
    res = oracle.score_attrs(np.repeat(pixels, 2, axis=0), [lb["attributes"] for lb in labels])
    assert res["per_prompt"] == 2 and all(len(r["read"]["age"]) == 2 for r in res["prompts"])
    assert res["overall"]["agreement"] >= 0.8
    seen = []
    api.evaluate_images(root / "imgs", attrs=[_attr_line(lb) for lb in labels], out=tmp_path / "o",
                        progress=lambda task, done, total, **_: seen.append((task, done, total)))
    assert seen[-1] == ("eval prompts", N, N)


def test_prompts_file_on_a_tiny_text_model(tmp_path, monkeypatch):
    from tiny_sd import build_tiny_sd

    import facediff.pipelines.load as load

    monkeypatch.setattr(load, "DEFAULT_TEXT_MODEL_DIR", tmp_path / "no-bundled-model")
    build_tiny_sd("f4-eps", tmp_path / "tok").save_pretrained(tmp_path / "sd")
    prompts = _write(tmp_path / "p.txt", ["a smiling woman with glasses", "an anime boy with purple hair", "a cat"])
    out = tmp_path / "out"
    res = _eval(["--model", str(tmp_path / "sd"), "--prompts", str(prompts), "--per-prompt", "2", "--steps", "2",
                 "--seed", "3", "--out", str(out)])
    assert [r["text"] for r in res["prompts"]] == ["a smiling woman with glasses", "an anime boy with purple hair",
                                                   "a cat"]
    assert res["seeds"] == [3, 4] and res["per_prompt"] == 2
    for r in res["prompts"]:
        assert r["n_images"] == 2 and all(len(v) == 2 for v in r["read"].values())
    assert res["prompts"][0]["names"] == {"eyeglasses": 2, "smiling": 2}
    assert res["prompts"][1]["names"] == {"hair_colour": "purple", "style": "anime"}
    assert res["prompts"][2]["mean"] is None and res["prompts"][2]["note"] == NOTHING
    assert NOTHING in (out / "prompts.md").read_text()
    grid = Image.open(out / "prompts.png")
    assert grid.height > 3 * 16 and grid.width > 2 * 16
    # the bundled text model is really out of reach here
    err = _one_line_error(runner.invoke(app, ["eval", "--prompts", str(prompts), "--out", str(tmp_path / "b")]))
    assert "bundled text-to-face model is missing" in err


def test_user_mistakes_are_one_line(faces, tmp_path):
    root, labels, _ = faces
    imgs = str(root / "imgs")
    five = _write(tmp_path / "five.txt", [_attr_line(lb) for lb in labels[:5]])
    err = _one_line_error(runner.invoke(app, ["eval", "--images", imgs, "--attrs", str(five), "--out", str(tmp_path)]))
    assert "12 images" in err and "5 lines" in err
    err = _one_line_error(runner.invoke(app, ["eval", "--prompts", str(tmp_path / "nowhere.txt"),
                                              "--out", str(tmp_path / "o")]))
    assert "nowhere.txt: no such file" in err
    empty = _write(tmp_path / "empty.txt", [])
    assert "empty" in _one_line_error(runner.invoke(app, ["eval", "--images", imgs, "--prompts", str(empty),
                                                          "--out", str(tmp_path / "o")]))
    (tmp_path / "noimg").mkdir()
    err = _one_line_error(runner.invoke(app, ["eval", "--images", str(tmp_path / "noimg"), "--prompts", str(five),
                                              "--out", str(tmp_path / "o")]))
    assert "no images" in err
    (tmp_path / "badimg").mkdir()
    (tmp_path / "badimg" / "broken.png").write_bytes(b"not a png")
    one = _write(tmp_path / "one.txt", ["smiling=5"])
    err = _one_line_error(runner.invoke(app, ["eval", "--images", str(tmp_path / "badimg"), "--attrs", str(one),
                                              "--out", str(tmp_path / "o")]))
    assert "broken.png" in err
    typo = _write(tmp_path / "typo.txt", ["smiling=5", "smilng=5"])
    err = _one_line_error(runner.invoke(app, ["eval", "--images", imgs, "--attrs", str(typo),
                                              "--out", str(tmp_path / "o")]))
    assert "line 4" in err and "smilng" in err  # two header lines, then the second line of levels
    assert "--images DIR" in _one_line_error(runner.invoke(app, ["eval", "--attrs", str(one), "--out", str(tmp_path)]))
    assert "drop --model" in _one_line_error(runner.invoke(app, ["eval", "--images", imgs, "--attrs", str(one),
                                                                 "--model", str(tmp_path), "--out", str(tmp_path)]))
    assert "--data DIR" in _one_line_error(runner.invoke(app, ["eval", "--out", str(tmp_path / "o")]))


def test_existing_outputs_need_overwrite(faces, tmp_path):
    root, labels, _ = faces
    attrs = _write(tmp_path / "a.txt", [_attr_line(lb) for lb in labels])
    args = ["eval", "--images", str(root / "imgs"), "--attrs", str(attrs), "--out", str(tmp_path / "o")]
    assert runner.invoke(app, args).exit_code == 0
    before = (tmp_path / "o" / "prompts.json").stat().st_mtime_ns
    assert "--overwrite" in _one_line_error(runner.invoke(app, args))
    assert (tmp_path / "o" / "prompts.json").stat().st_mtime_ns == before
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0
    # the data-set mode checks OUT/metrics.json before it loads anything (the data set here does not exist)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "metrics.json").write_text("{}")
    err = _one_line_error(runner.invoke(app, ["eval", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "m")]))
    assert "metrics.json" in err and "--overwrite" in err
