"""Scanning: which files under a folder are photos to index; paths are bytes, exactly as on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgsearch.index.scan import under, walk


def touch(path: Path | bytes, content: bytes = b"x") -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)


def found(root: Path) -> list[bytes]:
    """Paths walk() yields under root, relative to it, sorted (duplicates kept, so they show)."""
    base = os.fsencode(root)
    return sorted(os.path.relpath(entry.path, base) for entry in walk(base))


def test_lists_images_with_size_and_mtime(tmp_path: Path):
    touch(tmp_path / "a.jpg", b"12345")
    touch(tmp_path / "trip" / "day1" / "b.png")
    entries = list(walk(os.fsencode(tmp_path)))
    assert sorted(e.path for e in entries) == [
        os.fsencode(tmp_path / "a.jpg"),
        os.fsencode(tmp_path / "trip/day1/b.png"),
    ]
    first = next(e for e in entries if e.path.endswith(b"a.jpg"))
    st = (tmp_path / "a.jpg").stat()
    assert (first.size, first.mtime_ns) == (5, st.st_mtime_ns)


def test_hidden_files_and_folders_are_skipped(tmp_path: Path):
    touch(tmp_path / "seen.jpg")
    touch(tmp_path / ".hidden.jpg")
    touch(tmp_path / ".thumbnails" / "thumb.jpg")
    touch(tmp_path / "album" / ".trash" / "old.jpg")
    assert found(tmp_path) == [b"seen.jpg"]


@pytest.mark.parametrize("junk", ["node_modules", "@eaDir", "__MACOSX", "$RECYCLE.BIN"])
def test_junk_folders_are_skipped(tmp_path: Path, junk: str):
    touch(tmp_path / "album" / "seen.jpg")
    touch(tmp_path / "album" / junk / "thumb.jpg")
    touch(tmp_path / junk / "deep" / "thumb.jpg")
    assert found(tmp_path) == [b"album/seen.jpg"]


def test_image_extensions_in_any_case(tmp_path: Path):
    names = ["a.jpg", "b.JPG", "c.Jpeg", "d.PNG", "e.webp", "f.HEIC", "g.tiff", "h.gif"]
    names += ["raw.CR2", "i.dng", "j.NEF", "k.mpo", "l.psd", "m.qoi", "n.FITS", "o.pcx", "p.xpm", "q.dds"]
    others = ["notes.txt", "clip.mp4", "doc.pdf", "film.mpg", "photo.jpg.part", "jpg", "no-extension"]
    for name in [*names, *others]:
        touch(tmp_path / name)
    assert found(tmp_path) == sorted(os.fsencode(n) for n in names)


def test_candidates_are_every_format_pillow_reads_and_camera_raw():
    from PIL import Image

    from imgsearch.formats import RAW_FORMATS, candidate_extensions

    Image.init()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    not_photos = {".mpg", ".mpeg", ".h5", ".hdf", ".grib", ".bufr", ".wmf", ".emf", ".ps", ".eps"}
    expected = (readable - not_photos) | {".mpo"} | set(RAW_FORMATS)
    assert {os.fsdecode(e) for e in candidate_extensions()} - {".ps", ".eps"} == expected
    assert b".pdf" not in candidate_extensions()


def test_a_file_with_no_extension_is_judged_by_its_first_bytes(tmp_path: Path):
    from PIL import Image

    from tests.images import encode, require_heif

    require_heif()
    picture = Image.new("RGB", (8, 8), (200, 10, 10))
    touch(tmp_path / "IMG_0001", encode(picture, "JPEG"))  # a phone backup's name
    touch(tmp_path / "f123456", encode(picture, "PNG"))  # a recovered file's
    touch(tmp_path / "heic-backup", encode(picture, "HEIF"))
    touch(tmp_path / "README", b"# notes about this trip\n")
    touch(tmp_path / "Makefile", b"all:\n\ttrue\n")
    touch(tmp_path / "empty", b"")
    touch(tmp_path / "clip.MOV", encode(picture, "JPEG"))  # an extension is taken at its word
    assert found(tmp_path) == [b"IMG_0001", b"f123456", b"heic-backup"]


@pytest.mark.timeout(60)
def test_symlink_loop_terminates_and_lists_each_file_once(tmp_path: Path):
    touch(tmp_path / "top.jpg")
    touch(tmp_path / "dir" / "inner.jpg")
    os.symlink(tmp_path, tmp_path / "dir" / "link")  # dir/link -> dir's parent, the root
    os.symlink(tmp_path / "dir", tmp_path / "dir" / "self")  # and dir/self -> dir
    assert found(tmp_path) == [b"dir/inner.jpg", b"top.jpg"]


def test_broken_symlink_is_skipped(tmp_path: Path):
    touch(tmp_path / "real.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "broken.jpg")
    os.symlink(tmp_path / "gone", tmp_path / "broken-folder")
    errors = []
    base = os.fsencode(tmp_path)
    listed = [os.path.relpath(e.path, base) for e in walk(base, on_error=lambda p, e: errors.append(p))]
    assert listed == [b"real.jpg"]
    assert errors == []


def test_symlinked_folder_outside_the_root_is_followed(tmp_path: Path):
    root, elsewhere = tmp_path / "photos", tmp_path / "external-disk"
    touch(root / "here.jpg")
    touch(elsewhere / "there.jpg")
    os.symlink(elsewhere, root / "linked")
    assert found(root) == [b"here.jpg", b"linked/there.jpg"]


def test_file_name_that_is_not_utf8_keeps_its_bytes(tmp_path: Path):
    name = b"bad-\xff.jpg"
    touch(os.path.join(os.fsencode(tmp_path), name))
    assert found(tmp_path) == [name]
    with pytest.raises(UnicodeDecodeError):
        name.decode("utf-8")


def test_file_names_with_spaces_newlines_and_emoji(tmp_path: Path):
    names = ["my photo.jpg", "line\nbreak.jpg", "sunset 🌅.jpg", "café.png", " leading space.jpg"]
    for name in names:
        touch(tmp_path / name)
    assert found(tmp_path) == sorted(os.fsencode(n) for n in names)


def test_unreadable_folder_is_reported_and_skipped(tmp_path: Path, refuse_listing):
    touch(tmp_path / "ok.jpg")
    touch(tmp_path / "locked" / "secret.jpg")
    locked = os.fsencode(tmp_path / "locked")
    refuse_listing(tmp_path / "locked")
    errors = []
    listed = list(walk(os.fsencode(tmp_path), on_error=lambda path, e: errors.append((path, type(e)))))
    assert [e.path for e in listed] == [os.fsencode(tmp_path / "ok.jpg")]
    assert errors == [(locked, PermissionError)]


def test_missing_root_is_reported(tmp_path: Path):
    errors = []
    missing = os.fsencode(tmp_path / "nope")
    assert list(walk(missing, on_error=lambda path, e: errors.append((path, type(e))))) == []
    assert errors == [(missing, FileNotFoundError)]


def test_under():
    assert under(b"/a/b/c.jpg", b"/a/b")
    assert under(b"/a/b/c.jpg", b"/a/b/")
    assert under(b"/a/b/deep/er/c.jpg", b"/a/b")
    assert under(b"/a/b", b"/a/b")
    assert not under(b"/a/bc.jpg", b"/a/b")
    assert not under(b"/a/b2/c.jpg", b"/a/b")
    assert not under(b"/a/c.jpg", b"/a/b")
    assert under(b"/x.jpg", b"/")
