"""Indexing through the CLI: first run, incremental runs, moves, copies, changes, deletions, bad files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from imgsearch import Library
from tests import index_db
from tests.conftest import SAMPLE_COUNT, SAMPLE_PHOTOS
from tests.images import png_bomb

pytestmark = pytest.mark.backends


def summary(output: str) -> dict[str, int]:
    """Parse '3 new, 0 changed, ... (2 encoded in 1.0 s)' into numbers."""
    line = output.strip().splitlines()[-1]
    counts, _, extra = line.partition("(")
    out = {}
    for part in counts.split(","):
        n, name = part.split()
        out[name] = int(n)
    out["encoded"] = int(extra.split()[0])
    return out


def indexed_paths(home: Path) -> set[str]:
    return {os.fsdecode(p) for p in index_db.images(home)}


def files_on_disk(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*.jpg")}


def test_first_index_embeds_every_photo_and_second_run_encodes_nothing(cli, photos, isolated_home):
    first = cli("index", photos)
    assert first.exit_code == 0, first.output
    assert summary(first.output) == {
        "new": SAMPLE_COUNT,
        "changed": 0,
        "moved": 0,
        "copied": 0,
        "unchanged": 0,
        "removed": 0,
        "failed": 0,
        "encoded": SAMPLE_COUNT,
    }
    assert indexed_paths(isolated_home) == files_on_disk(photos)
    (saved,) = index_db.local_folder(isolated_home).glob("vectors-*.faiss")
    before = saved.stat()

    second = cli("index", photos)
    assert second.exit_code == 0
    assert summary(second.output)["unchanged"] == SAMPLE_COUNT
    assert summary(second.output)["encoded"] == 0
    after = saved.stat()  # nothing changed, nothing written (a million-image index is gigabytes)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_index_without_folders_updates_every_known_folder(cli, photos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "cat-chelsea.jpg", other / "cat.jpg")
    assert cli("index", photos).exit_code == 0
    assert cli("index", other).exit_code == 0
    (photos / "coffee-cup.jpg").unlink()
    result = cli("index")
    assert result.exit_code == 0
    assert summary(result.output)["removed"] == 1
    assert summary(result.output)["unchanged"] == SAMPLE_COUNT  # SAMPLE_COUNT - 1 + the cat in `other`


def test_moves_copies_changes_and_deletions_are_reflected_exactly(cli, photos, isolated_home):
    assert cli("index", photos).exit_code == 0
    (photos / "albums" / "2024").mkdir(parents=True)
    shutil.move(photos / "cat-chelsea.jpg", photos / "albums" / "2024" / "chelsea.jpg")  # move
    (photos / "coffee-cup.jpg").rename(photos / "espresso.jpg")  # rename
    shutil.copy(photos / "dahlia-flower.jpg", photos / "albums" / "dahlia copy.jpg")  # copy
    (photos / "raccoon.jpg").unlink()  # delete
    with Image.open(photos / "kite-in-sky.jpg") as im:  # change the pixels in place
        im.rotate(90, expand=True).save(photos / "kite-in-sky.jpg", quality=90)

    result = cli("index", photos)
    assert result.exit_code == 0, result.output
    assert summary(result.output) == {
        "new": 0,
        "changed": 1,
        "moved": 2,
        "copied": 1,
        "unchanged": SAMPLE_COUNT - 4,
        "removed": 1,
        "failed": 0,
        "encoded": 1,
    }
    assert indexed_paths(isolated_home) == files_on_disk(photos)

    # the moved file answers for its old content under its new name
    found = cli("query", "--image", SAMPLE_PHOTOS / "cat-chelsea.jpg", "--json", "-n", "1")
    assert json.loads(found.output)["path"] == str(photos / "albums" / "2024" / "chelsea.jpg")


def test_deleting_a_folder_removes_its_images_from_results(cli, photos, isolated_home):
    sub = photos / "trip"
    sub.mkdir()
    for name in ("sunset-hills.jpg", "lake-at-dusk.jpg"):
        shutil.move(photos / name, sub / name)
    assert cli("index", photos).exit_code == 0
    shutil.rmtree(sub)
    assert summary(cli("index", photos).output)["removed"] == 2
    result = cli("query", "sunset", "--paths", "-n", "100")
    assert not [p for p in result.output.splitlines() if "/trip/" in p]
    assert len(result.output.splitlines()) == SAMPLE_COUNT - 2


def test_touched_but_unchanged_file_is_not_reencoded(cli, photos):
    assert cli("index", photos).exit_code == 0
    os.utime(photos / "cat-chelsea.jpg", (1_000_000_000, 1_000_000_000))
    result = summary(cli("index", photos).output)
    assert result["encoded"] == 0
    assert result["unchanged"] == SAMPLE_COUNT


def test_bad_files_are_reported_recorded_and_not_retried_until_changed(cli, photos, isolated_home):
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "noise.png").write_bytes(os.urandom(5000))
    data = (photos / "cat-chelsea.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(data[: len(data) // 3])
    first = cli("index", photos)
    assert first.exit_code == 0, first.output
    assert summary(first.output)["failed"] == 3
    assert summary(first.output)["new"] == SAMPLE_COUNT
    for name in ("empty.jpg", "noise.png", "truncated.jpg"):
        assert f"skipped {photos / name}:" in first.output

    second = cli("index", photos)
    assert summary(second.output)["failed"] == 0
    assert "3 known bad files skipped" in second.output

    shutil.copy(photos / "coffee-cup.jpg", photos / "empty.jpg")  # the broken file gets fixed
    third = summary(cli("index", photos).output)
    assert third["copied"] == 1 and third["failed"] == 0
    listed = cli("status", "--failures").output
    assert "empty.jpg" not in listed and "noise.png" in listed and "truncated.jpg" in listed


def test_a_file_that_breaks_loses_its_old_vector(cli, photos, isolated_home):
    assert cli("index", photos).exit_code == 0
    (photos / "cat-chelsea.jpg").write_bytes(b"not an image any more")
    result = summary(cli("index", photos).output)
    assert result["failed"] == 1
    assert str(photos / "cat-chelsea.jpg") not in indexed_paths(isolated_home)


def test_identical_new_files_are_encoded_once(cli, photos):
    for i in range(3):
        shutil.copy(photos / "cat-chelsea.jpg", photos / f"cat-{i}.jpg")
    result = summary(cli("index", photos).output)
    assert result["new"] == SAMPLE_COUNT + 3
    assert result["encoded"] == SAMPLE_COUNT


def test_an_interrupted_run_keeps_its_batches_and_the_next_run_resumes(tiny_model, photos, isolated_home):
    from imgsearch.index.events import IndexEvents

    class StopAfterFirstBatch(IndexEvents):
        def __init__(self):
            self.done = 0

        def phase(self, name, total):
            self.name = name

        def advance(self, n=1):
            self.done += n
            if self.name == "encoding" and self.done >= 16:
                raise KeyboardInterrupt

    library = Library(isolated_home, model=tiny_model, device="cpu")
    with contextlib.suppress(KeyboardInterrupt):
        library.index([photos], events=StopAfterFirstBatch())
    kept = indexed_paths(isolated_home)
    assert 16 <= len(kept) < SAMPLE_COUNT
    report = Library(isolated_home, device="cpu").index()
    assert report.new == SAMPLE_COUNT - len(kept)
    assert report.unchanged == len(kept)
    assert indexed_paths(isolated_home) == files_on_disk(photos)


@pytest.mark.sqlite_only("the lock file beside index.db; PostgreSQL's advisory lock: test_postgres.py")
def test_another_writer_is_refused_with_a_clear_message(cli, photos, isolated_home):
    from filelock import FileLock

    isolated_home.mkdir(parents=True)
    with FileLock(isolated_home / "write.lock"):
        result = cli("index", photos)
    assert result.exit_code == 1
    assert "another imgsearch process is writing" in result.output


def test_unplugged_folder_keeps_its_images(cli, photos, tmp_path, isolated_home):
    assert cli("index", photos).exit_code == 0
    moved_away = tmp_path / "elsewhere"
    photos.rename(moved_away)
    result = cli("index")
    assert result.exit_code == 0
    assert "is not there" in result.output
    assert summary(result.output)["removed"] == 0
    assert len(indexed_paths(isolated_home)) == SAMPLE_COUNT


def _odd_and_broken_files(folder: Path) -> tuple[set[str], set[str]]:
    """A folder of images in awkward modes (good) and of broken files (bad); returns (good, bad) names."""
    import numpy as np

    folder.mkdir()
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (50, 70))).astype(np.uint16)).save(folder / "grey16.png")
    rgb.convert("1").save(folder / "bilevel.png")
    rgb.convert("L").save(folder / "grey.jpg")
    palette = rgb.convert("P")
    palette.info["transparency"] = 0
    palette.save(folder / "palette-alpha.png", transparency=0)
    rgb.convert("RGBA").save(folder / "rgba.webp")
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(folder / "rotated.jpg", exif=exif)
    rgb.save(folder / "png-named.jpg", format="PNG")
    Image.new("RGB", (20000, 10), "green").save(folder / "wide.png")
    good = {p.name for p in folder.iterdir()}

    data = (folder / "rotated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "zero.png").write_bytes(b"")
    (folder / "random.webp").write_bytes(rng.bytes(3000))
    (folder / "notes.jpg").write_text("this is a text file\n")
    (folder / "bomb.png").write_bytes(png_bomb())  # claims 10 gigapixels
    bad = {p.name for p in folder.iterdir()} - good
    return good, bad


def test_odd_and_broken_files_index_without_a_crash(cli, tmp_path, isolated_home):
    folder = tmp_path / "odd"
    good, bad = _odd_and_broken_files(folder)
    result = cli("index", folder)
    assert result.exit_code == 0, result.output
    assert {Path(p).name for p in indexed_paths(isolated_home)} == good
    listed = cli("status", "--failures").output.splitlines()
    assert {Path(line.split(": ", 1)[0]).name for line in listed} == bad
    reasons = dict(line.rsplit("/", 1)[1].split(": ", 1) for line in listed)
    assert "pixels" in reasons["bomb.png"]
    assert reasons["zero.png"] == "empty file"
    assert summary(result.output)["failed"] == len(bad)


def test_nested_folders_are_one_root(cli, photos, isolated_home):
    sub = photos / "sub"
    sub.mkdir()
    shutil.move(photos / "cat-chelsea.jpg", sub / "cat.jpg")
    assert cli("index", sub).exit_code == 0
    assert cli("index", photos).exit_code == 0  # the outer folder replaces the inner one
    assert cli("index", sub).exit_code == 0  # and an inner folder adds nothing
    roots = [r["path"] for r in json.loads(cli("status", "--json").output)["roots"]]
    assert roots == [str(photos)]


def test_a_folder_that_cannot_be_listed_keeps_its_images(cli, photos, isolated_home, refuse_listing):
    sub = photos / "locked"
    sub.mkdir()
    shutil.move(photos / "cat-chelsea.jpg", sub / "cat.jpg")
    assert cli("index", photos).exit_code == 0
    refuse_listing(sub)
    result = cli("index", photos)
    assert f"cannot read {sub}" in result.output and "Permission denied" in result.output
    assert summary(result.output)["removed"] == 0
    assert str(sub / "cat.jpg") in indexed_paths(isolated_home)


def test_a_crashing_or_hanging_decoder_costs_only_its_own_file(tmp_path):
    """Worker deaths are survived: the culprits are named by retrying suspects alone; the rest decode."""
    import time

    from imgsearch.index.decode import DecodedImage
    from imgsearch.index.indexer import _Job
    from imgsearch.index.scan import FileStat
    from imgsearch.index.workers import decode_all
    from imgsearch.model.preprocess import Preprocess
    from tests.misbehaving_decoder import decode_or_misbehave

    names = [f"good{i}.jpg" for i in range(6)] + ["crash.jpg", "hang.jpg"]
    jobs = []
    for i, name in enumerate(names):
        path = tmp_path / name
        shutil.copy(sorted(SAMPLE_PHOTOS.glob("*.jpg"))[i], path)
        jobs.append(_Job(bytes([i]), ((FileStat(os.fsencode(path), 0, 0), None),)))
    started = time.monotonic()
    results = dict(decode_all(jobs, Preprocess(32, 32), 2, decode=decode_or_misbehave, limit=2))
    assert time.monotonic() - started < 60
    by_name = {os.path.basename(job.path).decode(): result for job, result in results.items()}
    assert set(by_name) == set(names)
    assert all(isinstance(by_name[n], DecodedImage) for n in names if n.startswith("good"))
    for bad in ("crash.jpg", "hang.jpg"):
        assert by_name[bad] == "the decoder crashed or ran over 2 s on this file"
