"""Searching through the CLI: text and image queries, output formats, folders, and FAISS exactness."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imgsearch import Library
from tests import index_db
from tests.conftest import SAMPLE_COUNT, SAMPLE_PHOTOS

pytestmark = pytest.mark.backends


def test_text_query_prints_score_and_path_best_first(cli, indexed):
    result = cli("query", "a cat on a sofa", "-n", "5")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 5
    scores = [float(line.split()[0]) for line in lines]
    assert scores == sorted(scores, reverse=True)
    assert all(Path(line.split(maxsplit=3)[3]).is_file() for line in lines)  # score, date, size, path


def test_json_output_has_path_score_and_size(cli, indexed):
    result = cli("query", "mountains", "--json", "--top", "3")
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert Path(row["path"]).parent == indexed
        assert -1.0 <= row["score"] <= 1.0
        assert row["width"] > 0 and row["height"] > 0


def test_paths_and_nul_output_for_pipes(cli, indexed):
    paths = cli("query", "food", "--paths", "-n", "4").output.splitlines()
    assert len(paths) == 4 and all(Path(p).is_file() for p in paths)
    raw = cli("query", "food", "-0", "-n", "4").stdout_bytes
    assert raw.endswith(b"\0") and raw.split(b"\0")[:-1] == [p.encode() for p in paths]


def test_in_limits_results_to_a_folder(cli, indexed_private):
    sub = indexed_private / "animals"
    sub.mkdir()
    for name in ("cat-chelsea.jpg", "raccoon.jpg", "ladybird.jpg"):
        shutil.move(indexed_private / name, sub / name)
    assert cli("index", indexed_private).exit_code == 0
    result = cli("query", "an animal", "--in", sub, "--paths", "-n", "10")
    assert sorted(result.output.splitlines()) == sorted(str(p) for p in sub.iterdir())


def test_image_query_never_returns_the_query_image(cli, indexed):
    target = indexed / "cat-chelsea.jpg"
    for command in (("query", "--image", target), ("similar", target)):
        rows = [json.loads(x) for x in cli(*command, "--json", "-n", "50").output.splitlines()]
        assert len(rows) == SAMPLE_COUNT - 1
        assert str(target) not in {r["path"] for r in rows}


def test_a_copy_outside_the_index_finds_its_original_first(cli, indexed, tmp_path):
    copy = tmp_path / "elsewhere" / "copy.jpg"
    copy.parent.mkdir()
    shutil.copy(indexed / "rocket-launch.jpg", copy)
    first = json.loads(cli("query", "--image", copy, "--json", "-n", "1").output)
    assert first["path"] == str(indexed / "rocket-launch.jpg")
    assert first["score"] >= 0.99


def test_a_new_image_outside_the_index_is_encoded_for_the_query(cli, indexed, tmp_path):
    from PIL import Image

    edited = tmp_path / "edited.jpg"
    with Image.open(indexed / "dahlia-flower.jpg") as im:
        im.resize((im.width // 2, im.height // 2)).save(edited, quality=70)
    first = json.loads(cli("query", "--image", edited, "--json", "-n", "1").output)
    assert first["path"] == str(indexed / "dahlia-flower.jpg")
    assert first["score"] >= 0.95


def test_faiss_results_equal_a_brute_force_ranking(tiny_model, indexed, sample_index):
    library = Library(sample_index.home, device="cpu")
    query = library.encoder().embed_texts(["a bowl of fruit"])[0]
    scores = {p.decode(): float(v @ query) for p, v in index_db.vectors(sample_index.home).items()}
    expected = sorted(scores, key=lambda p: -scores[p])[:10]
    got = library.search("a bowl of fruit", top=10)
    assert [m.path for m in got] == expected
    assert [m.score for m in got] == pytest.approx([scores[p] for p in expected], abs=1e-5)


def test_missing_index_is_one_clear_line_and_exit_1(cli, backend):
    result = cli("query", "anything")
    assert result.exit_code == 1
    assert result.output.startswith("Error: no index at" if backend == "sqlite" else "Error: no index in the")
    assert len(result.output.strip().splitlines()) == 1


def test_usage_errors_exit_2(cli, indexed):
    assert cli("query").exit_code == 2  # neither text nor --image
    assert cli("query", "--not", "cat").exit_code == 2  # nothing to push away from
    assert cli("query", "cat", "--image", indexed / "no-such.jpg").exit_code == 2
    assert cli("query", "cat", "--after", "yesterday").exit_code == 2
    assert cli("query", "cat", "--type", "docx").exit_code == 2
    assert cli("query", "cat", "--json", "--paths").exit_code == 2
    assert cli("query", "cat", "-n", "0").exit_code == 2
    assert cli("similar", indexed / "no-such.jpg").exit_code == 2
    assert cli("index", "/no/such/folder").exit_code == 2
    assert cli("frobnicate").exit_code == 2


def test_real_subprocess_index_and_query(tiny_model, photos, isolated_home):
    """The installed entry point, as a person runs it: python -m imgsearch in a new process."""
    run = [sys.executable, "-m", "imgsearch"]
    indexed = subprocess.run([*run, "index", "--model", tiny_model, photos], capture_output=True, text=True)
    assert indexed.returncode == 0, indexed.stderr
    assert f"{SAMPLE_COUNT} new" in indexed.stdout
    assert indexed.stderr == ""  # nothing noisy when piped
    found = subprocess.run(
        [*run, "query", "a red apple", "--json", "-n", "3"], capture_output=True, text=True
    )
    assert found.returncode == 0, found.stderr
    assert len(found.stdout.splitlines()) == 3
    status = subprocess.run([*run, "status", "--json"], capture_output=True, text=True)
    info = json.loads(status.stdout)
    assert info["images"] == SAMPLE_COUNT and info["model"] == tiny_model and info["dim"] == 32


def test_a_long_lived_library_reuses_its_vectors_until_the_index_changes(
    tiny_model, indexed_private, isolated_home
):
    library = Library(isolated_home, device="cpu")
    library.search("a tree", top=3)
    first = library.reader._vectors
    library.search("a car", top=3)
    assert library.reader._vectors is first  # nothing changed: nothing reloaded
    shutil.copy(indexed_private / "fig-in-bowl.jpg", indexed_private / "fig-copy.jpg")
    Library(isolated_home, device="cpu").index()  # another writer adds an image
    found = library.search("a fig", top=SAMPLE_COUNT + 1)
    assert library.reader._vectors is not first
    assert str(indexed_private / "fig-copy.jpg") in {m.path for m in found}


def test_every_query_option_parses_runs_and_prints_well_formed_results(cli, indexed):
    def rows(*args):
        result = cli("query", *args, "--json", "-n", "50")
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.output.splitlines()]

    assert len(rows("beach at sunset", "--not", "people")) == SAMPLE_COUNT
    liked = rows("dog", "--like", indexed / "dogs-at-window.jpg")
    assert str(indexed / "dogs-at-window.jpg") not in {r["path"] for r in liked}
    assert len(liked) == SAMPLE_COUNT - 1
    assert len(rows("2:mountain lake", "1:winter", "--like", f"0.5:{indexed / 'lake-at-dusk.jpg'}")) == 33
    filtered = rows(
        "birthday cake", "--after", "2000-01-01", "--before", "2100-12-31", "--in", indexed,
        "--glob", "*/[a-f]*.jpg", "--min-width", "500", "--min-height", "300", "--type", "jpg,png",
        "--min-score", "-1", "--sort", "date",
    )  # fmt: skip
    assert filtered
    for row in filtered:
        name = Path(row["path"]).name
        assert name[0] in "abcdef" and row["width"] >= 500 and row["height"] >= 300
    dates = [r["taken_at"] or r["mtime"] for r in filtered]
    assert dates == sorted(dates, reverse=True)
    assert rows("x", "--before", "1990-01-01") == []
    assert rows("x", "--min-score", "0.9999") == []
    table = cli("similar", indexed / "coffee-cup.jpg", "--type", "jpeg", "-n", "3").output.splitlines()
    assert len(table) == 3
    for line in table:
        score, day, size, path = line.split(maxsplit=3)
        float(score), time.strptime(day, "%Y-%m-%d")
        assert "x" in size and Path(path).is_file()


def test_query_label_filter_parses_and_keeps_only_that_label(cli, indexed):
    labels = ["cat", "dog", "car", "tree"]
    classified = cli("classify", indexed, "--labels", *labels, "--json").output.splitlines()
    best = [json.loads(line)["label"] for line in classified]
    label = max(labels, key=best.count)  # the tiny model's labels are arbitrary: use one that is present
    expected = {json.loads(x)["path"] for x in classified if json.loads(x)["label"] == label}
    others = [x for x in labels if x != label]
    result = cli("query", "a sunny day", "--label", label, "--labels", *others, "--json", "-n", "50")
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["path"] for line in result.output.splitlines()} == expected
    assert 0 < len(expected) < SAMPLE_COUNT
    assert cli("query", "x", "--labels", "dog", "car").exit_code == 2  # --labels without --label


def test_odd_file_names_print_on_one_line_and_pipe_exactly(cli, tmp_path):
    folder = tmp_path / "odd-names"
    folder.mkdir()
    names = [b"line\nbreak.jpg", b"bad-\xff.jpg", "caf\u00e9 \U0001f305.jpg".encode()]
    for name, photo in zip(names, ("cat-chelsea.jpg", "coffee-cup.jpg", "kite-in-sky.jpg"), strict=True):
        shutil.copy(SAMPLE_PHOTOS / photo, os.path.join(os.fsencode(folder), name))
    assert cli("index", folder).exit_code == 0
    table = cli("query", "a cat").output.splitlines()
    assert len(table) == 3
    assert {line.split(maxsplit=3)[3].rsplit("/", 1)[1] for line in table} == {
        "line\\nbreak.jpg",
        "bad-\\xff.jpg",
        "caf\u00e9 \U0001f305.jpg",
    }
    raw = cli("query", "a cat", "-0").stdout_bytes
    assert sorted(raw.split(b"\0")[:-1]) == sorted(os.path.join(os.fsencode(folder), n) for n in names)
    rows = [json.loads(line) for line in cli("query", "a cat", "--json").output.splitlines()]
    assert str(folder / "line\nbreak.jpg") in {r["path"] for r in rows}
