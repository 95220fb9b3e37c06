"""The FAISS index: a derived accelerator over the catalog's vectors, rebuilt from it whenever they disagree.

The file on disk is named after the catalog's `vectors_version` it was built from, and written atomically
(temp file, fsync, rename), so a reader either finds the file for the version it read or rebuilds in memory;
it never sees half a file. Scores are inner products of unit vectors: cosine similarities.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import faiss
import numpy as np

from .catalog import Catalog, VectorChanges

_FILE = re.compile(r"^vectors-(\d+)\.faiss$")


def vectors_file(home: Path, version: int) -> Path:
    return home / f"vectors-{version}.faiss"


class VectorIndex:
    """Exact inner-product search over (id, unit vector) pairs, ids being catalog image ids."""

    def __init__(self, dim: int, index: faiss.Index | None = None, version: int = 0):
        self.dim = dim
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.version = version

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, dim: int, ids: np.ndarray, vectors: np.ndarray, version: int) -> VectorIndex:
        index = cls(dim, version=version)
        if len(ids):
            index.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        return index

    @classmethod
    def load_or_rebuild(cls, catalog: Catalog, home: Path, dim: int, *, save: bool = True) -> VectorIndex:
        """The index for the catalog's vectors: the saved file if it matches, else rebuilt (and saved)."""
        version = catalog.vectors_version()
        path = vectors_file(home, version)
        if path.exists():
            try:
                index = faiss.read_index(str(path))
            except RuntimeError:  # unreadable or truncated: rebuild below
                index = None
            if index is not None and index.d == dim and index.ntotal == catalog.count():
                return cls(dim, index, version)
        version, ids, vectors = catalog.all_vectors(dim)
        rebuilt = cls.build(dim, ids, vectors, version)
        if save:
            with contextlib.suppress(OSError):  # a read-only index still answers, from memory
                rebuilt.save(home)
        return rebuilt

    def apply(self, changes: VectorChanges, version: int) -> None:
        """Follow one committed catalog transaction."""
        if changes.removed:
            self.index.remove_ids(np.fromiter(changes.removed, dtype=np.int64))  # type: ignore[arg-type]
        if changes.added:
            ids = np.fromiter(changes.added.keys(), dtype=np.int64, count=len(changes.added))
            vectors = np.frombuffer(b"".join(changes.added.values()), dtype=np.float32).reshape(-1, self.dim)
            self.index.add_with_ids(vectors, ids)
        self.version = version

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one query vector, optionally among `allowed` ids only; exact."""
        k = min(k, len(self) if allowed is None else len(allowed))
        if k <= 0:
            return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed.astype(np.int64)))  # type: ignore[call-arg]
        scores, ids = self.index.search(query.reshape(1, -1).astype(np.float32), k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def save(self, home: Path) -> Path:
        """Write atomically as vectors-<version>.faiss, then remove files of older versions (never newer ones:
        a reader that rebuilt a stale version must not delete the writer's newer file)."""
        target = vectors_file(home, self.version)
        fd, tmp = tempfile.mkstemp(prefix=".vectors-", suffix=".tmp", dir=home)
        try:
            os.close(fd)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the index from the database's readers
            faiss.write_index(self.index, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_dir(home)
        for old in home.iterdir():
            match = _FILE.match(old.name)
            if match and int(match.group(1)) < self.version:
                with contextlib.suppress(OSError):
                    old.unlink()
        return target


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
