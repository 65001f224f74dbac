"""SynthFaces scenes (--layout scenes): off-centre faces, groups of small faces and background-only images with
captions that say so, for models that compose (issue 26, section 3)."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from facediff.data.synth import PART_NAMES, render
from facediff.data.synth_scene import SCENE_KINDS, render_scene, write_synth_layout
from facediff.errors import FacediffError

SKIN = PART_NAMES.index("skin")
HEAD = [PART_NAMES.index(p) for p in ("skin", "hair", "eyes", "brows", "nose", "mouth", "glasses", "beard")]


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(3, i, 32, "mixed") for i in range(160)]


def test_scenes_are_deterministic_and_every_kind_appears_in_its_share(scenes):
    again = render_scene(3, 17, 32, "mixed")
    assert np.array_equal(again.image, scenes[17].image) and again.label == scenes[17].label
    counts = Counter(s.label["scene"] for s in scenes)
    for kind, share in SCENE_KINDS:
        assert abs(counts[kind] / len(scenes) - share) < 0.1, (kind, counts)


def test_a_portrait_scene_is_the_plain_face(scenes):
    i = next(k for k, s in enumerate(scenes) if s.label["scene"] == "portrait")
    plain = render(3, i, 32, "mixed")
    assert np.array_equal(scenes[i].image, plain.image) and scenes[i].label["caption"] == plain.label["caption"]


def test_background_scenes_hold_no_face_and_no_attributes(scenes):
    for s in (s for s in scenes if s.label["scene"] == "background"):
        assert s.label["attributes"] == {} and s.label["faces"] == [] and "no face" in s.label["caption"]
        assert not s.mask.any() and (s.sketch == 255).all()


def test_offcentre_faces_leave_the_frame_on_the_side_the_caption_names(scenes):
    for i, s in enumerate(scenes):
        if s.label["scene"] != "offcentre":
            continue
        portrait = render(3, i, 32, "mixed")
        assert np.isin(s.mask, HEAD).sum() < np.isin(portrait.mask, HEAD).sum()  # part of the head is out of frame
        ys, xs = np.nonzero(s.mask == SKIN)
        side = s.label["caption"].rsplit("partly out of frame ", 1)[1]
        cx, cy = s.label["faces"][0][:2]
        assert side == ("on the right" if cx > 0 else "on the left") if abs(cx) >= abs(cy) else \
            side == ("at the bottom" if cy > 0 else "at the top")
        if len(xs) and side in ("on the right", "on the left"):
            assert (xs.mean() > 16) == (side == "on the right")
        assert s.label["attributes"] == portrait.label["attributes"]  # the face is still labelled


def test_group_scenes_draw_each_small_face_where_its_label_says(scenes):
    groups = [s for s in scenes if s.label["scene"] == "group"]
    assert groups
    for s in groups:
        faces = s.label["faces"]
        assert len(faces) in (2, 3) and s.label["attributes"] == {}
        assert s.label["caption"].startswith(f"a group of {'two' if len(faces) == 2 else 'three'} small faces")
        for cx, cy, _ in faces:  # head parts around each face's centre, in its own third of the image
            col = int((cx + 1) * 16)
            band = s.mask[:, max(0, col - 4):col + 4]
            assert np.isin(band, HEAD).any(), (cx, cy)


def test_write_synth_scenes_labels_and_manifest(tmp_path):
    from facediff.data.prepared import PreparedDataset

    out = write_synth_layout(tmp_path / "s", n=12, size=16, style="human", seed=3, layout="scenes", chunk=5)
    ds = PreparedDataset(out)
    assert json.loads((out / "manifest.json").read_text())["layout"] == "scenes"
    kinds = [lab["scene"] for lab in ds.labels]
    levels = ds.attribute_levels()
    for kind, row in zip(kinds, levels):
        assert (row == -1).all() == (kind in ("group", "background"))  # no face label: "don't care"
    with pytest.raises(FacediffError, match="layout 'crops'"):
        write_synth_layout(tmp_path / "x", n=2, size=16, layout="crops")
