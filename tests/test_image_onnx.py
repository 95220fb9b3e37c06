"""The torch-free image path: a query by a picture that is not indexed, and the image export that indexing
on the CPU may run on. The ONNX export of the image tower equals torch on real photos, keeps an int8 variant
only when it passes its own check, is made by the background exporter into the per-user cache after a run
that had to load torch (an index run, a cold picture query, a warm server's picture query), and lets later
cold queries answer without importing torch, with the same results; whatever it cannot do falls back to
torch."""

from __future__ import annotations

import json

import numpy as np

import imgsearch.model.export as onnx_export
import imgsearch.model.onnx_image as onnx_image
from imgsearch import Library
from imgsearch.index.decode import decode_file
from imgsearch.model.cache import export_folder, model_key
from imgsearch.model.encoder import Encoder
from imgsearch.model.engine import read_rates
from imgsearch.model.export import export_image
from imgsearch.model.onnx_image import DATA_FILE, FOLDER, INT8_FILE, MODEL_FILE, OnnxImage
from imgsearch.model.onnx_text import META_FILE
from tests.cli_process import output_and_modules
from tests.conftest import SAMPLE_PHOTOS

TORCH = {"torch", "open_clip", "torchvision"}


EXPORT_SWITCH = "IMGSEARCH_IMAGE_EXPORT"  # what conftest's export_on turns back on for these tests


def _photo_pixels(prep) -> np.ndarray:
    return np.stack([decode_file(p, prep).pixels for p in sorted(SAMPLE_PHOTOS.glob("*.jpg"))])


def test_export_of_the_tiny_model_gives_the_torch_vectors_of_real_photos(torch_encoder, tmp_path):
    meta = export_image(torch_encoder, tmp_path / "export")
    assert meta["supported"] and meta["verified"]["min_cos"] >= 0.9999
    assert meta["format"] == 2 and meta["key"] == model_key(torch_encoder.spec)
    onnx = OnnxImage.load(tmp_path / "export", meta)
    assert onnx is not None and onnx.preprocess == torch_encoder.preprocess and onnx.dim == torch_encoder.dim
    pixels = _photo_pixels(onnx.preprocess)
    cos = (onnx.embed_pixels(pixels) * torch_encoder.embed_pixels(pixels)).sum(axis=1)
    assert len(cos) == len(list(SAMPLE_PHOTOS.glob("*.jpg"))) and cos.min() >= 0.9999
    assert not list(tmp_path.glob(".*"))  # the temporary folder is gone


def test_an_image_export_that_fails_verification_is_not_installed(torch_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "MIN_COS", 1.5)  # no export can pass this
    meta = export_image(torch_encoder, tmp_path / "export")
    assert meta["supported"] is False and "cosine" in meta["reason"]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [META_FILE]


def test_the_int8_variant_is_kept_only_when_it_passes(torch_encoder, export_on, monkeypatch):
    """The tiny model's int8 weights pass the real threshold (cos ~0.99993 on the probes): kept, recorded,
    opened by the reader, and really quantized. Under a threshold nothing can reach, the fp32 export stands
    alone: no int8 file, none recorded, none opened."""
    spec = torch_encoder.spec
    folder = export_folder(spec, FOLDER)  # in the cache, so that OnnxImage.open reads what was written
    meta = export_image(torch_encoder, folder)
    assert meta["supported"] is True
    assert meta["int8"]["supported"] is True
    assert meta["int8"]["verified"]["min_cos"] >= onnx_image.MIN_COS_INT8
    assert (folder / INT8_FILE).stat().st_size == meta["files"][INT8_FILE]
    assert json.loads((folder / META_FILE).read_text()) == meta
    quantized = OnnxImage.open(spec, "int8")
    assert quantized is not None and quantized.precision == "int8"
    pixels = _photo_pixels(quantized.preprocess)
    exact = torch_encoder.embed_pixels(pixels)
    cos = (quantized.embed_pixels(pixels) * exact).sum(axis=1)
    assert cos.min() >= onnx_image.MIN_COS_INT8  # on real photos too, not only on the probes
    assert cos.min() < 1 - 1e-6  # int8 weights: not the fp32 graph under another name

    monkeypatch.setattr(onnx_image, "MIN_COS_INT8", 1.5)  # no int8 variant can pass this
    meta = export_image(torch_encoder, folder)
    assert meta["supported"] is True
    assert meta["int8"]["supported"] is False and "cosine" in meta["int8"]["reason"]
    assert INT8_FILE not in meta["files"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([DATA_FILE, META_FILE, MODEL_FILE])
    assert OnnxImage.open(spec, "int8") is None
    fp32 = OnnxImage.open(spec)
    assert fp32 is not None and (fp32.embed_pixels(pixels) * exact).sum(axis=1).min() >= 0.9999


def _new_picture(tmp_path):
    """A photo that is not in the index (its bytes differ from every indexed one)."""
    source = sorted(SAMPLE_PHOTOS.glob("*.jpg"))[0]
    target = tmp_path / "not-indexed.jpg"
    target.write_bytes(source.read_bytes() + b"\nnot the same bytes")
    return target


def _assert_same(a: list[str], b: list[str]) -> None:
    """Two `--json` outputs: the same paths in the same order, scores within 1e-4."""
    ra, rb = ([json.loads(line) for line in out] for out in (a, b))
    assert [r["path"] for r in ra] == [r["path"] for r in rb]
    assert np.allclose([r["score"] for r in ra], [r["score"] for r in rb], atol=1e-4)


def test_indexing_makes_the_image_export_in_the_background(
    cli, photos, export_on, isolated_home, tmp_path, auto_numerics, exports_made
):
    """Once the switch is on, the image export (and this machine's engine speeds) follow an index run, in
    the cache; so even the first cold query by a new picture imports no torch. (It used to be made only by
    such a query: indexing now runs on it where it is the faster engine.)"""
    assert cli("index", photos).exit_code == 0
    exports_made()
    spec = Library().model_spec()
    folder = export_folder(spec, FOLDER)
    assert (folder / DATA_FILE).exists() and not (isolated_home / FOLDER).exists()
    assert read_rates(folder) is not None  # the exporter measured the engines on this machine
    argv = ["query", "--image", str(_new_picture(tmp_path)), "--json", "-n", "8"]
    fast, loaded = output_and_modules(argv, {})
    assert not TORCH & loaded and "onnxruntime" in loaded
    slow, loaded = output_and_modules(argv, {"IMGSEARCH_IMAGE_EXPORT": "0"})
    assert loaded >= TORCH
    _assert_same(fast, slow)
    assert len(fast) == 8


def test_the_second_cold_query_by_a_new_picture_skips_torch(
    cli, photos, export_on, tmp_path, auto_numerics, monkeypatch, exports_made
):
    """An index made with the switch off has no image export: the first cold picture query loads torch and
    has it made in the background; the next one imports no torch, with the same results."""
    monkeypatch.setenv("IMGSEARCH_IMAGE_EXPORT", "0")
    assert cli("index", photos).exit_code == 0
    monkeypatch.setenv("IMGSEARCH_IMAGE_EXPORT", "1")
    exports_made()
    folder = export_folder(Library().model_spec(), FOLDER)
    assert not folder.exists()
    argv = ["query", "--image", str(_new_picture(tmp_path)), "--json", "-n", "8"]
    first, loaded = output_and_modules(argv, {})
    assert loaded >= TORCH  # torch answered, and started the exporter
    exports_made()
    assert (folder / DATA_FILE).exists()
    second, loaded = output_and_modules(argv, {})
    assert not TORCH & loaded and "onnxruntime" in loaded
    _assert_same(second, first)
    assert len(second) == 8


class NotMadeAgain(AssertionError):
    """The damaged export was still unusable after the background exporter was done."""


def test_a_damaged_or_switched_off_image_export_falls_back_to_torch(
    cli, photos, export_on, tmp_path, exports_made
):
    assert cli("index", photos).exit_code == 0
    exports_made()
    folder = export_folder(Library().model_spec(), FOLDER)
    argv = ["query", "--image", str(_new_picture(tmp_path)), "--json", "-n", "3"]
    made, loaded = output_and_modules(argv, {})
    assert not TORCH & loaded
    off, loaded = output_and_modules(argv, {"IMGSEARCH_IMAGE_EXPORT": "0"})
    assert loaded >= TORCH and off == made
    with open(folder / DATA_FILE, "r+b") as data:
        data.truncate(100)  # a torn file: its size is not the recorded one
    damaged, loaded = output_and_modules(argv, {})
    assert loaded >= TORCH and damaged == made
    exports_made()  # the torch path had it made again
    repaired, loaded = output_and_modules(argv, {})
    if TORCH & loaded:
        raise NotMadeAgain("the torn export was not made again")
    _assert_same(repaired, made)


def test_a_server_keeps_torch_for_pictures_and_asks_for_the_image_export(
    cli, photos, export_on, isolated_home, tmp_path, monkeypatch, exports_made
):
    """A warm server answers a new picture with the fp32 torch encoder it holds, and asks for the image
    export it lacks, which one-off queries then use. The index is made with the text export on and the
    image one off, so that warm_up (which asks when the text export is missing) has nothing to ask for."""
    monkeypatch.setenv("IMGSEARCH_TEXT_EXPORT", "1")
    monkeypatch.setenv("IMGSEARCH_IMAGE_EXPORT", "0")
    assert cli("index", photos).exit_code == 0
    exports_made()
    monkeypatch.setenv("IMGSEARCH_IMAGE_EXPORT", "1")
    library = Library(isolated_home)
    library.warm_up()  # as `imgsearch serve` does: the model stays loaded
    spec = library.model_spec()
    folder = export_folder(spec, FOLDER)
    exports_made()
    assert not folder.exists()  # warm-up found the text export: it asked for nothing
    served = library.similar(_new_picture(tmp_path), top=3)
    assert len(served) == 3
    assert isinstance(library.runtime._image_encoder(spec), Encoder)  # torch answered it
    exports_made()
    assert (folder / DATA_FILE).exists()  # ...and asked for the export
    assert isinstance(library.runtime._image_encoder(spec), Encoder)  # the server keeps torch for pictures
    cold = Library(isolated_home)  # a one-off query now takes the export
    assert [m.path for m in cold.similar(_new_picture(tmp_path), top=3)] == [m.path for m in served]
    assert not cold.runtime.holds_torch(spec)
