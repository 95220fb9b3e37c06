"""RAW+JPEG pairs: a camera RAW and the files beside it with the same name are one photo.

This follows Lightroom Classic's default (its "Treat JPEG files next to raw files as separate photos" is
off): IMG_0001.CR2 and IMG_0001.JPG in one folder, shot together, are one photo. Both files are indexed,
so each can be asked for (`--type jpeg`, `--type raw`) and each stays current, but a list of results shows
the photo once: by its best-scoring file, naming the others as its siblings. A photo's siblings never
appear as results of a query by that photo, and are not reported as duplicates of one another.

A group needs a RAW in it (two JPEGs that share a name in one folder, say an edit and its export, are
separate photos), and names compare exactly: IMG_1.CR2 and img_1.jpg are not paired.
"""

from __future__ import annotations

import os
from collections.abc import Container, Iterable, Sequence
from typing import TYPE_CHECKING

from ..formats import raw_format

if TYPE_CHECKING:
    from ..store.catalog import Catalog

#: Paths looked up per catalog query (one index range each).
_CHUNK = 200


def photo_key(path: bytes) -> bytes:
    """The folder and name without extension: what the files of one photo share."""
    return os.path.splitext(path)[0]


def siblings(catalog: Catalog, paths: Iterable[bytes]) -> dict[bytes, list[tuple[int, bytes]]]:
    """For each of `paths` that belongs to a RAW+JPEG group, the other indexed files of that photo
    (id, path), in path order. Paths in no group are left out."""
    keys = sorted({photo_key(p) for p in paths if b"." in os.path.basename(p)})
    members: dict[bytes, list[tuple[int, bytes]]] = {}
    for start in range(0, len(keys), _CHUNK):
        for file_id, path in catalog.ids_with_prefixes([key + b"." for key in keys[start : start + _CHUNK]]):
            members.setdefault(photo_key(path), []).append((file_id, path))
    found: dict[bytes, list[tuple[int, bytes]]] = {}
    for group in members.values():
        if len(group) < 2 or not any(raw_format(p) for _, p in group):
            continue
        group.sort(key=lambda member: member[1])
        for _file_id, path in group:
            found[path] = [member for member in group if member[1] != path]
    return found


def paired(a: bytes, b: bytes) -> bool:
    """Whether two paths are files of one RAW+JPEG photo."""
    return a != b and photo_key(a) == photo_key(b) and bool(raw_format(a) or raw_format(b))


def one_per_photo(ranked: Sequence[bytes], grouped: Container[bytes]) -> list[int]:
    """Positions in `ranked` (paths, best first) to keep: every file in no group, and the first file of
    every group (`grouped`: the paths that belong to one, as `siblings` finds them)."""
    seen: set[bytes] = set()
    keep = []
    for position, path in enumerate(ranked):
        if path in grouped:
            key = photo_key(path)
            if key in seen:
                continue
            seen.add(key)
        keep.append(position)
    return keep
