"""`imgsearch reindex --model NEW`: an index moves to another model, re-encoding every image, while queries go
on answering with the old model until one transaction switches to the new one.

Model A is the tiny test model, model B the same architecture with other random weights (seed 1): both make
32-d vectors, so only the vectors themselves tell which model made them. Every test runs on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.index.decode import decode_file
from imgsearch.model.encoder import Encoder
from imgsearch.model.specs import parse_model_spec
from imgsearch.search.reader import Reader
from tests import cli_process, index_db
from tests.images import noise_jpeg
from tests.tiny_model import save_tiny_model

pytestmark = pytest.mark.backends

#: The CPU encoder's batch: a reindex stages (commits) this many vectors at a time.
BATCH = 16
NUMERICS = ("--device", "cpu", "--precision", "fp32")  # the vectors compared below are fp32 encodings


@pytest.fixture(scope="session")
def model_b(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"local-dir:{save_tiny_model(tmp_path_factory.mktemp('models') / 'tiny-clip-b', seed=1)}"


@pytest.fixture(scope="session")
def encoders(tiny_model: str, model_b: str) -> dict[str, Encoder]:
    """model spec -> its encoder in fp32 on the CPU: what the stored vectors are checked against."""
    return {
        m: Encoder.load(parse_model_spec(m), device="cpu", precision="fp32") for m in (tiny_model, model_b)
    }


def embeddings(encoder: Encoder, files: list[Path]) -> dict[bytes, np.ndarray]:
    """path -> the model's own vector of each file, made here."""
    pixels = np.stack([decode_file(os.fsencode(f), encoder.preprocess).pixels for f in files])
    return dict(zip((os.fsencode(f) for f in files), encoder.embed_pixels(pixels), strict=True))


def stored(home: Path) -> dict[bytes, np.ndarray]:
    return {path: vector for path, (vector,) in index_db.images(home, "vector").items()}


def assert_vectors_of(home: Path, encoder: Encoder, folder: Path) -> None:
    """Every stored vector is `encoder`'s own vector of its file, and every file of `folder` has one."""
    expected = embeddings(encoder, sorted(folder.glob("*.jpg")))
    got = stored(home)
    assert got.keys() == expected.keys()
    for path, vector in got.items():
        np.testing.assert_allclose(vector, expected[path], atol=1e-5, err_msg=os.fsdecode(path))


def answers(library: Library, text: str = "a photo of a cat") -> list[tuple[str, float]]:
    return [(m.path, round(m.score, 5)) for m in library.search(text, top=10)]


def brute_force(home: Path, encoder: Encoder, text: str = "a photo of a cat") -> list[tuple[str, float]]:
    """The top 10 by the stored vectors and `encoder`'s text vector, computed without FAISS."""
    query = encoder.embed_texts([text])[0]
    scored = sorted(((float(v @ query), os.fsdecode(p)) for p, v in stored(home).items()), reverse=True)
    return [(path, round(score, 5)) for score, path in scored[:10]]


def saved_faiss_files(home: Path) -> list[Path]:
    return sorted(index_db.local_folder(home).glob("vectors-*.faiss"))


@pytest.fixture
def indexed_a(cli, photos, isolated_home) -> Path:
    """The test's photos indexed with model A (the tiny model), in fp32."""
    result = cli("index", *NUMERICS, photos)
    assert result.exit_code == 0, result.output
    return photos


def reindex(cli, model: str, *more: str):
    return cli("reindex", "--model", model, *NUMERICS, *more, model=False)


def test_reindex_moves_the_index_to_the_new_model(
    cli, indexed_a, isolated_home, tiny_model, model_b, encoders
):
    library = Library(isolated_home)
    assert answers(library) == brute_force(isolated_home, encoders[tiny_model])
    count = len(list(indexed_a.glob("*.jpg")))
    before = library.status()

    result = reindex(cli, model_b)
    assert result.exit_code == 0, result.output
    assert f"re-encoded {count} images with {model_b} (32-d), was {tiny_model}" in result.output

    after = Library(isolated_home).status()
    assert (after.model, after.dim, after.images, after.numerics) == (model_b, 32, count, "fp32")
    assert after.reindex_model is None and after.vectors_version > before.vectors_version
    assert_vectors_of(isolated_home, encoders[model_b], indexed_a)
    # the old model's FAISS file is gone: the one there is the new vectors', built by the reindex
    assert [f.name for f in saved_faiss_files(isolated_home)] == [f"vectors-{after.vectors_version}.faiss"]
    # a fresh process, and the long-lived Library that answered before, both answer with model B
    assert answers(Library(isolated_home)) == brute_force(isolated_home, encoders[model_b])
    assert answers(library) == brute_force(isolated_home, encoders[model_b])
    query = cli("query", "a photo of a cat", "--top", "3", model=False)  # no --model: the index's own
    assert query.exit_code == 0, query.output
    # model A is refused now, and the refusal names the way back
    refused = cli("query", "a cat")  # the cli fixture asks for model A
    assert refused.exit_code == 1 and f"imgsearch reindex --model {tiny_model}" in refused.output


def test_a_library_reindexed_in_process_goes_on_with_the_new_model(
    indexed_a, isolated_home, tiny_model, model_b, encoders
):
    library = Library(isolated_home, model=tiny_model, device="cpu", precision="fp32")
    assert answers(library) == brute_force(isolated_home, encoders[tiny_model])
    report = library.reindex(model_b)
    assert report.switched and report.model == model_b and report.previous == tiny_model
    assert answers(library) == brute_force(isolated_home, encoders[model_b])  # it asked for A: now for B


def test_every_writer_refuses_another_model_and_names_reindex(
    cli, indexed_a, isolated_home, tmp_path, tiny_model, model_b
):
    fix = f"imgsearch reindex --model {model_b}"
    before = stored(isolated_home)
    other = ("--model", model_b)
    for command in (
        ["index", *other, indexed_a],
        ["index", *other, "--ray", "local", indexed_a],  # refused before any cluster starts
        ["watch", *other, indexed_a],
        ["query", *other, "a cat"],
        ["db", "copy", *other, "--to", tmp_path / "copy"],
    ):
        result = cli(*command, model=False)
        assert result.exit_code == 1, (command, result.output)
        assert "was built with model" in result.output and fix in result.output, (command, result.output)
    # vectors of model B made elsewhere (an export of another index, in a SQLite file of its own) too
    few = tmp_path / "few"
    few.mkdir()
    (few / "cat.jpg").write_bytes((indexed_a / "cat-chelsea.jpg").read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGSEARCH_HOME", str(tmp_path / "b-home"))
        patch.delenv("IMGSEARCH_DB", raising=False)
        assert cli("index", *other, few, model=False).exit_code == 0
        assert cli("export", tmp_path / "exported").exit_code == 0
    refused = cli("import", tmp_path / "exported", indexed_a)
    assert refused.exit_code == 1 and "one model per index" in refused.output and fix in refused.output
    assert stored(isolated_home).keys() == before.keys()
    assert all(np.array_equal(v, before[p]) for p, v in stored(isolated_home).items())


def test_reindex_to_the_index_own_model_re_encodes_nothing(cli, indexed_a, isolated_home, tiny_model):
    version = Library(isolated_home).status().vectors_version
    result = reindex(cli, tiny_model)
    assert result.exit_code == 0, result.output
    assert f"the index already uses model {tiny_model}: nothing to re-encode" in result.output
    assert Library(isolated_home).status().vectors_version == version


def test_reindex_needs_a_model_and_an_index(cli, isolated_home, model_b):
    result = cli("reindex", model=False)
    assert result.exit_code == 2 and "--model" in result.output
    result = reindex(cli, model_b)
    assert result.exit_code == 1 and "no index" in result.output


def test_a_query_during_the_reindex_answers_with_the_old_model(
    indexed_a, isolated_home, tmp_path, tiny_model, model_b, encoders
):
    expected = brute_force(isolated_home, encoders[tiny_model])
    go_on = tmp_path / "go-on"
    argv = ["reindex", "--home", str(isolated_home), "--model", model_b, "-j", "1", *NUMERICS]
    # held at its second batch, after the first one is committed to the staging table
    run = cli_process.start(argv, tmp_path / "reindex.log", hold=("embedding a batch", 2, go_on))
    library = Library(isolated_home)
    deadline = time.monotonic() + 120
    while library.status().reindex_staged < BATCH:
        assert run.is_alive(), (tmp_path / "reindex.log").read_text()
        assert time.monotonic() < deadline, "timed out waiting for the first staged batch"
        time.sleep(0.05)
    status = library.status()
    assert (status.model, status.reindex_model, status.reindex_staged) == (tiny_model, model_b, BATCH)
    assert answers(library) == expected  # the old model, with the old vectors
    assert answers(Library(isolated_home)) == expected
    assert_vectors_of(isolated_home, encoders[tiny_model], indexed_a)
    go_on.touch()
    run.join(120)
    assert run.exitcode == 0, (tmp_path / "reindex.log").read_text()
    assert answers(library) == brute_force(isolated_home, encoders[model_b])
    assert library.status().reindex_model is None


def test_an_interrupted_reindex_leaves_the_old_model_answering_and_a_rerun_finishes(
    cli, indexed_a, isolated_home, tmp_path, tiny_model, model_b, encoders
):
    expected = brute_force(isolated_home, encoders[tiny_model])
    argv = ["reindex", "--home", str(isolated_home), "--model", model_b, "-j", "1", *NUMERICS]
    killed = cli_process.start(argv, tmp_path / "reindex.log", kill_point=("embedding a batch", 2))
    killed.join(120)
    assert killed.exitcode == -9, (tmp_path / "reindex.log").read_text()

    library = Library(isolated_home)
    status = library.status()
    assert (status.model, status.reindex_model, status.reindex_staged) == (tiny_model, model_b, BATCH)
    assert answers(library) == expected
    assert_vectors_of(isolated_home, encoders[tiny_model], indexed_a)
    shown = cli("status", model=False).output
    assert f"reindex   to {model_b}: {BATCH} of {status.images} images re-encoded" in shown
    # a copy to another database takes the library as queries see it, and says what it left behind
    copied = cli("db", "copy", "--to", tmp_path / "copy", model=False)
    assert copied.exit_code == 0, copied.output
    assert f"The unfinished reindex to {model_b} ({BATCH} vectors staged) was not copied" in copied.output
    copy = Library(isolated_home, db=str(tmp_path / "copy")).status()
    assert (copy.model, copy.reindex_model, copy.images) == (tiny_model, None, status.images)

    # an index run meanwhile changes a file whose new vector was staged: that one is encoded again
    first = sorted(indexed_a.glob("*.jpg"))[0]
    first.write_bytes(noise_jpeg(7))
    assert cli("index", *NUMERICS, indexed_a).exit_code == 0

    result = reindex(cli, model_b)
    assert result.exit_code == 0, result.output
    assert f"{BATCH - 1} kept from the interrupted run" in result.output
    assert f"{status.images - BATCH + 1} encoded" in result.output
    assert library.status().model == model_b
    assert_vectors_of(isolated_home, encoders[model_b], indexed_a)
    assert answers(library) == brute_force(isolated_home, encoders[model_b])


def test_an_interrupted_reindex_is_dropped_by_a_reindex_to_another_model(
    cli, indexed_a, isolated_home, tmp_path, tiny_model, model_b
):
    argv = ["reindex", "--home", str(isolated_home), "--model", model_b, "-j", "1", *NUMERICS]
    killed = cli_process.start(argv, tmp_path / "reindex.log", kill_point=("embedding a batch", 2))
    killed.join(120)
    assert killed.exitcode == -9
    # back to the index's own model: nothing to re-encode, and the staged vectors go
    result = reindex(cli, tiny_model)
    assert result.exit_code == 0, result.output
    assert f"dropped the unfinished reindex to {model_b} ({BATCH} staged vectors)" in result.output
    assert Library(isolated_home).status().reindex_model is None
    with index_db.connect(isolated_home) as db:
        assert db.execute("SELECT COUNT(*) FROM pending_vectors").fetchone()[0] == 0


def test_files_that_cannot_be_re_encoded_leave_the_index_and_never_keep_an_old_vector(
    cli, indexed_a, isolated_home, model_b, encoders
):
    files = sorted(indexed_a.glob("*.jpg"))
    broken, changed, deleted = files[3], files[5], files[7]
    broken.write_bytes(b"not an image any more")
    changed.write_bytes(noise_jpeg(11))
    deleted.unlink()

    result = reindex(cli, model_b)
    assert result.exit_code == 0, result.output
    assert "1 failed, 2 deleted or changed since indexed" in result.output
    assert f"left the index: {changed}: changed since it was indexed" in result.output
    assert f"left the index: {deleted}: no longer there" in result.output
    assert os.fsencode(broken) in index_db.failures(isolated_home)  # recorded as a bad file, as `index` does
    kept = stored(isolated_home)
    assert {os.fsencode(f) for f in (broken, changed, deleted)}.isdisjoint(kept)
    expected = embeddings(encoders[model_b], [f for f in files if f not in (broken, changed, deleted)])
    assert kept.keys() == expected.keys()
    for path, vector in kept.items():
        np.testing.assert_allclose(vector, expected[path], atol=1e-5)

    # the next index run adds the changed file back with the new model, and skips the bad one
    again = cli("index", *NUMERICS, indexed_a, model=False)
    assert again.exit_code == 0, again.output
    assert "1 new" in again.output and "1 known bad files skipped" in again.output
    now = stored(isolated_home)
    assert now.keys() == {os.fsencode(f) for f in indexed_a.glob("*.jpg")} - {os.fsencode(broken)}
    np.testing.assert_allclose(
        now[os.fsencode(changed)], embeddings(encoders[model_b], [changed])[os.fsencode(changed)], atol=1e-5
    )


def test_a_missing_folder_refuses_the_reindex_before_any_work(cli, indexed_a, isolated_home, model_b):
    indexed_a.rename(indexed_a.with_name("unplugged"))
    result = reindex(cli, model_b)
    assert result.exit_code == 1
    assert f"{indexed_a} is not there now (unplugged?)" in result.output
    assert Library(isolated_home).status().reindex_model is None


def test_a_query_that_meets_the_switch_is_made_again_with_the_new_model(
    indexed_a, isolated_home, model_b, encoders, monkeypatch
):
    """The switch lands between a query's reading the model (A) and its reading the vectors (B's by then):
    the answer is not A's text vector against B's image vectors, but the query made again, with B."""
    library = Library(isolated_home)
    real = Reader.current_vectors
    switched: list[bool] = []

    def switch_first(self, catalog, dim):
        if not switched:
            switched.append(True)
            Library(isolated_home, device="cpu", precision="fp32").reindex(model_b)
        return real(self, catalog, dim)

    monkeypatch.setattr(Reader, "current_vectors", switch_first)
    assert answers(library) == brute_force(isolated_home, encoders[model_b])
    assert switched


def test_a_reindex_to_a_third_model_starts_over(cli, indexed_a, isolated_home, tmp_path, model_b, encoders):
    argv = ["reindex", "--home", str(isolated_home), "--model", model_b, "-j", "1", *NUMERICS]
    killed = cli_process.start(argv, tmp_path / "reindex.log", kill_point=("embedding a batch", 2))
    killed.join(120)
    assert killed.exitcode == -9
    model_c = f"local-dir:{save_tiny_model(tmp_path / 'tiny-clip-c', seed=2)}"
    result = reindex(cli, model_c)
    assert result.exit_code == 0, result.output
    count = len(list(indexed_a.glob("*.jpg")))
    assert f"({count} encoded in" in result.output  # none of B's staged vectors kept
    assert f"dropped the unfinished reindex to {model_b} ({BATCH} staged vectors)" in result.output
    assert Library(isolated_home).status().model == model_c
    assert_vectors_of(isolated_home, Encoder.load(parse_model_spec(model_c), "cpu", "fp32"), indexed_a)
