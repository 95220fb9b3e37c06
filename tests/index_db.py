"""An index's catalog read directly, as a separate process would read it: the rows as they are stored,
without the library's own reading code, so that a test can check what the library wrote.

The catalog is the one the test's environment points at: the PostgreSQL database of IMGSEARCH_DB when that
is set (read with psycopg), else the SQLite file in `home` (read with sqlite3). Either way the functions
return the same things: paths and hashes are the stored bytes; a `vector` column comes back as its float32
array. Every reader is read-only (it never creates, checkpoints or changes anything) and waits for a busy
writer rather than failing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from imgsearch.store.catalog import Catalog

DB_FILE = "index.db"
#: Where `integrity` puts PostgreSQL's amcheck functions: a schema of their own, not the catalog's.
CHECKS_SCHEMA = "index_db_checks"


def server_url() -> str | None:
    """The PostgreSQL database the test's environment points at (libpq's spelling), or None for SQLite."""
    url = os.environ.get("IMGSEARCH_DB")
    if not url:
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"tests/index_db.py reads PostgreSQL or the home's SQLite file, not {scheme}")
    return f"postgresql://{rest}"


#: What reading a catalog raises before its schema is there (a run killed before or during its migration).
SCHEMA_NOT_THERE: tuple[type[Exception], ...] = (sqlite3.OperationalError, psycopg.errors.UndefinedTable)


@contextlib.contextmanager
def connect(home: Path) -> Iterator[Any]:
    """A read-only connection to the index (sqlite3, or psycopg in one read-only transaction), closed
    afterwards. Both have `execute(sql)` returning a cursor with fetchall/fetchone that iterates rows."""
    url = server_url()
    if url is None:
        uri = f"file:{urllib.parse.quote(os.fspath(home / DB_FILE))}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
            yield db
        return
    with psycopg.connect(url, connect_timeout=10) as db:
        db.read_only = True
        yield db


def _plain(value: Any) -> Any:
    """bytea comes back from psycopg as bytes or memoryview: always bytes, as sqlite3 gives a BLOB."""
    return bytes(value) if isinstance(value, memoryview | bytearray) else value


def images(home: Path, *columns: str) -> dict[bytes, tuple[Any, ...]]:
    """path -> (the named columns) of every row of the images table."""
    vector = [i for i, name in enumerate(columns) if name == "vector"]
    with connect(home) as db:
        rows = db.execute(f"SELECT {', '.join(['path', *columns])} FROM images").fetchall()
    out = {}
    for path, *stored in rows:
        values = [_plain(v) for v in stored]
        for i in vector:
            values[i] = np.frombuffer(values[i], dtype=np.float32)
        out[_plain(path)] = tuple(values)
    return out


def vectors(home: Path) -> dict[bytes, np.ndarray]:
    """path -> the stored vector of every image."""
    return {path: vector for path, (vector,) in images(home, "vector").items()}


def failures(home: Path) -> dict[bytes, str]:
    """path -> the recorded reason of every file that could not be read."""
    with connect(home) as db:
        return {_plain(path): reason for path, reason in db.execute("SELECT path, reason FROM failures")}


def tables(home: Path) -> set[str]:
    if server_url() is None:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    with connect(home) as db:
        return {name for (name,) in db.execute(query)}


def exists(home: Path) -> bool:
    """Whether there is a catalog yet: the SQLite file in `home`, or a schema in the PostgreSQL database
    (which the fixtures create empty; a migration there is one transaction, so it is all there or none)."""
    if server_url() is None:
        return (home / DB_FILE).exists()
    return "alembic_version" in tables(home)


def integrity(home: Path) -> str:
    """The database's own check of the whole catalog: "ok" when it is sound. SQLite's integrity_check; on
    PostgreSQL amcheck's verify_heapam on every table and bt_index_check (every row indexed) on every
    index of the catalog's schema (the extension is installed in a schema of its own the first time)."""
    url = server_url()
    if url is None:
        with connect(home) as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as db:
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {CHECKS_SCHEMA}")
        db.execute(f"CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA {CHECKS_SCHEMA}")
        problems = []
        relations = db.execute(
            "SELECT c.oid, c.relname, c.relkind, am.amname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_am am ON am.oid = c.relam"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i')"
        ).fetchall()
        for oid, name, kind, method in relations:
            if kind == "r":
                for row in db.execute(f"SELECT * FROM {CHECKS_SCHEMA}.verify_heapam(%s)", (oid,)):
                    problems.append(f"{name}: {row}")
            elif method == "btree":
                try:
                    db.execute(f"SELECT {CHECKS_SCHEMA}.bt_index_check(%s, true)", (oid,))
                except psycopg.Error as e:
                    problems.append(f"{name}: {e}")
    return "\n".join(problems) or "ok"


def tamper(home: Path, sql: str) -> None:
    """Change the catalog behind the library's back, as another program would: one statement, committed."""
    url = server_url()
    if url is None:
        with contextlib.closing(sqlite3.connect(home / DB_FILE, timeout=30)) as db, db:
            db.execute(sql)
        return
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as server:
        server.execute(sql)


def local_folder(home: Path) -> Path:
    """The folder of `home` that holds what this machine derives from the catalog (the FAISS files): the
    home itself for its own SQLite file, else a folder per library (Catalog.local_folder)."""
    with catalog(home) as opened:
        return opened.local_folder(home)


def content_hash(data: bytes) -> bytes:
    """The content hash the index stores for these bytes, computed here on its own."""
    return hashlib.blake2b(data, digest_size=16).digest()


def hashes_on_disk(files: Iterable[Path]) -> dict[bytes, bytes]:
    """path -> content hash of each file, as an index that equals these files holds them."""
    return {bytes(path): content_hash(path.read_bytes()) for path in files}


def catalog(home: Path) -> contextlib.closing[Catalog]:
    """The library's own Catalog over the index the environment points at, closed after the `with`."""
    url = os.environ.get("IMGSEARCH_DB")
    if not url:
        return contextlib.closing(Catalog.open(home / DB_FILE))
    from imgsearch.store.database import Database

    return contextlib.closing(Catalog.open(Database.parse(url, home)))
