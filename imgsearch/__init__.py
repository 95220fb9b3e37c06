"""imgsearch: semantic search for your own photo folders, by words or by example image.

The public names are imported on first use, so `imgsearch --help` does not pay for faiss, SQLAlchemy or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Filters", "ImgsearchError", "Library", "Match", "Status", "Term"]

if TYPE_CHECKING:
    from .errors import ImgsearchError
    from .library import Library, Status
    from .search.match import Match
    from .search.query import Filters, Term


def __getattr__(name: str) -> Any:
    if name == "ImgsearchError":
        from .errors import ImgsearchError

        return ImgsearchError
    if name in ("Library", "Status"):
        from . import library

        return getattr(library, name)
    if name in ("Filters", "Term"):
        from .search import query

        return getattr(query, name)
    if name == "Match":
        from .search.match import Match

        return Match
    raise AttributeError(f"module 'imgsearch' has no attribute {name!r}")
