"""An index's SQLite file read directly, as a separate process would read it: the rows as they are stored,
without the library's own reading code, so that a test can check what the library wrote.

Paths are the stored bytes; a `vector` column comes back as its float32 array. Every reader is read-only
(it never creates, checkpoints or changes the file) and waits for a busy writer rather than failing.
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

from imgsearch.store.catalog import Catalog

DB_FILE = "index.db"


@contextlib.contextmanager
def connect(home: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the index in `home`, closed afterwards."""
    uri = f"file:{urllib.parse.quote(os.fspath(home / DB_FILE))}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        yield db


def images(home: Path, *columns: str) -> dict[bytes, tuple[Any, ...]]:
    """path -> (the named columns) of every row of the images table."""
    vector = [i for i, name in enumerate(columns) if name == "vector"]
    with connect(home) as db:
        rows = db.execute(f"SELECT {', '.join(['path', *columns])} FROM images").fetchall()
    out = {}
    for path, *values in rows:
        for i in vector:
            values[i] = np.frombuffer(values[i], dtype=np.float32)
        out[path] = tuple(values)
    return out


def vectors(home: Path) -> dict[bytes, np.ndarray]:
    """path -> the stored vector of every image."""
    return {path: vector for path, (vector,) in images(home, "vector").items()}


def failures(home: Path) -> dict[bytes, str]:
    """path -> the recorded reason of every file that could not be read."""
    with connect(home) as db:
        return dict(db.execute("SELECT path, reason FROM failures"))


def tables(home: Path) -> set[str]:
    with connect(home) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def integrity(home: Path) -> str:
    """SQLite's own check of the whole file: "ok" when it is sound."""
    with connect(home) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def content_hash(data: bytes) -> bytes:
    """The content hash the index stores for these bytes, computed here on its own."""
    return hashlib.blake2b(data, digest_size=16).digest()


def hashes_on_disk(files: Iterable[Path]) -> dict[bytes, bytes]:
    """path -> content hash of each file, as an index that equals these files holds them."""
    return {bytes(path): content_hash(path.read_bytes()) for path in files}


def catalog(home: Path) -> contextlib.closing[Catalog]:
    """The library's own Catalog over the index in `home`, closed after the `with` block."""
    return contextlib.closing(Catalog.open(home / DB_FILE))
