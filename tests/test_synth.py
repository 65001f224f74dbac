"""SynthFaces: determinism, formats, attribute control, captions, inspect (small sizes, whole file a few seconds)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from facediff.config import ATTRIBUTES, NUM_LEVELS
from facediff.data.inspect import inspect_dataset
from facediff.data.prepared import PreparedDataset
from facediff.data.synth import PART_NAMES, SynthFace, render, render_batch, write_synth
from facediff.data.synth_text import KEYWORDS
from facediff.errors import FacediffError

MOUTH, EYES, HAIR = PART_NAMES.index("mouth"), PART_NAMES.index("eyes"), PART_NAMES.index("hair")
GLASSES, BEARD = PART_NAMES.index("glasses"), PART_NAMES.index("beard")


def _same(a: SynthFace, b: SynthFace) -> bool:
    return (np.array_equal(a.image, b.image) and np.array_equal(a.sketch, b.sketch)
            and np.array_equal(a.mask, b.mask) and a.label == b.label)


def test_render_is_deterministic_and_index_dependent():
    a, b = render(3, 17, 32), render(3, 17, 32)
    assert _same(a, b)
    assert not np.array_equal(a.image, render(3, 18, 32).image)
    assert not np.array_equal(a.image, render(4, 17, 32).image)
    # a batch renders exactly what single calls render
    batch = render_batch(3, 16, 3, 32)
    assert _same(batch[1], a)


@pytest.mark.parametrize("style", ["human", "anime"])
@pytest.mark.parametrize("size", [32, 40])
def test_shapes_dtypes_and_label(style, size):
    f = render(0, 9, size, style)
    assert f.image.shape == (size, size, 3) and f.image.dtype == np.uint8
    assert f.sketch.shape == (size, size) and f.sketch.dtype == np.uint8
    assert f.mask.shape == (size, size) and f.mask.dtype == np.uint8
    assert f.mask.max() < len(PART_NAMES)
    parts = set(np.unique(f.mask).tolist())
    assert {PART_NAMES.index("skin"), HAIR} <= parts and parts & {EYES, PART_NAMES.index("glasses")}
    assert f.sketch.max() == 255 and f.sketch.min() < 100  # paper with dark lines
    assert (f.sketch < 128).mean() < 0.35  # a line drawing, not a filled silhouette
    assert f.image.std() > 20  # not a flat image
    lab = f.label
    assert lab["file"] == "synth/0/0000009" and lab["split"] == "val" and lab["style"] == style
    assert set(lab["attributes"]) == set(ATTRIBUTES)
    assert all(0 <= v < NUM_LEVELS for v in lab["attributes"].values())
    assert render(0, 8, size, style).label["split"] == "train"


def test_mixed_style_picks_per_index_and_matches_pure_styles():
    faces = render_batch(1, 0, 16, 32, "mixed")
    styles = [f.label["style"] for f in faces]
    assert {"human", "anime"} == set(styles)
    for f in faces[:4]:
        pure = render(1, f.label["index"], 32, f.label["style"])
        assert np.array_equal(pure.image, f.image)


def test_human_and_anime_differ():
    assert np.abs(render(0, 2, 32, "human").image.astype(int) - render(0, 2, 32, "anime").image).mean() > 5


def test_write_synth_chunking_does_not_matter(tmp_path):
    calls = []
    a = write_synth(tmp_path / "a", 7, 32, "mixed", seed=5, chunk=3, progress=lambda d, t: calls.append((d, t)))
    b = write_synth(tmp_path / "b", 7, 32, "mixed", seed=5, chunk=64)
    assert calls[-1] == (7, 7) and len(calls) == 3
    for name in ("images", "sketches", "masks"):
        x, y = np.load(a / f"{name}.npy"), np.load(b / f"{name}.npy")
        assert x.shape[0] == 7 and np.array_equal(x, y)
    assert (a / "labels.jsonl").read_text() == (b / "labels.jsonl").read_text()
    man = json.loads((a / "manifest.json").read_text())
    assert man["source"] == "synth" and man["style"] == "mixed" and man["seed"] == 5 and man["crop"] == "none"
    assert man["size"] == 32 and man["counts"]["images"] == 7
    ds = PreparedDataset(a)
    assert len(ds) == 7 and ds.has_sketches and ds.masks().shape == (7, 32, 32)
    assert np.array_equal(ds.images([2])[0], render(5, 2, 32, "mixed").image)
    with pytest.raises(FacediffError):
        write_synth(tmp_path / "a", 2, 32)  # exists, no overwrite
    write_synth(tmp_path / "a", 2, 32, overwrite=True)


def test_faces_drawn_at_several_sizes_come_at_one_size_in_index_order(tmp_path):
    """The oracle's training set: face i drawn at sizes[i % k], brought to one size by the toolkit's resize;
    its held-out set is drawn the same way from the manifest."""
    from facediff.data.imageio import resize_batch
    from facediff.data.synth import render_images_at_sizes, write_synth_at_sizes
    from facediff.training.estimator import HELDOUT_SEED_OFFSET, _render_heldout

    images, labels = render_images_at_sizes(3, 2, 5, 16, "mixed", (16, 32))
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    for k, i in enumerate(range(2, 7)):
        face = render(3, i, 16 if i % 2 == 0 else 32, "mixed")
        assert labels[k] == face.label
        assert np.array_equal(images[k], resize_batch(face.image[None], 16)[0])
    assert not np.array_equal(images[1], render(3, 3, 16, "mixed").image)  # index 3 was drawn at 32, not 16
    d = write_synth_at_sizes(tmp_path / "d", 6, 16, "mixed", 3, (16, 32), chunk=4)
    ds = PreparedDataset(d)
    assert np.array_equal(ds.images(), render_images_at_sizes(3, 0, 6, 16, "mixed", (16, 32))[0])
    assert not ds.has_sketches and ds.manifest["render_sizes"] == [16, 32]
    held, _ = _render_heldout(ds.manifest, 4, 16)
    assert np.array_equal(held, render_images_at_sizes(3 + HELDOUT_SEED_OFFSET, 0, 4, 16, "mixed", (16, 32))[0])
    with pytest.raises(FacediffError):
        render_images_at_sizes(3, 0, 2, 16, "mixed", (16, 5))


def test_attribute_override_changes_only_that_attribute():
    for index in (0, 1, 2):
        base = render(0, index, 64)
        f0, f5 = render_batch(0, index, 1, 64, attributes={"smiling": 0})[0], \
            render_batch(0, index, 1, 64, attributes={"smiling": 5})[0]
        for f, lvl in ((f0, 0), (f5, 5)):
            expect = dict(base.label["attributes"], smiling=lvl)
            assert f.label["attributes"] == expect
            assert f.label["hair_colour"] == base.label["hair_colour"]
        changed = np.abs(f0.image.astype(int) - f5.image).max(axis=2) > 8
        assert changed.sum() > 20
        near = (MOUTH, EYES, GLASSES, BEARD)  # laughing squints the eyes (under glasses); a moustache rises
        region = np.isin(f0.mask, near) | np.isin(f5.mask, near)
        region = binary_dilation(region, iterations=4)  # + the raised cheeks beside the mouth
        assert changed[region].sum() / changed.sum() > 0.8
        # hair and background are untouched
        still = (f0.mask == f5.mask) & np.isin(f0.mask, (0, HAIR))
        assert np.array_equal(f0.image[still], f5.image[still])


@pytest.mark.parametrize("style", ["human", "anime"])
def test_every_attribute_level_gives_a_different_image(style):
    for attr in ATTRIBUTES:
        imgs = [render_batch(0, 4, 1, 64, style, {attr: lvl})[0].image.astype(np.float32)
                for lvl in range(NUM_LEVELS)]
        for i in range(NUM_LEVELS):
            for j in range(i + 1, NUM_LEVELS):
                diff = np.abs(imgs[i] - imgs[j])
                assert diff.mean() > 0.05 and diff.max() > 20, (attr, i, j)


def test_captions_name_hair_colour_and_every_attribute_level():
    faces = render_batch(2, 0, 12, 32, "mixed") + render_batch(2, 0, 6, 32, "human", {"age": 4})
    texts = set()
    for f in faces:
        cap, lab = f.label["caption"], f.label
        texts.add(cap)
        colour = "greying" if (lab["hair_colour"] == "grey" and lab["attributes"]["age"] == 4) else lab["hair_colour"]
        assert colour in cap and lab["hair_length"][:4] in cap.lower().replace("shoulder-length", "medium")
        for attr, lvl in lab["attributes"].items():
            assert KEYWORDS[attr][lvl] in cap, (attr, lvl, cap)
            others = [k for i, k in enumerate(KEYWORDS[attr]) if i != lvl]
            assert not any(k in cap for k in others if k not in KEYWORDS[attr][lvl]), (attr, lvl, cap)
        assert ("anime" in cap) == (lab["style"] == "anime")
    assert len(texts) == len(faces)


def test_inspect_writes_sheet_and_counts(tmp_path):
    ds = write_synth(tmp_path / "ds", 12, 32, "mixed")
    counts = inspect_dataset(ds, tmp_path / "sheet.png", n=8, quiet=True)
    im = Image.open(tmp_path / "sheet.png")
    assert im.size[0] >= 8 * 32 and im.size[1] > 96
    assert counts["n"] == 12 and sum(counts["styles"].values()) == 12
    for attr in ATTRIBUTES:
        assert sum(counts["attributes"][attr].values()) == 12


@pytest.mark.parametrize("call", [
    lambda: render(0, 0, 32, "cartoon"),
    lambda: render(0, 0, 4),
    lambda: render(-1, 0, 32),
    lambda: render_batch(0, 0, 1, 32, attributes={"hat": 1}),
    lambda: render_batch(0, 0, 1, 32, attributes={"smiling": 6}),
    lambda: write_synth("/tmp/never-written-synth", 0, 32),
])
def test_bad_input_raises_one_line_error(call):
    with pytest.raises(FacediffError) as e:
        call()
    assert "\n" not in str(e.value)
