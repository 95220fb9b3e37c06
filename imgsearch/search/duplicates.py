"""Groups of duplicate images, from what the index already holds: content hashes and stored vectors.

Files with equal content hashes are byte-identical (exact). Near duplicates (resized, recompressed, lightly
edited copies) are pairs whose stored vectors have a cosine of at least the threshold, found by FAISS range
search. Pairs chain into groups (single linkage): a~b and b~c make one group even when a and c are further
apart. Nothing is encoded, so the model is never loaded.

numpy and faiss are imported only when groups are searched for, so the CLI can show DEFAULT_THRESHOLD in
its help without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    import faiss
    import numpy as np

    from ..store.catalog import Catalog
    from ..store.vectors import VectorIndex

#: The cosine above which two images count as copies of one another (see the README for how it was chosen).
DEFAULT_THRESHOLD = 0.97

_QUERY_BATCH = 1024  # query vectors per range search, so memory stays bounded however large the library
_ROUNDING = 1e-6  # float32 cosines of identical unit vectors land just under 1.0


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of one another, in path order.

    `kind` is "exact" when every file has the same bytes, else "near" (a near group may also contain
    byte-identical files; they are not marked apart). `score` is the group's weakest link: the group stays
    whole at every threshold up to it; 1.0 for an exact group.
    """

    kind: str
    score: float
    paths: list[str]

    @property
    def raw_paths(self) -> list[bytes]:
        """The paths as the file system spells them (bytes), for names that are not valid UTF-8."""
        return [os.fsencode(p) for p in self.paths]

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "score": round(self.score, 6), "paths": self.paths}


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:  # written this way round so NaN is refused too
        raise UsageError(f"--threshold must be above 0 and at most 1, got {threshold}")


def find_duplicates(
    catalog: Catalog, vectors: VectorIndex, threshold: float = DEFAULT_THRESHOLD, under: bytes | None = None
) -> list[DuplicateGroup]:
    """Every group of duplicates (under a folder), largest first, then the closest copies first."""
    import faiss
    import numpy as np

    check_threshold(threshold)
    files = catalog.paths_and_hashes(under)
    index = vectors.exact_index()  # every pair compared, also when queries use an approximate index
    held = faiss.vector_to_array(index.id_map)
    # Only ids both stores know: a writer may have committed between reading one and the other.
    ids = np.intersect1d(held, np.fromiter(files, dtype=np.int64, count=len(files)))
    hashes = [files[i][1] for i in ids.tolist()]
    links = [_exact_links(hashes)]
    links += _near_links(index, ids, threshold, restrict=len(ids) < len(held))
    scores, left, right = (np.concatenate(parts) for parts in zip(*links, strict=True))
    groups = []
    for members, score in _connect(scores, left, right):
        paths = sorted(files[int(ids[m])][0] for m in members)
        exact = len({hashes[m] for m in members}) == 1
        groups.append(
            DuplicateGroup(
                "exact" if exact else "near", 1.0 if exact else score, [os.fsdecode(p) for p in paths]
            )
        )
    groups.sort(key=lambda g: (-len(g.paths), -g.score, g.raw_paths[0]))
    return groups


def _exact_links(hashes: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score 1.0, first, other) linking every file to the first one with the same bytes."""
    import numpy as np

    first: dict[bytes, int] = {}
    left, right = [], []
    for position, digest in enumerate(hashes):
        seen = first.setdefault(digest, position)
        if seen != position:
            left.append(seen)
            right.append(position)
    return (
        np.ones(len(left), dtype=np.float32),
        np.array(left, dtype=np.int64),
        np.array(right, dtype=np.int64),
    )


def _near_links(
    index: faiss.Index, ids: np.ndarray, threshold: float, restrict: bool
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(cosine, position, position) of every pair at or above the threshold, each pair once; positions
    index `ids`. With `restrict`, FAISS answers only among `ids` (a folder)."""
    import faiss
    import numpy as np

    params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(ids)) if restrict else None  # type: ignore[call-arg]
    radius = threshold - _ROUNDING  # FAISS keeps scores strictly above the radius
    links = []
    for start in range(0, len(ids), _QUERY_BATCH):
        batch = ids[start : start + _QUERY_BATCH]
        queries = index.reconstruct_batch(batch)
        limits, scores, found = index.range_search(queries, radius, params=params)
        query_ids = np.repeat(batch, np.diff(limits).astype(np.int64))
        once = found > query_ids  # each pair once (it is found from both ends), never an image with itself
        scores, query_ids, found = scores[once], query_ids[once], found[once]
        found_positions = np.minimum(np.searchsorted(ids, found), len(ids) - 1)
        known = ids[found_positions] == found  # FAISS may hold an id the catalog no longer has
        query_positions = np.searchsorted(ids, query_ids)
        links.append((np.minimum(scores[known], 1.0), query_positions[known], found_positions[known]))
    return links


def _connect(scores: np.ndarray, left: np.ndarray, right: np.ndarray) -> list[tuple[list[int], float]]:
    """Connected groups of linked positions (union-find), each with its weakest link.

    Links are joined strongest first (Kruskal's maximum spanning tree), so the link that last joins two
    parts of a group is the lowest threshold at which the group still holds together.
    """
    import numpy as np

    parent: dict[int, int] = {}
    weakest: dict[int, float] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    order = np.argsort(-scores, kind="stable")
    for score, a, b in zip(scores[order].tolist(), left[order].tolist(), right[order].tolist(), strict=True):
        root_a, root_b = root(a), root(b)
        if root_a != root_b:
            parent[root_b] = root_a
            weakest[root_a] = score
            weakest.pop(root_b, None)
    members: dict[int, list[int]] = {}
    for node in list(parent):
        members.setdefault(root(node), []).append(node)
    return [(group, weakest[top]) for top, group in members.items()]
