"""Where the catalog lives: a SQLite file in the index home (the default), or a PostgreSQL database that
several machines share. This module knows what differs between the two: the URL, the engine, the write lock,
the column types, and what a server's errors mean; the catalog's SQL is the same for both.

A PostgreSQL URL follows libpq: a password left out of it comes from PGPASSWORD or ~/.pgpass, and options such
as `sslmode=require` ride in its query string. The password is never shown: `shown` masks it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import BigInteger, Engine, Integer, LargeBinary, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from ..errors import DatabaseRefused, DatabaseUnavailable, ImgsearchError, IndexBusy, UsageError

if TYPE_CHECKING:
    from sqlalchemy import Connection

#: The catalog's file in an index home.
DB_FILE = "index.db"

#: Column types that differ between the dialects, chosen here for the schema and the migrations alike.
#: SQLite's INTEGER is 64-bit (and must stay INTEGER for an autoincrement key); PostgreSQL's is 32-bit, too
#: small for file sizes and nanosecond times. LargeBinary is BLOB on SQLite and bytea on PostgreSQL.
BIG_INTEGER = BigInteger().with_variant(Integer(), "sqlite")
BYTES = LargeBinary()

#: The session advisory lock one writer holds on a PostgreSQL catalog (advisory locks are per database).
WRITER_LOCK_KEY = 0x696D6773  # "imgs"
#: The transaction lock that lets one process at a time migrate a PostgreSQL catalog.
MIGRATION_LOCK_KEY = 0x696D6D67

_CONNECT_DEFAULTS = {"connect_timeout": 10, "application_name": "imgsearch"}
_BUSY = "another imgsearch process is writing to {where}; wait for it to finish and run this again"


class WriteLock(Protocol):
    """A held write lock. On a server, `connection` is the session that holds it: the writer writes through
    it, so a writer whose session is lost (a server restart) cannot go on writing without its lock."""

    connection: Connection | None

    def release(self) -> None: ...


@dataclass(frozen=True)
class Database:
    """A catalog's address: a SQLAlchemy URL for SQLite (a file) or PostgreSQL (through psycopg 3)."""

    url: URL

    @classmethod
    def sqlite_file(cls, path: Path) -> Database:
        return cls(URL.create("sqlite+pysqlite", database=os.fspath(path)))

    @classmethod
    def parse(cls, value: str | None, home: Path) -> Database:
        """`--db` / IMGSEARCH_DB: a PostgreSQL URL, a sqlite:/// URL or a path (a SQLite file, or a folder to
        hold index.db), or nothing (the home's own file)."""
        if not value:
            return cls.sqlite_file(home / DB_FILE)
        if "://" not in value:
            path = Path(value).expanduser().absolute()
            return cls.sqlite_file(path / DB_FILE if path.is_dir() or not path.suffix else path)
        try:
            url = make_url(value)
        except (ArgumentError, ValueError):
            raise UsageError(
                f"--db: not a database URL: {_mask_text(value)!r}; "
                "e.g. postgresql://USER@HOST/DBNAME or sqlite:///PATH/index.db"
            ) from None
        backend = url.get_backend_name()
        if backend in ("postgresql", "postgres"):
            return cls(url.set(drivername="postgresql+psycopg"))
        if backend == "sqlite" and url.database and url.database != ":memory:":
            path = Path(url.database).expanduser().absolute()
            return cls.sqlite_file(path / DB_FILE if path.is_dir() else path)
        raise UsageError(
            f"--db: imgsearch keeps its catalog in PostgreSQL or a SQLite file, not {url.drivername!r}; "
            "e.g. postgresql://USER@HOST/DBNAME or sqlite:///PATH/index.db"
        )

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def file(self) -> Path | None:
        """The SQLite file, None for a server database."""
        return Path(self.url.database or "") if self.is_sqlite else None

    @property
    def shown(self) -> str:
        """For people: the SQLite file, or the URL with its password masked."""
        if self.file is not None:
            return os.fspath(self.file)
        return self.url.set(drivername="postgresql").render_as_string(hide_password=True)

    @property
    def place(self) -> str:
        """'at FOLDER' or 'in the database NAME on HOST:PORT', for messages."""
        if self.file is not None:
            return f"at {self.file.parent}"
        return f"in the database {self.url.database or '(default)'} on {self.server}"

    def where(self) -> str:
        """'the index at FOLDER' or 'the index in the database NAME on HOST:PORT', for messages."""
        return f"the index {self.place}"

    @property
    def server(self) -> str:
        host = self.url.host or os.environ.get("PGHOST") or "the local socket"
        return f"{host}:{self.url.port}" if self.url.port else host

    def engine(self) -> Engine:
        """A new engine for a server database; pre-ping so a pool outlives a server restart."""
        assert self.file is None, "SQLite engines are made by the catalog (its pragmas, its fallbacks)"
        return create_engine(
            self.url,
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=28,  # a household's concurrent searches in `serve`, each holding one briefly
            # defaults only: what the URL's query string says wins (libpq's own options)
            connect_args={k: v for k, v in _CONNECT_DEFAULTS.items() if k not in self.url.query},
        )

    # -- the write lock -------------------------------------------------------------------------------------
    def write_lock(self, engine: Engine | None) -> WriteLock:
        """One writer at a time, or IndexBusy at once: a lock file beside a SQLite file, a session advisory
        lock on a server (which the server frees when the writer's connection ends, even by SIGKILL)."""
        if self.file is not None:
            return _FileLock(self.file.parent, self.where())
        assert engine is not None
        return _AdvisoryLock(engine, self)

    # -- errors ---------------------------------------------------------------------------------------------
    def error(self, e: DBAPIError) -> ImgsearchError:
        """One line for what a server said: down, lost, refused login, no database, no permission."""
        return server_error(e, self)


class _AdvisoryLock:
    def __init__(self, engine: Engine, database: Database):
        try:
            conn = engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": WRITER_LOCK_KEY})
            held = bool(got.scalar())
            conn.commit()  # a session lock outlives the transaction that took it
        except DBAPIError as e:
            raise database.error(e) from e
        if not held:
            conn.close()
            raise IndexBusy(_BUSY.format(where=database.where()))
        self.connection: Connection | None = conn

    def release(self) -> None:
        """Unlock and hand the connection back; a connection already lost has lost its lock too."""
        conn, self.connection = self.connection, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": WRITER_LOCK_KEY})
            conn.commit()
            conn.close()
        except DBAPIError:
            conn.invalidate()


class _FileLock:
    connection: Connection | None = None  # SQLite's own locks keep a second writer's transaction out

    def __init__(self, folder: Path, where: str):
        from filelock import FileLock, Timeout

        from .catalog import storage_error

        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.lock = FileLock(folder / "write.lock")
            self.lock.acquire(timeout=0)
        except Timeout:
            raise IndexBusy(_BUSY.format(where=where)) from None
        except OSError as e:
            raise storage_error(e, folder) from e

    def release(self) -> None:
        self.lock.release()


def take_migration_lock(conn: Connection) -> None:
    """Within a migration's transaction on a server: wait for any other process migrating the same one."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


# -- what a server's errors mean ----------------------------------------------------------------------------
_LOST = re.compile(
    r"server closed the connection|terminating connection|consuming input failed|connection is (closed|lost)"
    r"|connection (was )?reset|SSL connection has been closed|no connection to the server|could not receive",
    re.I,
)
_DOWN = re.compile(
    r"connection refused|could not connect|timeout expired|could not translate host name|"
    r"no such file or directory|name or service not known|network is unreachable|no route to host",
    re.I,
)
_RESTARTING = re.compile(r"the database system is (starting up|shutting down|in recovery mode)", re.I)
_LOGIN = re.compile(r"password authentication failed|no password supplied|authentication failed", re.I)


def server_error(e: DBAPIError, database: Database) -> ImgsearchError:
    orig: Any = e.orig
    state = getattr(orig, "sqlstate", None) or ""
    detail = " ".join(str(orig).split()) if orig is not None else str(e)
    user = database.url.username or os.environ.get("PGUSER") or "(default)"
    name = database.url.database or "(default)"
    where = database.where()
    if state.startswith("28") or _LOGIN.search(detail):
        return DatabaseRefused(
            f"the database server {database.server} refused user {user}: authentication failed; "
            "check the password (in the URL, PGPASSWORD or ~/.pgpass)"
        )
    if state == "3D000" or re.search(r'database ".*" does not exist', detail):
        return DatabaseRefused(
            f"the database {name} does not exist on {database.server}: create it first, "
            f"e.g. `createdb -h {database.url.host or 'HOST'} -U {user} {name}`"
        )
    if state == "42501" or "permission denied" in detail.lower():
        return DatabaseRefused(
            f"user {user} has no permission to create or change the tables of {where}: "
            f"ask its owner for it (GRANT CREATE ON SCHEMA public TO {user}), or use a database you own"
        )
    if _RESTARTING.search(detail) or state == "57P03":
        return DatabaseUnavailable(
            f"the database server {database.server} is starting or shutting down: work committed before "
            "is kept; run this again once it is back"
        )
    lost = e.connection_invalidated and not _DOWN.search(detail)
    if state in ("57P01", "57P02") or _LOST.search(detail) or lost:
        return DatabaseUnavailable(
            f"lost the connection to {where}: work committed before is kept; "
            "run this again once the server is back"
        )
    if _DOWN.search(detail) or state.startswith("08"):
        return DatabaseUnavailable(
            f"cannot reach the database server {database.server}: is it running, and does --db "
            f"(or IMGSEARCH_DB) name it? ({_mask_text(detail.removeprefix('connection failed: '))[:160]})"
        )
    return DatabaseUnavailable(f"{where} failed: {_mask_text(detail)[:300]}")


def _mask_text(value: str) -> str:
    """A URL's password, wherever it appears in a text, as ***."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", re.sub(r"(password=)\S+", r"\1***", value))
