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
from imgsearch.search.duplicates import exact_groups
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
    assert group.exact == [group.paths]
    assert group.to_dict() == {"kind": "exact", "score": 1.0, "paths": group.paths, "exact": [group.paths]}
    assert len(group.links) == 2 and all(link.exact and link.score == 1.0 for link in group.links)


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
    assert [[Path(p).name for p in copies] for copies in group.exact] == [["a-copy.jpg", "a.jpg"]]


def chain_with_copies(tmp_path: Path) -> tuple[Library, Path]:
    """a (and its copy) ~ b at 0.99, b ~ c (and its two copies) at 0.98, a and c only 0.94 apart; d and
    its copy elsewhere, alone."""
    c = turned(angle(0.99) + angle(0.98))
    return library_of(
        tmp_path,
        [
            Item("a.jpg", turned(0), content=b"a"),
            Item("a-copy.jpg", turned(0), content=b"a"),
            Item("b.jpg", turned(angle(0.99))),
            Item("c.jpg", c, content=b"c"),
            Item("c-copy.jpg", c, content=b"c"),
            Item("c-copy2.jpg", c, content=b"c"),
            Item("d.jpg", axis(5), content=b"d"),
            Item("d2.jpg", axis(5), content=b"d"),
        ],
    )


def test_a_near_chain_names_every_set_of_byte_identical_files_in_it(tmp_path):
    library, _ = chain_with_copies(tmp_path)
    near, alone = library.duplicates(threshold=0.97)
    assert names([near, alone]) == [
        ("near", ["a-copy.jpg", "a.jpg", "b.jpg", "c-copy.jpg", "c-copy2.jpg", "c.jpg"]),
        ("exact", ["d.jpg", "d2.jpg"]),
    ]
    assert [[Path(p).name for p in copies] for copies in near.exact] == [  # largest first
        ["c-copy.jpg", "c-copy2.jpg", "c.jpg"],
        ["a-copy.jpg", "a.jpg"],
    ]
    assert [[Path(p).name for p in copies] for copies in alone.exact] == [["d.jpg", "d2.jpg"]]


def test_links_are_the_maximum_spanning_tree_strongest_first(tmp_path):
    library, _ = chain_with_copies(tmp_path)
    # At 0.9 a~c (0.94) is a link too, but the tree joins the group without it: a~b, then b~c.
    near = library.duplicates(threshold=0.9)[0]
    assert len(near.links) == len(near.paths) - 1
    exact, cosines = near.links[:3], near.links[3:]
    assert all(link.exact and link.score == 1.0 for link in exact)
    assert {Path(p).name[0] for link in exact for p in link.paths} == {"a", "c"}
    assert not any(link.exact for link in cosines)
    assert [link.score for link in cosines] == pytest.approx([0.99, 0.98], abs=1e-5)
    assert [sorted(Path(p).name[0] for p in link.paths) for link in cosines] == [["a", "b"], ["b", "c"]]
    assert near.score == cosines[-1].score  # the weakest link
    for link in near.links:
        assert list(link.paths) == sorted(link.paths) and set(link.paths) <= set(near.paths)


def test_exact_groups_are_every_byte_identical_set_whatever_the_threshold(tmp_path):
    library, _ = chain_with_copies(tmp_path)
    found = exact_groups(library.duplicates(threshold=0.97))
    assert names(found) == [
        ("exact", ["c-copy.jpg", "c-copy2.jpg", "c.jpg"]),
        ("exact", ["a-copy.jpg", "a.jpg"]),
        ("exact", ["d.jpg", "d2.jpg"]),
    ]
    for group in found:
        assert group.score == 1.0 and group.exact == [group.paths]
        assert len(group.links) == len(group.paths) - 1 and all(link.exact for link in group.links)
        assert {p for link in group.links for p in link.paths} == set(group.paths)
    assert exact_groups(library.duplicates(threshold=1.0)) == found
    assert exact_groups(library.duplicates(threshold=0.5)) == found


def test_to_dict_adds_exact_and_with_links_the_links(tmp_path):
    library, _ = chain_with_copies(tmp_path)
    near = library.duplicates(threshold=0.97)[0]
    item = near.to_dict()
    assert list(item) == ["kind", "score", "paths", "exact"]
    assert item["paths"] == near.paths and item["exact"] == near.exact
    explained = near.to_dict(links=True, show=lambda p: Path(p).name)
    assert explained["paths"] == [Path(p).name for p in near.paths]
    assert explained["links"][0] == {"paths": ["a-copy.jpg", "a.jpg"], "score": 1.0, "exact": True}
    assert explained["links"][-1]["exact"] is False
    assert explained["links"][-1]["score"] == round(near.score, 6) == explained["score"]


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


# -- the CLI's and the server's views of a chain with copies in it (vectors chosen by the test) --------------


def blocks_of(output: str) -> list[list[str]]:
    return [block.splitlines() for block in output.rstrip("\n").split("\n\n")]


def test_cli_marks_exact_copies_inside_a_near_group(cli, tmp_path):
    _, folder = chain_with_copies(tmp_path)
    result = cli("duplicates", "--threshold", "0.97")
    assert result.exit_code == 0, result.output
    near, alone = blocks_of(result.output)
    assert near == [
        "near (>= 0.9800): 6 images",
        *(f"  {folder / n}" for n in ("a-copy.jpg", "a.jpg", "b.jpg", "c-copy.jpg", "c-copy2.jpg", "c.jpg")),
        "  exact: 3 copies",
        *(f"    {folder / n}" for n in ("c-copy.jpg", "c-copy2.jpg", "c.jpg")),
        "  exact: 2 copies",
        *(f"    {folder / n}" for n in ("a-copy.jpg", "a.jpg")),
    ]
    assert alone == ["exact: 2 copies", f"  {folder / 'd.jpg'}", f"  {folder / 'd2.jpg'}"]  # not repeated


def test_cli_explain_shows_the_links_of_each_group(cli, tmp_path):
    _, folder = chain_with_copies(tmp_path)
    result = cli("duplicates", "--explain")
    assert result.exit_code == 0, result.output
    near, alone = blocks_of(result.output)
    links = near[near.index("  links, strongest first:") + 1 :]
    assert links == [
        f"     exact  {folder / 'a-copy.jpg'} = {folder / 'a.jpg'}",
        f"     exact  {folder / 'c-copy.jpg'} = {folder / 'c.jpg'}",
        f"     exact  {folder / 'c-copy2.jpg'} = {folder / 'c.jpg'}",
        f"    0.9900  {folder / 'a.jpg'} ~ {folder / 'b.jpg'}",
        f"    0.9800  {folder / 'b.jpg'} ~ {folder / 'c.jpg'}",
    ]
    assert alone[-2:] == [
        "  links, strongest first:",
        f"     exact  {folder / 'd.jpg'} = {folder / 'd2.jpg'}",
    ]
    assert "links" not in cli("duplicates").output


def test_cli_exact_lists_only_the_byte_identical_sets(cli, tmp_path):
    _, folder = chain_with_copies(tmp_path)
    result = cli("duplicates", "--exact")
    assert result.exit_code == 0, result.output
    assert blocks_of(result.output) == [
        ["exact: 3 copies", *(f"  {folder / n}" for n in ("c-copy.jpg", "c-copy2.jpg", "c.jpg"))],
        ["exact: 2 copies", f"  {folder / 'a-copy.jpg'}", f"  {folder / 'a.jpg'}"],
        ["exact: 2 copies", f"  {folder / 'd.jpg'}", f"  {folder / 'd2.jpg'}"],
    ]
    rows = [json.loads(line) for line in cli("duplicates", "--exact", "--json").output.splitlines()]
    assert [(r["kind"], r["score"], r["exact"]) for r in rows] == [("exact", 1.0, [r["paths"]]) for r in rows]
    assert [len(r["paths"]) for r in rows] == [3, 2, 2] and all("links" not in r for r in rows)


def test_cli_exact_refuses_a_threshold(cli, tmp_path):
    chain_with_copies(tmp_path)
    result = cli("duplicates", "--exact", "--threshold", "0.9")
    assert result.exit_code == 2 and "--threshold does not apply" in result.output


def test_cli_json_adds_exact_sets_and_with_explain_links(cli, tmp_path):
    _, folder = chain_with_copies(tmp_path)
    rows = [json.loads(line) for line in cli("duplicates", "--json").output.splitlines()]
    assert [list(r) for r in rows] == [["kind", "score", "paths", "exact"]] * 2
    assert rows[0]["exact"] == [
        [str(folder / n) for n in ("c-copy.jpg", "c-copy2.jpg", "c.jpg")],
        [str(folder / n) for n in ("a-copy.jpg", "a.jpg")],
    ]
    explained = [json.loads(line) for line in cli("duplicates", "--json", "--explain").output.splitlines()]
    assert [{k: v for k, v in r.items() if k != "links"} for r in explained] == rows
    links = explained[0]["links"]
    assert [list(link) for link in links] == [["paths", "score", "exact"]] * 5
    assert links[-1] == {
        "paths": [str(folder / "b.jpg"), str(folder / "c.jpg")],
        "score": 0.98,
        "exact": False,
    }
    assert [link["exact"] for link in links] == [True, True, True, False, False]


def test_server_duplicates_has_exact_sets_links_and_exact_only(tmp_path):
    from fastapi.testclient import TestClient

    from imgsearch.serve.app import create_app

    chain_with_copies(tmp_path)
    client = TestClient(create_app(Library(tmp_path / "home")))
    library = Library(tmp_path / "home")

    def groups(**params) -> list[dict]:
        response = client.get("/api/duplicates", params=params)
        assert response.status_code == 200, response.text
        return response.json()["groups"]

    assert groups() == [g.to_dict() for g in library.duplicates()]
    assert groups(explain="true") == [g.to_dict(links=True) for g in library.duplicates()]
    exact = groups(exact="true", explain="true")
    assert exact == [g.to_dict(links=True) for g in exact_groups(library.duplicates())]
    assert [len(g["paths"]) for g in exact] == [3, 2, 2] and {g["kind"] for g in exact} == {"exact"}
    # The threshold breaks the chain (b~c is 0.98) but does not change the exact sets.
    assert len(groups(threshold=0.985)) == 3
    assert groups(exact="true", threshold=0.985) == groups(exact="true")


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


def test_cli_names_an_exact_copy_inside_a_near_group_of_real_photos(cli, copies, isolated_home, photos):
    """An exact copy of the dahlia joins its resized and recompressed copies: the group is near, and the
    byte-identical pair is named in it and by --exact, beside the rocket's copy."""
    shutil.copy(photos / "dahlia-flower.jpg", photos / "dahlia-flower copy.jpg")
    assert cli("index", photos).exit_code == 0
    threshold = separating_threshold(isolated_home, photos)
    result = cli("duplicates", photos, "--threshold", f"{threshold:.6f}", "--json", "--explain")
    assert result.exit_code == 0, result.output
    near, rocket = (json.loads(line) for line in result.output.splitlines())
    dahlias = [str(photos / "dahlia-flower copy.jpg"), str(photos / "dahlia-flower.jpg")]
    assert near["kind"] == "near" and sorted(near["paths"]) == sorted({*dahlias, *map(str, copies["near"])})
    assert near["exact"] == [dahlias]
    assert [link for link in near["links"] if link["exact"]] == [
        {"paths": dahlias, "score": 1.0, "exact": True}
    ]
    assert len(near["links"]) == 3 and min(link["score"] for link in near["links"]) == near["score"]
    assert rocket["kind"] == "exact" and rocket["exact"] == [rocket["paths"]]
    exact = cli("duplicates", photos, "--exact")
    assert exact.exit_code == 0, exact.output
    assert sorted(blocks_of(exact.output)) == sorted(
        [
            ["exact: 2 copies", *(f"  {p}" for p in dahlias)],
            ["exact: 2 copies", *(f"  {p}" for p in copies["exact"])],
        ]
    )
