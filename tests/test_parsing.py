"""Face-parsing maps: class tables, label PNGs, colours, masks in prepared sets, and mIoU."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facediff.data.parsing import (CELEBAMASK_HQ, CELEBAMASK_HQ_NAMES, PALETTE, PARSING_CLASSES, SYNTH_PARTS,
                                   LabelIndex, class_lut, colorize, parsing_from_rgb, read_label_png,
                                   read_part_masks, to_parsing)
from facediff.data.prepare import prepare
from facediff.data.prepared import PreparedDataset
from facediff.data.synth import PART_NAMES, write_synth
from facediff.errors import FacediffError
from facediff.metrics.parsing import mean_iou, per_class_iou

P = {name: i for i, name in enumerate(PARSING_CLASSES)}
C = {name: i for i, name in enumerate(CELEBAMASK_HQ_NAMES)}


def one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.isprintable(), msg
    return msg


def png(path: Path, values: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(values, dtype=np.uint8), mode)
    if mode == "P":  # a colour palette, as label tools write: the indices are the ids, not the colours
        img.putpalette(np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8).tobytes())
    img.save(path)
    return path


# ----------------------------------------------------------------------------------------------- class tables
def test_synth_parts_follow_part_names_and_map_as_documented():
    assert tuple(SYNTH_PARTS) == PART_NAMES
    parts = np.arange(len(PART_NAMES), dtype=np.uint8)
    mapped = to_parsing(parts)
    assert [PARSING_CLASSES[i] for i in mapped] == [SYNTH_PARTS[n] for n in PART_NAMES]
    assert mapped[PART_NAMES.index("ears_neck")] == P["skin"]
    assert mapped[PART_NAMES.index("clothes")] == P["background"]
    for name in PARSING_CLASSES:  # every parsing class is a SynthFaces part of the same name
        assert mapped[PART_NAMES.index(name)] == P[name]
    with pytest.raises(FacediffError) as e:
        to_parsing(np.array([len(PART_NAMES)]))
    one_line_error(e)


def test_celebamask_hq_table():
    assert CELEBAMASK_HQ_NAMES == ("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow",
                                   "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l",
                                   "neck", "cloth")
    expect = {"eye_g": "glasses", "l_eye": "eyes", "r_eye": "eyes", "l_brow": "brows", "r_brow": "brows",
              "u_lip": "mouth", "l_lip": "mouth", "mouth": "mouth", "l_ear": "skin", "r_ear": "skin",
              "neck": "skin", "hat": "background", "cloth": "background", "ear_r": "background",
              "neck_l": "background", "hair": "hair", "nose": "nose", "skin": "skin"}
    for k, v in expect.items():
        assert CELEBAMASK_HQ[k] == v, k
    assert "beard" not in CELEBAMASK_HQ.values()
    assert set(CELEBAMASK_HQ.values()) == set(PARSING_CLASSES) - {"beard"}
    with pytest.raises(FacediffError) as e:
        class_lut(["skin", "tattoo"])
    assert "tattoo" in one_line_error(e)


# ----------------------------------------------------------------------------------------------- label PNGs
def test_read_label_png_maps_celebamask_ids(tmp_path):
    ids = np.arange(19, dtype=np.uint8).repeat(2)[None].repeat(38, 0)[:, :38]  # 38 x 38, columns of ids
    out = read_label_png(png(tmp_path / "a.png", ids), 38)
    assert out.dtype == np.uint8 and out.shape == (38, 38)
    lut = np.array([P[CELEBAMASK_HQ[n]] for n in CELEBAMASK_HQ_NAMES])
    assert (out == lut[ids]).all()
    same = read_label_png(png(tmp_path / "b.png", ids, "P"), 38)  # palette indices are the ids
    assert (same == out).all()
    rgb = read_label_png(png(tmp_path / "c.png", np.repeat(ids[..., None], 3, -1), "RGB"), 38)
    assert (rgb == out).all()
    ours = read_label_png(png(tmp_path / "d.png", ids % 9), 38, classes="facediff")
    assert (ours == ids % 9).all()


def test_read_label_png_nearest_resize_and_crop(tmp_path):
    lab = np.zeros((4, 4), np.uint8)
    lab[:2, 2:] = C["hair"]
    lab[2:, :2] = C["l_brow"]
    path = png(tmp_path / "q.png", lab)
    big = read_label_png(path, 8)
    assert set(np.unique(big)) == {P["background"], P["hair"], P["brows"]}  # nearest: no blended ids
    assert (big[:4, 4:] == P["hair"]).all() and (big[4:, :4] == P["brows"]).all() and (big[:4, :4] == 0).all()
    # a crop box in the pixels of an 8 x 8 image: the top-right quadrant of the 4 x 4 label map
    quad = read_label_png(path, 2, box=(4, 0, 8, 4), frame=(8, 8))
    assert (quad == P["hair"]).all()
    with pytest.raises(FacediffError) as e:
        read_label_png(path, 2, frame=(8, 4))
    assert "8x4" in one_line_error(e)


@pytest.mark.parametrize("bad", ["jpeg", "text", "colour", "range", "empty", "missing", "truncated"])
def test_bad_label_files_are_one_line_errors(tmp_path, bad):
    p = tmp_path / "bad.png"
    if bad == "jpeg":
        p = tmp_path / "bad.jpg"
        Image.new("L", (8, 8), 1).save(p, "JPEG")
    elif bad == "text":
        p.write_text("not\na png\n")
    elif bad == "colour":
        Image.new("RGB", (8, 8), (10, 200, 30)).save(p)
    elif bad == "range":
        png(p, np.full((8, 8), 19))
    elif bad == "empty":
        p.write_bytes(b"")
    elif bad == "truncated":
        data = png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 19, (64, 64))).read_bytes()
        p.write_bytes(data[: len(data) // 2])
    with pytest.raises(FacediffError) as e:
        read_label_png(p, 8)
    msg = one_line_error(e)
    assert str(p) in msg
    if bad == "range":
        assert "19" in msg and "0-18" in msg


def test_part_masks_compose_in_g_mask_order(tmp_path):
    skin = np.zeros((8, 8), np.uint8)
    skin[1:7, 1:7] = 255
    hair = np.zeros((8, 8), np.uint8)
    hair[1:3, :] = 255  # overlaps the skin: hair comes later in g_mask.py's order, so it wins
    parts = {"skin": png(tmp_path / "0" / "00003_skin.png", skin), "hair": png(tmp_path / "0" / "00003_hair.png", hair)}
    out = read_part_masks(parts, 8)
    assert (out[1:3] == P["hair"]).all() and (out[3:7, 1:7] == P["skin"]).all() and out[7, 0] == 0
    idx = LabelIndex(tmp_path)
    found, why = idx.find("3.jpg")
    assert why is None and set(found) == {"skin", "hair"}
    assert idx.find("4.jpg")[0] is None and "4.png" in idx.find("4.jpg")[1]


# ----------------------------------------------------------------------------------------------- colours
def test_colorize_round_trip_and_drawn_colours():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(PARSING_CLASSES), (3, 16, 16)).astype(np.uint8)
    rgb = colorize(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, 16, 16, 3)
    assert (parsing_from_rgb(rgb) == ids).all()
    noisy = np.clip(rgb.astype(int) + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    assert (parsing_from_rgb(noisy) == ids).all()  # a hand-drawn stroke's anti-aliasing still reads
    rgba = np.concatenate([rgb[0], np.full((16, 16, 1), 255, np.uint8)], -1)
    rgba[:8, :, 3] = 0
    back = parsing_from_rgb(rgba)
    assert (back[:8] == 0).all() and (back[8:] == ids[0, 8:]).all()
    assert len({tuple(c) for c in PALETTE}) == len(PARSING_CLASSES)
    with pytest.raises(FacediffError):
        parsing_from_rgb(np.zeros((4, 4), np.uint8))


# ----------------------------------------------------------------------------------------------- prepared sets
def test_synth_masks_read_as_parsing(tmp_path):
    ds = PreparedDataset(write_synth(tmp_path / "s", n=6, size=16, style="mixed"))
    assert ds.mask_classes == PART_NAMES
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["mask_classes"] == list(PART_NAMES)
    assert (ds.parsing() == to_parsing(ds.masks())).all()
    assert (ds.parsing([1, 3]) == to_parsing(ds.masks([1, 3]))).all()


def test_prepare_with_label_folder(tmp_path):
    root, labels = tmp_path / "imgs", tmp_path / "labels"
    rng = np.random.default_rng(1)
    for name in ("a", "b", "7", "nolabel", "badlabel"):
        png(root / f"{name}.png", rng.integers(0, 255, (32, 32, 3)), "RGB")
    lab = np.zeros((16, 16), np.uint8)  # half resolution, as CelebAMask-HQ's 512 px maps of 1024 px images
    lab[:8] = C["hair"]
    lab[8:, 8:] = C["u_lip"]
    png(labels / "a.png", lab)
    png(labels / "sub" / "b.png", np.full((16, 16), C["eye_g"]))
    png(labels / "0" / "00007_skin.png", np.full((16, 16), 255))
    Image.new("RGB", (16, 16), (1, 2, 3)).save(labels / "badlabel.png", "JPEG")
    out = prepare("folder", root, 8, tmp_path / "ds", masks=labels, workers=1)
    ds = PreparedDataset(out)
    files = [lab["file"] for lab in ds.labels]
    assert files == ["7.png", "a.png", "b.png"]
    assert ds.mask_classes == PARSING_CLASSES
    m = ds.parsing()
    assert (m == ds.masks()).all()
    assert (m[0] == P["skin"]).all() and (m[2] == P["glasses"]).all()
    assert (m[1, :4] == P["hair"]).all() and (m[1, 4:, 4:] == P["mouth"]).all() and (m[1, 4:, :4] == 0).all()
    man = json.loads((out / "manifest.json").read_text())
    assert man["mask_classes"] == list(PARSING_CLASSES) and man["masks"] == str(labels)
    skipped = {s["file"]: s["reason"] for s in man["skipped"]}
    assert set(skipped) == {"nolabel.png", "badlabel.png"}
    assert "nolabel.png" in skipped["nolabel.png"] and "JPEG" in skipped["badlabel.png"]
    assert all("\n" not in r for r in skipped.values())


def test_prepare_masks_folder_errors(tmp_path):
    (tmp_path / "imgs").mkdir()
    png(tmp_path / "imgs" / "a.png", np.zeros((16, 16, 3)), "RGB")
    for bad in (tmp_path / "missing", tmp_path / "imgs" / "a.png", tmp_path / "empty"):
        if bad.name == "empty":
            bad.mkdir()
        with pytest.raises(FacediffError) as e:
            prepare("folder", tmp_path / "imgs", 8, tmp_path / "ds", masks=bad)
        assert "--masks" in one_line_error(e)


# ----------------------------------------------------------------------------------------------- mIoU
def test_mean_iou_is_per_class_over_the_batch():
    # image 1: all class 1, predicted right; image 2: target 0 0 0 1, predicted 0 0 1 1
    target = np.array([[1, 1, 1, 1], [0, 0, 0, 1]])
    pred = np.array([[1, 1, 1, 1], [0, 0, 1, 1]])
    # class 0: |P ∩ T| = 2, |P ∪ T| = 3; class 1: 4 + 1 = 5 of 4 + 2 = 6
    iou = per_class_iou(pred, target, 3)
    assert iou[0] == pytest.approx(2 / 3) and iou[1] == pytest.approx(5 / 6) and np.isnan(iou[2])
    assert mean_iou(pred, target, 3) == pytest.approx((2 / 3 + 5 / 6) / 2)  # 0.75
    # averaging per image would give (1 + (2/3 + 1/2) / 2) / 2 = 0.7917, per class per image 0.7083
    assert mean_iou(pred, target, 3) != pytest.approx((1 + (2 / 3 + 1 / 2) / 2) / 2, abs=1e-3)
    assert mean_iou(pred, target, 3, ignore_absent=False) == pytest.approx((2 / 3 + 5 / 6 + 0) / 3)
    assert mean_iou(target, target, 3) == 1.0
    # a class only predicted (false positives) is present, IoU 0
    assert mean_iou(np.array([[2, 0]]), np.array([[0, 0]]), 3) == pytest.approx((1 / 2 + 0) / 2)


def test_mean_iou_matches_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    rng = np.random.default_rng(3)
    target = rng.integers(0, 5, (4, 12, 12))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 5, target.shape))
    pred[pred == 4] = 3  # class 4 only in the target
    ref = tm.MulticlassJaccardIndex(num_classes=6, average="macro")(torch.from_numpy(pred), torch.from_numpy(target))
    assert mean_iou(pred, target, 6) == pytest.approx(float(ref), abs=1e-6)
    per = tm.MulticlassJaccardIndex(num_classes=6, average=None)(torch.from_numpy(pred), torch.from_numpy(target))
    assert np.allclose(np.nan_to_num(per_class_iou(pred, target, 6)), per.numpy(), atol=1e-6)


def test_mean_iou_bad_inputs():
    with pytest.raises(FacediffError):
        mean_iou(np.zeros((2, 2), int), np.zeros((2, 3), int), 3)
    with pytest.raises(FacediffError) as e:
        mean_iou(np.full((2, 2), 5), np.zeros((2, 2), int), 3)
    assert "5" in one_line_error(e)
    with pytest.raises(FacediffError):
        mean_iou(np.zeros((2, 2)), np.zeros((2, 2), int), 3)  # float ids
