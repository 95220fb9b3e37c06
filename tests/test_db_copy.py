"""`imgsearch db copy`: a library moved between SQLite and PostgreSQL keeps every row and vector, answers the
same queries with the same paths and scores, and an interrupted or failed copy leaves no library that looks
whole in the target."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imgsearch import Library
from imgsearch.errors import CopyMismatch
from imgsearch.store.catalog import Catalog, CatalogWriter, Database

pytestmark = pytest.mark.backends

QUERIES = ("a cat", "a red apple on a table", "mountains at dusk")


def answers(cli, db: str, home: Path) -> list[list[tuple[str, float]]]:
    """Every query's (path, score) list, from a home of its own (so its FAISS file is built from `db`)."""
    out = []
    for text in QUERIES:
        result = cli("query", text, "--json", "--top", "8", "--db", db, "--home", home, model=False)
        assert result.exit_code == 0, result.output
        matches = [json.loads(line) for line in result.output.splitlines()]
        out.append([(m["path"], m["score"]) for m in matches])
    return out


def vectors(db: str, tmp_path: Path) -> dict[bytes, bytes]:
    catalog = Catalog.open(Database.parse(db, tmp_path))
    try:
        batches = catalog.vector_batches(32)
        return {path: v.tobytes() for _ids, paths, vs in batches for path, v in zip(paths, vs, strict=True)}
    finally:
        catalog.close()


def other_database(backend: str, postgres_server, tmp_path: Path, name: str) -> str:
    """A target of the other kind: a fresh PostgreSQL database for a SQLite library, a folder for a
    PostgreSQL one."""
    if backend == "sqlite":
        return postgres_server.create_database()[1]
    return str(tmp_path / name)


@pytest.fixture
def postgres_server(request):
    return request.getfixturevalue("postgres")


def test_a_library_moved_to_the_other_database_and_back_answers_the_same(
    cli, photos, tmp_path, backend, postgres_server
):
    assert cli("index", photos).exit_code == 0
    source = os.environ.get("IMGSEARCH_DB") or str(tmp_path / "home")
    before = answers(cli, source, tmp_path / "reader-0")

    there = other_database(backend, postgres_server, tmp_path, "moved")
    moved = cli("db", "copy", "--to", there)
    assert moved.exit_code == 0, moved.output
    assert "checked equal" in moved.output and "34 images" in moved.output

    back_target = postgres_server.create_database()[1] if backend == "postgresql" else str(tmp_path / "back")
    back = cli("db", "copy", "--db", there, "--to", back_target)
    assert back.exit_code == 0, back.output

    assert answers(cli, there, tmp_path / "reader-1") == before
    assert answers(cli, back_target, tmp_path / "reader-2") == before
    assert vectors(back_target, tmp_path) == vectors(source, tmp_path)
    assert all(len(q) == 8 for q in before)


def test_a_moved_library_goes_on_indexing_with_new_ids(cli, photos, tmp_path, backend, postgres_server):
    """After a copy with the ids kept, a new image gets a new id (a server's sequence numbers on)."""
    assert cli("index", photos).exit_code == 0
    there = other_database(backend, postgres_server, tmp_path, "moved")
    assert cli("db", "copy", "--to", there).exit_code == 0
    (photos / "again.jpg").write_bytes((photos / "lake-at-dusk.jpg").read_bytes() + b"\0")
    added = cli("index", "--db", there, "--home", tmp_path / "writer-2")
    assert added.exit_code == 0, added.output
    assert "1 new" in added.output
    catalog = Catalog.open(Database.parse(there, tmp_path))
    try:
        assert catalog.count() == 35
        ids = [i for i, _p in catalog.ids_where()]
        assert len(set(ids)) == 35
    finally:
        catalog.close()


def test_a_copy_into_a_database_that_holds_a_library_is_refused(
    cli, photos, tmp_path, backend, postgres_server
):
    assert cli("index", photos).exit_code == 0
    there = other_database(backend, postgres_server, tmp_path, "moved")
    assert cli("db", "copy", "--to", there).exit_code == 0
    again = cli("db", "copy", "--to", there)
    assert again.exit_code == 2
    assert "already" in again.output


def test_an_interrupted_copy_leaves_no_library_in_the_target(
    cli, photos, tmp_path, backend, postgres_server, monkeypatch
):
    assert cli("index", photos).exit_code == 0
    there = other_database(backend, postgres_server, tmp_path, "moved")
    real = CatalogWriter.load_rows

    def fail_in_the_images(self, table, rows):
        if table == "images":
            real(self, table, rows[: len(rows) // 2])
            raise KeyboardInterrupt  # Ctrl-C halfway through the images
        real(self, table, rows)

    monkeypatch.setattr(CatalogWriter, "load_rows", fail_in_the_images)
    with pytest.raises(KeyboardInterrupt):
        Library().copy_database(there)
    assert_no_library(there, tmp_path)
    monkeypatch.setattr(CatalogWriter, "load_rows", real)
    assert cli("db", "copy", "--to", there).exit_code == 0  # and a second try completes


def test_a_copy_that_does_not_check_equal_is_not_kept(
    cli, photos, tmp_path, backend, postgres_server, monkeypatch
):
    assert cli("index", photos).exit_code == 0
    there = other_database(backend, postgres_server, tmp_path, "moved")
    real = Catalog.fingerprint
    calls = []

    def differ_on_the_copy(self):
        counts, digest = real(self)
        calls.append(self.database)
        return (counts, digest if len(calls) == 1 else "0" * 32)  # the source first, then the copy

    monkeypatch.setattr(Catalog, "fingerprint", differ_on_the_copy)
    with pytest.raises(CopyMismatch):
        Library().copy_database(there)
    monkeypatch.setattr(Catalog, "fingerprint", real)
    assert_no_library(there, tmp_path)


def assert_no_library(there: str, tmp_path: Path) -> None:
    database = Database.parse(there, tmp_path)
    if database.file is not None:
        assert not database.file.exists()
        assert not [p for p in database.file.parent.iterdir() if p.name.startswith(".index-copy-")]
        return
    catalog = Catalog.open(database)
    try:
        assert catalog.model() is None and catalog.count() == 0 and catalog.roots() == []
    finally:
        catalog.close()
