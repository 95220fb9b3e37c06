"""End to end: a folder of camera RAW (with and without previews), RAW+JPEG pairs, MPO, PSD, every other
format Pillow reads, extensionless files and bad files, through the real `imgsearch index` and the tiny model.

Every file is made here from sample photos (tests/formats.py writes the RAW, MPO, PSD and rarer formats).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgsearch.index.decode import decode_file
from imgsearch.model.encoder import Encoder
from tests import index_db
from tests.formats import (
    EXTRA_FORMATS,
    random_bytes,
    write_dng,
    write_mpo,
    write_mpo_broken_second,
    write_psd,
    write_tiff_as_dng,
    write_truncated_raw,
)
from tests.images import encode

REPO = Path(__file__).resolve().parent.parent
SAMPLE = sorted((REPO / "sample_photos").glob("*.jpg"))


def picture(number: int, size: tuple[int, int] = (192, 128)) -> Image.Image:
    """Sample photo `number` (cropped differently once the photos run out), at an even size."""
    with Image.open(SAMPLE[number % len(SAMPLE)]) as image:
        rgb = image.convert("RGB")
    if number >= len(SAMPLE):  # another part of the photo: another picture
        rgb = rgb.crop((0, 0, rgb.width // 2, rgb.height // 2))
    return ImageOps.fit(rgb, size)


def build(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write the corpus: ({good name: stored format}, {bad name: the start of its reason})."""
    folder.mkdir(parents=True)
    good: dict[str, str] = {}
    number = iter(range(1000))
    write_dng(folder / "preview.dng", picture(next(number)), preview=True, orientation=6)
    write_dng(folder / "demosaic.dng", picture(next(number)), preview=False, orientation=3)
    write_dng(folder / "sensor.CR2.dng", picture(next(number)), preview=True)  # a dot in the name
    good |= {"preview.dng": "DNG", "demosaic.dng": "DNG", "sensor.CR2.dng": "DNG"}
    pair = picture(next(number))  # a RAW+JPEG pair: one photo, two files
    write_dng(folder / "IMG_0001.dng", pair, preview=True)
    pair.save(folder / "IMG_0001.jpg", quality=92)
    good |= {"IMG_0001.dng": "DNG", "IMG_0001.jpg": "JPEG"}
    write_mpo(folder / "stereo.mpo", [picture(next(number)), picture(next(number))])
    write_mpo_broken_second(folder / "second-broken.mpo", [picture(next(number)), picture(next(number))])
    write_psd(folder / "layered.psd", picture(next(number)))
    good |= {"stereo.mpo": "MPO", "second-broken.mpo": "MPO", "layered.psd": "PSD"}
    for extra in EXTRA_FORMATS:
        name = f"extra{extra.extension}"
        extra.write(folder / name, picture(next(number)))
        good[name] = extra.format
    (folder / "IMG_20240506_backup").write_bytes(encode(picture(next(number)), "JPEG"))  # no extension
    good["IMG_20240506_backup"] = "JPEG"
    (folder / "README").write_text("not a picture, and no extension: looked at and passed over\n")
    (folder / "clip.json").write_text("{}")  # a sidecar: never opened
    bad = {
        "truncated.dng": "broken DNG file",
        "noise.cr2": "not a CR2 file LibRaw can read",
        "tiff.dng": "not a DNG file LibRaw can read",
        "flattened-off.psd": "PSD saved without a composite image",
        "zero.jpg": "empty file",
        "text.png": "not an image",
    }
    write_truncated_raw(folder / "truncated.dng", picture(next(number)))
    random_bytes(folder / "noise.cr2")
    write_tiff_as_dng(folder / "tiff.dng", picture(next(number)))
    write_psd(folder / "flattened-off.psd", picture(next(number)), composite=False)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("hello")
    return good, bad


def imgsearch(home: Path, *args: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMGSEARCH_HOME": str(home)}
    argv = [sys.executable, "-m", "imgsearch", *map(str, args)]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_model: str):
    """The corpus indexed in two runs: the good files first, then the bad ones added (nothing may be lost)."""
    work = tmp_path_factory.mktemp("every-format")
    home, folder = work / "home", work / "photos"
    good, bad = build(folder)
    aside = work / "aside"
    aside.mkdir()
    for name in bad:
        shutil.move(folder / name, aside / name)
    first = imgsearch(home, "index", "--model", tiny_model, folder)
    assert first.returncode == 0, first.stderr
    before = index_db.vectors(home)
    for name in bad:
        shutil.move(aside / name, folder / name)
    second = imgsearch(home, "index", "--model", tiny_model, folder)
    assert second.returncode == 0, second.stderr
    return home, folder, good, bad, before, second.stdout + second.stderr


def test_every_good_file_is_indexed_with_its_format(corpus):
    home, folder, good, _bad, before, _ = corpus
    images = index_db.images(home, "format")
    assert {os.path.basename(p).decode(): row[0] for p, row in images.items()} == good
    assert set(before) == {os.fsencode(folder / name) for name in good}


def test_every_bad_file_is_reported_on_one_line_recorded_and_nothing_is_lost(corpus):
    home, folder, _good, bad, before, output = corpus
    lines = [line for line in output.splitlines() if line.startswith("skipped ")]
    assert len(lines) == len(bad), output
    assert "Unexpected end of file" not in output  # LibRaw's own message, which names no file
    failures = {os.path.basename(p).decode(): reason for p, reason in index_db.failures(home).items()}
    assert set(failures) == set(bad)
    for name, reason in bad.items():
        assert failures[name].startswith(reason), (name, failures[name])
        assert sum(line.startswith(f"skipped {folder / name}: {reason}") for line in lines) == 1, name
    after = index_db.vectors(home)
    assert all(np.array_equal(after[path], vector) for path, vector in before.items())  # nothing lost


def test_stored_vectors_are_the_files_own(corpus, torch_encoder: Encoder):
    """What was stored for each file is what its pixels encode to now (the index ran at auto numerics)."""
    home, *_ = corpus
    for path, vector in index_db.vectors(home).items():
        pixels = decode_file(path, torch_encoder.preprocess).pixels[None].copy()
        assert float(torch_encoder.embed_pixels(pixels)[0] @ vector) > 0.99, path


def test_each_file_answers_a_query_by_a_copy_of_itself(corpus, tmp_path: Path, tiny_model: str):
    from imgsearch.library import Library

    home, folder, good, *_ = corpus
    library = Library(home, model=tiny_model)
    for name in good:
        copy = tmp_path / f"copy-{name}"
        shutil.copyfile(folder / name, copy)
        best = library.similar(copy, top=1)[0]
        assert folder / name in {Path(best.path), *map(Path, best.siblings)}, (name, best)
        assert best.score >= 0.99, (name, best)
    # and once through the command line, for a RAW
    shutil.copyfile(folder / "demosaic.dng", tmp_path / "raw-copy.dng")
    done = imgsearch(home, "query", "--image", tmp_path / "raw-copy.dng", "--json", "--top", "1")
    assert done.returncode == 0, done.stderr
    top = json.loads(done.stdout.splitlines()[0])
    assert (top["path"], top["format"]) == (str(folder / "demosaic.dng"), "DNG") and top["score"] >= 0.99


def test_a_raw_jpeg_pair_is_one_result_naming_its_sibling(corpus, tiny_model: str):
    from imgsearch.library import Library
    from imgsearch.search.query import Filters, Term

    home, folder, good, *_ = corpus
    library = Library(home, model=tiny_model)
    everything = library.query([Term.text("a photo")], top=len(good))
    paths = [Path(m.path) for m in everything]
    assert len(everything) == len(good) - 1  # the pair counts once
    pair = {folder / "IMG_0001.dng", folder / "IMG_0001.jpg"}
    (shown,) = [m for m in everything if Path(m.path) in pair]
    assert {Path(shown.path), *map(Path, shown.siblings)} == pair
    assert all(not m.siblings for m in everything if m is not shown)
    assert len(set(paths)) == len(paths)
    jpegs = library.query([Term.text("a photo")], top=50, filters=Filters(formats=("JPEG",)))
    assert [Path(m.siblings[0]) for m in jpegs if m.siblings] == [folder / "IMG_0001.dng"]
    # a query by one file of the pair never returns the other
    assert not {Path(m.path) for m in library.similar(folder / "IMG_0001.jpg", top=len(good))} & pair
    # and the two are one photo, not duplicates of each other: no link joins them
    groups = library.duplicates(threshold=0.5)
    links = [set(map(Path, link.paths)) for group in groups for link in group.links]
    assert links and pair not in links


def test_status_counts_every_format_and_names_the_decoders(corpus):
    home, _folder, good, *_ = corpus
    done = imgsearch(home, "status", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    expected: dict[str, int] = {}
    for fmt in good.values():
        expected[fmt] = expected.get(fmt, 0) + 1
    assert info["formats"] == expected
    counts = list(info["formats"].values())
    assert counts == sorted(counts, reverse=True)  # most common first
    assert {"Pillow", "LibRaw"} <= set(info["decoders"])
    text = imgsearch(home, "status").stdout
    assert "formats   " in text and "DNG 4" in text and "LibRaw" in text


def test_type_filters_know_raw_and_every_format(corpus, tiny_model: str):
    home, *_ = corpus
    query = ("query", "a photo", "--paths", "--top", "50", "--model", tiny_model)
    done = imgsearch(home, *query, "--type", "raw")
    assert done.returncode == 0, done.stderr
    assert sorted(Path(p).name for p in done.stdout.splitlines()) == sorted(
        ["preview.dng", "demosaic.dng", "sensor.CR2.dng", "IMG_0001.dng"]
    )
    done = imgsearch(home, "query", "a photo", "--top", "50", "--model", tiny_model, "--type", "jpeg")
    lines = done.stdout.splitlines()
    shown = next(i for i, line in enumerate(lines) if line.endswith("/IMG_0001.jpg"))
    assert lines[shown + 1] == " " * 33 + "+ IMG_0001.dng"  # the pair's RAW, under the JPEG's path
    done = imgsearch(home, *query, "--type", "qoi,psd")
    assert sorted(Path(p).name for p in done.stdout.splitlines()) == ["extra.qoi", "layered.psd"]


def test_serve_renders_what_a_browser_cannot_show(corpus, tiny_model: str):
    from fastapi.testclient import TestClient

    from imgsearch.library import Library
    from imgsearch.serve.app import create_app

    home, folder, *_ = corpus
    rows = {os.path.basename(p).decode(): row for p, row in index_db.images(home, "id").items()}
    client = TestClient(create_app(Library(home, model=tiny_model)))
    raw = client.get(f"/api/images/{rows['preview.dng'][0]}/file")
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/jpeg"
    assert raw.headers["x-rendered-from"] == "DNG"
    with Image.open(__import__("io").BytesIO(raw.content)) as shown:
        assert (shown.format, shown.size) == ("JPEG", (128, 192))  # upright: the DNG's orientation is 6
    original = client.get(f"/api/images/{rows['preview.dng'][0]}/file", params={"download": "true"})
    assert original.content == (folder / "preview.dng").read_bytes()
    assert "attachment" in original.headers["content-disposition"]
    jpeg = client.get(f"/api/images/{rows['IMG_0001.jpg'][0]}/file")
    assert jpeg.content == (folder / "IMG_0001.jpg").read_bytes() and "x-rendered-from" not in jpeg.headers
    upload = {"file": ("DSC_0042.dng", (folder / "demosaic.dng").read_bytes())}  # a RAW is known by its name
    found = client.post("/api/search/image", files=upload, data={"top": "1"})
    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["path"] == str(folder / "demosaic.dng")
    for name in ("demosaic.dng", "layered.psd", "extra.fits"):
        thumb = client.get(f"/api/images/{rows[name][0]}/thumbnail", params={"size": 128})
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg", name
