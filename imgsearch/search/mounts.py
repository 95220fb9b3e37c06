"""Where a shared library's folders are on this machine.

Machines often mount one share at different places (/mnt/photos on the NAS, /Volumes/photos on a Mac). The
catalog keeps the writer's paths, the truth; a reader maps each stored root to its own mount point, so that
results name files that exist here and `serve` finds them. The map is `STORED=LOCAL` pairs: `--path-map`,
or IMGSEARCH_PATH_MAP with pairs separated by ':' (as in PATH).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class Mounts:
    """(stored, local) folder pairs, the longest stored folder first so the deepest one wins."""

    pairs: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Mounts:
        pairs = []
        for entry in entries:
            stored, sep, local = entry.partition("=")
            if not sep or not os.path.isabs(stored) or not os.path.isabs(local):
                raise UsageError(
                    "a path map entry is STORED=LOCAL, two absolute folders, e.g. "
                    f"/mnt/photos=/Volumes/photos; got {entry!r}"
                )
            pairs.append((_folder(stored), _folder(local)))
        return cls(tuple(sorted(pairs, key=lambda p: len(p[0]), reverse=True)))

    @classmethod
    def from_env(cls, value: str | None) -> Mounts:
        """IMGSEARCH_PATH_MAP: STORED=LOCAL pairs separated by ':'."""
        return cls.parse(e for e in (value or "").split(os.pathsep) if e.strip())

    def __bool__(self) -> bool:
        return bool(self.pairs)

    def to_local(self, path: bytes) -> bytes:
        """A stored path as this machine sees it (unchanged outside every mapped folder)."""
        return _swap(path, [(s, loc) for s, loc in self.pairs])

    def to_stored(self, path: bytes) -> bytes:
        """A path on this machine as the catalog stores it."""
        return _swap(path, sorted(((loc, s) for s, loc in self.pairs), key=lambda p: len(p[0]), reverse=True))

    def shown(self, path: str) -> str:
        """`to_local` for a path already decoded for people."""
        return os.fsdecode(self.to_local(os.fsencode(path))) if self.pairs else path


def _folder(path: str) -> bytes:
    return os.fsencode(os.path.normpath(path)).rstrip(b"/") or b"/"


def _swap(path: bytes, pairs: list[tuple[bytes, bytes]]) -> bytes:
    for old, new in pairs:
        if path == old:
            return new
        if path.startswith(old.rstrip(b"/") + b"/"):
            return new.rstrip(b"/") + path[len(old.rstrip(b"/")) :]
    return path
