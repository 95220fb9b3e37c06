"""What a query is made of: weighted text and image terms, and filters on the files they may return.

The query vector is the normalised weighted sum of the terms' unit embeddings, q = norm(sum w_i e_i):
a positive weight pulls results towards a term, a negative one pushes them away, and a larger weight
counts for more. Scores are cosines between q and each image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:  # numpy is imported when a query is combined: terms and filters alone stay light
    import numpy as np

_WEIGHTED = re.compile(r"^([+-]?\d+(?:\.\d+)?):(.+)$", re.S)


@dataclass(frozen=True)
class Term:
    """One part of a query: a description or an example image, with a weight (negative pushes away)."""

    kind: str  # "text" or "image"
    value: str  # the text, or the image's path
    weight: float = 1.0

    @classmethod
    def text(cls, value: str, weight: float = 1.0) -> Term:
        if not value.strip():
            raise UsageError("a query text is empty")
        return cls("text", value, weight)

    @classmethod
    def image(cls, path: str, weight: float = 1.0) -> Term:
        return cls("image", path, weight)


def split_weight(text: str) -> tuple[float, str]:
    """'2:mountain lake' -> (2.0, 'mountain lake'); text without a leading 'NUMBER:' has weight 1."""
    match = _WEIGHTED.match(text)
    if match is None:
        return 1.0, text
    return float(match.group(1)), match.group(2)


def combine(vectors: np.ndarray, weights: list[float]) -> np.ndarray:
    """The normalised weighted sum of unit vectors; terms that cancel out are a usage error."""
    import numpy as np

    total = (np.asarray(weights, dtype=np.float32)[:, None] * vectors).sum(axis=0)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise UsageError("the query terms cancel each other out; change their weights")
    return (total / norm).astype(np.float32)


@dataclass(frozen=True)
class Filters:
    """Which indexed files a query may return. Every filter narrows the set searched, so the results are
    the exact top-k of the files that pass, however few they are."""

    under: str | None = None  # a folder
    glob: str | None = None  # fnmatch pattern on the full path ('*' crosses folders)
    after: float | None = None  # Unix time, inclusive; date taken, else file mtime
    before: float | None = None  # Unix time, exclusive
    min_width: int | None = None
    min_height: int | None = None
    formats: tuple[str, ...] | None = None  # Pillow format names
    labels: tuple[str, ...] | None = None  # best zero-shot label is one of these...
    label_set: tuple[str, ...] = ()  # ...compared against these (see imgsearch.search.classify)

    @property
    def active(self) -> bool:
        """Whether any filter on the catalog's columns is set (labels are judged from vectors apart)."""
        columns = (self.under, self.glob, self.after, self.before, self.min_width, self.min_height)
        return any(v is not None for v in (*columns, self.formats))

    @staticmethod
    def formats_for(names: list[str]) -> tuple[str, ...]:
        """Stored format names for what a user typed ('jpg', 'png,webp', 'raw', 'cr2')."""
        from ..formats import type_names  # reads the installed decoders: only when a type is asked for

        known = type_names()
        out: list[str] = []
        for name in (n.strip().lower() for part in names for n in part.split(",")):
            if name not in known:
                raise UsageError(f"unknown file type {name!r}; known: {', '.join(known)}")
            out.extend(known[name])
        return tuple(dict.fromkeys(out))
