"""The approximate (IVF-Flat) index for large libraries: chosen by size, trained by the writer only, used
only when current, updated without training again, exact wherever exactness is promised."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from imgsearch import Library
from imgsearch.store import ann
from imgsearch.store.catalog import Content
from imgsearch.store.vectors import VectorIndex, describe_file, vectors_file
from tests import index_db

DIM = 32  # the tiny test model's vector size


def clustered(count: int, rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    """Unit vectors in clusters around a shared direction, like image embeddings (not uniform noise)."""
    mean = rng.normal(size=dim)
    centres = mean / np.linalg.norm(mean) + rng.normal(size=(max(4, count // 200), dim)) / np.sqrt(dim)
    vectors = centres[rng.integers(0, len(centres), count)] + 0.35 * rng.normal(size=(count, dim)) / np.sqrt(
        dim
    )
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return len(set(found.tolist()) & set(truth.tolist())) / len(truth)


@pytest.fixture
def pair():
    """The same 20,000 vectors as an exact index and as an IVF index trained by `fit`."""
    rng = np.random.default_rng(1)
    vectors = clustered(20_200, rng)
    ids = np.arange(20_000, dtype=np.int64) * 3 + 5
    exact = VectorIndex.build(DIM, ids, vectors[:20_000], 1)
    approximate = VectorIndex.build(DIM, ids, vectors[:20_000], 1)
    assert approximate.fit(threshold=10_000) == "ivf"
    assert approximate.approximate and not exact.approximate
    return exact, approximate, vectors[20_000:], ids


def test_ivf_finds_what_exact_search_finds_on_clustered_vectors(pair):
    exact, approximate, queries, _ = pair
    assert approximate.index.nlist == ann.nlist_for(20_000) > ann.NPROBE  # it really skips lists
    rng = np.random.default_rng(2)
    offset = rng.normal(size=DIM).astype(np.float32)
    text_like = queries + 0.7 * offset / np.linalg.norm(offset)  # off the clusters, like a text query
    for batch in (queries, text_like):
        recalls = [recall(approximate.search(q, 10)[1], exact.search(q, 10)[1]) for q in batch]
        assert np.mean(recalls) >= 0.98


def test_filters_stay_exact_when_narrow_and_inside_the_filter_when_broad(pair):
    exact, approximate, queries, ids = pair
    rng = np.random.default_rng(3)
    narrow = np.sort(rng.choice(ids, 200, replace=False))  # 1%: every list is scanned, exactly
    broad = np.sort(rng.choice(ids, 12_000, replace=False))  # 60%: more lists than unfiltered
    recalls = []
    for q in queries[:50]:
        scores, got = approximate.search(q, 10, narrow)
        want_scores, want = exact.search(q, 10, narrow)
        assert list(got) == list(want)
        assert np.allclose(scores, want_scores, atol=1e-5)
        got = approximate.search(q, 10, broad)[1]
        assert np.isin(got, broad).all()
        recalls.append(recall(got, exact.search(q, 10, broad)[1]))
    assert np.mean(recalls) >= 0.98


@pytest.mark.parametrize("kind", ["exact", "approximate"])
def test_a_filter_of_low_ids_never_returns_higher_ones(pair, kind):
    exact, approximate, queries, ids = pair
    index = exact if kind == "exact" else approximate
    allowed = ids[:30]  # the id range beyond them is where a badly sized bitmap would read
    for q in queries[:20]:
        got = index.search(q, 10, allowed)[1]
        assert np.isin(got, allowed).all() and len(got) == 10


def test_exact_search_uses_one_thread_and_gives_the_others_back(pair):
    exact, approximate, queries, _ = pair
    before = faiss.omp_get_max_threads()
    exact.search(queries[0], 10)
    approximate.search(queries[0], 10)
    assert faiss.omp_get_max_threads() == before


def test_the_kind_follows_the_size_and_training_waits_for_4x_growth(pair):
    _, approximate, _, _ = pair
    index = approximate.index
    assert ann.plan(index, 20_000, 10_000) is None
    assert ann.plan(index, 60_000, 10_000) is None  # 3x: the lists are longer, no training yet
    assert ann.plan(index, 80_000, 10_000) == "ivf"  # 4x
    assert ann.plan(index, 4_999, 10_000) == "exact"  # well below the threshold
    flat = VectorIndex.build(DIM, np.arange(3), np.eye(3, DIM, dtype=np.float32), 1).index
    assert ann.plan(flat, 9_999, 10_000) is None
    assert ann.plan(flat, 10_000, 10_000) == "ivf"


def test_a_shrunk_library_goes_back_to_exact(pair):
    exact, approximate, queries, ids = pair
    approximate.index.remove_ids(faiss.IDSelectorRange(int(ids[5_000]), int(ids[-1]) + 1))
    exact.index.remove_ids(faiss.IDSelectorRange(int(ids[5_000]), int(ids[-1]) + 1))
    assert approximate.fit(threshold=20_000) == "exact"
    assert not approximate.approximate and len(approximate) == 5_000
    for q in queries[:10]:
        assert list(approximate.search(q, 10)[1]) == list(exact.search(q, 10)[1])


# -- through the library: the writer trains, readers only load -----------------------------------------------


def _add_rows(w, vectors: np.ndarray, folder: str, first: int = 0) -> list[int]:
    """Rows for `vectors` through the catalog writer `w`, as /FOLDER/N.jpg (N from `first` on); their ids."""
    return [
        w.add_image(
            f"/{folder}/{first + i:06d}.jpg".encode(),
            1,
            1,
            (first + i).to_bytes(16, "big"),
            Content(8, 8, "JPEG", None, v.tobytes()),
        )
        for i, v in enumerate(vectors)
    ]


def _add_synthetic(home, vectors: np.ndarray, first: int = 0) -> list[int]:
    with index_db.catalog(home) as catalog, catalog.write() as w:
        return _add_rows(w, vectors, "synthetic", first)


@pytest.fixture
def trainings(monkeypatch):
    """Count IVF trainings; make a library of 1,000 images large."""
    monkeypatch.setattr(ann, "THRESHOLD", 1_000)
    calls = []
    real = ann.train_ivf

    def counted(source, seed=0):
        calls.append(int(source.ntotal))
        return real(source, seed)

    monkeypatch.setattr(ann, "train_ivf", counted)
    return calls


@pytest.fixture
def large(cli, photos, isolated_home, trainings):
    """The sample photos plus 1,500 clustered synthetic vectors, indexed: an IVF index is saved."""
    assert cli("index", photos).exit_code == 0
    assert trainings == []  # a dozen photos: exact
    _add_synthetic(isolated_home, clustered(1_500, np.random.default_rng(4)))
    lib = Library(isolated_home, device="cpu")
    lib.index()  # nothing new on disk: the writer only brings the FAISS file up to date and trains
    assert len(trainings) == 1
    return lib


def _current(home) -> VectorIndex:
    with index_db.catalog(home) as catalog:
        return VectorIndex.load_or_rebuild(catalog, home, DIM, save=False)


def test_the_writer_trains_readers_use_it_and_status_says_so(large, isolated_home, cli, photos):
    saved = sorted(isolated_home.glob("vectors-*.faiss"))
    assert len(saved) == 1 and saved[0].read_bytes()[:4] == b"IwFl"  # one file: IVF-Flat
    written = saved[0].stat().st_mtime_ns
    assert large.status().search_index.startswith("approximate (IVF-Flat")
    assert "search    approximate (IVF-Flat" in cli("status").output

    with index_db.catalog(isolated_home) as catalog:
        _, ids, vectors = catalog.all_vectors(DIM)
        rows = [catalog.row_by_path(bytes(p)) for p in sorted(photos.glob("*.jpg"))]
    exact = VectorIndex.build(DIM, ids, vectors, 0)
    assert large.search("a boat", top=5)
    with large.reader.reading() as (_, reader, _):
        assert reader.approximate
        found = [recall(reader.search(q, 10)[1], exact.search(q, 10)[1]) for q in vectors[::20]]
        assert np.mean(found) >= 0.98

    # a folder filter (a dozen photos among 1,500 images) is exact: the true top 5 of the folder
    query = np.frombuffer(rows[0][1], dtype=np.float32)
    brute = sorted(rows[1:], key=lambda r: -float(np.frombuffer(r[1], dtype=np.float32) @ query))
    matches = large.similar(str(sorted(photos.glob("*.jpg"))[0]), top=5, under=photos)
    assert [m.path for m in matches] == [r[0].path.decode() for r in brute[:5]]
    assert saved[0].stat().st_mtime_ns == written  # queries never rewrite it


def test_a_stale_ivf_file_is_never_used(large, isolated_home):
    new_vector = clustered(1, np.random.default_rng(6))
    (new_id,) = _add_synthetic(isolated_home, new_vector, first=10_000)  # committed, file not updated
    with large.reader.reading() as (_, reader, _):
        assert not reader.approximate  # rebuilt exact from SQLite, never trained in a query
        assert reader.search(new_vector[0], 1)[1][0] == new_id


def test_new_images_are_added_without_training_again(large, isolated_home, trainings):
    before = _current(isolated_home).index
    centroids = faiss.vector_to_array(faiss.downcast_index(before.quantizer).codes).copy()
    # new images arrive through the writer (its index follows each commit): simulate one run's worth
    lib = Library(isolated_home, device="cpu")
    new = clustered(300, np.random.default_rng(7))
    with index_db.catalog(isolated_home) as catalog:
        writer = VectorIndex.load_or_rebuild(catalog, isolated_home, DIM, save=False)
        with catalog.write() as w:
            new_ids = _add_rows(w, new, "new")
        writer.apply(w.changes, w.version)
        assert writer.fit() is None
        writer.save(isolated_home)
    after = _current(isolated_home).index
    assert isinstance(after, faiss.IndexIVFFlat) and after.nlist == before.nlist
    assert np.array_equal(faiss.vector_to_array(faiss.downcast_index(after.quantizer).codes), centroids)
    assert after.ntotal == before.ntotal + 300
    assert len(trainings) == 1  # only the first, in the fixture
    with lib.reader.reading() as (_, reader, _):
        assert reader.approximate
        hits = sum(reader.search(v, 1)[1][0] == i for v, i in zip(new, new_ids, strict=True))
        assert hits >= 295  # each new image is its own nearest neighbour, found in its list


def test_deleted_photos_leave_the_ivf_index_without_training(large, isolated_home, photos, trainings):
    with index_db.catalog(isolated_home) as catalog:
        gone = []
        for photo in sorted(photos.glob("*.jpg"))[:3]:
            row, vector = catalog.row_by_path(bytes(photo))
            gone.append((row.id, np.frombuffer(vector, dtype=np.float32)))
            photo.unlink()
    large.index()  # the indexer removes them; the IVF index follows
    assert len(trainings) == 1
    assert next(isolated_home.glob("vectors-*.faiss")).read_bytes()[:4] == b"IwFl"
    gone_ids = {i for i, _ in gone}
    with large.reader.reading() as (_, reader, _):
        assert reader.approximate
        for _, vector in gone:
            assert not gone_ids & set(reader.search(vector, 50)[1].tolist())
            everything = np.arange(0, 100_000, dtype=np.int64)
            assert not gone_ids & set(reader.search(vector, 50, everything)[1].tolist())


def test_a_damaged_ivf_file_is_ignored_then_trained_again_by_the_writer(large, isolated_home, trainings):
    saved = next(isolated_home.glob("vectors-*.faiss"))
    expected = [m.path for m in large.search("a boat", top=3)]
    saved.write_bytes(saved.read_bytes()[:5000])
    assert describe_file(saved).startswith("unreadable")
    fresh = Library(isolated_home, device="cpu")
    assert [m.path for m in fresh.search("a boat", top=3)] == expected  # exact, rebuilt from SQLite
    assert fresh.reader._vectors is not None and not fresh.reader._vectors.approximate
    fresh.index()
    assert len(trainings) == 2
    with index_db.catalog(isolated_home) as catalog:
        assert describe_file(vectors_file(isolated_home, catalog.vectors_version())).startswith("approx")
