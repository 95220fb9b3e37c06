"""The torch-free image path: a query by a picture that is not indexed. The ONNX export of the image tower
equals torch on real photos, is made by the first such query that had to load torch, and lets the next
one answer without importing torch, with the same results; whatever it cannot do falls back to torch."""

from __future__ import annotations

import json

import numpy as np

import imgsearch.model.export as onnx_export
from imgsearch import Library
from imgsearch.index.decode import decode_file
from imgsearch.model.export import export_image
from imgsearch.model.onnx_image import DATA_FILE, FOLDER, OnnxImage
from imgsearch.model.onnx_text import META_FILE, export_folder
from tests.cli_process import output_and_modules
from tests.conftest import SAMPLE_PHOTOS

TORCH = {"torch", "open_clip", "torchvision"}


EXPORT_SWITCH = "IMGSEARCH_IMAGE_EXPORT"  # what conftest's export_on turns back on for these tests


def test_export_of_the_tiny_model_gives_the_torch_vectors_of_real_photos(torch_encoder, tmp_path):
    meta = export_image(torch_encoder, tmp_path / "export")
    assert meta["supported"] and meta["verified"]["min_cos"] >= 0.9999
    onnx = OnnxImage.load(tmp_path / "export", meta)
    assert onnx is not None and onnx.preprocess == torch_encoder.preprocess and onnx.dim == torch_encoder.dim
    photos = sorted(SAMPLE_PHOTOS.glob("*.jpg"))
    pixels = np.stack([decode_file(p, onnx.preprocess).pixels for p in photos])
    cos = (onnx.embed_pixels(pixels) * torch_encoder.embed_pixels(pixels)).sum(axis=1)
    assert len(cos) == len(photos) and cos.min() >= 0.9999
    assert not list(tmp_path.glob(".*"))  # the temporary folder is gone


def test_an_image_export_that_fails_verification_is_not_installed(torch_encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "MIN_COS", 1.5)  # no export can pass this
    meta = export_image(torch_encoder, tmp_path / "export")
    assert meta["supported"] is False and "cosine" in meta["reason"]
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [META_FILE]


def _new_picture(tmp_path):
    """A photo that is not in the index (its bytes differ from every indexed one)."""
    source = sorted(SAMPLE_PHOTOS.glob("*.jpg"))[0]
    target = tmp_path / "not-indexed.jpg"
    target.write_bytes(source.read_bytes() + b"\nnot the same bytes")
    return target


def test_the_second_cold_query_by_a_new_picture_skips_torch(
    cli, photos, export_on, isolated_home, tmp_path, auto_numerics
):
    assert cli("index", photos).exit_code == 0
    folder = export_folder(isolated_home, _model(isolated_home), FOLDER)
    assert not folder.exists()  # indexing does not make it: only users of such queries pay its disk
    argv = ["query", "--image", str(_new_picture(tmp_path)), "--json", "-n", "8"]
    first, loaded = output_and_modules(argv, {})
    assert loaded >= TORCH and (folder / DATA_FILE).exists()  # torch answered, and made the export
    second, loaded = output_and_modules(argv, {})
    assert not TORCH & loaded and "onnxruntime" in loaded
    first_results, second_results = ([json.loads(line) for line in out] for out in (first, second))
    assert [r["path"] for r in second_results] == [r["path"] for r in first_results]
    assert np.allclose([r["score"] for r in second_results], [r["score"] for r in first_results], atol=1e-4)
    assert len(second_results) == 8


def _model(home) -> str:
    return Library(home).status().model  # type: ignore[return-value]


def test_a_damaged_or_switched_off_image_export_falls_back_to_torch(
    cli, photos, export_on, isolated_home, tmp_path
):
    assert cli("index", photos).exit_code == 0
    folder = export_folder(isolated_home, _model(isolated_home), FOLDER)
    argv = ["query", "--image", str(_new_picture(tmp_path)), "--json", "-n", "3"]
    made, _ = output_and_modules(argv, {})
    assert folder.exists()
    off, loaded = output_and_modules(argv, {"IMGSEARCH_IMAGE_EXPORT": "0"})
    assert loaded >= TORCH and off == made
    with open(folder / DATA_FILE, "r+b") as data:
        data.truncate(100)  # a torn file: its size is not the recorded one
    damaged, loaded = output_and_modules(argv, {})
    assert loaded >= TORCH and damaged == made
    repaired, loaded = output_and_modules(argv, {})  # the torch path made it again
    assert not TORCH & loaded
    assert [json.loads(x)["path"] for x in repaired] == [json.loads(x)["path"] for x in made]


def test_a_server_keeps_torch_for_pictures_and_makes_no_image_export(
    photos, export_on, isolated_home, tiny_model, tmp_path
):
    library = Library(isolated_home, model=tiny_model)
    library.index([photos])
    library.warm_up()  # as `imgsearch serve` does: the model stays loaded
    assert len(library.similar(_new_picture(tmp_path), top=3)) == 3
    assert not export_folder(isolated_home, tiny_model, FOLDER).exists()
    cold = Library(isolated_home)  # a one-off query that loads torch for the picture makes it
    assert [m.path for m in cold.similar(_new_picture(tmp_path), top=3)] == [
        m.path for m in library.similar(_new_picture(tmp_path), top=3)
    ]
    assert export_folder(isolated_home, tiny_model, FOLDER).exists()
