"""Answer a query vector: exact top-k from FAISS (optionally in a folder), joined with catalog metadata."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Collection, Sequence

import numpy as np

from ..index.scan import absolute
from ..store.catalog import Catalog, ImageRow
from ..store.vectors import VectorIndex
from .match import Match
from .pairs import one_per_photo, siblings
from .query import Filters


def allowed_ids(catalog: Catalog, filters: Filters) -> np.ndarray | None:
    """The ids a filtered query may return (None: no filter). FAISS then searches only these, exactly."""
    if not filters.active:
        return None
    under = absolute(filters.under) if filters.under else None
    rows = catalog.ids_where(
        under, filters.after, filters.before, filters.min_width, filters.min_height, filters.formats
    )
    if filters.glob is not None:
        rows = [(i, p) for i, p in rows if fnmatch.fnmatchcase(os.fsdecode(p), filters.glob)]
    return np.fromiter((i for i, _ in rows), dtype=np.int64, count=len(rows))


def nearest(
    catalog: Catalog,
    vectors: VectorIndex,
    query: np.ndarray,
    top: int,
    allowed: np.ndarray | None = None,
    exclude: Collection[int] = (),
    min_score: float | None = None,
    sort: str = "score",
) -> list[Match]:
    """The `top` photos nearest to a unit query vector among the `allowed` ids (None: all), best first (or
    newest first with sort='date'), leaving out the ids in `exclude` (and their RAW+JPEG siblings) and
    scores below `min_score`. A RAW+JPEG pair is one result (see imgsearch.search.pairs)."""
    excluded = set(exclude)
    if excluded:  # a query by indexed photos: their RAW+JPEG siblings go too
        for group in siblings(catalog, (row.path for row in catalog.rows(excluded).values())).values():
            excluded.update(file_id for file_id, _ in group)
    want = top + len(excluded)
    while True:
        scores, ids = vectors.search(query, want, allowed)
        keep = [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if int(i) not in excluded]
        rows = catalog.rows(i for _, i in keep)
        ranked = [(score, rows[i]) for score, i in keep if i in rows]
        grouped = siblings(catalog, (row.path for _, row in ranked))
        photos = [ranked[p] for p in one_per_photo([row.path for _, row in ranked], grouped)]
        if len(photos) >= top or len(ids) < want:
            break
        want *= 2  # pairs took places: look further for the photos that fill them
    photos = photos[:top]
    if min_score is not None:
        photos = [(s, row) for s, row in photos if s >= min_score]
    matches = [_match(row, score, grouped.get(row.path, [])) for score, row in photos]
    if sort == "date":
        matches.sort(key=lambda m: m.date, reverse=True)
    return matches


def _match(row: ImageRow, score: float, others: Sequence[tuple[int, bytes]] = ()) -> Match:
    return Match(
        path=os.fsdecode(row.path),
        score=score,
        width=row.width,
        height=row.height,
        format=row.format,
        size=row.size,
        mtime=row.mtime_ns / 1e9,
        taken_at=row.taken_at,
        id=row.id,
        siblings=tuple(os.fsdecode(path) for _, path in others),
    )
