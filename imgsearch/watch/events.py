"""Which paths a filesystem event touches, leaving out what the indexer would never look at.

Hidden files and folders, well-known junk folders, editor and browser temp files and non-image files are
ignored; events on folders always count (a folder moved, created or deleted changes every image in it).
Paths are bytes, like everywhere else in imgsearch.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
)

from ..formats import is_candidate_name
from ..index.scan import JUNK_DIRS, under

#: Event kinds that can change what is indexed; opened, closed-without-writing and attrib (atime, our own
#: reads) never do.
_FILE_KINDS = frozenset([EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED])
_FILE_KINDS_CLOSED = _FILE_KINDS | {EVENT_TYPE_CLOSED}
#: A folder's "modified" only says its listing changed: the events of the files themselves say how.
_DIR_KINDS = frozenset([EVENT_TYPE_CREATED, EVENT_TYPE_MOVED, EVENT_TYPE_DELETED])
#: Temp files of editors, office suites and browsers, even when they carry an image extension.
TEMP_PATTERNS = ("*.tmp", "~$*", ".*.swp", "*.part", "*.crdownload", "*.partial", "*.download", "*~")


def _bytes(path: bytes | str) -> bytes:
    return path if isinstance(path, bytes) else os.fsencode(path)


def is_temp(name: bytes) -> bool:
    text = os.fsdecode(name)
    return any(fnmatch.fnmatchcase(text, pattern) for pattern in TEMP_PATTERNS)


def wanted(path: bytes, roots: Sequence[bytes], is_directory: bool) -> bool:
    """Whether a change at `path` can matter to the index of `roots`."""
    root = next((r for r in roots if under(path, r)), None)
    if root is None:
        return False
    inside = path[len(root.rstrip(b"/")) :].strip(b"/")
    parts = inside.split(b"/") if inside else []
    folders = parts if is_directory else parts[:-1]
    if any(p.startswith(b".") or p in JUNK_DIRS for p in folders):
        return False
    if is_directory:
        return True
    name = parts[-1] if parts else b""
    # a name with no extension may be a picture (its bytes tell, when the batch is indexed)
    return is_candidate_name(name) is not False and not is_temp(name)


def touched(event: FileSystemEvent, roots: Sequence[bytes]) -> list[bytes]:
    """The paths under `roots` whose change can matter to the index: none, one, or two for a move."""
    kinds = _DIR_KINDS if event.is_directory else _FILE_KINDS_CLOSED
    if event.event_type not in kinds:
        return []
    paths = [_bytes(event.src_path)]
    if event.event_type == EVENT_TYPE_MOVED and event.dest_path:
        paths.append(_bytes(event.dest_path))
    return [p for p in paths if wanted(p, roots, event.is_directory)]


def folders_to_index(paths: Sequence[bytes], roots: Sequence[bytes]) -> list[bytes]:
    """The fewest folders whose re-index covers every touched path: each path's deepest existing folder
    (its own folder for a folder that exists, else the nearest parent that does), never above its root,
    and none inside another. A root that is gone entirely is left out (an unplugged drive keeps its images).
    """
    found: set[bytes] = set()
    for path in paths:
        root = next((r for r in roots if under(path, r)), None)
        if root is None:
            continue
        folder = path
        while not os.path.isdir(folder) and folder != root and under(folder, root):
            folder = os.path.dirname(folder)
        if os.path.isdir(folder) and under(folder, root):
            found.add(folder)
    ordered = sorted(found, key=len)
    kept: list[bytes] = []
    for folder in ordered:
        if not any(under(folder, k) for k in kept):
            kept.append(folder)
    return sorted(kept)
