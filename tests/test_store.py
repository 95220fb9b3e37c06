"""The catalog and the FAISS file: migrations, version checks, rebuilds and atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.errors import IndexWriteError, SchemaTooNew
from imgsearch.store import vectors as vectors_module
from imgsearch.store.catalog import SCHEMA_HEAD, Catalog, Database, migrations_dir
from imgsearch.store.vectors import VectorIndex, vectors_file
from tests import index_db

pytestmark = pytest.mark.backends


def test_schema_head_constant_matches_the_alembic_scripts():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD


def _database(home):
    """The catalog the test's environment points at (IMGSEARCH_DB, else `home`/index.db)."""
    return Database.parse(os.environ.get("IMGSEARCH_DB"), home)


def test_migrations_create_the_schema_once_and_are_safe_to_repeat(isolated_home, backend):
    Catalog.open(_database(isolated_home), create=True).close()
    Catalog.open(_database(isolated_home)).close()
    with index_db.connect(isolated_home) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA_HEAD,)]
        if backend == "sqlite":
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert {"images", "roots", "failures", "settings"} <= index_db.tables(isolated_home)


def test_an_index_from_a_newer_version_is_refused(isolated_home):
    Catalog.open(_database(isolated_home), create=True).close()
    index_db.tamper(isolated_home, "UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(SchemaTooNew, match="newer imgsearch"):
        Catalog.open(_database(isolated_home))


@pytest.fixture
def indexed_library(cli, photos, isolated_home, tiny_model):
    assert cli("index", photos).exit_code == 0
    return Library(isolated_home, device="cpu")


def _saved_file(home):
    files = sorted(index_db.local_folder(home).glob("vectors-*.faiss"))
    assert len(files) == 1
    return files[0]


def test_the_faiss_file_matches_the_database_after_indexing(indexed_library, isolated_home):
    with index_db.catalog(isolated_home) as catalog:
        local = catalog.local_folder(isolated_home)
        assert _saved_file(isolated_home) == vectors_file(local, catalog.vectors_version())
        loaded = VectorIndex.load_or_rebuild(catalog, local, 32)
        assert len(loaded) == catalog.count()
    assert index_db.integrity(isolated_home) == "ok"


@pytest.mark.parametrize("damage", ["delete", "truncate", "stale"])
def test_a_missing_damaged_or_stale_faiss_file_is_rebuilt_from_sqlite(indexed_library, isolated_home, damage):
    expected = [m.path for m in indexed_library.search("a boat", top=5)]
    saved = _saved_file(isolated_home)
    if damage == "delete":
        saved.unlink()
    elif damage == "truncate":
        saved.write_bytes(saved.read_bytes()[:100])
    else:  # a file that claims the current version but holds fewer vectors
        with index_db.catalog(isolated_home) as catalog:
            version, ids, vecs = catalog.all_vectors(32)
        VectorIndex.build(32, ids[:-3], vecs[:-3], version).save(index_db.local_folder(isolated_home))
    assert [m.path for m in Library(isolated_home, device="cpu").search("a boat", top=5)] == expected
    assert _saved_file(isolated_home).stat().st_size > 1000  # the rebuilt index was saved again


def test_a_failed_faiss_write_leaves_the_previous_file_and_no_temp(
    indexed_library, isolated_home, monkeypatch
):
    before = _saved_file(isolated_home).read_bytes()
    with index_db.catalog(isolated_home) as catalog:
        version, ids, vecs = catalog.all_vectors(32)

    def disk_full(index, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vectors_module.faiss, "write_index", disk_full)
    with pytest.raises(IndexWriteError, match="the disk is full"):
        VectorIndex.build(32, ids, vecs, version + 1).save(index_db.local_folder(isolated_home))
    assert _saved_file(isolated_home).read_bytes() == before
    assert not list(index_db.local_folder(isolated_home).glob(".vectors-*"))


def test_search_within_allowed_ids_is_exact():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(500, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(1000, 1500, dtype=np.int64)
    index = VectorIndex.build(16, ids, vecs, 1)
    query = vecs[7]
    allowed = ids[::37]
    scores, got = index.search(query, 5, allowed)
    brute = sorted(allowed, key=lambda i: -float(vecs[i - 1000] @ query))[:5]
    assert list(got) == brute
    assert np.allclose(scores, [vecs[i - 1000] @ query for i in brute], atol=1e-6)
