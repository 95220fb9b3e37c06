"""A library shared between machines: --db URLs and how they are shown (never a password), the local cache
kept per library, and readers that map the stored folders to their own mount points."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from imgsearch import Library
from imgsearch.errors import UsageError
from imgsearch.search.mounts import Mounts
from imgsearch.store.catalog import Catalog, Database

pytestmark = pytest.mark.backends


# -- --db --
@pytest.mark.parametrize(
    ("value", "driver"),
    [
        ("postgresql://photos:pw@nas/imgsearch", "postgresql+psycopg"),
        ("postgres://photos@nas:5433/imgsearch?sslmode=require", "postgresql+psycopg"),
        ("postgresql+psycopg://photos@nas/imgsearch", "postgresql+psycopg"),
        ("sqlite:////srv/photos/index.db", "sqlite+pysqlite"),
    ],
)
def test_database_urls(value, driver, tmp_path):
    database = Database.parse(value, tmp_path)
    assert database.url.drivername == driver
    assert "pw" not in database.shown and "pw" not in database.where()


def test_no_url_is_the_homes_own_file_and_a_path_is_a_sqlite_file(tmp_path):
    assert Database.parse(None, tmp_path).file == tmp_path / "index.db"
    assert Database.parse(str(tmp_path / "other"), tmp_path).file == tmp_path / "other" / "index.db"
    assert Database.parse(str(tmp_path / "lib.db"), tmp_path).file == tmp_path / "lib.db"


@pytest.mark.parametrize("value", ["mysql://me@host/db", "postgresql://[::1"])
def test_other_databases_are_a_usage_error(cli, value):
    result = cli("status", "--db", value)
    assert result.exit_code == 2
    assert "postgresql://USER@HOST/DBNAME" in result.output


def test_the_sslmode_and_other_libpq_options_reach_the_driver(tmp_path):
    database = Database.parse("postgresql://photos@nas/imgsearch?sslmode=verify-full", tmp_path)
    assert database.url.query == {"sslmode": "verify-full"}


# -- the local cache -----------------------------------------------------------------------------------------
def test_the_faiss_file_is_kept_per_library(cli, photos, tmp_path, backend):
    """One home used with two databases keeps each one's FAISS file apart: its own file for its own SQLite
    index.db, a folder per library id for any other."""
    assert cli("index", photos).exit_code == 0
    home = tmp_path / "home"
    own = list(home.glob("vectors-*.faiss"))
    kept = list(home.glob("libraries/*/vectors-*.faiss"))
    if backend == "sqlite":
        assert own and not kept
    else:
        assert kept and not own
        catalog = Catalog.open(Library().database)
        try:
            assert kept[0].parent.name == catalog.settings()["library_id"]
        finally:
            catalog.close()


# -- path mapping --------------------------------------------------------------------------------------------
def test_mounts_map_the_deepest_stored_folder_both_ways():
    mounts = Mounts.parse(["/mnt/photos=/Volumes/photos", "/mnt/photos/2024=/Volumes/new"])
    assert mounts.to_local(b"/mnt/photos/a.jpg") == b"/Volumes/photos/a.jpg"
    assert mounts.to_local(b"/mnt/photos/2024/b.jpg") == b"/Volumes/new/b.jpg"
    assert mounts.to_local(b"/mnt/photosx/c.jpg") == b"/mnt/photosx/c.jpg"  # a folder, not a prefix
    assert mounts.to_local(b"/mnt/photos") == b"/Volumes/photos"
    assert mounts.to_stored(b"/Volumes/new/b.jpg") == b"/mnt/photos/2024/b.jpg"
    assert mounts.to_stored(b"/elsewhere/d.jpg") == b"/elsewhere/d.jpg"
    assert Mounts.from_env("/a=/b:/c/=/d/").pairs == ((b"/a", b"/b"), (b"/c", b"/d"))


@pytest.mark.parametrize("entry", ["/mnt/photos", "photos=/Volumes/photos", "/a=b"])
def test_a_bad_path_map_entry_is_a_usage_error(entry):
    with pytest.raises(UsageError, match="STORED=LOCAL"):
        Mounts.parse([entry])


def test_a_reader_with_the_share_mounted_elsewhere_sees_its_own_paths(cli, photos, tmp_path, monkeypatch):
    """The writer indexed `photos`; this reader has the same files at `mounted`: results, --in, similar
    (which finds the stored vector of the mapped file, so it excludes it), status."""
    assert cli("index", photos).exit_code == 0
    mounted = tmp_path / "mnt" / "photos"
    shutil.copytree(photos, mounted)
    shutil.rmtree(photos)  # not there on this machine
    mapping = f"{photos}={mounted}"

    found = cli("query", "a cat", "--json", "--top", "5", "--path-map", mapping, model=False)
    assert found.exit_code == 0, found.output
    paths = [json.loads(line)["path"] for line in found.output.splitlines()]
    assert len(paths) == 5 and all(p.startswith(f"{mounted}/") and os.path.isfile(p) for p in paths)

    monkeypatch.setenv("IMGSEARCH_PATH_MAP", mapping)
    inside = cli("query", "a cat", "--paths", "--in", mounted, model=False)
    assert inside.exit_code == 0 and inside.output.splitlines(), inside.output
    like = cli("similar", mounted / "lake-at-dusk.jpg", "--paths", "--top", "40", model=False)
    assert like.exit_code == 0, like.output
    assert str(mounted / "lake-at-dusk.jpg") not in like.output.splitlines()
    assert len(like.output.splitlines()) == 33  # every other image, and not itself
    status = json.loads(cli("status", "--json").output)
    assert [(r["path"], r["present"]) for r in status["roots"]] == [(str(mounted), True)]


def test_without_a_map_the_stored_paths_are_shown(cli, photos):
    assert cli("index", photos).exit_code == 0
    found = cli("query", "a cat", "--paths", "--top", "3", model=False)
    assert all(Path(p).parent == photos for p in found.output.splitlines())
