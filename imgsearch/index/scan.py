"""Walk photo folders with os.scandir: stat only; hidden and junk skipped; symlink cycles followed once.

Candidates are chosen by extension, from the decoders installed (imgsearch.formats); only a file with no
extension is opened, for its first bytes.

Paths are bytes (os.fsencode) from here on, so a file name that is not valid UTF-8 is still a file we index.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..formats import is_candidate_name, sniff_file

#: Folders that hold caches, thumbnails or trash rather than photos (hidden ones are skipped anyway).
JUNK_DIRS = frozenset(
    [
        b"node_modules",
        b"__pycache__",
        b"@eaDir",
        b"#recycle",
        b"#snapshot",
        b"$RECYCLE.BIN",
        b"System Volume Information",
        b"lost+found",
        b"__MACOSX",
    ]
)


@dataclass(frozen=True)
class FileStat:
    path: bytes
    size: int
    mtime_ns: int


def is_candidate(path: bytes) -> bool:
    """A visible file with an extension an installed decoder reads, or with no extension and a picture's
    first bytes. Any other extension is taken at its word (a .mov or .json is not opened)."""
    verdict = is_candidate_name(os.path.basename(path))
    return sniff_file(path) if verdict is None else verdict


def walk(root: bytes, on_error: Callable[[bytes, OSError], None] | None = None) -> Iterator[FileStat]:
    """Yield every candidate image file under `root`, following symlinks but never the same folder twice."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            with os.scandir(folder) as entries:
                listing = list(entries)
        except OSError as e:
            if on_error is not None:
                on_error(folder, e)
            continue
        subfolders = []
        for entry in listing:
            name = entry.name
            if name.startswith(b"."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
            except OSError:
                continue
            if is_dir:
                if name not in JUNK_DIRS:
                    subfolders.append(entry.path)
            elif is_candidate(entry.path):
                try:
                    est = entry.stat()  # follows symlinks; a broken link raises and is skipped
                except OSError:
                    continue
                if stat.S_ISREG(est.st_mode):
                    yield FileStat(entry.path, est.st_size, est.st_mtime_ns)
        stack.extend(sorted(subfolders, reverse=True))


def absolute(path: str | os.PathLike[str] | bytes) -> bytes:
    """A path as the catalog stores it: absolute, ~ expanded, bytes."""
    return os.fsencode(os.path.abspath(os.path.expanduser(path)))


def under(path: bytes, folder: bytes) -> bool:
    """Whether `path` lies inside `folder` (both absolute)."""
    prefix = folder.rstrip(b"/") + b"/"
    return path.startswith(prefix) or path == folder.rstrip(b"/")
