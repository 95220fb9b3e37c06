"""Duplicates: exact copies from content hashes, near copies from stored vectors, chained into groups."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.errors import UsageError
from tests import index_db
from tests.cli_process import output_and_modules
from tests.controlled import ControlledEncoder, Item, controlled_library

DIM = 8


def turned(degrees_from_x: float) -> np.ndarray:
    """A unit vector in the x-y plane: two of these have cosine cos(difference of their angles)."""
    v = np.zeros(DIM, dtype=np.float32)
    v[0], v[1] = math.cos(math.radians(degrees_from_x)), math.sin(math.radians(degrees_from_x))
    return v


def angle(cosine: float) -> float:
    return math.degrees(math.acos(cosine))


def axis(i: int) -> np.ndarray:
    return np.eye(DIM, dtype=np.float32)[i]


def unit_mix(base: np.ndarray, other: np.ndarray, cosine: float) -> np.ndarray:
    """A unit vector at `cosine` to `base`, leaning towards `other` (orthogonal to base)."""
    return cosine * base + math.sqrt(1 - cosine * cosine) * other


def library_of(tmp_path: Path, items: list[Item]) -> tuple[Library, Path]:
    folder = tmp_path / "photos"
    return controlled_library(tmp_path / "home", folder, items, ControlledEncoder(DIM)), folder


def names(groups) -> list[tuple[str, list[str]]]:
    return [(g.kind, [Path(p).name for p in g.paths]) for g in groups]


# -- unit tests: vectors chosen by the test ------------------------------------------------------------------


def test_equal_bytes_are_an_exact_group(tmp_path):
    library, folder = library_of(
        tmp_path,
        [
            Item("b.jpg", axis(2), content=b"same bytes"),
            Item("a.jpg", axis(2), content=b"same bytes"),
            Item("c/a.jpg", axis(2), content=b"same bytes"),
            Item("other.jpg", axis(3)),
        ],
    )
    [group] = library.duplicates()
    assert group.kind == "exact" and group.score == 1.0
    assert group.paths == [str(folder / "a.jpg"), str(folder / "b.jpg"), str(folder / "c" / "a.jpg")]
    assert group.to_dict() == {"kind": "exact", "score": 1.0, "paths": group.paths}


def test_vectors_at_or_above_the_threshold_are_a_near_group(tmp_path):
    library, _ = library_of(
        tmp_path,
        [
            Item("photo.jpg", turned(0)),
            Item("photo-small.jpg", turned(angle(0.99))),
            Item("exactly-at.jpg", turned(-angle(0.97))),  # 0.97 to photo.jpg: >= counts
            Item("elsewhere.jpg", axis(4)),
        ],
    )
    [group] = library.duplicates(threshold=0.97)
    assert names([group]) == [("near", ["exactly-at.jpg", "photo-small.jpg", "photo.jpg"])]
    assert group.score == pytest.approx(0.97, abs=1e-5)


def test_nothing_below_the_threshold_is_grouped(tmp_path):
    library, _ = library_of(
        tmp_path,
        [Item("a.jpg", turned(0)), Item("b.jpg", turned(angle(0.969))), Item("c.jpg", turned(-angle(0.96)))],
    )
    assert library.duplicates(threshold=0.97) == []
    assert len(library.duplicates(threshold=0.95)) == 1


def test_a_chain_of_close_pairs_is_one_group_scored_by_its_weakest_link(tmp_path):
    # a~b at 0.99, b~c at 0.98, but a and c only 0.94 apart: single linkage still makes one group.
    a, b, c = turned(0), turned(angle(0.99)), turned(angle(0.99) + angle(0.98))
    assert float(a @ c) < 0.95
    library, _ = library_of(tmp_path, [Item("a.jpg", a), Item("b.jpg", b), Item("c.jpg", c)])
    [group] = library.duplicates(threshold=0.97)
    assert names([group]) == [("near", ["a.jpg", "b.jpg", "c.jpg"])]
    assert group.score == pytest.approx(0.98, abs=1e-5)
    # above the weakest link the chain breaks and only a~b is left
    assert names(library.duplicates(threshold=0.985)) == [("near", ["a.jpg", "b.jpg"])]


def test_exact_copies_joined_by_a_near_copy_make_a_near_group(tmp_path):
    library, _ = library_of(
        tmp_path,
        [
            Item("a.jpg", turned(0), content=b"x"),
            Item("a-copy.jpg", turned(0), content=b"x"),
            Item("a-small.jpg", turned(angle(0.99))),
        ],
    )
    [group] = library.duplicates(threshold=0.97)
    assert names([group]) == [("near", ["a-copy.jpg", "a-small.jpg", "a.jpg"])]
    assert group.score == pytest.approx(0.99, abs=1e-5)


def test_exact_copies_are_found_at_any_threshold_even_1(tmp_path):
    library, _ = library_of(
        tmp_path, [Item("a.jpg", turned(0), content=b"x"), Item("b.jpg", turned(0), content=b"x")]
    )
    assert names(library.duplicates(threshold=1.0)) == [("exact", ["a.jpg", "b.jpg"])]


def test_groups_are_largest_first_then_closest_first(tmp_path):
    items = [
        Item("pair-far-1.jpg", axis(2)),
        Item("pair-far-2.jpg", unit_mix(axis(2), axis(3), 0.975)),
        Item("pair-close-1.jpg", axis(4)),
        Item("pair-close-2.jpg", unit_mix(axis(4), axis(5), 0.995)),
        Item("trio-1.jpg", axis(6), content=b"t"),
        Item("trio-2.jpg", axis(6), content=b"t"),
        Item("trio-3.jpg", axis(6), content=b"t"),
    ]
    library, _ = library_of(tmp_path, items)
    assert [[Path(p).name for p in g.paths] for g in library.duplicates(threshold=0.97)] == [
        ["trio-1.jpg", "trio-2.jpg", "trio-3.jpg"],
        ["pair-close-1.jpg", "pair-close-2.jpg"],
        ["pair-far-1.jpg", "pair-far-2.jpg"],
    ]


def test_under_keeps_only_images_in_the_folder(tmp_path):
    library, folder = library_of(
        tmp_path,
        [
            Item("trip/a.jpg", turned(0)),
            Item("trip/a-small.jpg", turned(angle(0.99))),
            Item("trip/b.jpg", axis(3), content=b"b"),
            Item("backup/b.jpg", axis(3), content=b"b"),  # b's copy is outside trip/
            Item("backup/c.jpg", axis(4), content=b"c"),
            Item("backup/c2.jpg", axis(4), content=b"c"),
        ],
    )
    assert names(library.duplicates(under=folder / "trip")) == [("near", ["a-small.jpg", "a.jpg"])]
    assert len(library.duplicates()) == 3
    assert library.duplicates(under=tmp_path / "nowhere") == []


def test_threshold_must_be_above_0_and_at_most_1(tmp_path):
    library, _ = library_of(tmp_path, [Item("a.jpg", axis(0))])
    for bad in (0.0, -0.5, 1.01, float("nan")):
        with pytest.raises(UsageError, match="--threshold"):
            library.duplicates(threshold=bad)
    with pytest.raises(UsageError):  # refused before the index is even opened
        Library(tmp_path / "no-index").duplicates(threshold=2)
    assert library.duplicates(threshold=1.0) == []


def test_groups_equal_brute_force_connected_components(tmp_path, monkeypatch):
    """Many images, queries in small batches: the groups are exactly the connected components of the
    pairs at or above the threshold, computed here by brute force."""
    import imgsearch.search.duplicates

    monkeypatch.setattr(imgsearch.search.duplicates, "_QUERY_BATCH", 7)
    rng = np.random.default_rng(7)
    vectors = []
    for _ in range(25):
        centre = rng.normal(size=DIM)
        for _ in range(rng.integers(1, 4)):
            vectors.append(centre + rng.normal(scale=0.12, size=DIM))
    items = [Item(f"{i:03}.jpg", v) for i, v in enumerate(vectors)]
    library, folder = library_of(tmp_path, items)
    unit = np.stack([v / np.linalg.norm(v) for v in vectors]).astype(np.float32)
    threshold = 0.97
    linked = unit @ unit.T >= threshold
    components, seen = [], set()
    for start in range(len(unit)):
        if start in seen:
            continue
        stack, members = [start], set()
        while stack:
            i = stack.pop()
            if i not in members:
                members.add(i)
                stack.extend(np.flatnonzero(linked[i]).tolist())
        seen |= members
        if len(members) > 1:
            components.append(sorted(str(folder / f"{i:03}.jpg") for i in members))
    groups = library.duplicates(threshold=threshold)
    assert len(components) >= 3 and sorted(g.paths for g in groups) == sorted(components)
    assert all(g.kind == "near" and threshold - 1e-6 <= g.score <= 1.0 for g in groups)


def test_the_model_is_never_loaded(tmp_path):
    """The controlled index names a model folder that does not exist: loading it would fail."""
    items = [Item("a.jpg", axis(1), content=b"a"), Item("b.jpg", axis(1), content=b"a")]
    library_of(tmp_path, items)
    assert len(Library(tmp_path / "home").duplicates()) == 1


# -- end to end: the CLI with the real tiny model ------------------------------------------------------------


@pytest.fixture
def copies(cli, photos: Path) -> dict[str, list[Path]]:
    """sample_photos plus an exact copy of one photo and a resized and a recompressed copy of another,
    indexed; returns the groups the test expects."""
    from PIL import Image

    shutil.copy(photos / "rocket-launch.jpg", photos / "rocket-launch copy.jpg")
    with Image.open(photos / "dahlia-flower.jpg") as im:
        im.resize((im.width // 2, im.height // 2)).save(photos / "dahlia-half.jpg", quality=90)
        im.save(photos / "dahlia-q60.jpg", quality=60)
    result = cli("index", photos)
    assert result.exit_code == 0, result.output
    return {
        "exact": sorted([photos / "rocket-launch.jpg", photos / "rocket-launch copy.jpg"]),
        "near": sorted([photos / "dahlia-flower.jpg", photos / "dahlia-half.jpg", photos / "dahlia-q60.jpg"]),
    }


def separating_threshold(home: Path, photos: Path) -> float:
    """Measured on the tiny model: halfway between the copies' lowest cosine to their original and the
    highest cosine between two different photos, with a margin asserted so the test means something."""
    stored = {Path(p.decode()).name: v for p, v in index_db.vectors(home).items()}
    original = stored["dahlia-flower.jpg"]
    copies = min(float(stored[n] @ original) for n in ("dahlia-half.jpg", "dahlia-q60.jpg"))
    distinct = np.stack(
        [
            v
            for n, v in stored.items()
            if n.endswith(".jpg") and "copy" not in n and n not in ("dahlia-half.jpg", "dahlia-q60.jpg")
        ]
    )
    cosines = distinct @ distinct.T
    np.fill_diagonal(cosines, -1)
    closest_distinct = float(cosines.max())
    assert copies - closest_distinct >= 0.002, (copies, closest_distinct)
    return (copies + closest_distinct) / 2


def test_cli_groups_exact_and_resized_or_recompressed_copies(cli, copies, isolated_home, photos):
    threshold = separating_threshold(isolated_home, photos)
    result = cli("duplicates", photos, "--threshold", f"{threshold:.6f}", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["kind"], sorted(r["paths"])) for r in rows] == [
        ("near", [str(p) for p in copies["near"]]),
        ("exact", [str(p) for p in copies["exact"]]),
    ]
    assert rows[1]["score"] == 1.0 and threshold <= rows[0]["score"] <= 1.0


def test_cli_text_output_is_one_block_per_group(cli, copies, isolated_home, photos):
    threshold = separating_threshold(isolated_home, photos)
    result = cli("duplicates", "--threshold", str(threshold))
    assert result.exit_code == 0, result.output
    blocks = [block.splitlines() for block in result.output.rstrip("\n").split("\n\n")]
    assert len(blocks) == 2
    near, exact = blocks
    assert re.fullmatch(r"near \(>= (0|1)\.\d{4}\): 3 images", near[0])
    assert exact[0] == "exact: 2 copies"
    assert [line.strip() for line in near[1:]] == [str(p) for p in copies["near"]]
    assert [line.strip() for line in exact[1:]] == [str(p) for p in copies["exact"]]


def test_cli_prints_nothing_without_duplicates_and_never_loads_the_model(cli, tmp_path, isolated_home):
    controlled_library(
        isolated_home,
        tmp_path / "photos",
        [Item("a.jpg", axis(0)), Item("b.jpg", axis(1))],
        ControlledEncoder(DIM),
    )
    result = cli("duplicates")
    assert result.exit_code == 0 and result.output == ""
    _, loaded = output_and_modules(["duplicates", "--json"])
    assert "torch" not in loaded and "open_clip" not in loaded


def test_cli_bad_threshold_is_a_usage_error(cli):
    for bad in ("0", "-1", "1.5", "nan", "high"):
        result = cli("duplicates", "--threshold", bad)
        assert result.exit_code == 2, (bad, result.output)
