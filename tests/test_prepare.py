"""Real-source preparation: robust image loading, the three sources, streaming prepare, sketches."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.data.imageio import load_rgb, load_square, parse_crop, square_resize
from facediff.data.prepare import prepare
from facediff.data.prepared import PreparedDataset
from facediff.data.sketch import extract_sketch, sketch_file
from facediff.data.sources import open_source
from facediff.errors import FacediffError

CELEBA_NAMES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
RED, GREEN, BLUE = (220, 30, 40), (30, 200, 60), (40, 60, 210)


# ----------------------------------------------------------------------------------------------- file makers
def flat(path: Path, color, size=(40, 50), mode="RGB", fmt=None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt, **save)
    return path


def noisy_jpeg_bytes(seed=0, size=(40, 50)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def broken(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = noisy_jpeg_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "tiny":
        Image.new("RGB", (5, 5), RED).save(path)
    return path


def cmyk_red(path: Path) -> Path:
    return flat(path, (0, 255, 255, 0), mode="CMYK", fmt="JPEG", quality=95)  # C=0 M=Y=255 K=0: red


def rgba_half(path: Path) -> Path:
    """Left half transparent (any colour), right half opaque blue."""
    a = np.zeros((50, 40, 4), np.uint8)
    a[:, :20] = (10, 200, 10, 0)
    a[:, 20:] = (*BLUE, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, "RGBA").save(path)
    return path


def gray16(path: Path, value=32896) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((50, 40), value, np.uint16)).save(path)  # mode I;16; 32896 / 257 = 128
    return path


def write_attr_file(path: Path, rows: dict[str, dict[str, int]]) -> None:
    """The official layout: count line, names line with a trailing space, right-aligned +-1 (double spaces), CRLF."""
    lines = [str(len(rows)), " ".join(CELEBA_NAMES) + " "]
    for name, on in rows.items():
        lines.append(name + "".join(f"{(1 if on.get(n) else -1):>3}" for n in CELEBA_NAMES))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


@pytest.fixture()
def celeba_root(tmp_path: Path) -> Path:
    root = tmp_path / "celeba"
    img = root / "img_align_celeba"
    flat(img / "000001.jpg", RED, fmt="JPEG", quality=95)
    cmyk_red(img / "000002.jpg")
    broken(img / "000003.jpg", "zero")
    broken(img / "000004.jpg", "truncated")
    broken(img / "000005.jpg", "text")
    flat(img / "000007.jpg", GREEN, size=(178, 218), fmt="JPEG", quality=95)  # 000006.jpg listed, not on disk
    write_attr_file(root / "list_attr_celeba.txt", {
        "000001.jpg": {"Bangs": 1, "Smiling": 1, "Male": 1},  # No_Beard = -1: a beard; Young = -1: older
        "000002.jpg": {"Eyeglasses": 1, "No_Beard": 1, "Young": 1},
        "000003.jpg": {}, "000004.jpg": {}, "000005.jpg": {}, "000006.jpg": {},
        "000007.jpg": {"No_Beard": 1, "Young": 1}})
    (root / "list_eval_partition.txt").write_text(
        "000001.jpg 0\n000002.jpg 1\n000003.jpg 0\n000004.jpg 0\n000005.jpg 0\n000006.jpg 0\n000007.jpg 2\n")
    return root


def read_labels(out: Path) -> dict[str, dict]:
    return {json.loads(line)["file"]: json.loads(line) for line in open(out / "labels.jsonl")}


# ----------------------------------------------------------------------------------------------- imageio
def test_load_rgb_converts_every_mode(tmp_path: Path):
    cases = {
        "cmyk": (cmyk_red(tmp_path / "c.jpg"), (255, 0, 0), 14),
        "gray": (flat(tmp_path / "g.png", 77, mode="L"), (77, 77, 77), 0),
        "bilevel": (flat(tmp_path / "b.png", 1, mode="1"), (255, 255, 255), 0),
        "16bit": (gray16(tmp_path / "i16.png"), (128, 128, 128), 1),
    }
    with Image.open(cases["16bit"][0]) as im:
        assert im.mode.startswith("I")
    for name, (path, want, tol) in cases.items():
        arr, reason = load_rgb(path)
        assert reason is None, name
        assert arr.dtype == np.uint8 and arr.shape == (50, 40, 3), name
        assert np.abs(arr.reshape(-1, 3).mean(0) - want).max() <= tol + 0.5, (name, arr.reshape(-1, 3).mean(0))
    arr, _ = load_rgb(rgba_half(tmp_path / "a.png"))
    assert (arr[:, :20] == 255).all(), "transparent pixels must be composited on white"
    assert (arr[:, 20:] == BLUE).all()
    pal = Image.new("P", (40, 50), 0)
    pal.putpalette([0, 255, 0, *BLUE] + [0] * 762)
    pal.paste(1, (20, 0, 40, 50))
    pal.save(tmp_path / "p.png", transparency=0)
    arr, _ = load_rgb(tmp_path / "p.png")
    assert (arr[:, :20] == 255).all() and (arr[:, 20:] == BLUE).all()


def test_load_rgb_exif_orientation(tmp_path: Path):
    a = np.zeros((50, 40, 3), np.uint8)
    a[:25] = RED  # top half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    Image.fromarray(a).save(tmp_path / "o.png", exif=exif)
    arr, reason = load_rgb(tmp_path / "o.png")
    assert reason is None and arr.shape == (40, 50, 3)
    assert (arr[:, 30:] == RED).all() and (arr[:, :20] == 0).all()  # stored top is now on the right


@pytest.mark.parametrize("kind, words", [("zero", "empty"), ("truncated", "truncated"), ("text", "not an image"),
                                         ("tiny", "too small")])
def test_load_rgb_reasons(tmp_path: Path, kind: str, words: str):
    arr, reason = load_rgb(broken(tmp_path / f"{kind}.jpg" if kind != "tiny" else tmp_path / "t.png", kind))
    assert arr is None and words in reason


def test_load_rgb_missing_and_bomb(tmp_path: Path):
    assert load_rgb(tmp_path / "nope.jpg") == (None, "file not found")
    arr, reason = load_rgb(flat(tmp_path / "big.png", RED), max_pixels=1000)
    assert arr is None and "decompression bomb" in reason
    assert load_rgb(tmp_path / "big.png", max_pixels=2000)[1] is None


def test_crops(tmp_path: Path):
    a = np.zeros((218, 178, 3), np.uint8)
    a[:] = BLUE
    a[57:185, 25:153] = RED  # exactly the celeba face box
    Image.fromarray(a).save(tmp_path / "al.png")
    got, reason, used = load_square(tmp_path / "al.png", 32, "celeba")
    assert reason is None and used == "celeba" and (np.abs(got[3:-3, 3:-3].astype(int) - RED) <= 2).all()
    assert np.abs(got.reshape(-1, 3).mean(0) - RED).max() < 4  # Lanczos (3-lobe) only rings near the rim
    centre, _, used = load_square(tmp_path / "al.png", 32, "center")
    assert used == "center" and (np.abs(centre[0].astype(int) - BLUE) <= 2).all()  # centre square reaches row 20
    _, _, used = load_square(flat(tmp_path / "sq.png", RED, size=(64, 64)), 16, "celeba")
    assert used == "center"  # other aspect: falls back
    box, _, _ = load_square(tmp_path / "al.png", 16, "25,57,153,185")
    assert (np.abs(box[3:-3, 3:-3].astype(int) - RED) <= 2).all()
    assert load_square(tmp_path / "al.png", 16, "0,0,500,40")[0] is None
    for bad in ("middle", "1,2,3", "5,5,1,1"):
        with pytest.raises(FacediffError):
            parse_crop(bad)


def test_astronaut_center_crop_and_antialiased_resize():
    skimage_data = pytest.importorskip("skimage.data")
    a = skimage_data.astronaut()[:, 100:400]  # 512 x 300 real photo
    got = square_resize(a, 60)
    assert got.shape == (60, 60, 3) and got.dtype == np.uint8
    ref = a[106:406].astype(np.float64)  # the centred 300 x 300 square
    block = ref.reshape(60, 5, 60, 5, 3).mean(axis=(1, 3))  # area average: the alias-free reference
    nearest = ref[2::5, 2::5]
    err, alias = np.abs(got - block).mean(), np.abs(nearest - block).mean()
    assert err < 4.0 and err < alias / 2, (err, alias)


# ----------------------------------------------------------------------------------------------- sources
def test_celeba_source_parses_official_layout(celeba_root: Path):
    src = open_source("celeba", celeba_root)
    recs = {r.file: r for r in src}
    assert len(src) == 7 and list(recs) == [f"00000{i}.jpg" for i in range(1, 8)]
    r1, r2 = recs["000001.jpg"], recs["000002.jpg"]
    assert r1.attributes == {"bangs": 5, "eyeglasses": 0, "beard": 4, "smiling": 3, "age": 4}
    assert r2.attributes == {"bangs": 0, "eyeglasses": 3, "beard": 0, "smiling": 0, "age": 1}
    assert len(r1.extra["celeba_attributes"]) == 40 and r1.extra["celeba_attributes"]["Male"] == 1
    assert r1.extra["celeba_attributes"]["Young"] == -1
    assert [recs[f].split for f in ("000001.jpg", "000002.jpg", "000007.jpg")] == ["train", "val", "test"]
    (celeba_root / "list_eval_partition.txt").unlink()
    assert {r.split for r in open_source("celeba", celeba_root)} == {"train"}


@pytest.mark.parametrize("header", ["name Bangs Eyeglasses No_Beard Smiling Young",
                                    "Bangs Eyeglasses No_Beard Smiling Young ", ""])
def test_celeba_dialog_source(tmp_path: Path, header: str):
    root = tmp_path / "dialog"
    for i in range(4):
        flat(root / "image" / f"{i}.jpg", RED, fmt="JPEG")
    rgba_half(root / "image" / "4.png")  # annotation says 4.jpg: resolved by stem
    (root / "combined_annotation.txt").write_text(
        f"{header}\n0.jpg 0 1 2 3 4\n1.jpg 5  0  0  1  2\n2.jpg 1 1 1 1 1\n3.jpg 2 3 4 5 0\n4.jpg 0 0 5 0 5\n")
    (root / "captions.json").write_text(json.dumps({
        "0.jpg": {"attribute_wise_captions": {"Bangs": "No bangs.", "Smiling": "A smile."},
                  "overall_caption": "She has no bangs and smiles."},
        "1.jpg": {"attribute_wise_captions": None, "overall_caption": None},
        "2.jpg": {"overall_caption": ""},
        "3.jpg": {"attribute_wise_captions": {"Bangs": "Short bangs.", "Young": None}, "overall_caption": None}}))
    (root / "train.txt").write_text("0.jpg\n1.jpg\n4.jpg\n")
    (root / "val.txt").write_text("2.jpg\n")
    (root / "test.txt").write_text("3.jpg\n")
    recs = {r.file: r for r in open_source("celeba-dialog", root)}
    assert recs["0.jpg"].attributes == {"bangs": 0, "eyeglasses": 1, "beard": 2, "smiling": 3, "age": 4}
    assert recs["1.jpg"].attributes == {"bangs": 5, "eyeglasses": 0, "beard": 0, "smiling": 1, "age": 2}
    assert recs["4.jpg"].attributes["beard"] == 5 and recs["4.jpg"].path.name == "4.png"
    assert recs["0.jpg"].caption == "She has no bangs and smiles."
    assert recs["0.jpg"].extra["attribute_captions"]["Smiling"] == "A smile."
    assert recs["1.jpg"].caption == recs["2.jpg"].caption == recs["4.jpg"].caption == ""  # null, empty, missing
    assert recs["3.jpg"].caption == "Short bangs."
    assert [recs[f].split for f in ("0.jpg", "2.jpg", "3.jpg")] == ["train", "val", "test"]


def test_celeba_dialog_partition_and_bad_level(tmp_path: Path):
    root = tmp_path / "d"
    flat(root / "img_align_celeba" / "000001.jpg", RED, fmt="JPEG")
    (root / "combined_annotation.txt").write_text("Bangs Eyeglasses No_Beard Smiling Young\n000001.jpg 1 2 3 4 5\n")
    (root / "list_eval_partition.txt").write_text("000001.jpg 2\n")
    (rec,) = list(open_source("celeba-dialog", root))
    assert rec.split == "test" and rec.caption == "" and rec.attributes["age"] == 5
    (root / "combined_annotation.txt").write_text("Bangs Eyeglasses No_Beard Smiling Young\n000001.jpg 1 2 9 4 5\n")
    with pytest.raises(FacediffError, match="beard = '9'"):
        list(open_source("celeba-dialog", root))


def make_folder(root: Path) -> Path:
    flat(root / "a" / "img1.png", RED)
    flat(root / "a" / "img2.JPG", GREEN, fmt="JPEG", quality=95)
    (root / "a" / "img2.txt").write_text("kohya caption\n")
    flat(root / "b" / "gray.png", 90, mode="L")
    gray16(root / "b" / "deep.png")
    rgba_half(root / "b" / "rgba.png")
    broken(root / "b" / "tiny.png", "tiny")
    broken(root / "b" / "fake.webp", "text")
    flat(root / ".cache" / "hidden.png", RED)
    (root / "notes.md").write_text("not an image")
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"file_name": "a/img1.png", "text": "a red face", "bangs": 2, "age": 5, "split": "test"},
        {"file_name": "b/gray.png", "attributes": {"smiling": 4}, "split": "validation"},
        {"file_name": "gone.png", "text": "missing"}]) + "\n")
    return root


def test_folder_source(tmp_path: Path):
    root = make_folder(tmp_path / "f")
    recs = {r.file: r for r in open_source("folder", root)}
    assert list(recs) == ["a/img1.png", "a/img2.JPG", "b/deep.png", "b/fake.webp", "b/gray.png", "b/rgba.png",
                          "b/tiny.png", "gone.png"]
    assert recs["a/img1.png"].attributes == {"bangs": 2, "age": 5} and recs["a/img1.png"].caption == "a red face"
    assert recs["a/img1.png"].split == "test" and recs["b/gray.png"].split == "val"
    assert recs["b/gray.png"].attributes == {"smiling": 4}
    assert recs["a/img2.JPG"].caption == "kohya caption" and recs["a/img2.JPG"].attributes == {}
    assert recs["b/deep.png"].caption == "" and recs["b/deep.png"].split == "train"
    (root / "metadata.jsonl").write_text('{"file_name": "a/img1.png", "eyeglasses": 6}\n')
    with pytest.raises(FacediffError, match="metadata.jsonl line 1: eyeglasses"):
        list(open_source("folder", root))


@pytest.mark.parametrize("source, files, match", [
    ("celeba", [], "data root not found"),
    ("celeba", ["img_align_celeba/x.jpg"], "list_attr_celeba.txt not found"),
    ("celeba", ["list_attr_celeba.txt"], "no image folder"),
    ("celeba-dialog", ["image/0.jpg"], "combined_annotation.txt not found"),
    ("folder", [], "data root not found"),
    ("laion", ["x.jpg"], "unknown source"),
])
def test_bad_roots(tmp_path: Path, source: str, files: list[str], match: str):
    root = tmp_path / "r"
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_text("")
    with pytest.raises(FacediffError, match=match) as e:
        prepare(source, root, 16, tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


# ----------------------------------------------------------------------------------------------- prepare
def test_prepare_celeba_skips_and_streams(celeba_root: Path, tmp_path: Path):
    calls: list[tuple[int, int]] = []
    out = prepare("celeba", celeba_root, 16, tmp_path / "p512", chunk=512, workers=1, progress=lambda d, t: calls.append((d, t)))
    man = json.loads((out / "manifest.json").read_text())
    assert man["source"] == "celeba" and man["size"] == 16 and man["crop"] == "center" and man["sketch"] is None
    assert man["counts"]["images"] == 3 and man["counts"]["skipped"] == 4 and man["records"] == 7
    reasons = {s["file"]: s["reason"] for s in man["skipped"]}
    assert set(reasons) == {"000003.jpg", "000004.jpg", "000005.jpg", "000006.jpg"}
    assert "empty" in reasons["000003.jpg"] and "truncated" in reasons["000004.jpg"]
    assert "not an image" in reasons["000005.jpg"] and "not found" in reasons["000006.jpg"]
    ds = PreparedDataset(out)
    imgs = ds.images()
    assert imgs.shape == (3, 16, 16, 3) and [l["file"] for l in ds.labels] == ["000001.jpg", "000002.jpg", "000007.jpg"]
    assert np.abs(imgs[:2].reshape(-1, 3).mean(0) - (230, 20, 30)).max() < 30  # JPEG red, CMYK red
    assert np.abs(imgs[2].reshape(-1, 3).mean(0) - GREEN).max() < 6
    assert ds.labels[0]["attributes"]["bangs"] == 5 and ds.labels[1]["split"] == "val"
    assert man["counts"]["splits"] == {"train": 1, "val": 1, "test": 1}
    assert calls[-1] == (7, 7)
    small = prepare("celeba", celeba_root, 16, tmp_path / "p2", chunk=2, workers=2)
    assert np.array_equal(np.load(small / "images.npy"), np.load(out / "images.npy"))
    assert read_labels(small) == read_labels(out)
    assert json.loads((small / "manifest.json").read_text())["skipped"] == man["skipped"]


def test_prepare_crop_limit_overwrite(celeba_root: Path, tmp_path: Path):
    out = prepare("celeba", celeba_root, 16, tmp_path / "o", crop="celeba", limit=2, sketch="canny")
    man = json.loads((out / "manifest.json").read_text())
    assert man["counts"]["images"] == 2 and man["crop"] == "celeba" and man["crop_fallbacks"] == 2
    assert np.load(out / "sketches.npy").shape == (2, 16, 16)
    with pytest.raises(FacediffError, match="overwrite"):
        prepare("celeba", celeba_root, 16, out)
    prepare("celeba", celeba_root, 24, out, overwrite=True)
    assert not (out / "sketches.npy").exists() and PreparedDataset(out).images().shape == (3, 24, 24, 3)


def test_prepare_folder_with_sketches(tmp_path: Path):
    root = make_folder(tmp_path / "f")
    out = prepare("folder", root, 16, tmp_path / "out", sketch="xdog", chunk=3)
    man = json.loads((out / "manifest.json").read_text())
    assert {s["file"] for s in man["skipped"]} == {"b/tiny.png", "b/fake.webp", "gone.png"}
    labels = read_labels(out)
    assert list(labels) == ["a/img1.png", "a/img2.JPG", "b/deep.png", "b/gray.png", "b/rgba.png"]
    assert labels["a/img2.JPG"]["caption"] == "kohya caption" and labels["b/rgba.png"]["attributes"] == {}
    imgs = np.load(out / "images.npy")
    assert (imgs[2] == 128).all() and (imgs[3] == 90).all() and (imgs[0] == RED).all()
    assert (imgs[4][:, :5] >= 252).all() and (np.abs(imgs[4][:, 11:].astype(int) - BLUE) <= 3).all()
    sk = np.load(out / "sketches.npy")
    assert sk.shape == (5, 16, 16) and sk.dtype == np.uint8 and (sk[0] == 255).all()  # a flat image: no ink
    assert (sk[4] < 128).any()  # the white / blue boundary is drawn


def test_prepare_all_broken(tmp_path: Path):
    broken(tmp_path / "r" / "x.jpg", "zero")
    with pytest.raises(FacediffError, match="none of the 1"):
        prepare("folder", tmp_path / "r", 16, tmp_path / "out")


# ----------------------------------------------------------------------------------------------- sketches
def disk(size=64, r=18) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size]
    dist = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    img = np.full((size, size, 3), 230, np.uint8)
    img[dist < r] = (40, 40, 60)
    return img, np.abs(dist - r)


@pytest.mark.parametrize("method", ["xdog", "canny"])
def test_sketch_finds_circle_and_nothing_on_flat(method: str):
    img, off = disk()
    sk = extract_sketch(img, method)
    assert sk.shape == (64, 64) and sk.dtype == np.uint8
    ink = sk < 128
    assert ink.sum() > 40, "the circle must be drawn"
    assert off[ink].max() <= 3.0, "ink only along the circle"
    ring = off < 1.0
    assert ink[ring].mean() > 0.5 or ink[(off < 2.5)].sum() >= ring.sum() * 0.6
    for value in (0, 128, 255):
        assert (extract_sketch(np.full((64, 64, 3), value, np.uint8), method) == 255).all()
    assert extract_sketch(np.concatenate([img, img], 1), method, size=32).shape == (32, 32)


def test_sketch_bad_method():
    with pytest.raises(FacediffError, match="xdog"):
        extract_sketch(np.zeros((8, 8, 3), np.uint8), "sobel")


@pytest.mark.parametrize("method", ["xdog", "canny"])
def test_sketch_of_real_face_concentrates_on_face(method: str):
    skimage_data = pytest.importorskip("skimage.data")
    a = skimage_data.astronaut()
    ink = extract_sketch(a, method) < 128
    face, backdrop = ink[70:200, 170:270].mean(), ink[10:110, 300:370].mean()
    assert face > 3 * backdrop and face > 1.2 * ink.mean(), (face, backdrop, ink.mean())
    small = extract_sketch(square_resize(a, 256), method, size=64)
    assert small.shape == (64, 64) and 0.02 < (small < 128).mean() < 0.5


def test_sketch_file(tmp_path: Path):
    img, _ = disk(80)
    Image.fromarray(img).save(tmp_path / "in.png")
    out = sketch_file(tmp_path / "in.png", tmp_path / "s" / "out.png", "xdog")
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (80, 80)
    with Image.open(sketch_file(tmp_path / "in.png", tmp_path / "o2.png", "canny", size=32)) as im:
        assert im.size == (32, 32)
    broken(tmp_path / "bad.jpg", "text")
    with pytest.raises(FacediffError, match="not an image"):
        sketch_file(tmp_path / "bad.jpg", tmp_path / "x.png")
