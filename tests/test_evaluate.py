"""`imgsearch eval`: the metric arithmetic against a hand computation, the captions file, and the CLI end to
end with the real tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from imgsearch.errors import UsageError
from imgsearch.search.classify import ZeroShot
from imgsearch.search.evaluate import (
    Captions,
    image_to_text_ranks,
    label_set,
    read_captions,
    retrieval,
    text_to_image_ranks,
    zero_shot_accuracy,
)
from tests.conftest import SAMPLE_PHOTOS

# -- the arithmetic, with vectors chosen so that every rank can be worked out by hand -----------------------

#: Four photos, the unit vectors e0..e3: a caption's cosine with photo p is then its component p.
PHOTOS = np.eye(4)
#: Six unit captions; photo 0 has captions 0 and 1, photo 1 captions 2 and 3, photo 2 caption 4, photo 3
#: caption 5.
CAPTIONS = np.array(
    [
        [0.6, 0.8, 0.0, 0.0],  # of photo 0, but photo 1 scores higher: rank 2
        [0.8, 0.6, 0.0, 0.0],  # of photo 0: rank 1 (photo 0's second caption, its best one)
        [0.0, 0.6, 0.8, 0.0],  # of photo 1, photo 2 higher: rank 2
        [0.5, 0.5, 0.5, 0.5],  # of photo 1, tied with all four photos: rank 4 (ties count against)
        [0.0, 0.0, 0.6, 0.8],  # of photo 2, photo 3 higher: rank 2
        [0.0, 0.0, 0.0, 1.0],  # of photo 3: rank 1
    ]
)
OWNER = np.array([0, 0, 1, 1, 2, 3])
SIMILARITY = CAPTIONS @ PHOTOS.T  # exact: the components themselves


def test_text_to_image_ranks_recall_and_median_by_hand():
    ranks = text_to_image_ranks(SIMILARITY, OWNER)
    assert ranks.tolist() == [2, 1, 2, 4, 2, 1]
    result = retrieval(ranks)
    assert result.recall == {1: 2 / 6, 5: 1.0, 10: 1.0}
    assert result.median_rank == 2.0  # of 1 1 2 2 2 4
    assert result.mean_rank == 2.0
    assert result.queries == 6


def test_image_to_text_takes_each_photos_best_caption_by_hand():
    # photo 0's column: captions 0..5 score .6 .8 0 .5 0 0; its own are 0 and 1, the best is its second
    #   caption (.8), which no other photo's caption reaches: rank 1 (its first caption alone would rank 2).
    # photo 1: .8 .6 .6 .5 0 0; own 2 and 3, best .6; caption 0 (.8) beats it and caption 1 (.6) ties it,
    #   counted against: rank 3.
    # photo 2: 0 0 .8 .5 .6 0; own 4 (.6); caption 2 (.8) beats it: rank 2.
    # photo 3: 0 0 0 .5 .8 1; own 5 (1.0): rank 1.
    ranks = image_to_text_ranks(SIMILARITY, OWNER)
    assert ranks.tolist() == [1, 3, 2, 1]
    result = retrieval(ranks)
    assert result.recall == {1: 0.5, 5: 1.0, 10: 1.0}
    assert result.median_rank == 1.5  # of 1 1 2 3
    assert result.mean_rank == 1.75
    assert result.queries == 4


def test_a_photos_own_other_captions_never_count_against_it():
    # photo 0's captions tie each other at the top: still rank 1, and rank 1 for either alone
    similarity = np.array([[0.9, 0.1], [0.9, 0.2], [0.3, 0.8]])
    assert image_to_text_ranks(similarity, np.array([0, 0, 1])).tolist() == [1, 1]
    # but a tie with another photo's caption counts against: caption 2 reaches photo 0's best score
    similarity[2, 0] = 0.9
    assert image_to_text_ranks(similarity, np.array([0, 0, 1])).tolist() == [2, 1]


def test_recall_at_10_and_median_of_long_ranks():
    result = retrieval(np.array([1, 6, 11, 3]))
    assert result.recall == {1: 0.25, 5: 0.5, 10: 0.75}
    assert result.median_rank == 4.5 and result.mean_rank == 5.25


def test_zero_shot_accuracy_by_hand_a_tie_is_a_miss():
    labels = np.array(
        [
            [0.8, 0.0, 0.6, 0.0],  # cat: photo 0 (.8) and photo 2 (.6) are nearest it
            [0.0, 0.0, 0.0, 1.0],  # car: photo 3
            [0.6, 0.0, 0.0, 0.8],  # dog: photo 1 scores 0 with every label, a three-way tie
        ]
    )
    truth = np.array([0, 2, 0, 1])  # cat, dog, cat, car
    scores = PHOTOS @ labels.T
    assert zero_shot_accuracy(scores, truth) == (0.75, 4)  # photo 1's tie counts as a miss
    # through classify's probabilities (softmax of cosine x scale): the same choices, the same accuracy
    zero_shot = ZeroShot(("cat", "car", "dog"), labels, scale=100.0)
    assert zero_shot_accuracy(zero_shot.probabilities(PHOTOS), truth) == (0.75, 4)
    # a photo without a label is not counted
    assert zero_shot_accuracy(scores, np.array([0, -1, 0, 1])) == (1.0, 3)
    assert zero_shot_accuracy(scores, np.full(4, -1)) == (None, 0)


# -- the captions file --------------------------------------------------------------------------------------


def _csv(folder: Path, text: str, name: str = "captions.csv") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_several_captions_per_photo_relative_paths_and_labels(tmp_path):
    path = _csv(
        tmp_path,
        "Path , Caption,label,notes\n"
        "a.jpg,a red apple,fruit,x\n"
        "sub/../a.jpg,  an apple   on a table ,,\n"
        "\n"
        f"{tmp_path / 'b.jpg'},a dog,animal,\n",
    )
    captions = read_captions(path)
    a, b = (bytes(tmp_path / name) for name in ("a.jpg", "b.jpg"))
    assert captions.photos == (a, b)
    assert captions.texts == ("a red apple", "an apple on a table", "a dog")
    assert captions.owner.tolist() == [0, 0, 1]
    assert captions.labels == ("fruit", "animal")


def test_json_list_and_mapping_read_like_the_csv(tmp_path):
    listed = [
        {"path": "a.jpg", "caption": "a red apple", "label": "fruit"},
        {"path": "a.jpg", "caption": ["an apple on a table"]},
        {"path": "b.jpg", "caption": "a dog", "label": "animal"},
    ]
    (tmp_path / "list.json").write_text(json.dumps(listed))
    from_list = read_captions(tmp_path / "list.json")
    assert from_list.texts == ("a red apple", "an apple on a table", "a dog")
    assert from_list.owner.tolist() == [0, 0, 1] and from_list.labels == ("fruit", "animal")
    mapping = {"a.jpg": ["a red apple", "an apple on a table"], "b.jpg": "a dog"}
    (tmp_path / "map.txt").write_text(json.dumps(mapping))  # JSON by its content, whatever its name
    from_map = read_captions(tmp_path / "map.txt")
    assert from_map.photos == from_list.photos and from_map.texts == from_list.texts
    assert from_map.labels is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.csv", "path,text\na.jpg,an apple\n", "no 'caption' column"),
        ("c.csv", "file,text\n", "no 'path' or 'caption' column"),
        ("c.csv", "", "is empty"),
        ("c.csv", "path,caption\n", "lists no photos"),
        ("c.csv", "path,caption\n,an apple\n", "line 2: no photo path"),
        ("c.csv", "path,caption\na.jpg,  \n", "line 2: the caption of a.jpg is empty"),
        ("c.csv", "path,caption,label\na.jpg,x,cat\na.jpg,y,dog\n", "labelled both 'cat' and 'dog'"),
        ("c.json", "[{", "not valid JSON"),
        ("c.json", "[]", "lists no photos"),
        ("c.json", '"a.jpg"', "must be a list"),
        ("c.json", '[{"path": "a.jpg"}]', "item 1: not an object with a path and a caption"),
        ("c.json", '{"a.jpg": 3}', "a caption must be text"),
        ("c.dat", b"\xff\xd8\xff\xe0 a JPEG", "not a CSV or JSON text file"),
    ],
)
def test_a_bad_captions_file_is_a_usage_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UsageError, match=message):
        read_captions(path)


def _labelled(*labels: str | None) -> Captions:
    n = len(labels)
    photos = tuple(f"/p{i}.jpg".encode() for i in range(n))
    return Captions("c.csv", photos, tuple(f"c{i}" for i in range(n)), np.arange(n), labels)


def test_the_label_set_is_the_files_labels_or_labels_given():
    assert label_set(_labelled("cat", None, "dog", "Cat"), None) == ("cat", "dog")
    assert label_set(_labelled("cat", "dog"), ["Dog", "cat", "car"]) == ("Dog", "cat", "car")
    with pytest.raises(UsageError, match="which --labels does not name"):
        label_set(_labelled("cat", "dog"), ["cat", "car"])
    with pytest.raises(UsageError, match="only one label"):
        label_set(_labelled("cat", "cat"), None)
    no_labels = Captions("c.csv", (b"/a.jpg",), ("x",), np.zeros(1, dtype=np.int64), None)
    assert label_set(no_labels, None) is None
    with pytest.raises(UsageError, match="needs a label column"):
        label_set(no_labels, ["cat", "dog"])


# -- through the CLI, with the real tiny model --------------------------------------------------------------

#: Sample photos, each with one or two captions and a label.
SHOWN = {
    "cat-chelsea.jpg": (["a cat", "a tabby cat looking up"], "animal"),
    "dogs-at-window.jpg": (["two dogs at a window"], "animal"),
    "raccoon.jpg": (["a raccoon"], "animal"),
    "green-bus.jpg": (["a green bus on a street"], "vehicle"),
    "fire-truck.jpg": (["a red fire truck", "a fire engine"], "vehicle"),
    "coffee-cup.jpg": (["a cup of coffee"], "food"),
    "fig-in-bowl.jpg": (["a fig in a bowl"], "food"),
}


def _album(folder: Path, cli, *index_options: str) -> Path:
    """A folder of SHOWN's photos, indexed, with captions.csv beside them (relative paths)."""
    folder.mkdir()
    for name in SHOWN:
        shutil.copy(SAMPLE_PHOTOS / name, folder / name)
    result = cli("index", folder, *index_options)
    assert result.exit_code == 0, result.output
    lines = ["path,caption,label"]
    lines += [f"{name},{caption},{label}" for name, (texts, label) in SHOWN.items() for caption in texts]
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def library_photos(tmp_path: Path, cli) -> Path:
    return _album(tmp_path / "album", cli)


def _report(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _check_scores(row: dict, photos: int, captions: int) -> None:
    for direction, queries in (("text_to_image", captions), ("image_to_text", photos)):
        scores = row[direction]
        recall = [scores["recall"][k] for k in ("1", "5", "10")]
        assert all(0.0 <= r <= 1.0 for r in recall)
        assert recall[0] <= recall[1] <= recall[2]
        assert 1 <= scores["median_rank"] <= (photos if direction == "text_to_image" else captions)
        assert scores["queries"] == queries
    assert 0.0 <= row["zero_shot"]["accuracy"] <= 1.0 and row["zero_shot"]["photos"] == photos


def test_eval_reports_both_directions_and_zero_shot_from_the_index(cli, library_photos, tiny_model):
    report = _report(cli("eval", library_photos / "captions.csv", "--json"))
    captions = sum(len(texts) for texts, _ in SHOWN.values())
    assert report["photos"] == report["evaluated_photos"] == len(SHOWN)
    assert report["captions"] == report["evaluated_captions"] == captions
    assert report["missing"] == [] and report["unreadable"] == []
    assert report["labels"] == ["animal", "vehicle", "food"]
    assert report["ties"] == "pessimistic"
    assert report["captions_file"] == str(library_photos / "captions.csv")
    [row] = report["models"]
    assert row["model"] == tiny_model and row["vectors"] == "index" and row["dim"] == 32
    _check_scores(row, len(SHOWN), captions)


def test_a_model_encoding_in_memory_gives_the_numbers_of_its_index(cli, tiny_model, tmp_path):
    # fp32 throughout: the stored vectors, the query picture's and those --model encodes are made alike
    library_photos = _album(tmp_path / "album", cli, "--precision", "fp32")
    elsewhere = tmp_path / "not-indexed"  # a photo outside the index: encoded as a query picture
    elsewhere.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "hot-air-balloon.jpg", elsewhere / "balloon.jpg")
    with (library_photos / "captions.csv").open("a") as f:
        f.write(f"{elsewhere / 'balloon.jpg'},a hot air balloon in the sky,vehicle\n")
    before = len(list((library_photos.parent / "home").glob("**/*")))
    args = ("eval", library_photos / "captions.csv", "--model", "index", "--model", tiny_model)
    args += ("--precision", "fp32", "--json")
    report = _report(cli(*args))
    index_row, memory_row = report["models"]
    assert (index_row["vectors"], memory_row["vectors"]) == ("index", "encoded")
    assert index_row["model"] == memory_row["model"] == tiny_model
    for key in ("text_to_image", "image_to_text", "zero_shot"):
        assert memory_row[key] == index_row[key], key
    assert report["evaluated_photos"] == len(SHOWN) + 1
    assert len(list((library_photos.parent / "home").glob("**/*"))) == before  # nothing written


def test_the_json_file_gives_the_same_report_as_the_csv(cli, library_photos):
    listed = [
        {"path": name, "caption": caption, "label": label}
        for name, (texts, label) in SHOWN.items()
        for caption in texts
    ]
    (library_photos / "captions.json").write_text(json.dumps(listed))
    from_csv = _report(cli("eval", library_photos / "captions.csv", "--json"))
    from_json = _report(cli("eval", library_photos / "captions.json", "--json"))
    assert from_json["models"] == from_csv["models"]
    mapping = {name: texts for name, (texts, _) in SHOWN.items()}
    (library_photos / "map.json").write_text(json.dumps(mapping))
    from_map = _report(cli("eval", library_photos / "map.json", "--json"))
    assert from_map["labels"] is None and from_map["models"][0]["zero_shot"] is None
    for key in ("text_to_image", "image_to_text"):
        assert from_map["models"][0][key] == from_csv["models"][0][key]


def test_missing_and_unreadable_photos_are_reported_and_skipped(cli, library_photos):
    (library_photos / "broken.jpg").write_text("not a picture")
    with (library_photos / "captions.csv").open("a") as f:
        f.write("gone.jpg,a photo that is not there,food\nbroken.jpg,a broken file,food\n")
    result = cli("eval", library_photos / "captions.csv", "--json")
    report = _report(result)
    assert report["photos"] == len(SHOWN) + 2 and report["evaluated_photos"] == len(SHOWN)
    assert report["captions"] == report["evaluated_captions"] + 2
    assert report["missing"] == [{"path": str(library_photos / "gone.jpg"), "reason": "no such file"}]
    [unreadable] = report["unreadable"]
    assert unreadable["path"] == str(library_photos / "broken.jpg") and "not an image" in unreadable["reason"]
    _check_scores(report["models"][0], len(SHOWN), report["evaluated_captions"])
    table = cli("eval", library_photos / "captions.csv")
    assert table.exit_code == 0, table.output
    assert f"skipped (missing): {library_photos / 'gone.jpg'}: no such file" in table.stderr
    assert "skipped (unreadable): " in table.stderr


def test_the_table_shows_one_row_per_model(cli, library_photos, tiny_model):
    result = cli("eval", library_photos / "captions.csv", "--model", "index", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"photos    {len(SHOWN)} of {len(SHOWN)}"
    assert lines[2] == "labels    animal, vehicle, food"
    header = next(i for i, line in enumerate(lines) if line.startswith("model "))
    assert "text -> image" in lines[header - 1] and "zero-shot" in lines[header - 1]
    recall = ["R@1", "R@5", "R@10", "median"]
    assert lines[header].split() == ["model", *recall, *recall, "top-1"]
    index_row, memory_row = (line.split() for line in lines[header + 1 : header + 3])
    assert index_row[:2] == [tiny_model, "(index)"] and memory_row[0] == tiny_model
    # every photo is indexed, in the numerics --model encodes in by default: the same numbers
    assert index_row[2:] == memory_row[1:] and len(memory_row) == 1 + 4 + 4 + 1
    for cell in memory_row[1:]:
        assert 0.0 <= float(cell) <= 100.0 or cell.isdigit()


def test_labels_option_sets_the_zero_shot_labels(cli, library_photos):
    args = ("eval", library_photos / "captions.csv", "--json", "--labels", "food", "animal", "vehicle", "toy")
    report = _report(cli(*args))
    assert report["labels"] == ["food", "animal", "vehicle", "toy"]
    result = cli("eval", library_photos / "captions.csv", "--labels", "food", "animal")
    assert result.exit_code == 2 and "which --labels does not name" in result.output


def test_a_csv_without_a_caption_column_exits_2(cli, library_photos):
    bad = library_photos / "bad.csv"
    bad.write_text("path,text\ncat-chelsea.jpg,a cat\n")
    result = cli("eval", bad)
    assert result.exit_code == 2
    assert "no 'caption' column" in result.output
    assert cli("eval", library_photos / "no-such.csv").exit_code == 2
    assert cli("eval", library_photos).exit_code == 2  # a folder


def test_only_missing_photos_exits_2_and_no_index_exits_1(cli, tmp_path, tiny_model):
    captions = _csv(tmp_path, "path,caption\ngone.jpg,nothing here\n")
    result = cli("eval", captions)
    assert result.exit_code == 2 and "none of the 1 photos" in result.output
    shutil.copy(SAMPLE_PHOTOS / "raccoon.jpg", tmp_path / "raccoon.jpg")
    captions = _csv(tmp_path, "path,caption\nraccoon.jpg,a raccoon\n")
    result = cli("eval", captions)
    assert result.exit_code == 1 and result.output.startswith("Error: no index")
    # another model needs no index, and makes none
    report = _report(cli("eval", captions, "--model", tiny_model, "--json"))
    assert report["models"][0]["vectors"] == "encoded" and report["evaluated_photos"] == 1
    assert report["models"][0]["image_to_text"]["recall"]["1"] == 1.0  # one photo, one caption
    assert not (tmp_path / "home" / "index.db").exists()
