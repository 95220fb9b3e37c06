"""Combined queries and filters, with vectors the test controls so the right answer is known exactly."""

from __future__ import annotations

import fnmatch

import numpy as np
import pytest

from imgsearch.errors import UsageError
from imgsearch.formats import RAW_FORMATS
from imgsearch.search.query import Filters, Term, split_weight
from tests.controlled import ControlledEncoder, Item, controlled_library, unit

pytestmark = pytest.mark.backends

DIM = 8
BEACH, PEOPLE, DOG, SNOW = (np.eye(DIM, dtype=np.float32)[i] for i in range(4))


def test_weights_parse_from_a_leading_number():
    assert split_weight("2:mountain lake") == (2.0, "mountain lake")
    assert split_weight("-0.5:people") == (-0.5, "people")
    assert split_weight("1:10:30 train") == (1.0, "10:30 train")
    assert split_weight("beach at 5:30") == (1.0, "beach at 5:30")


@pytest.fixture
def beach_library(tmp_path):
    encoder = ControlledEncoder(DIM, {"beach": BEACH, "people": PEOPLE, "dog": DOG, "snow": SNOW})
    items = [
        Item("empty-beach.jpg", BEACH + 0.1 * SNOW),
        Item("crowded-beach.jpg", BEACH + 0.6 * PEOPLE),
        Item("beach-dog.jpg", 0.8 * BEACH + 0.5 * DOG),
        Item("party.jpg", PEOPLE),
        Item("snow-dog.jpg", DOG + SNOW),
    ]
    return controlled_library(tmp_path / "home", tmp_path / "photos", items, encoder)


def names(matches):
    return [m.path.rsplit("/", 1)[1] for m in matches]


def test_a_negative_term_demotes_the_images_it_describes(beach_library):
    plain = names(beach_library.query([Term.text("beach")], top=5))
    assert plain.index("crowded-beach.jpg") < plain.index("beach-dog.jpg")
    pushed = names(beach_library.query([Term.text("beach"), Term.text("people", -1)], top=5))
    assert pushed.index("crowded-beach.jpg") > pushed.index("beach-dog.jpg")  # people pushed it down
    assert pushed[0] == "empty-beach.jpg" and pushed[-1] == "party.jpg"


def test_a_weighted_image_term_pulls_its_look_alikes_up(beach_library, tmp_path):
    dog_photo = str(tmp_path / "photos" / "snow-dog.jpg")
    text_only = names(beach_library.query([Term.text("beach")], top=4))
    with_dog = names(beach_library.query([Term.text("beach"), Term.image(dog_photo, 2.0)], top=4))
    assert with_dog.index("beach-dog.jpg") < text_only.index("beach-dog.jpg")
    assert with_dog[0] == "beach-dog.jpg"
    assert "snow-dog.jpg" not in with_dog  # the query image is never its own result


def test_the_query_vector_is_the_normalised_weighted_sum(beach_library):
    matches = beach_library.query([Term.text("beach", 2), Term.text("snow", 1)], top=5)
    expected = unit(2 * BEACH + SNOW)
    for m in matches:
        stored = {"empty-beach.jpg": BEACH + 0.1 * SNOW}.get(m.path.rsplit("/", 1)[1])
        if stored is not None:
            assert m.score == pytest.approx(float(unit(stored) @ expected), abs=1e-6)


def test_terms_that_cancel_out_are_a_usage_error(beach_library):
    with pytest.raises(UsageError, match="cancel"):
        beach_library.query([Term.text("beach"), Term.text("beach", -1)])


def test_min_score_and_sort_by_date(tmp_path):
    encoder = ControlledEncoder(DIM, {"beach": BEACH})
    items = [
        Item(f"b{i}.jpg", BEACH + (0.3 * i) * PEOPLE, taken_at=1_600_000_000 + 86400 * (i * 7 % 5))
        for i in range(5)
    ]
    library = controlled_library(tmp_path / "home", tmp_path / "photos", items, encoder)
    cut = library.query([Term.text("beach")], top=5, min_score=0.9)
    assert cut and all(m.score >= 0.9 for m in cut) and len(cut) < 5
    by_date = library.query([Term.text("beach")], top=5, sort="date")
    assert [m.date for m in by_date] == sorted((m.date for m in by_date), reverse=True)
    assert {m.path for m in by_date} == {m.path for m in library.query([Term.text("beach")], top=5)}


# -- filters: always the exact top-k of the files that pass --------------------------------------------
N = 2000
FORMATS = ["JPEG", "PNG", "WEBP", "HEIF"]


@pytest.fixture(scope="module")
def big_library(tmp_path_factory, backend):  # one per backend
    rng = np.random.default_rng(7)
    tmp = tmp_path_factory.mktemp("big")
    query = rng.normal(size=DIM).astype(np.float32)
    encoder = ControlledEncoder(DIM, {"q": query})
    items = []
    for i in range(N):
        items.append(
            Item(
                f"{'y2023' if i % 3 == 0 else 'y2024'}/{'sub/' if i % 7 == 0 else ''}img{i:05d}"
                f"{'.png' if i % 4 == 1 else '.jpg'}",
                rng.normal(size=DIM),
                width=int(rng.integers(100, 5000)),
                height=int(rng.integers(100, 5000)),
                format=FORMATS[i % 4],
                taken_at=None if i % 5 == 0 else 1_650_000_000 + int(rng.integers(0, 60_000_000)),
                mtime=1_600_000_000 + i,
            )
        )
    library = controlled_library(tmp / "home", tmp / "photos", items, encoder)
    vectors = {str(tmp / "photos" / it.name): unit(it.vector) for it in items}
    return library, items, vectors, unit(query), tmp / "photos"


def brute_force(items, vectors, query, folder, keep, top):
    scored = []
    for it in items:
        path = str(folder / it.name)
        if keep(it, path):
            scored.append((float(vectors[path] @ query), path))
    return [p for _, p in sorted(scored, reverse=True)[:top]]


def date_of(it):
    return it.taken_at if it.taken_at is not None else it.mtime


CASES = {
    "folder": (lambda f: Filters(under=str(f / "y2023")), lambda it, p: it.name.startswith("y2023/")),
    "glob": (lambda f: Filters(glob="*/sub/*.png"), lambda it, p: fnmatch.fnmatchcase(p, "*/sub/*.png")),
    "dates": (
        lambda f: Filters(after=1_660_000_000, before=1_670_000_000),
        lambda it, p: 1_660_000_000 <= date_of(it) < 1_670_000_000,
    ),
    "size": (
        lambda f: Filters(min_width=4000, min_height=4500),
        lambda it, p: it.width >= 4000 and it.height >= 4500,
    ),
    "type": (lambda f: Filters(formats=("PNG", "HEIF")), lambda it, p: it.format in ("PNG", "HEIF")),
    "all together, under 1% of rows": (
        lambda f: Filters(under=str(f / "y2024"), formats=("WEBP",), min_width=3000, glob="*/sub/*"),
        lambda it, p: it.name.startswith("y2024/sub/") and it.format == "WEBP" and it.width >= 3000,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_every_filter_returns_the_exact_top_k_of_the_filtered_set(big_library, case):
    library, items, vectors, query, folder = big_library
    make_filters, keep = CASES[case]
    kept = sum(keep(it, str(folder / it.name)) for it in items)
    assert kept > 0
    if case.startswith("all"):
        assert kept < N / 100
    expected = brute_force(items, vectors, query, folder, keep, 10)
    got = library.query([Term.text("q")], top=10, filters=make_filters(folder))
    assert [m.path for m in got] == expected
    assert len(got) == min(10, kept)


def test_unknown_file_types_are_a_usage_error():
    assert Filters.formats_for(["jpg,png"]) == ("JPEG", "MPO", "PNG")
    assert Filters.formats_for(["raw"]) == tuple(sorted(set(RAW_FORMATS.values())))
    assert Filters.formats_for(["CR2", "psd", "tif"]) == ("CR2", "PSD", "TIFF")
    with pytest.raises(UsageError, match="unknown file type"):
        Filters.formats_for(["docx"])


def test_a_label_filter_returns_the_exact_top_k_among_images_labelled_so(tmp_path):
    from imgsearch.search.classify import TEMPLATES

    cat, dog = np.eye(DIM, dtype=np.float32)[4], np.eye(DIM, dtype=np.float32)[5]
    texts = {"beach": BEACH}
    for label, vector in (("cat", cat), ("dog", dog)):
        texts.update({template.format(label): vector for template in TEMPLATES})
    encoder = ControlledEncoder(DIM, texts)
    items = [Item(f"cat{i}.jpg", cat + 0.2 * i * BEACH) for i in range(4)]
    items += [Item(f"dog{i}.jpg", dog + 0.3 * i * BEACH) for i in range(4)]
    library = controlled_library(tmp_path / "home", tmp_path / "photos", items, encoder)
    only_cats = Filters(labels=("cat",), label_set=("dog",))
    got = names(library.query([Term.text("beach")], top=3, filters=only_cats))
    assert got == ["cat3.jpg", "cat2.jpg", "cat1.jpg"]  # dogs score higher on "beach" but are not cats
    with pytest.raises(UsageError, match="other labels"):
        library.query([Term.text("beach")], filters=Filters(labels=("cat",)))


def test_a_library_encodes_a_text_once_while_it_remembers_it(beach_library, monkeypatch):
    """The server's Library pages through results and sees the same queries again: those texts are not
    encoded again, the answers do not change, and the memory is bounded (oldest text forgotten first)."""
    import imgsearch.model.runtime

    encoder = beach_library.encoder()
    encoded: list[list[str]] = []
    embed = encoder.embed_texts
    monkeypatch.setattr(
        encoder, "embed_texts", lambda texts, lang=None: encoded.append(list(texts)) or embed(texts, lang)
    )
    query = [Term.text("beach"), Term.text("people", -1)]
    first = names(beach_library.query(query, top=5))
    assert names(beach_library.query(query, top=5)) == first
    assert names(beach_library.query([Term.text("people"), Term.text("dog")], top=5))[0] == "party.jpg"
    assert encoded == [["beach", "people"], ["dog"]]  # "people" came from memory the second time

    monkeypatch.setattr(imgsearch.model.runtime, "TEXT_CACHE", 2)
    beach_library.query([Term.text("snow")], top=1)  # only the last two are kept now: "dog" and "snow"
    assert names(beach_library.query([*query, Term.text("dog", 0.01)], top=5)) == first
    assert encoded[2:] == [["snow"], ["beach", "people"]]


def test_a_query_image_that_is_not_indexed_is_encoded_once_while_remembered(
    beach_library, tmp_path, monkeypatch
):
    """The server's next page of an uploaded example asks again with the same picture: not encoded again."""
    from PIL import Image

    encoder = beach_library.encoder()
    encoded: list[int] = []
    embed = encoder.embed_pixels
    monkeypatch.setattr(encoder, "embed_pixels", lambda pixels: encoded.append(len(pixels)) or embed(pixels))
    example = tmp_path / "example.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(example)
    first = names(beach_library.query([Term.image(str(example))], top=5))
    assert names(beach_library.query([Term.image(str(example))], top=5)) == first
    assert encoded == [1]
    Image.new("RGB", (16, 16), (30, 30, 200)).save(example)  # other bytes: another picture
    beach_library.query([Term.image(str(example))], top=5)
    assert encoded == [1, 1]
