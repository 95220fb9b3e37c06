"""One search result (a leaf module: the command line's client path builds results without numpy)."""

from __future__ import annotations

import os
from dataclasses import dataclass


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
    id: int | None = None  # the catalog id, which the HTTP API serves files and thumbnails by
    siblings: tuple[str, ...] = ()  # the other files of a RAW+JPEG photo (see imgsearch.search.pairs)

    @property
    def date(self) -> float:
        """When the photo was taken (EXIF), else when the file was last modified."""
        return self.taken_at if self.taken_at is not None else self.mtime

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
            "id": self.id,
            "siblings": list(self.siblings),
        }
