"""Moving a library's catalog to another database (SQLite to PostgreSQL and back), re-encoding nothing.

Every row and vector is copied from one snapshot of the source, under the source's write lock (so nothing
changes it meanwhile), and the copy is checked equal (rows per table and a digest of every row) before it
counts. An interrupted copy leaves no half library that looks whole: a SQLite target is written to a
temporary file renamed into place at the end; a server target is filled in one transaction, so it is either
complete or holds no library at all.

An unfinished reindex (imgsearch.index.reindex) is deliberately left behind: its staged vectors and settings
are not copied (the copy is the library as queries see it, with its current model); the report says so,
and `imgsearch reindex` on the copy does it again.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import CopyMismatch, UsageError
from .catalog import Catalog, PendingReindex
from .database import Database


@dataclass(frozen=True)
class CopyReport:
    source: str
    target: str
    counts: dict[str, int]  # rows per table: images, roots, failures
    seconds: float
    left_behind: PendingReindex | None = None  # an unfinished reindex of the source, not copied

    def summary(self) -> str:
        n = self.counts
        line = (
            f"copied {n.get('images', 0):,} images, {n.get('roots', 0)} folders and "
            f"{n.get('failures', 0)} failed files to {self.target} in {self.seconds:.1f} s; "
            "checked equal: every row and vector"
        )
        if self.left_behind is not None:
            model = self.left_behind.model
            line += (
                f". The unfinished reindex to {model} ({self.left_behind.staged:,} vectors staged) was not "
                f"copied: run `imgsearch reindex --model {model}` on the copy"
            )
        return line


def copy_catalog(source: Database, target: Database, home: Path) -> CopyReport:
    """Copy the catalog in `source` into `target`, which must hold no library yet."""
    if source.url == target.url:
        raise UsageError(f"--to names the database this library is already in: {target.shown}")
    started = time.perf_counter()
    catalog = Catalog.open(source)
    try:
        lock = catalog.write_lock()
        try:
            if catalog.model() is None:
                raise UsageError(f"{source.where()} has no images yet: nothing to copy")
            wanted = catalog.fingerprint()
            left_behind = catalog.pending_reindex()
            if target.file is not None:
                _copy_to_file(catalog, target.file, wanted)
            else:
                _copy_to_server(catalog, target, wanted)
        finally:
            lock.release()
    finally:
        catalog.close()
    seconds = time.perf_counter() - started
    return CopyReport(source.shown, target.shown, wanted[0], seconds, left_behind)


def _fill(source: Catalog, target: Catalog) -> None:
    with target.write() as writer:
        for table, rows in source.table_rows():
            writer.load_rows(table, rows)
        writer.finish_loading()


def _check(target: Catalog, wanted: tuple[dict[str, int], str], shown: str) -> None:
    got = target.fingerprint()
    if got != wanted:
        raise CopyMismatch(
            f"the copy in {shown} differs from the source ({got[0]} rows, not {wanted[0]}): it was not kept"
        )


def _copy_to_file(source: Catalog, path: Path, wanted: tuple[dict[str, int], str]) -> None:
    if path.exists():
        raise UsageError(f"{path} already exists: copy to a new file, or a folder without an index.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".index-copy-", suffix=".db")
    os.close(fd)
    os.unlink(tmp)  # SQLite makes the file; a name nobody else takes is all we needed
    try:
        copy = Catalog.open(Database.sqlite_file(Path(tmp)), create=True)
        try:
            _fill(source, copy)
            _check(copy, wanted, str(path))
        finally:
            copy.close()
        os.replace(tmp, path)  # whole or not at all
    finally:
        for leftover in (tmp, f"{tmp}-wal", f"{tmp}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _copy_to_server(source: Catalog, target: Database, wanted: tuple[dict[str, int], str]) -> None:
    copy = Catalog.open(target, create=True)
    try:
        lock = copy.write_lock()
        try:
            if copy.model() is not None or copy.count():
                raise UsageError(
                    f"{target.where()} already holds a library ({copy.count():,} images): "
                    "copy into an empty database"
                )
            _fill(source, copy)
            try:
                _check(copy, wanted, target.shown)
            except CopyMismatch:
                with copy.write() as writer:
                    writer.clear()
                raise
        finally:
            lock.release()
    finally:
        copy.close()
