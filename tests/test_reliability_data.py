"""Issue 12 for data: no traceback, no silent acceptance, no lost data set (prepare / synth / sketches)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import facediff.data.prepared as prepared_mod
from facediff.cli.main import app
from facediff.conditioning.sketch import load_sketch
from facediff.data.prepare import prepare
from facediff.data.prepared import PreparedDataset
from facediff.data.synth import write_synth
from facediff.errors import FacediffError

runner = CliRunner()
RED, GREEN = (220, 30, 40), (30, 200, 60)


def img(path: Path, color=RED, size=(32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def cli_error(args: list[str]) -> str:
    """Run the CLI, expect a user error: exit 2, one 'error: ' line on stderr, no traceback; return it."""
    res = runner.invoke(app, args)
    err = res.stderr
    assert res.exit_code == 2, (res.exit_code, res.output, err)
    lines = err.strip().splitlines()
    # the progress reporter may have printed "[hh:mm:ss] ..." lines before the failure; the error is one line
    progress = [l for l in lines[:-1] if l.startswith("[")]
    assert lines[-1].startswith("error: ") and len(progress) == len(lines) - 1, err
    assert "Traceback" not in res.output + err
    return lines[-1]


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def skipped(out: Path) -> dict[str, str]:
    return {s["file"]: s["reason"] for s in manifest(out)["skipped"]}


def no_temp(parent: Path) -> None:
    left = [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert not left, left


@pytest.fixture()
def good_set(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A folder source and a prepared set made from it: (root, out, images.npy bytes)."""
    root = tmp_path / "src"
    img(root / "a.png", RED)
    img(root / "b.png", GREEN)
    out = prepare("folder", root, 16, tmp_path / "out", workers=1)
    (out / "contact_sheet.png").write_bytes(b"mine")
    return root, out, (out / "images.npy").read_bytes()


def assert_intact(out: Path, images: bytes) -> None:
    ds = PreparedDataset(out)
    assert len(ds) == 2 and (out / "images.npy").read_bytes() == images
    assert manifest(out)["source"] == "folder" and (out / "contact_sheet.png").read_bytes() == b"mine"
    no_temp(out.parent)


# ----------------------------------------------------------------------------------------------- 1. disk full
def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_fallocate_enospc_prepare_overwrite_keeps_old_set(good_set, monkeypatch):
    root, out, images = good_set
    monkeypatch.setattr(prepared_mod.os, "posix_fallocate", enospc)
    err = cli_error(["data", "prepare", "--source", "folder", "--root", str(root), "--out", str(out),
                     "--size", "16", "--overwrite"])
    assert err.startswith(f"error: disk full while writing {out}/images.npy; free ") and "choose another --out" in err
    assert_intact(out, images)


def test_zero_fill_fallback_enospc(good_set, monkeypatch):
    """Where posix_fallocate is unsupported, zeros are written; a full disk there is the same error."""
    root, out, images = good_set
    monkeypatch.setattr(prepared_mod.os, "posix_fallocate",
                        lambda *a: (_ for _ in ()).throw(OSError(errno.EOPNOTSUPP, "not supported")))
    monkeypatch.setattr(prepared_mod.os, "pwrite", enospc)
    with pytest.raises(FacediffError, match=r"^disk full while writing .*images\.npy; free \d+ MB") as e:
        prepare("folder", root, 16, out, overwrite=True, workers=1)
    assert "\n" not in str(e.value)
    assert_intact(out, images)


def test_zero_fill_fallback_allocates(tmp_path: Path, monkeypatch):
    monkeypatch.delattr(prepared_mod.os, "posix_fallocate")
    out = write_synth(tmp_path / "s", n=5, size=16, seed=0)
    ds = PreparedDataset(out)
    assert len(ds) == 5 and ds.masks().shape == (5, 16, 16)
    assert os.stat(out / "images.npy").st_blocks * 512 >= 5 * 16 * 16 * 3  # not sparse


def test_enospc_writing_labels(good_set, monkeypatch):
    root, out, images = good_set
    real_open = open

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, _):
            enospc()

        def close(self):
            self.fh.close()

    def fake_open(path, mode="r", *a, **k):
        fh = real_open(path, mode, *a, **k)
        return Full(fh) if str(path).endswith("labels.jsonl") and "w" in mode else fh

    monkeypatch.setattr(prepared_mod, "open", fake_open, raising=False)
    err = cli_error(["data", "prepare", "--source", "folder", "--root", str(root), "--out", str(out),
                     "--overwrite"])
    assert f"disk full while writing {out}/labels.jsonl" in err
    assert_intact(out, images)


def test_enospc_writing_manifest_synth_overwrite(tmp_path: Path, monkeypatch):
    out = write_synth(tmp_path / "s", n=4, size=16, seed=0)
    before = (out / "images.npy").read_bytes()
    monkeypatch.setattr(prepared_mod, "_write_bytes", enospc)
    err = cli_error(["data", "synth", "--out", str(out), "--n", "6", "--size", "16", "--overwrite"])
    assert f"disk full while writing {out}/manifest.json" in err
    assert (out / "images.npy").read_bytes() == before and len(PreparedDataset(out)) == 4
    no_temp(tmp_path)


def test_failure_mid_prepare_keeps_old_set(good_set):
    """Not only disk errors: a bad annotation found mid-run (after images were written) changes nothing."""
    root, out, images = good_set
    img(root / "c.png")
    (root / "metadata.jsonl").write_text('{"file_name": "c.png", "bangs": 1}\n{"file_name": "a.png", "age": 9}\n')
    err = cli_error(["data", "prepare", "--source", "folder", "--root", str(root), "--out", str(out), "--overwrite"])
    assert "metadata.jsonl line 2: age = 9" in err
    assert_intact(out, images)


def test_overwrite_success_swaps_and_keeps_user_files(good_set):
    root, out, _ = good_set
    img(root / "c.png")
    prepare("folder", root, 8, out, overwrite=True, workers=1)
    ds = PreparedDataset(out)
    assert len(ds) == 3 and ds.size == 8 and (out / "contact_sheet.png").read_bytes() == b"mine"
    no_temp(out.parent)


def test_stale_temp_of_killed_run_is_removed(tmp_path: Path):
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f"s.tmp-{dead}"
    stale.mkdir()
    (stale / "images.npy.part").write_bytes(b"x")
    write_synth(tmp_path / "s", n=2, size=16)
    no_temp(tmp_path)


def test_swap_killed_between_its_renames_is_restored(tmp_path: Path):
    """A kill after the old set was moved aside but before the new one was renamed in leaves no OUT: the
    complete new set is put back (never deleted as a stale temp), and the old one is dropped only then."""
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    write_synth(tmp_path / "old", n=3, size=16)
    write_synth(tmp_path / "new", n=5, size=16)
    os.replace(tmp_path / "old", tmp_path / f"s.old-{dead}")
    os.replace(tmp_path / "new", tmp_path / f"s.tmp-{dead}")
    assert len(PreparedDataset(tmp_path / "s")) == 5  # reading restores the complete new set
    with pytest.raises(FacediffError, match="already holds"):
        write_synth(tmp_path / "s", n=2, size=16)  # and it is not overwritten without --overwrite
    write_synth(tmp_path / "s", n=2, size=16, overwrite=True)
    no_temp(tmp_path)


def _mount_tmpfs(where: Path) -> str | None:
    where.mkdir()
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True, text=True)
    return None if r.returncode == 0 else f"mount -t tmpfs not permitted here ({r.stderr.strip()[:80]})"


def test_real_full_tmpfs(tmp_path: Path):
    """A real 2 MB disk: a small set fits; an --overwrite with a too large one fails cleanly."""
    disk = tmp_path / "disk"
    why = _mount_tmpfs(disk)
    if why:
        pytest.skip(why)
    try:
        out = write_synth(disk / "ds", n=8, size=16)
        before = (out / "images.npy").read_bytes()
        err = cli_error(["data", "synth", "--out", str(out), "--n", "1500", "--size", "16", "--overwrite"])
        assert f"disk full while writing {out}/" in err and " MB or choose another --out" in err
        assert (out / "images.npy").read_bytes() == before and len(PreparedDataset(out)) == 8
        no_temp(disk)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_out_is_a_file(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    err = cli_error(["data", "synth", "--out", str(tmp_path / "f"), "--n", "2", "--size", "16"])
    assert "is a file, not a folder" in err


def test_corrupt_prepared_set_is_one_line(tmp_path: Path):
    out = write_synth(tmp_path / "s", n=2, size=16)
    (out / "images.npy").write_bytes(b"garbage")
    with pytest.raises(FacediffError, match="images.npy: unreadable") as e:
        PreparedDataset(out)
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------- 2. paths
@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    img(d / "secret.png", GREEN)
    (d / "secret.txt").write_text("secret caption")
    return d


def prep(root: Path, out: Path) -> Path:
    return prepare("folder", root, 16, out, workers=1)


def only_red(out: Path) -> None:
    imgs = np.load(out / "images.npy")
    assert (imgs == RED).all(), "an image from outside the root was read"


@pytest.mark.parametrize("name", ["../outside/secret.png", "sub/../../outside/secret.png"])
def test_metadata_dotdot_refused(tmp_path: Path, outside: Path, name: str):
    root = tmp_path / "root"
    img(root / "sub" / "a.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": name, "text": "x"}) + "\n")
    out = prep(root, tmp_path / "out")
    assert "leaves the image folder" in skipped(out)[name] and "metadata.jsonl line 1" in skipped(out)[name]
    only_red(out)


def test_metadata_nested_dotdot_refused(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    img(root / "sub" / "a.png")
    (root / "sub" / "metadata.jsonl").write_text('{"file_name": "../../outside/secret.png"}\n')
    out = prep(root, tmp_path / "out")
    assert "sub/metadata.jsonl line 1" in skipped(out)["../../outside/secret.png"]
    only_red(out)


def test_nested_metadata_dotdot_inside_root_ok(tmp_path: Path):
    """sub/metadata.jsonl naming ../a.png is a.png of the root: inside, so used (and labelled)."""
    root = tmp_path / "root"
    img(root / "a.png")
    (root / "sub").mkdir()
    (root / "sub" / "metadata.jsonl").write_text('{"file_name": "../a.png", "text": "red"}\n')
    out = prep(root, tmp_path / "out")
    assert json.loads(open(out / "labels.jsonl").readline())["caption"] == "red" and manifest(out)["skipped"] == []


def test_metadata_absolute_refused(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    img(root / "a.png")
    name = str(outside / "secret.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": name}) + "\n")
    out = prep(root, tmp_path / "out")
    assert "absolute path" in skipped(out)[name]
    only_red(out)


def test_metadata_inside_dotdot_is_one_image(tmp_path: Path):
    """'sub/../a.png' is a.png: labelled once, not a second copy."""
    root = tmp_path / "root"
    img(root / "a.png")
    (root / "metadata.jsonl").write_text('{"file_name": "sub/../a.png", "text": "red"}\n')
    out = prep(root, tmp_path / "out")
    labels = [json.loads(line) for line in open(out / "labels.jsonl")]
    assert [(l["file"], l["caption"]) for l in labels] == [("a.png", "red")] and manifest(out)["skipped"] == []


def test_metadata_nul_byte_refused(tmp_path: Path):
    root = tmp_path / "root"
    img(root / "a.png")
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "a\u0000.png"}) + "\n")
    out = prep(root, tmp_path / "out")
    assert "NUL byte" in skipped(out)["a\u0000.png"]


def test_file_symlink_outside_refused(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    img(root / "a.png")
    (root / "link.png").symlink_to(outside / "secret.png")
    (root / "metadata.jsonl").write_text('{"file_name": "link.png", "text": "via metadata"}\n')
    out = prep(root, tmp_path / "out")
    assert "symlink resolves outside --root" in skipped(out)["link.png"]
    only_red(out)


def test_dir_symlink_outside_refused(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    img(root / "a.png")
    (root / "ext").symlink_to(outside, target_is_directory=True)
    (root / "metadata.jsonl").write_text('{"file_name": "ext/secret.png"}\n')
    out = prep(root, tmp_path / "out")
    s = skipped(out)
    assert "symlink resolves outside --root" in s["ext/"] and "refused" in s["ext/secret.png"]
    only_red(out)


def test_symlink_loop_to_ancestor(tmp_path: Path):
    root = tmp_path / "root"
    img(root / "sub" / "a.png")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "self").symlink_to(root / "self")  # a -> a
    out = prep(root, tmp_path / "out")
    s = skipped(out)
    assert "symlink loop: points to its own ancestor" in s["sub/loop/"] and "symlink loop" in s["self"]
    assert manifest(out)["counts"]["images"] == 1


def test_dir_symlink_duplicate_refused(tmp_path: Path):
    root = tmp_path / "root"
    img(root / "train" / "a.png")
    (root / "all").symlink_to(root / "train", target_is_directory=True)
    (root / "copy.png").symlink_to(root / "train" / "a.png")
    out = prep(root, tmp_path / "out")
    s = skipped(out)
    assert "already listed" in s["all/"] and "already listed" in s["copy.png"]
    assert manifest(out)["counts"]["images"] == 1


def test_sidecar_symlink_outside_ignored(tmp_path: Path, outside: Path):
    root = tmp_path / "root"
    img(root / "a.png")
    (root / "a.txt").symlink_to(outside / "secret.txt")
    out = prep(root, tmp_path / "out")
    assert json.loads(open(out / "labels.jsonl").readline())["caption"] == ""
    (note,) = manifest(out)["notes"]
    assert note["file"] == "a.png" and "a.txt resolves outside --root" in note["note"]


def test_celeba_row_escaping_refused(tmp_path: Path, outside: Path):
    from tests.test_prepare import write_attr_file

    root = tmp_path / "celeba"
    img(root / "img_align_celeba" / "000001.jpg")
    write_attr_file(root / "list_attr_celeba.txt", {"000001.jpg": {}, "../../outside/secret.png": {}})
    out = prepare("celeba", root, 16, tmp_path / "out", workers=1)
    assert "leaves the image folder" in skipped(out)["../../outside/secret.png"]
    assert manifest(out)["counts"]["images"] == 1


# ----------------------------------------------------------------------------------------------- 3. silent drops
def test_celeba_image_without_row_counted(tmp_path: Path):
    from tests.test_prepare import write_attr_file

    root = tmp_path / "celeba"
    img(root / "img_align_celeba" / "000001.jpg")
    img(root / "img_align_celeba" / "000002.jpg")
    write_attr_file(root / "list_attr_celeba.txt", {"000001.jpg": {}})
    out = prepare("celeba", root, 16, tmp_path / "out", workers=1)
    m = manifest(out)
    assert m["counts"]["images"] == 1 and m["counts"]["unlabelled"] == 1 and m["unlabelled"] == ["000002.jpg"]
    assert "no row in list_attr_celeba.txt" in skipped(out)["000002.jpg"]


def test_dialog_image_without_row_counted(tmp_path: Path):
    root = tmp_path / "d"
    img(root / "image" / "0.jpg")
    img(root / "image" / "9.png")
    (root / "combined_annotation.txt").write_text("Bangs Eyeglasses No_Beard Smiling Young\n0.jpg 0 1 2 3 4\n")
    out = prepare("celeba-dialog", root, 16, tmp_path / "out", workers=1)
    assert manifest(out)["unlabelled"] == ["9.png"] and "no row in combined_annotation.txt" in skipped(out)["9.png"]


def test_folder_image_without_metadata_row_counted(tmp_path: Path):
    root = tmp_path / "f"
    img(root / "a.png")
    img(root / "b.png")
    (root / "metadata.jsonl").write_text('{"file_name": "a.png", "bangs": 2}\n')
    out = prep(root, tmp_path / "out")
    m = manifest(out)
    assert m["counts"]["images"] == 2 and m["unlabelled"] == ["b.png"] and m["counts"]["unlabelled"] == 1
    no_meta = tmp_path / "g"
    img(no_meta / "a.png")
    assert manifest(prep(no_meta, tmp_path / "out2"))["counts"]["unlabelled"] == 0  # no metadata at all: nothing lacks a row


BAD = b"caf\xe9 \xff face"  # Latin-1 bytes: not UTF-8


def test_invalid_utf8_metadata_jsonl(tmp_path: Path):
    root = tmp_path / "f"
    img(root / "a.png")
    (root / "metadata.jsonl").write_bytes(b'{"file_name": "a.png", "text": "' + BAD + b'"}\n')
    out = prep(root, tmp_path / "out")
    (note,) = manifest(out)["notes"]
    assert note == {"file": "a.png", "note": "metadata.jsonl line 1: invalid UTF-8; bytes replaced with U+FFFD"}
    assert json.loads(open(out / "labels.jsonl").readline())["caption"] == "caf\ufffd \ufffd face"


def test_invalid_utf8_metadata_csv(tmp_path: Path):
    root = tmp_path / "f"
    img(root / "a.png")
    (root / "metadata.csv").write_bytes(b"file_name,text\na.png," + BAD + b"\n")
    out = prep(root, tmp_path / "out")
    assert "metadata.csv line 2: invalid UTF-8" in manifest(out)["notes"][0]["note"]


def test_invalid_utf8_sidecar(tmp_path: Path):
    root = tmp_path / "f"
    img(root / "a.png")
    (root / "a.txt").write_bytes(BAD)
    out = prep(root, tmp_path / "out")
    assert manifest(out)["notes"] == [{"file": "a.png",
                                       "note": "caption sidecar a.txt: invalid UTF-8; bytes replaced with U+FFFD"}]


def test_invalid_utf8_captions_json(tmp_path: Path):
    root = tmp_path / "d"
    img(root / "image" / "0.jpg")
    img(root / "image" / "1.jpg")
    (root / "combined_annotation.txt").write_text("Bangs Eyeglasses No_Beard Smiling Young\n0.jpg 0 1 2 3 4\n"
                                                  "1.jpg 0 0 0 0 0\n")
    (root / "captions.json").write_bytes(b'{"0.jpg": {"overall_caption": "' + BAD + b'"}, '
                                         b'"1.jpg": {"overall_caption": "fine"}}')
    out = prepare("celeba-dialog", root, 16, tmp_path / "out", workers=1)
    (note,) = manifest(out)["notes"]
    assert note["file"] == "0.jpg" and "captions.json: invalid UTF-8 in this caption" in note["note"]


def test_utf8_bom_metadata_accepted(tmp_path: Path):
    root = tmp_path / "f"
    img(root / "a.png")
    (root / "metadata.jsonl").write_bytes(b'\xef\xbb\xbf{"file_name": "a.png", "text": "ok"}\n')
    out = prep(root, tmp_path / "out")
    assert manifest(out)["notes"] == [] and manifest(out)["unlabelled"] == []


# ----------------------------------------------------------------------------------------------- 3. sketches
def test_sketch_non_square_warns(tmp_path: Path):
    Image.new("L", (64, 48), 255).save(tmp_path / "wide.png")
    with pytest.warns(UserWarning, match=r"is 64x48, not square; using its centre 48x48 square") as rec:
        m = load_sketch(tmp_path / "wide.png", 32, 8)
    assert m.shape == (1, 1, 8, 8) and len(str(rec[0].message).splitlines()) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_sketch(np.full((100, 98), 255, np.uint8), 32, 8)  # within 2 %: no warning


def test_sketch_pixel_bound(tmp_path: Path, monkeypatch):
    import facediff.conditioning.sketch as sk

    Image.new("L", (64, 64), 255).save(tmp_path / "s.png")
    monkeypatch.setattr(sk, "MAX_SKETCH_PIXELS", 1000)
    with pytest.raises(FacediffError, match=r"is 64x64 = 4096 pixels, above the 1000 limit") as e:
        load_sketch(tmp_path / "s.png", 32, 8)
    assert "\n" not in str(e.value)


def test_sketch_decompression_bomb(tmp_path: Path, monkeypatch):
    """Pillow's own bomb check (raised while opening) is a one-line error too."""
    Image.new("L", (64, 64), 255).save(tmp_path / "s.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 > 2 x 1000: DecompressionBombError
    with pytest.raises(FacediffError, match="decompression bomb"):
        load_sketch(tmp_path / "s.png", 32, 8)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 > 3000: the warning, turned into the error
    with pytest.raises(FacediffError, match="decompression bomb"):
        load_sketch(tmp_path / "s.png", 32, 8)


@pytest.mark.parametrize("kind, words", [("truncated", "cannot read it as an image"), ("text", "not an image"),
                                         ("missing", "no such file"), ("folder", "cannot read it as an image")])
def test_sketch_bad_files(tmp_path: Path, kind: str, words: str):
    p = tmp_path / "s.png"
    if kind == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(p)
        p.write_bytes(p.read_bytes()[:300])
    elif kind == "text":
        p.write_text("not a sketch\n")
    elif kind == "folder":
        p.mkdir()
    with pytest.raises(FacediffError, match=words) as e:
        load_sketch(p, 32, 8)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"--sketch {p}")


def test_error_messages_are_one_line(tmp_path: Path):
    root = tmp_path / "a\nb"
    root.mkdir()
    with pytest.raises(FacediffError) as e:
        prepare("celeba", root, 16, tmp_path / "out")
    assert "\n" not in str(e.value) and "a\\nb" in str(e.value)
