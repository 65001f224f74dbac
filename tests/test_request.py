"""Every image remembers how it was made: the typed request, the PNG's `parameters` (A1111) and `facediff` (JSON)
chunks, `--from-png` (bit for bit in fp32), `facediff info`, `--save-each`, `--overwrite`, `--scale` and sizes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facediff.cli.main import app
from facediff.errors import FacediffError
from facediff.request import FORMAT, Request

runner = CliRunner()


def _ok(args: list[str]):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def _err(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _a1111(text: str) -> tuple[str, dict[str, str]]:
    """A minimal AUTOMATIC1111 PNG-info reader: prompt lines, then `Key: value, ...` on the last line."""
    lines = text.splitlines()
    keys = dict(part.split(": ", 1) for part in _split_quoted(lines[-1]))
    return "\n".join(lines[:-1]), keys


def _split_quoted(line: str) -> list[str]:
    out, cur, quoted = [], "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return out + [cur.strip()]


def test_sample_png_carries_its_request_and_reruns_bit_for_bit(tiny_run, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    _ok(["sample", "--model", str(tiny_run), "--n", "3", "--steps", "3", "--attrs", "smiling=5,age=2",
         "--attr-scales", "smiling=4", "--guidance", "2.5", "--seed", "11", "--out", str(a)])
    text = Image.open(a).text
    prompt, keys = _a1111(text["parameters"])
    assert keys["Steps"] == "3" and keys["Sampler"] == "DPM++ 2M" and keys["CFG scale"] == "2.5"
    assert keys["Seed"] == "11" and keys["Size"] == "16x16" and len(keys["Model hash"]) == 10
    assert keys["Attributes"] == '"smiling=5, age=2"'
    data = json.loads(text["facediff"])
    assert data["format"] == FORMAT and data["seeds"] == [11, 12, 13] and data["attr_scales"] == {"smiling": 4.0}
    assert data["model"] == str(tiny_run) and len(data["model_hash"]) == 64 and data["precision"] == "no"
    _ok(["sample", "--from-png", str(a), "--out", str(b)])
    assert np.array_equal(_pixels(a), _pixels(b))
    assert json.loads(Image.open(b).text["facediff"])["seeds"] == [11, 12, 13]
    # an option beside --from-png overrides one field and keeps the rest
    c = tmp_path / "c.png"
    _ok(["sample", "--from-png", str(a), "--seed", "7", "--out", str(c)])
    got = json.loads(Image.open(c).text["facediff"])
    assert got["seeds"] == [7, 8, 9] and got["attrs"] == {"smiling": 5, "age": 2} and got["guidance"] == 2.5
    assert not np.array_equal(_pixels(a), _pixels(c))


def test_save_each_writes_one_png_per_image_with_its_own_seed(tiny_run, tmp_path):
    grid, each = tmp_path / "g.png", tmp_path / "each"
    _ok(["sample", "--model", str(tiny_run), "--n", "2", "--steps", "3", "--seed", "4", "--scale", "2",
         "--out", str(grid), "--save-each", str(each)])
    files = sorted(each.glob("*.png"))
    assert [f.name for f in files] == ["g-000-seed4.png", "g-001-seed5.png"]
    assert Image.open(files[1]).size == (32, 32)  # 16 px times --scale 2
    req = Request.from_png(files[1])
    assert req.n == 1 and req.seed == 5 and req.seeds == [5]
    again = tmp_path / "again.png"
    _ok(["sample", "--from-png", str(files[1]), "--out", str(again)])
    assert np.array_equal(_pixels(again), _pixels(files[1]))
    tile = _pixels(grid)[2 + 0:2 + 32, 2 + 34:2 + 34 + 32]  # the second tile of the grid (pad 2)
    assert np.array_equal(tile, _pixels(files[1]))
    # the same folder again: refused unless --overwrite
    err = _err(["sample", "--model", str(tiny_run), "--n", "2", "--steps", "3", "--out", str(grid),
                "--save-each", str(each)])
    assert "--overwrite" in err


def test_existing_output_is_refused_without_overwrite(tiny_run, tmp_path):
    out = tmp_path / "f.png"
    out.write_bytes(b"precious")
    for cmd in (["sample", "--model", str(tiny_run), "--n", "1", "--steps", "2"],
                ["panorama", "--model", str(tiny_run), "--width", "32", "--steps", "2"],
                ["data", "sketch", str(tiny_run / "samples" / sorted(p.name for p in (tiny_run / "samples").iterdir())[0]),
                 "--out"][:-1]):
        err = _err(cmd + ["--out", str(out)])
        assert "exists" in err and "--overwrite" in err, err
        assert out.read_bytes() == b"precious"
    _ok(["sample", "--model", str(tiny_run), "--n", "1", "--steps", "2", "--out", str(out), "--overwrite"])
    assert Image.open(out).size == (16, 16)


def test_panorama_saves_the_size_asked_for_and_grids_several(tiny_run, tmp_path):
    one, four, big = tmp_path / "p1.png", tmp_path / "p4.png", tmp_path / "pbig.png"
    _ok(["panorama", "--model", str(tiny_run), "--width", "48", "--height", "16", "--steps", "2", "--out", str(one)])
    assert Image.open(one).size == (48, 16)
    assert json.loads(Image.open(one).text["facediff"])["width"] == 48
    _ok(["panorama", "--model", str(tiny_run), "--width", "48", "--steps", "2", "--n", "4", "--out", str(four)])
    w, h = Image.open(four).size
    assert (w, h) == (2 + 2 * (48 + 2), 2 + 2 * (16 + 2))  # a 2 x 2 grid, not one row
    _ok(["panorama", "--model", str(tiny_run), "--width", "48", "--steps", "2", "--scale", "3", "--out", str(big)])
    assert Image.open(big).size == (144, 48)
    again = tmp_path / "again.png"
    _ok(["panorama", "--from-png", str(one), "--out", str(again)])
    assert np.array_equal(_pixels(one), _pixels(again))


def test_compose_takes_guidance_and_reruns_from_png(tiny_run, tmp_path):
    layout = tmp_path / "layout.toml"
    layout.write_text('width = 32\nheight = 16\nsteps = 2\n[background]\nattrs = "smiling=0"\n'
                      '[[region]]\nbox = [0, 0, 16, 16]\nattrs = "smiling=5"\n')
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    _ok(["compose", "--model", str(tiny_run), "--layout", str(layout), "--guidance", "4.5", "--out", str(a)])
    assert Image.open(a).size == (32, 16)
    data = json.loads(Image.open(a).text["facediff"])
    assert data["guidance"] == 4.5 and data["layout"]["guidance"] == 4.5 and data["layout"]["steps"] == 2
    assert data["layout"]["window_weights"] == "hann"  # the default, recorded
    layout.unlink()  # the request holds the whole layout: the file is not needed to re-run it
    _ok(["compose", "--from-png", str(a), "--out", str(b)])
    assert np.array_equal(_pixels(a), _pixels(b))
    u = tmp_path / "u.png"  # the paper's uniform weights: another fused image, and it re-runs as such
    _ok(["compose", "--from-png", str(a), "--window-weights", "uniform", "--out", str(u)])
    assert json.loads(Image.open(u).text["facediff"])["layout"]["window_weights"] == "uniform"
    assert not np.array_equal(_pixels(a), _pixels(u))
    old = json.loads(Image.open(u).text["facediff"])  # a PNG from before the setting existed re-runs as made
    old.pop("window_weights"), old["layout"].pop("window_weights")
    assert Request.from_json(json.dumps(old)).window_weights == "uniform"
    err = _err(["sample", "--from-png", str(a), "--out", str(tmp_path / "c.png")])
    assert "facediff compose" in err


def test_info_prints_settings_and_refuses_plain_pngs(tiny_run, tmp_path):
    a = tmp_path / "a.png"
    _ok(["sample", "--model", str(tiny_run), "--n", "1", "--steps", "2", "--seed", "3", "--out", str(a)])
    res = _ok(["info", str(a)])
    assert "Steps: 2" in res.output and "Seed: 3" in res.output and f"--from-png {a}" in res.output
    res = _ok(["info", str(a), "--json"])
    assert json.loads(res.output)["seed"] == 3
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    assert "no generation settings" in _err(["info", str(plain)])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    assert "not a readable PNG" in _err(["info", str(junk)])
    assert "no facediff settings" in _err(["sample", "--from-png", str(plain)])


def test_request_is_validated_in_one_place():
    with pytest.raises(FacediffError, match="steps = 0"):
        Request(steps=0)
    with pytest.raises(FacediffError, match="sampler 'plms'"):
        Request(sampler="plms")
    with pytest.raises(FacediffError, match="panorama settings"):
        Request(width=64)
    with pytest.raises(FacediffError, match="--width"):
        Request(command="panorama")
    with pytest.raises(FacediffError, match="window_weights: a compose / panorama setting"):
        Request(window_weights="hann")
    with pytest.raises(FacediffError, match="window_weights 'box': choose one of hann, uniform"):
        Request(command="panorama", width=64, window_weights="box")
    with pytest.raises(FacediffError, match="unknown setting 'colour'"):
        Request.from_json(json.dumps({"format": FORMAT, "colour": "red"}))
    with pytest.raises(FacediffError, match="format 'x/1'"):
        Request.from_json(json.dumps({"format": "x/1"}))
    r = Request(attrs="smiling=5", attr_scales="smiling=2")
    assert r.attrs == {"smiling": 5} and r.attr_scales == {"smiling": 2.0} and r.n == 16 and r.sampler == "dpmpp"
    assert Request.from_json(r.to_json()) == r
    assert r.replace(seed=9).seed == 9
    with pytest.raises(FacediffError, match="unknown setting"):
        r.replace(colour=1)


def test_api_takes_the_request_or_its_fields(tiny_run):
    from facediff import api

    req = Request(model=str(tiny_run), n=2, steps=2, seed=1)
    a = api.sample(req)["images"]
    b = api.sample(str(tiny_run), n=2, steps=2, seed=1)["images"]
    c = api.sample(req, seed=2)["images"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_guidance_default_is_the_models_own(tiny_run, tmp_path):
    import shutil

    from facediff import api
    from facediff.pipelines.load import DEFAULT_MODEL_DIR, DEFAULT_TEXT_MODEL_DIR, sampling_defaults

    model = tmp_path / "model"
    shutil.copytree(tiny_run / "export", model)
    assert api.sample(str(model), n=1, steps=2)["request"].guidance == 3.0  # no sampling_defaults.json
    (model / "sampling_defaults.json").write_text('{"guidance": 1.75}')
    res = api.sample(str(model), n=1, steps=2, out=tmp_path / "a.png")
    assert res["request"].guidance == 1.75 and "CFG scale: 1.75" in Image.open(tmp_path / "a.png").text["parameters"]
    assert api.sample(str(model), n=1, steps=2, guidance=4)["request"].guidance == 4.0
    (model / "sampling_defaults.json").write_text('{"guidance": "strong"}')
    with pytest.raises(FacediffError, match="guidance = 'strong'"):
        api.sample(str(model), n=1, steps=2)
    (model / "sampling_defaults.json").write_text('{"prompt_chunk_tokens": 2.5}')
    with pytest.raises(FacediffError, match="prompt_chunk_tokens = 2.5: give a whole number"):
        api.sample(str(model), n=1, steps=2)
    (model / "sampling_defaults.json").write_text('{"negative_words_as_negation": "yes"}')
    with pytest.raises(FacediffError, match="negative_words_as_negation = 'yes': give true or false"):
        api.sample(str(model), n=1, steps=2)
    for bundled in (DEFAULT_MODEL_DIR, DEFAULT_TEXT_MODEL_DIR):  # each states its measured best scale
        defaults = sampling_defaults(bundled)
        assert defaults["guidance"] > 1.0 and defaults["measured"]
    assert api.sample(None, n=1, steps=1)["request"].guidance == sampling_defaults(DEFAULT_MODEL_DIR)["guidance"]
