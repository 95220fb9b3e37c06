"""Camera RAW through LibRaw: preview or half-size demosaic, upright by the RAW's flip, dated, bombs refused.

Every RAW file here is a real DNG written by tests/formats.py (pidng's tags, a Bayer mosaic made from a
picture, optionally an embedded JPEG preview) and read back by rawpy.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgsearch.errors import DecodeError
from imgsearch.index.decode import decode_file, open_upright_rgb
from imgsearch.index.raw import open_raw
from imgsearch.model.preprocess import Preprocess
from tests.formats import (
    TAKEN,
    random_bytes,
    write_dng,
    write_tiff_as_dng,
    write_truncated_raw,
)

SAMPLE = Path(__file__).resolve().parent.parent / "sample_photos"


def picture(number: int = 0, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A real photo (not noise, so orientation mistakes show), at an even size a Bayer mosaic needs."""
    photo = sorted(SAMPLE.glob("*.jpg"))[number]
    with Image.open(photo) as image:
        return ImageOps.fit(image.convert("RGB"), size)


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "demosaic"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_raw_is_upright_by_its_own_flip(tmp_path: Path, preview: bool, orientation: int):
    photo = picture(size=(192, 128))
    stored = _inverse(photo, orientation)  # the camera stores the sensor's pixels and how to turn them
    path = write_dng(tmp_path / "shot.dng", stored, preview=preview, orientation=orientation)
    image, fmt, width, height, taken_at = open_upright_rgb(path.read_bytes(), None, name=path.name)
    assert fmt == "DNG"
    assert (width, height) == photo.size  # the upright full size
    assert image.size == (photo.size if preview else (photo.width // 2, photo.height // 2))
    assert likeness(image, photo) > 0.99
    if orientation != 1:  # the stored pixels as they are would not do
        assert likeness(image, stored) < 0.6
    assert taken_at == time.mktime(time.strptime(TAKEN, "%Y:%m:%d %H:%M:%S"))


def likeness(image: Image.Image, other: Image.Image) -> float:
    """Correlation of the two pictures' grey levels at 1/8 of `image`'s size (1.0: the same picture, however
    LibRaw brightened it; a picture turned the wrong way correlates far less)."""
    size = (image.width // 8, image.height // 8)
    grey = [
        np.asarray(im.convert("L").resize(size, Image.Resampling.BOX), float).ravel() for im in (image, other)
    ]
    return float(np.corrcoef(*grey)[0, 1])


def _inverse(photo: Image.Image, orientation: int) -> Image.Image:
    """The stored pixels that `orientation` turns into `photo`."""
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90,
               7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}[orientation]  # fmt: skip
    return photo.transpose(inverse) if inverse is not None else photo.copy()


def test_the_preview_is_taken_only_when_it_is_large_enough(tmp_path: Path):
    path = write_dng(tmp_path / "shot.dng", picture(size=(96, 64)), preview=True)
    data = path.read_bytes()
    assert open_raw(data, "DNG", 64, 10**9).image.size == (96, 64)  # the preview
    assert open_raw(data, "DNG", None, 10**9).image.size == (96, 64)  # at least half the sensor's
    demosaiced = open_raw(data, "DNG", 65, 10**9).image
    assert demosaiced.size == (48, 32)  # too small a preview for 65 px: LibRaw's half-size demosaic
    assert likeness(demosaiced, picture(size=(96, 64))) > 0.99


class _Watched:
    """A rawpy file that records which of its attributes are used."""

    def __init__(self, raw, used: list[str]):
        self._raw, self._used = raw, used

    def __enter__(self):
        self._raw.__enter__()
        return self

    def __exit__(self, *exc):
        return self._raw.__exit__(*exc)

    def __getattr__(self, name: str):
        self._used.append(name)
        return getattr(self._raw, name)


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "demosaic"])
def test_the_preview_path_never_unpacks_the_sensor_data(tmp_path: Path, monkeypatch, preview: bool):
    """rawpy unpacks all of the sensor data for `other` (the date) as for `postprocess`: a third of a second
    at 24 MP that the preview path must not pay. The date still comes from the file's own EXIF."""
    import rawpy

    used: list[str] = []
    real = rawpy.imread
    monkeypatch.setattr(rawpy, "imread", lambda source: _Watched(real(source), used))
    path = write_dng(tmp_path / "shot.dng", picture(), preview=preview)
    _, _, _, _, taken_at = open_upright_rgb(path.read_bytes(), Preprocess(64, 64), name=path.name)
    assert taken_at == time.mktime(time.strptime(TAKEN, "%Y:%m:%d %H:%M:%S"))
    unpacking = {"other", "postprocess", "raw_image", "raw_type", "camera_whitebalance", "unpack"}
    if preview:
        assert "extract_thumb" in used and not unpacking & set(used), used
    else:
        assert "postprocess" in used


def test_a_demosaic_is_reduced_towards_the_size_asked_for_as_jpegs_are_drafted(tmp_path: Path):
    path = write_dng(tmp_path / "big.dng", picture(size=(640, 480)), preview=False)
    full = open_raw(path.read_bytes(), "DNG", None, 10**9).image
    assert full.size == (320, 240)  # LibRaw's half size
    reduced = open_upright_rgb(path.read_bytes(), Preprocess(32, 32), name=path.name)[0]
    assert reduced.size == (107, 80)  # a whole factor (3) that keeps the short edge >= 2 x 32
    assert likeness(reduced, full.resize(reduced.size, Image.Resampling.BOX)) > 0.99


def test_a_raw_without_a_date_has_none(tmp_path: Path):
    path = write_dng(tmp_path / "undated.dng", picture(), preview=False, taken=None)
    assert open_upright_rgb(path.read_bytes(), None, name="undated.dng")[4] is None


def test_the_pixel_cap_applies_to_raw_sizes(tmp_path: Path):
    for preview in (True, False):
        path = write_dng(tmp_path / f"big-{preview}.dng", picture(), preview=preview)
        with pytest.raises(DecodeError, match="too many pixels"):
            open_upright_rgb(path.read_bytes(), None, max_pixels=96 * 64 - 1, name=path.name)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: write_truncated_raw(p / "cut.dng", picture()), "broken DNG file: its data ends early"),
        (lambda p: random_bytes(p / "noise.cr2"), "not a CR2 file LibRaw can read"),
        (lambda p: write_tiff_as_dng(p / "tiff.dng", picture()), "not a DNG file LibRaw can read"),
        (lambda p: _write(p / "empty.nef", b""), "empty file"),
    ],
    ids=["truncated", "random-bytes", "tiff-named-dng", "empty"],
)
def test_bad_raw_files_are_one_line_decode_errors(tmp_path: Path, make, reason: str):
    path = make(tmp_path)
    with pytest.raises(DecodeError) as caught:
        decode_file(path, Preprocess(64, 64))
    assert str(caught.value).startswith(reason)
    assert "\n" not in str(caught.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_model_input_from_a_raw_matches_the_same_picture_as_jpeg(tmp_path: Path):
    """The preview path and a JPEG of the same picture give the model (nearly) the same pixels."""
    photo = picture(size=(320, 240))
    raw = decode_file(write_dng(tmp_path / "a.dng", photo, preview=True), Preprocess(64, 64))
    photo.save(tmp_path / "a.jpg", quality=95)
    jpeg = decode_file(tmp_path / "a.jpg", Preprocess(64, 64))
    assert np.abs(raw.pixels.astype(int) - jpeg.pixels.astype(int)).mean() < 4


@pytest.mark.timeout(120)
def test_a_crash_or_hang_inside_libraw_costs_only_its_own_file(tmp_path: Path):
    """A worker killed by a crash in LibRaw's C code, or stuck in it, is replaced; the file is reported."""
    from imgsearch.index.decode import DecodedImage
    from imgsearch.index.indexer import _Job
    from imgsearch.index.scan import FileStat
    from imgsearch.index.workers import decode_all
    from tests.misbehaving_decoder import decode_or_misbehave

    names = [f"good{i}.dng" for i in range(4)] + ["crash-in-libraw.dng", "hang-in-libraw.dng"]
    jobs = []
    for i, name in enumerate(names):
        path = write_dng(tmp_path / name, picture(i), preview=i % 2 == 0)
        jobs.append(_Job(bytes([i]), ((FileStat(os.fsencode(path), 0, 0), None),)))
    results = dict(decode_all(jobs, Preprocess(32, 32), 2, decode=decode_or_misbehave, limit=3))
    by_name = {os.path.basename(job.path).decode(): result for job, result in results.items()}
    assert all(isinstance(by_name[n], DecodedImage) for n in names if n.startswith("good"))
    for bad in ("crash-in-libraw.dng", "hang-in-libraw.dng"):
        assert by_name[bad] == "the decoder crashed or ran over 3 s on this file"
    assert signal.SIGSEGV  # the crash is a real SIGSEGV in C code (see tests/misbehaving_decoder.py)
