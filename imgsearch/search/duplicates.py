"""Groups of duplicate images, from what the index already holds: content hashes and stored vectors.

Files with equal content hashes are byte-identical (exact). Near duplicates (resized, recompressed, lightly
edited copies) are pairs whose stored vectors have a cosine of at least the threshold, found by FAISS range
search. Pairs chain into groups (single linkage): a~b and b~c make one group even when a and c are further
apart. Nothing is encoded, so the model is never loaded.

Every group names its sets of byte-identical files (`exact`), also inside a near group, and keeps the links
that join it (`links`: its maximum spanning tree, strongest first), so a caller can show why two images
are in one group. `exact_groups` turns the groups into the byte-identical sets alone.

numpy and faiss are imported only when groups are searched for, so the CLI can show DEFAULT_THRESHOLD in
its help without them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import UsageError
from .pairs import paired

if TYPE_CHECKING:
    import faiss
    import numpy as np

    from ..store.catalog import Catalog
    from ..store.vectors import VectorIndex

#: The cosine above which two images count as copies of one another (see the README for how it was chosen).
DEFAULT_THRESHOLD = 0.97

_QUERY_BATCH = 1024  # query vectors per range search, so memory stays bounded however large the library
_ROUNDING = 1e-6  # float32 cosines of identical unit vectors land just under 1.0


def _same(path: str) -> str:
    return path


@dataclass(frozen=True)
class Link:
    """Two images of a group joined directly: `exact` when they have the same bytes (score 1.0), else
    their vectors' cosine, at least the threshold. `paths` are in path order."""

    paths: tuple[str, str]
    score: float
    exact: bool

    def to_dict(self, show: Callable[[str], str] = _same) -> dict[str, object]:
        return {"paths": [show(p) for p in self.paths], "score": round(self.score, 6), "exact": self.exact}


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are copies of one another, in path order.

    `kind` is "exact" when every file has the same bytes, else "near". `score` is the group's weakest link:
    the group stays whole at every threshold up to it; 1.0 for an exact group. `exact` lists every set of
    byte-identical files in the group (largest first; the whole group when its kind is "exact"), so exact
    copies are named also inside a near group. `links` are the links that join the group, strongest first:
    the maximum spanning tree of its pairs (len(paths) - 1 of them), the weakest of which is `score`.
    """

    kind: str
    score: float
    paths: list[str]
    exact: list[list[str]] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)

    @property
    def raw_paths(self) -> list[bytes]:
        """The paths as the file system spells them (bytes), for names that are not valid UTF-8."""
        return [os.fsencode(p) for p in self.paths]

    def shown(self, show: Callable[[str], str]) -> DuplicateGroup:
        """The same group with every path rewritten by `show` (a reader's mount points)."""
        return DuplicateGroup(
            self.kind,
            self.score,
            [show(p) for p in self.paths],
            [[show(p) for p in copies] for copies in self.exact],
            [Link((show(k.paths[0]), show(k.paths[1])), k.score, k.exact) for k in self.links],
        )

    def to_dict(self, links: bool = False, show: Callable[[str], str] = _same) -> dict[str, object]:
        """kind, score, paths and exact; with `links`, the links too. `show` rewrites every path (for
        display)."""
        item: dict[str, object] = {
            "kind": self.kind,
            "score": round(self.score, 6),
            "paths": [show(p) for p in self.paths],
            "exact": [[show(p) for p in copies] for copies in self.exact],
        }
        if links:
            item["links"] = [link.to_dict(show) for link in self.links]
        return item


def exact_groups(groups: Iterable[DuplicateGroup]) -> list[DuplicateGroup]:
    """Every set of byte-identical files among `groups`, each as an "exact" group of its own with its exact
    links, largest first: the answer to "which files have the same bytes?", whatever the threshold."""
    found = []
    for group in groups:
        for copies in group.exact:
            members = set(copies)
            links = [link for link in group.links if link.exact and members.issuperset(link.paths)]
            found.append(DuplicateGroup("exact", 1.0, copies, [copies], links))
    return sorted(found, key=_order)


def _order(group: DuplicateGroup) -> tuple[int, float, bytes]:
    """Largest first, then the closest copies first, then by path."""
    return -len(group.paths), -group.score, group.raw_paths[0]


def check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:  # written this way round so NaN is refused too
        raise UsageError(f"--threshold must be above 0 and at most 1, got {threshold}")


def find_duplicates(
    catalog: Catalog,
    vectors: VectorIndex,
    threshold: float = DEFAULT_THRESHOLD,
    under: bytes | None = None,
    exact_only: bool = False,
) -> list[DuplicateGroup]:
    """Every group of duplicates (under a folder), largest first, then the closest copies first. With
    `exact_only`, only the sets of byte-identical files: content hashes alone, no vectors compared."""
    import faiss
    import numpy as np

    check_threshold(threshold)
    files = catalog.paths_and_hashes(under)
    index = vectors.exact_index()  # every pair compared, also when queries use an approximate index
    held = faiss.vector_to_array(index.id_map)
    # Only ids both stores know: a writer may have committed between reading one and the other.
    ids = np.intersect1d(held, np.fromiter(files, dtype=np.int64, count=len(files)))
    paths = [files[i][0] for i in ids.tolist()]
    hashes = [files[i][1] for i in ids.tolist()]
    links = [_exact_links(hashes)]
    if not exact_only:
        near = _near_links(index, ids, threshold, len(ids) < len(held))
        links += [_not_paired(part, paths) for part in near]
    scores, left, right = (np.concatenate(parts) for parts in zip(*links, strict=True))
    groups = [_group(members, tree, paths, hashes) for members, tree in _connect(scores, left, right)]
    return sorted(groups, key=_order)


def _not_paired(
    links: tuple[np.ndarray, np.ndarray, np.ndarray], paths: list[bytes]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The links that do not join two files of one RAW+JPEG photo (see imgsearch.search.pairs): such files
    are one photo, not copies of it."""
    import numpy as np

    scores, left, right = links
    keep = np.array(
        [not paired(paths[a], paths[b]) for a, b in zip(left.tolist(), right.tolist(), strict=True)],
        dtype=bool,
    )
    return scores[keep], left[keep], right[keep]


def _group(
    members: list[int], tree: list[tuple[float, int, int]], paths: list[bytes], hashes: list[bytes]
) -> DuplicateGroup:
    """The group of these positions (of `paths` and `hashes`), joined by the links of `tree`."""
    by_hash: dict[bytes, list[bytes]] = {}
    for m in sorted(members, key=paths.__getitem__):
        by_hash.setdefault(hashes[m], []).append(paths[m])
    exact = sorted((copies for copies in by_hash.values() if len(copies) > 1), key=lambda c: (-len(c), c))
    links = []
    for score, a, b in tree:
        same = hashes[a] == hashes[b]
        first, second = sorted((paths[a], paths[b]))
        links.append(Link((os.fsdecode(first), os.fsdecode(second)), 1.0 if same else score, same))
    links.sort(key=lambda link: (not link.exact, -link.score, [os.fsencode(p) for p in link.paths]))
    kind = "exact" if len(by_hash) == 1 else "near"
    return DuplicateGroup(
        kind,
        min(link.score for link in links),  # the weakest link: 1.0 for an exact group
        [os.fsdecode(p) for p in sorted(paths[m] for m in members)],
        [[os.fsdecode(p) for p in copies] for copies in exact],
        links,
    )


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


def _connect(
    scores: np.ndarray, left: np.ndarray, right: np.ndarray
) -> list[tuple[list[int], list[tuple[float, int, int]]]]:
    """Connected groups of linked positions (union-find), each with the links that joined it.

    Links are joined strongest first (Kruskal's maximum spanning tree): each group keeps the links that
    joined two of its parts (score, position, position), strongest first, and the last of them, its
    weakest, is the lowest threshold at which the group still holds together.
    """
    import numpy as np

    parent: dict[int, int] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    tree = []
    order = np.argsort(-scores, kind="stable")
    for score, a, b in zip(scores[order].tolist(), left[order].tolist(), right[order].tolist(), strict=True):
        root_a, root_b = root(a), root(b)
        if root_a != root_b:
            parent[root_b] = root_a
            tree.append((score, a, b))
    members: dict[int, list[int]] = {}
    for node in list(parent):
        members.setdefault(root(node), []).append(node)
    joined: dict[int, list[tuple[float, int, int]]] = {}
    for link in tree:
        joined.setdefault(root(link[1]), []).append(link)
    return [(group, joined[top]) for top, group in members.items()]
