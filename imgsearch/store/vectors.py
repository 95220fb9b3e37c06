"""The FAISS index: a derived accelerator over the catalog's vectors, rebuilt from it whenever they disagree.

The file on disk is named after the catalog's `vectors_version` it was built from, and written atomically
(temp file, fsync, rename), so a reader either finds the file for the version it read or rebuilds in memory;
it never sees half a file. Scores are inner products of unit vectors: cosine similarities.

The index is exact (a flat index) for smaller libraries and IVF-Flat, approximate for unfiltered queries,
for large ones; the writer switches between them (`fit`), readers search whatever the current file holds.
Readers memory-map it: see imgsearch.store.ann for the trade-offs.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np

from ..errors import ImgsearchError
from . import ann
from .catalog import Catalog, VectorChanges, fsync_path, storage_error

_FILE = re.compile(r"^vectors-(\d+)\.faiss$")


def vectors_file(home: Path, version: int) -> Path:
    return home / f"vectors-{version}.faiss"


class VectorIndex:
    """Inner-product search over (id, unit vector) pairs, ids being catalog image ids: exact, or IVF-Flat
    (approximate unless asked for exact) once the writer has trained one for a large library."""

    def __init__(self, dim: int, index: faiss.Index | None = None, version: int = 0):
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.version = version
        self.unsaved = index is None  # differs from its file: an unchanged index is not written again

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def approximate(self) -> bool:
        return ann.is_ivf(self.index)

    def describe(self) -> str:
        """'exact', or the IVF index's shape: for `imgsearch status`."""
        return ann.describe(self.index)

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, vectors: np.ndarray, version: int) -> VectorIndex:
        index = cls(dim, version=version)
        if len(ids):
            index.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        index.unsaved = True
        return index

    @classmethod
    def load_or_rebuild(
        cls, catalog: Catalog, home: Path, dim: int, *, save: bool = True, mmap: bool = False
    ) -> VectorIndex:
        """The index for the catalog's vectors: the saved file if it matches, else rebuilt (and saved) as an
        exact index; a rebuild never trains. `mmap` (readers only: the index must not change) maps the
        file instead of reading it, so opening it costs milliseconds at any size."""
        version = catalog.vectors_version()
        path = vectors_file(home, version)
        if path.exists():
            try:
                index = read(path, mmap)
            except (RuntimeError, OSError):  # unreadable or truncated: rebuild below
                index = None
            if index is not None and index.d == dim and index.ntotal == catalog.count():
                return cls(dim, index, version)
        version, ids, vectors = catalog.all_vectors(dim)
        rebuilt = cls.build(dim, ids, vectors, version)
        if save:
            with contextlib.suppress(OSError, ImgsearchError):  # a read-only index still answers, from memory
                rebuilt.save(home)
        return rebuilt

    def fit(self, threshold: int | None = None) -> str | None:
        """Writer only, after its changes are committed: make the index the kind its size calls for
        (imgsearch.store.ann.plan). Returns what it did ('ivf': trained, 'exact': back to exact) or None.
        Training takes 1-2 minutes at a million images on 2 cores; queries meanwhile use the saved file."""
        todo = ann.plan(self.index, len(self), threshold)
        self.unsaved |= todo is not None
        if todo == "ivf":
            self.index = ann.train_ivf(self.index)
        elif todo == "exact":
            self.index = ann.flat_from(self.index)
        return todo

    def exact_index(self) -> faiss.IndexIDMap2:
        """This index as an exact IndexIDMap2 (itself, or a copy of an IVF index's vectors), for work that
        needs every pair compared (duplicates)."""
        if isinstance(self.index, faiss.IndexIDMap2):
            return self.index
        return ann.flat_from(self.index)

    def apply(self, changes: VectorChanges, version: int) -> None:
        """Follow one committed catalog transaction."""
        if changes.removed:
            self.index.remove_ids(np.fromiter(changes.removed, dtype=np.int64))  # type: ignore[arg-type]
        if changes.added:
            ids = np.fromiter(changes.added.keys(), dtype=np.int64, count=len(changes.added))
            vectors = np.frombuffer(b"".join(changes.added.values()), dtype=np.float32).reshape(-1, self.dim)
            self.index.add_with_ids(vectors, ids)
        self.version = version
        self.unsaved = True

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one query vector, optionally among `allowed` ids only. Exact, except on an
        IVF index for an unfiltered or broadly filtered query (see imgsearch.store.ann.search_params); a
        narrow filter is exact either way. One thread: for one query, a second costs more than it gives."""
        k = min(k, len(self) if allowed is None else len(allowed))
        if k <= 0:
            return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
        params = ann.search_params(self.index, allowed)
        with _one_thread():
            scores, ids = self.index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def save(self, home: Path) -> Path:
        """Write atomically as vectors-<version>.faiss, then remove files of older versions (never newer ones:
        a reader that rebuilt a stale version must not delete the writer's newer file)."""
        target = vectors_file(home, self.version)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".vectors-", suffix=".tmp", dir=home)
        except OSError as e:
            raise storage_error(e, home) from e
        try:
            os.close(fd)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the index from the database's readers
            faiss.write_index(self.index, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(e, (OSError, RuntimeError)):  # faiss reports a failed write as RuntimeError
                raise storage_error(e, home) from e
            raise
        fsync_path(home)
        self.unsaved = False
        for old in home.iterdir():
            match = _FILE.match(old.name)
            if match and int(match.group(1)) < self.version:
                with contextlib.suppress(OSError):
                    old.unlink()
        return target


def read(path: Path, mmap: bool = False) -> faiss.Index:
    """Read an index file; with `mmap`, map an IVF index's lists or an exact index's vectors instead of
    reading them (faiss takes one flag or the other, by index type: the file's first 4 bytes say which)."""
    flags = 0
    if mmap:
        with open(path, "rb") as f:
            flags = faiss.IO_FLAG_MMAP if f.read(4) == b"IwFl" else faiss.IO_FLAG_MMAP_IFC
    index = faiss.read_index(str(path), flags)
    if mmap and isinstance(index, faiss.IndexIVF) and index.invlists is not None:
        # mapped lists come as OnDiskInvertedLists, which start 32 threads per search to read ahead the
        # lists to scan: measured 2x slower for one query, 7x for an exact (every list) filtered one
        faiss.downcast_InvertedLists(index.invlists).prefetch_nthread = 0  # type: ignore[attr-defined]
    return index


def describe_file(path: Path) -> str:
    """'exact' or the IVF index's shape, from the saved file (mapped, so cheap at any size)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"IwFl":
                return "exact"
        return ann.describe(read(path, mmap=True))
    except (RuntimeError, OSError):
        return "unreadable (rebuilt from the database on the next query)"


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def remove_stale_temp_files(home: Path) -> None:
    """Delete the temp files of saves that were killed mid-write (each as big as the index). Only the writer
    calls this, under the write lock; a reader whose temp file goes keeps its rebuilt index in memory."""
    for tmp in home.glob(".vectors-*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
