"""Answer a query vector: exact top-k from FAISS (optionally in a folder), joined with catalog metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .store.catalog import Catalog, ImageRow
from .store.vectors import VectorIndex


@dataclass(frozen=True)
class Match:
    """One result. `score` is the cosine similarity between the query and the image."""

    path: str
    score: float
    width: int
    height: int
    format: str
    size: int
    mtime: float
    taken_at: float | None

    @property
    def raw_path(self) -> bytes:
        """The path as the file system spells it (bytes), for names that are not valid UTF-8."""
        return os.fsencode(self.path)

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "score": round(self.score, 6),
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "size": self.size,
            "mtime": self.mtime,
            "taken_at": self.taken_at,
        }


def nearest(
    catalog: Catalog,
    vectors: VectorIndex,
    query: np.ndarray,
    top: int,
    under: bytes | None = None,
    exclude: int | None = None,
) -> list[Match]:
    """The `top` images nearest to a unit query vector, best first, optionally only under a folder."""
    allowed = catalog.ids_under(under) if under is not None else None
    want = top + (1 if exclude is not None else 0)
    scores, ids = vectors.search(query, want, allowed)
    keep = [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if int(i) != exclude][:top]
    rows = catalog.rows(i for _, i in keep)
    return [_match(rows[i], score) for score, i in keep if i in rows]


def _match(row: ImageRow, score: float) -> Match:
    return Match(
        path=os.fsdecode(row.path),
        score=score,
        width=row.width,
        height=row.height,
        format=row.format,
        size=row.size,
        mtime=row.mtime_ns / 1e9,
        taken_at=row.taken_at,
    )
