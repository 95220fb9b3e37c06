"""The catalog: every indexed file, its metadata and its vector, through SQLAlchemy Core, in SQLite or
PostgreSQL (imgsearch.store.database says where, and holds what differs between them).

This is the one module that knows SQL; the indexer and the search code never see which database it is.
Writes go through `Catalog.write()`, one transaction each, which also keeps `vectors_version` (the stamp the
FAISS file is checked against) and the list of vector changes to apply. Reads are one snapshot each (WAL on
SQLite, a repeatable-read transaction on PostgreSQL), so a reader never sees half a batch.

A reindex (imgsearch.index.reindex) stages the new model's vectors in pending_vectors, which no query
reads, and moves them into the images in one write (`finish_reindex`), with the model and vectors_version.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    and_,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from ..errors import (
    ImgsearchError,
    IndexNotFound,
    IndexReadOnly,
    IndexWriteError,
    ModelMismatch,
    SchemaTooNew,
)
from .database import DB_FILE, Database, WriteLock, take_migration_lock
from .schema import failures, images, pending_vectors, roots, settings

__all__ = ["DB_FILE", "Catalog", "Database"]

#: The newest migration in migrations/versions; a test keeps it equal to Alembic's head.
SCHEMA_HEAD = "0003"
_BUSY_TIMEOUT_MS = 30_000
#: The folder of a home that holds what is derived from a catalog kept elsewhere, one folder per library.
LIBRARIES = "libraries"
#: The settings of a pending reindex (imgsearch.index.reindex): its model, vector size and numerics. They
#: belong with the staged vectors, so a copy to another database (which leaves those out) leaves them out too.
REINDEX_KEYS = ("reindex_model", "reindex_dim", "reindex_numerics")


def migrations_dir() -> Path:
    """Where the Alembic scripts are: inside the package when installed, beside it in a checkout."""
    packaged = Path(__file__).resolve().parent.parent / "migrations"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "migrations"


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    content_hash: bytes


@dataclass(frozen=True)
class ImageRow:
    id: int
    path: bytes
    size: int
    mtime_ns: int
    content_hash: bytes
    width: int
    height: int
    format: str
    taken_at: float | None


@dataclass(frozen=True)
class Content:
    """What can be reused from an already-embedded file with the same bytes."""

    width: int
    height: int
    format: str
    taken_at: float | None
    vector: bytes


@dataclass(frozen=True)
class PendingReindex:
    """A reindex under way or interrupted: the model it re-encodes to, and how many images have a staged
    vector of it that still describes their bytes (of `images` in all)."""

    model: str
    dim: int
    staged: int
    images: int


@dataclass
class VectorChanges:
    """What one write transaction did to the vectors, for the FAISS index to follow."""

    added: dict[int, bytes] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


class Catalog:
    """An open index database."""

    def __init__(self, engine: Engine, database: Database):
        self.engine = engine
        self.database = database
        self.path = database.file  # the SQLite file, None on a server
        self._library_id: str | None = None
        self._lock: WriteLock | None = None  # held by this process's writer (see write_lock)

    @classmethod
    def open(cls, database: Database | Path, *, create: bool = False) -> Catalog:
        """Open (and migrate) the catalog; with create=False a missing SQLite file is IndexNotFound.

        A reader on a full disk or a read-only folder, where SQLite cannot make its WAL index (-shm), reads
        the database file as immutable instead, provided the WAL holds nothing the file lacks."""
        if isinstance(database, Path):
            database = Database.sqlite_file(database)
        path = database.file
        if path is None:
            catalog = cls(database.engine(), database)
            try:
                catalog._migrate(create)
            except BaseException:
                catalog.close()
                raise
            return catalog
        if not path.exists():
            if not create:
                raise IndexNotFound(f"no index at {path.parent} yet: run `imgsearch index FOLDER` first")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise IndexReadOnly(f"cannot create the index folder {path.parent}: {e.strerror}") from e
        engine = create_engine(database.url, poolclass=None)
        _configure_sqlite(engine)
        catalog = cls(engine, database)
        try:
            catalog._migrate()
        except OperationalError as e:
            engine.dispose()
            if create or not _wal_is_empty(path):
                raise storage_error(e, path.parent) from e
            catalog = cls(_immutable_engine(path), database)
            catalog._migrate()
        return catalog

    def close(self) -> None:
        self.engine.dispose()

    def write_lock(self) -> WriteLock:
        """Take the one-writer lock of this catalog (see Database.write_lock), IndexBusy when another holds
        it; until it is released, `write()` goes through the session that holds it, where it has one."""
        self._lock = self.database.write_lock(None if self.path is not None else self.engine)
        return self._lock

    def local_folder(self, home: Path) -> Path:
        """Where this machine keeps what is derived from the catalog (the FAISS files), made if missing: the
        home itself for the home's own SQLite file, else a folder of the home per library, so that a home
        used with several databases never takes one's FAISS file for another's."""
        if self.path is not None and self.path == home / DB_FILE:
            return home
        if self._library_id is None:
            self._library_id = self.settings().get("library_id", "unknown")
        folder = home / LIBRARIES / self._library_id
        with contextlib.suppress(OSError):  # a reader that cannot write keeps its rebuilt index in memory
            folder.mkdir(parents=True, exist_ok=True)
        return folder

    def size_bytes(self) -> int:
        """What the catalog takes on disk: the SQLite file and its WAL, or the tables on the server."""
        if self.path is not None:
            return sum(os.path.getsize(p) for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        with self._read() as conn:
            sizes = [
                conn.exec_driver_sql(f"SELECT pg_total_relation_size('{t.name}')").scalar_one()
                for t in (settings, roots, images, failures, pending_vectors)
            ]
        return int(sum(sizes))

    # -- schema ---------------------------------------------------------------------------------------------
    def _migrate(self, create: bool = True) -> None:
        """Bring the schema to the head revision; refuse a database from a newer imgsearch. A reader
        (create=False) of a server database that has no catalog yet is IndexNotFound: it creates nothing."""
        with self._read() as conn:
            current = _schema_revision(conn)
        if current == SCHEMA_HEAD:
            return
        if current is None and not create and self.path is None:
            place = self.database.place
            raise IndexNotFound(f"no index {place} yet: run `imgsearch index FOLDER` first")
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        config = Config()
        config.set_main_option("script_location", str(migrations_dir()))
        known = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
        if current is not None and current not in known:
            raise SchemaTooNew(
                f"{self.database.where()} was written by a newer imgsearch (schema {current}); "
                "upgrade imgsearch to use it"
            )
        from alembic import command

        try:
            with self._transaction(isolation="READ COMMITTED") as conn:
                if self.path is None:
                    take_migration_lock(conn)
                if _schema_revision(conn) != SCHEMA_HEAD:  # another process may have just done it
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
        except OperationalError as e:
            if self.path is None:
                raise
            raise IndexReadOnly(f"cannot upgrade the index at {self.path.parent}: {e.orig}") from e

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot, never blocked by the writer."""
        with self._errors(), self.engine.connect() as conn:
            if self.path is None:
                conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _transaction(self, isolation: str | None = None) -> Iterator[Connection]:
        held = self._lock.connection if self._lock is not None else None
        if held is not None and not held.closed:
            with self._errors(), held.begin():
                yield held
            return
        with self._errors(), self.engine.connect() as conn:
            if self.path is None:
                if isolation:
                    conn = conn.execution_options(isolation_level=isolation)
            else:
                conn.execution_options(sqlite_write=True)
            with conn.begin():
                yield conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A server's errors as one clear ImgsearchError (SQLite's are left to the callers, as before)."""
        try:
            yield
        except DBAPIError as e:
            if self.path is not None:
                raise
            raise self.database.error(e) from e

    @contextmanager
    def write(self) -> Iterator[CatalogWriter]:
        """One write transaction (BEGIN IMMEDIATE on SQLite); commits on success, rolls back on any error."""
        try:
            with self._transaction() as conn:
                writer = CatalogWriter(conn)
                yield writer
                writer._finish()
        except OperationalError as e:
            if self.path is None or "locked" in str(e.orig):  # another writer held SQLite past the timeout
                raise
            raise storage_error(e, self.path.parent) from e

    # -- settings -------------------------------------------------------------------------------------------
    def settings(self) -> dict[str, str]:
        with self._read() as conn:
            return {k: v for k, v in conn.execute(select(settings.c.key, settings.c.value))}

    def model(self) -> tuple[str, int] | None:
        """(model id, vector size) the index was built with, or None for a new index."""
        values = self.settings()
        if "model" not in values:
            return None
        return values["model"], int(values["dim"])

    def vectors_version(self) -> int:
        return int(self.settings().get("vectors_version", 0))

    def numerics(self) -> str | None:
        """The numerics the stored image vectors were made with ('bf16', or 'fp16+fp32' when runs on
        different machines differed); None for an index made before imgsearch recorded them."""
        return self.settings().get("numerics")

    # -- reading --------------------------------------------------------------------------------------------
    def roots(self) -> list[bytes]:
        with self._read() as conn:
            return [row[0] for row in conn.execute(select(roots.c.path).order_by(roots.c.path))]

    def files_under(self, folder: bytes) -> dict[bytes, KnownFile]:
        with self._read() as conn:
            rows = conn.execute(
                select(
                    images.c.path, images.c.id, images.c.size, images.c.mtime_ns, images.c.content_hash
                ).where(_under(images.c.path, folder))
            ).all()  # one fetch: row by row costs more than the stats of a re-scan
            return {path: KnownFile(*rest) for path, *rest in rows}

    def failures_under(self, folder: bytes) -> dict[bytes, tuple[int, int]]:
        with self._read() as conn:
            rows = conn.execute(
                select(failures.c.path, failures.c.size, failures.c.mtime_ns).where(
                    _under(failures.c.path, folder)
                )
            )
            return {r.path: (r.size, r.mtime_ns) for r in rows}

    def contents(self, hashes: Iterable[bytes]) -> dict[bytes, Content]:
        """Reusable vectors by content hash, for moved, renamed and copied files."""
        found: dict[bytes, Content] = {}
        wanted = list(set(hashes))
        with self._read() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    select(
                        images.c.content_hash,
                        images.c.width,
                        images.c.height,
                        images.c.format,
                        images.c.taken_at,
                        images.c.vector,
                    ).where(images.c.content_hash.in_(chunk))
                )
                for r in rows:
                    found[r.content_hash] = Content(r.width, r.height, r.format, r.taken_at, r.vector)
        return found

    def all_vectors(self, dim: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(vectors_version, ids, vectors) read in one snapshot, to rebuild the FAISS index; ModelMismatch
        when they are no longer `dim`-d (a reindex switched the model since the caller read it)."""
        with self._read() as conn:
            self._check_dim(conn, dim)
            version = conn.execute(select(settings.c.value).where(settings.c.key == "vectors_version"))
            stamp = int(version.scalar() or 0)
            rows = conn.execute(select(images.c.id, images.c.vector).order_by(images.c.id)).all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return stamp, ids, vectors

    def vector_batches(
        self, dim: int, under: bytes | None = None, batch: int = 8192
    ) -> Iterator[tuple[np.ndarray, list[bytes], np.ndarray]]:
        """(ids, paths, vectors) of the images (under a folder), in path order, `batch` rows at a time from
        one snapshot: work over every stored vector (zero-shot labels) in bounded memory."""
        query = select(images.c.id, images.c.path, images.c.vector).order_by(images.c.path)
        if under is not None:
            query = query.where(_under(images.c.path, under))
        with self._read() as conn:
            self._check_dim(conn, dim)
            for rows in conn.execute(query).partitions(batch):
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vectors = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(-1, dim)
                yield ids, [r[1] for r in rows], vectors

    def _check_dim(self, conn: Connection, dim: int) -> None:
        """Within a read: refuse to take the vectors as `dim`-d when the snapshot says they are not (a
        reindex finished between the caller's reading the model and this read)."""
        values = _settings_of(conn, _MODEL)
        if "dim" in values and int(values["dim"]) != dim:
            raise ModelMismatch(
                f"{self.database.where()} switched to model {values.get('model')} ({values['dim']}-d "
                "vectors) while this read it (a reindex finished): run this again"
            )

    # -- a reindex (imgsearch.index.reindex) ----------------------------------------------------------------
    def pending_reindex(self) -> PendingReindex | None:
        """The reindex that is under way or was interrupted, if any, from one snapshot."""
        with self._read() as conn:
            values = _settings_of(conn, REINDEX_KEYS)
            if "reindex_model" not in values:
                return None
            staged = conn.execute(
                select(func.count()).select_from(images).where(_staged_for_current_bytes())
            ).scalar_one()
            total = conn.execute(select(func.count()).select_from(images)).scalar_one()
        return PendingReindex(values["reindex_model"], int(values["reindex_dim"]), int(staged), int(total))

    def reindex_todo(self, model_id: str) -> list[tuple[int, bytes, bytes]]:
        """(id, path, content hash) of every image, in path order, that has no staged vector of `model_id`
        for its current bytes: all of them unless a reindex to that model was interrupted."""
        query = select(images.c.id, images.c.path, images.c.content_hash).order_by(images.c.path)
        with self._read() as conn:
            pending = conn.execute(select(settings.c.value).where(settings.c.key == "reindex_model"))
            if pending.scalar() == model_id:
                query = query.where(~_staged_for_current_bytes())
            return [(int(r.id), bytes(r.path), bytes(r.content_hash)) for r in conn.execute(query)]

    def count(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(images)).scalar_one())

    def ids_with_prefixes(self, prefixes: list[bytes]) -> list[tuple[int, bytes]]:
        """(id, path) of every file whose path starts with one of `prefixes` (each an index range)."""
        if not prefixes:
            return []
        ranges = [and_(images.c.path >= p, images.c.path < _after_prefix(p)) for p in prefixes]
        with self._read() as conn:
            return [
                (int(r.id), bytes(r.path))
                for r in conn.execute(select(images.c.id, images.c.path).where(or_(*ranges)))
            ]

    def counts_by_format(self) -> dict[str, int]:
        """Indexed files per stored format name, most common first."""
        with self._read() as conn:
            n = func.count().label("n")
            result = conn.execute(select(images.c.format, n).group_by(images.c.format).order_by(n.desc()))
            return {r.format: int(r.n) for r in result}

    def rows(self, ids: Iterable[int]) -> dict[int, ImageRow]:
        wanted = [int(i) for i in ids]
        with self._read() as conn:
            result = conn.execute(select(*_ROW_COLUMNS).where(images.c.id.in_(wanted)))
            return {r.id: ImageRow(*r) for r in result}

    def row_by_path(self, path: bytes) -> tuple[ImageRow, bytes] | None:
        """The row and vector of an indexed file."""
        with self._read() as conn:
            r = conn.execute(select(*_ROW_COLUMNS, images.c.vector).where(images.c.path == path)).first()
        return (ImageRow(*r[:-1]), r[-1]) if r else None

    def paths_and_hashes(self, folder: bytes | None = None) -> dict[int, tuple[bytes, bytes]]:
        """id -> (path, content hash) of every image (under `folder`): what finding duplicates needs
        besides the vectors, without reading the vectors."""
        query = select(images.c.id, images.c.path, images.c.content_hash)
        if folder is not None:
            query = query.where(_under(images.c.path, folder))
        with self._read() as conn:
            return {r.id: (r.path, r.content_hash) for r in conn.execute(query)}

    def ids_where(
        self,
        under: bytes | None = None,
        after: float | None = None,
        before: float | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
        formats: Iterable[str] | None = None,
    ) -> list[tuple[int, bytes]]:
        """(id, path) of the images that pass these filters; the date is when taken, else the mtime."""
        taken = func.coalesce(images.c.taken_at, images.c.mtime_ns / 1e9)
        query = select(images.c.id, images.c.path)
        if under is not None:
            query = query.where(_under(images.c.path, under))
        if after is not None:
            query = query.where(taken >= after)
        if before is not None:
            query = query.where(taken < before)
        if min_width is not None:
            query = query.where(images.c.width >= min_width)
        if min_height is not None:
            query = query.where(images.c.height >= min_height)
        if formats is not None:
            query = query.where(images.c.format.in_(list(formats)))
        with self._read() as conn:
            return [(r.id, r.path) for r in conn.execute(query)]

    def counts_by_root(self) -> list[tuple[bytes, int, int]]:
        """(root, images, failures) for every root."""
        out = []
        with self._read() as conn:
            for (root,) in conn.execute(select(roots.c.path).order_by(roots.c.path)):
                n = conn.execute(select(func.count()).where(_under(images.c.path, root))).scalar_one()
                bad = conn.execute(select(func.count()).where(_under(failures.c.path, root))).scalar_one()
                out.append((root, int(n), int(bad)))
        return out

    def failure_list(self, limit: int | None = None) -> list[tuple[bytes, str]]:
        with self._read() as conn:
            query = select(failures.c.path, failures.c.reason).order_by(failures.c.path).limit(limit)
            return [(r.path, r.reason) for r in conn.execute(query)]

    def table_rows(self, chunk: int = 2000) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Every row of every table, `chunk` at a time, from one snapshot (streamed from a server): settings,
        roots, failures, then images in id order. What moving a catalog to another database copies (a pending
        reindex's staged vectors are not among them: see imgsearch.store.transfer)."""
        with self._read() as conn:
            for table in (settings, roots, failures, images):
                query = select(table).order_by(*table.primary_key.columns)
                result = conn.execution_options(stream_results=True, yield_per=chunk).execute(query)
                for part in result.mappings().partitions():
                    yield table.name, [dict(row) for row in part]

    def fingerprint(self) -> tuple[dict[str, int], str]:
        """(rows per table, a digest of every image's id, path, stat, hash and vector, and of the roots and
        failures): equal for two catalogs that hold the same library, whichever database each is in."""
        digest = hashlib.blake2b(digest_size=16)
        counts: dict[str, int] = {}
        for name, rows in self.table_rows():
            if name == "settings":
                continue
            counts[name] = counts.get(name, 0) + len(rows)
            for row in rows:
                for key in sorted(row):
                    value = row[key]
                    raw = isinstance(value, bytes | memoryview)
                    digest.update(key.encode())
                    digest.update(bytes(value) if raw else repr(value).encode())
        return counts, digest.hexdigest()

    def failure_count(self) -> int:
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(failures)).scalar_one())


class CatalogWriter:
    """The operations of one write transaction; it records what changed in the vectors."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._unfailed: set[bytes] = set()  # paths whose failure rows go at the end (one statement)
        self.changes = VectorChanges()
        self.version: int | None = None  # the vectors_version this transaction committed, if it changed any

    def set_model(self, model_id: str, dim: int) -> None:
        self._set("model", model_id)
        self._set("dim", str(dim))

    def note_numerics(self, precision: str) -> None:
        """Add `precision` to the numerics recorded for the stored image vectors."""
        row = self.conn.execute(select(settings.c.value).where(settings.c.key == "numerics")).first()
        known = set(row[0].split("+")) if row else set()
        if precision not in known:
            self._set("numerics", "+".join(sorted(known | {precision})))

    def add_root(self, path: bytes) -> None:
        """Remember a folder; one inside a known root adds nothing, one around known roots replaces them."""
        known = [row[0] for row in self.conn.execute(select(roots.c.path))]
        if any(path == root or path.startswith(root.rstrip(b"/") + b"/") for root in known):
            return
        self.conn.execute(delete(roots).where(_under(roots.c.path, path)))
        self.conn.execute(insert(roots).values(path=path, added_at=time.time()))

    def add_image(self, path: bytes, size: int, mtime_ns: int, content_hash: bytes, content: Content) -> int:
        values = _content_values(size, mtime_ns, content_hash, content)
        result = self.conn.execute(_INSERT_IMAGE, {"path": path, **values})  # one compiled statement
        image_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        self.changes.added[image_id] = content.vector
        self._unfailed.add(path)
        return image_id

    def replace_image(
        self, image_id: int, size: int, mtime_ns: int, content_hash: bytes, content: Content
    ) -> None:
        """A file whose bytes changed: new content under the same id."""
        values = _content_values(size, mtime_ns, content_hash, content)
        self.conn.execute(update(images).where(images.c.id == image_id).values(**values))
        self.changes.removed.add(image_id)
        self.changes.added[image_id] = content.vector

    def move_image(self, image_id: int, new_path: bytes, size: int, mtime_ns: int) -> None:
        """A moved or renamed file keeps its id and vector: FAISS does not change."""
        self.conn.execute(
            update(images).where(images.c.id == image_id).values(path=new_path, size=size, mtime_ns=mtime_ns)
        )
        self._unfailed.add(new_path)

    def touch_image(self, image_id: int, size: int, mtime_ns: int) -> None:
        self.conn.execute(update(images).where(images.c.id == image_id).values(size=size, mtime_ns=mtime_ns))

    def remove_images(self, ids: Iterable[int]) -> None:
        wanted = [int(i) for i in ids]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            self.conn.execute(delete(images).where(images.c.id.in_(chunk)))
        self.changes.removed.update(wanted)
        for image_id in wanted:
            self.changes.added.pop(image_id, None)

    def record_failure(self, path: bytes, size: int, mtime_ns: int, reason: str) -> None:
        self._unfailed.discard(path)
        self._clear_failure(path)
        self.conn.execute(
            insert(failures).values(
                path=path, size=size, mtime_ns=mtime_ns, reason=reason, failed_at=time.time()
            )
        )

    def load_rows(self, table_name: str, rows: list[dict[str, Any]]) -> None:
        """Rows exactly as another catalog's `table_rows` gave them (ids kept); settings replace this
        catalog's own, except its library id and schema."""
        table = {t.name: t for t in (settings, roots, failures, images)}[table_name]
        if table is settings:
            for row in rows:  # a pending reindex stays behind, with its staged vectors (see transfer)
                if row["key"] != "library_id" and row["key"] not in REINDEX_KEYS:
                    self._set(row["key"], row["value"])
            return
        if rows:
            self.conn.execute(insert(table), rows)

    def clear(self) -> None:
        """Remove the whole library from this catalog (a failed copy), keeping its schema and library id."""
        for table in (pending_vectors, images, failures, roots):
            self.conn.execute(delete(table))
        self.conn.execute(delete(settings).where(settings.c.key != "library_id"))

    def finish_loading(self) -> None:
        """After `load_rows` with explicit ids: new images on a server must number on from the largest."""
        if self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('images', 'id'), COALESCE(MAX(id), 0) + 1, false) "
                "FROM images"
            )

    # -- a reindex (imgsearch.index.reindex) ----------------------------------------------------------------
    def begin_reindex(self, model_id: str, dim: int) -> bool:
        """Stage vectors of `model_id` from now on; an unfinished reindex to another model (or size) is
        dropped. Whether one to this model is resumed (its staged vectors kept)."""
        values = self._reindex_settings()
        if values.get("reindex_model") == model_id and values.get("reindex_dim") == str(dim):
            return True
        self.cancel_reindex()
        self._set("reindex_model", model_id)
        self._set("reindex_dim", str(dim))
        return False

    def stage_vectors(self, staged: Iterable[tuple[int, bytes, bytes]], precisions: Iterable[str]) -> None:
        """(image id, content hash the vector was made from, vector) of the reindex's model, made in
        `precisions`, beside the live vectors: nothing a query reads changes."""
        rows = [{"image_id": i, "content_hash": h, "vector": v} for i, h, v in staged]
        ids = [row["image_id"] for row in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self.conn.execute(delete(pending_vectors).where(pending_vectors.c.image_id.in_(chunk)))
        if rows:
            self.conn.execute(insert(pending_vectors), rows)
        known = set(filter(None, self._reindex_settings().get("reindex_numerics", "").split("+")))
        if not known.issuperset(precisions):
            self._set("reindex_numerics", "+".join(sorted(known.union(precisions))))

    def cancel_reindex(self) -> None:
        """Drop a pending reindex: its staged vectors and settings."""
        self.conn.execute(delete(pending_vectors))
        self.conn.execute(delete(settings).where(settings.c.key.in_(REINDEX_KEYS)))

    def finish_reindex(self) -> tuple[int, list[tuple[int, bytes]]]:
        """Switch the index to the pending reindex's model, in this transaction: every image whose staged
        vector describes its current bytes takes it, every other image leaves the index (it has no vector
        of the new model; one model per index), the model, size and numerics become the reindex's, and
        vectors_version moves on, so every machine's FAISS file is rebuilt. Call it last in the transaction.
        Returns (vector size, (id, path) of the images that left)."""
        values = self._reindex_settings()
        model_id, dim = values["reindex_model"], int(values["reindex_dim"])
        staged = (
            select(pending_vectors.c.vector)
            .where(
                pending_vectors.c.image_id == images.c.id,
                pending_vectors.c.content_hash == images.c.content_hash,
            )
            .scalar_subquery()
        )
        self.conn.execute(update(images).where(_staged_for_current_bytes()).values(vector=staged))
        unstaged = select(images.c.id, images.c.path).where(~_staged_for_current_bytes())
        left = [(int(r.id), bytes(r.path)) for r in self.conn.execute(unstaged)]
        self.remove_images(image_id for image_id, _ in left)
        self.cancel_reindex()
        self.set_model(model_id, dim)
        if values.get("reindex_numerics"):
            self._set("numerics", values["reindex_numerics"])
        else:
            self.conn.execute(delete(settings).where(settings.c.key == "numerics"))
        self.changes = VectorChanges()  # every vector changed: the FAISS index is built anew, not followed
        self._bump_vectors_version()
        return dim, left

    def _reindex_settings(self) -> dict[str, str]:
        return _settings_of(self.conn, REINDEX_KEYS)

    def forget_failures(self, paths: Iterable[bytes]) -> None:
        for path in paths:
            self._clear_failure(path)

    def _clear_failure(self, path: bytes) -> None:
        self.conn.execute(delete(failures).where(failures.c.path == path))

    def _finish(self) -> None:
        """What the transaction deferred: the failure rows of files now indexed, a round trip per 500 (not
        one per file: on a server each is a network round trip), and the vectors_version."""
        unfailed = list(self._unfailed)
        for start in range(0, len(unfailed), 500):
            self.conn.execute(delete(failures).where(failures.c.path.in_(unfailed[start : start + 500])))
        self._unfailed.clear()
        if self.changes:
            self._bump_vectors_version()

    def _set(self, key: str, value: str) -> None:
        self.conn.execute(delete(settings).where(settings.c.key == key))
        self.conn.execute(insert(settings).values(key=key, value=value))

    def _bump_vectors_version(self) -> None:
        current = self.conn.execute(select(settings.c.value).where(settings.c.key == "vectors_version"))
        self.version = int(current.scalar() or 0) + 1
        self._set("vectors_version", str(self.version))


_INSERT_IMAGE = insert(images)

_ROW_COLUMNS = (
    images.c.id,
    images.c.path,
    images.c.size,
    images.c.mtime_ns,
    images.c.content_hash,
    images.c.width,
    images.c.height,
    images.c.format,
    images.c.taken_at,
)


_MODEL = ("model", "dim")


def _settings_of(conn: Connection, keys: Iterable[str]) -> dict[str, str]:
    query = select(settings.c.key, settings.c.value).where(settings.c.key.in_(list(keys)))
    return {k: v for k, v in conn.execute(query)}


def _staged_for_current_bytes() -> Any:
    """For a query over images: the image has a staged vector made from the bytes it holds now."""
    return (
        exists()
        .where(pending_vectors.c.image_id == images.c.id)
        .where(pending_vectors.c.content_hash == images.c.content_hash)
    )


def _content_values(size: int, mtime_ns: int, content_hash: bytes, content: Content) -> dict[str, Any]:
    """The columns that describe a file's bytes, for a new row or a changed one."""
    return {
        "size": size,
        "mtime_ns": mtime_ns,
        "content_hash": content_hash,
        "width": content.width,
        "height": content.height,
        "format": content.format,
        "taken_at": content.taken_at,
        "indexed_at": time.time(),
        "vector": content.vector,
    }


def _under(column: Any, folder: bytes) -> Any:
    """Paths inside `folder`, as a byte range the path index can answer: prefix <= path < prefix + 1."""
    prefix = folder.rstrip(b"/") + b"/"
    upper = prefix[:-1] + bytes([prefix[-1] + 1])
    return ((column >= prefix) & (column < upper)) | (column == folder)


def _schema_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()


def fsync_path(path: Path) -> None:
    """Flush a file, or a folder's entries (a rename into it), to disk; where the OS cannot, go on."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def storage_error(e: Exception, folder: Path) -> ImgsearchError:
    """One clear error for a write the disk refused: read-only, full, or failing."""
    message = e.strerror if isinstance(e, OSError) and e.strerror else str(getattr(e, "orig", None) or e)
    try:
        fs = os.statvfs(folder)
        read_only, full = bool(fs.f_flag & os.ST_RDONLY), fs.f_bavail == 0
    except OSError:
        read_only = full = False
    denied = isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    if read_only or denied or "readonly" in message or "read-only" in message:
        return IndexReadOnly(f"the index at {folder} is read-only: changes cannot be saved")
    if full or "full" in message or "No space left" in message:
        return IndexWriteError(
            f"cannot write to the index at {folder}: the disk is full. Everything committed before is kept; "
            "free some space and run this again"
        )
    return IndexWriteError(f"cannot write to the index at {folder}: {' '.join(message.split())}")


def _wal_is_empty(path: Path) -> bool:
    """Whether the database file alone holds every committed transaction (no WAL, or an empty one)."""
    try:
        return os.path.getsize(f"{path}-wal") == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _immutable_engine(path: Path) -> Engine:
    """Read the database file without locks or a WAL index: for readers where none can be made."""
    uri = f"file:{urllib.parse.quote(os.fspath(path))}?mode=ro&immutable=1"
    engine = create_engine(
        "sqlite+pysqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
        poolclass=None,
    )
    _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    """WAL so readers never wait for the writer; explicit BEGIN so transactions mean what they say."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite's own handling is lax)
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        with contextlib.suppress(Exception):  # a read-only folder keeps whatever mode the file has
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("sqlite_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _after_prefix(prefix: bytes) -> bytes:
    """The smallest byte string above every string that starts with `prefix` (which ends below 0xff)."""
    return prefix[:-1] + bytes([prefix[-1] + 1])
