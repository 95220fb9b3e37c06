"""A query and its results as JSON, the one form the HTTP API (`imgsearch serve`) and its clients share.

A query is {"terms": [{"kind": "text"|"image", "value": str, "weight": float}], "top": int, "offset": int,
"filters": {...Filters fields...}, "min_score": float|null, "sort": "score"|"date"}; every key but "terms"
may be left out. Results are Match.to_dict() items, as `imgsearch query --json` prints them. The limits the
checks here enforce are the constants below; the HTTP app states the same ones in its OpenAPI spec.
Imports neither numpy nor torch nor the web framework, so a command-line client stays fast.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..errors import UsageError
from ..search.query import Filters, Term

if TYPE_CHECKING:
    from ..search.match import Match

_QUERY_KEYS = {"terms", "top", "offset", "filters", "min_score", "sort"}
_TERM_KEYS = {"kind", "value", "weight"}
_FILTER_FIELDS = {f.name: f for f in fields(Filters)}
#: The most results one answer may hold (`top`): a page of thumbnails, not a dump of the index.
MAX_RESULTS = 10_000
#: The most results a page may skip (`offset`). Each limit stands alone, so a spec can state it.
MAX_OFFSET = 10_000
#: The most pixels a min_width or min_height filter may name: no image comes near, and unlike SQLite's
#: largest integer, a double (as the spec states its bounds) holds it exactly.
MAX_PIXELS = 2**31 - 1
#: The characters str.strip() removes (str.isspace()), spelled out: every regex engine reads them alike.
_BLANK = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
#: A regex (JSON Schema `pattern`, a search) for a text that is not empty once spaces are stripped.
NOT_BLANK = f"[^{_BLANK}]"
#: The same for a search text in the command line's [W:]TEXT form (split_weight): not empty, and not a weight
#: "W:" followed by spaces only ("2:" alone is a text, not a weight).
WEIGHTED_TEXT = f"^(?![+-]?\\d+(?:\\.\\d+)?:[{_BLANK}]+$)[\\s\\S]*{NOT_BLANK}"


@dataclass(frozen=True)
class Query:
    """The arguments of Library.query, plus `offset` for paging (the results skip that many)."""

    terms: list[Term]
    top: int = 10
    filters: Filters = field(default_factory=Filters)
    min_score: float | None = None
    sort: str = "score"
    offset: int = 0


def query_to_json(query: Query) -> dict[str, Any]:
    """The JSON form of a query (None filters are left out)."""
    filters: dict[str, Any] = {}
    for name in _FILTER_FIELDS:
        value = getattr(query.filters, name)
        if value is not None and value != ():
            filters[name] = list(value) if isinstance(value, tuple) else value
    return {
        "terms": [{"kind": t.kind, "value": t.value, "weight": t.weight} for t in query.terms],
        "top": query.top,
        "offset": query.offset,
        "filters": filters,
        "min_score": query.min_score,
        "sort": query.sort,
    }


def query_from_json(data: object) -> Query:
    """Check and convert a JSON query; anything malformed is a UsageError naming the bad part."""
    if not isinstance(data, dict):
        raise UsageError("a query is a JSON object with 'terms'")
    _no_unknown(data, _QUERY_KEYS, "query")
    raw_terms = data.get("terms")
    if not isinstance(raw_terms, list) or not raw_terms:
        raise UsageError("'terms' must be a non-empty list of {kind, value, weight}")
    terms = [_term(t) for t in raw_terms]
    top = _integer(data.get("top", 10), "top", 1, MAX_RESULTS)
    offset = _integer(data.get("offset", 0), "offset", 0, MAX_OFFSET)
    min_score = data.get("min_score")
    if min_score is not None:
        min_score = _number(min_score, "min_score")
    sort = data.get("sort", "score")
    if sort not in ("score", "date"):
        raise UsageError(f"'sort' is 'score' or 'date', not {sort!r}")
    return Query(terms, top, filters_from_json(data.get("filters") or {}), min_score, sort, offset)


def filters_from_json(data: object) -> Filters:
    if not isinstance(data, dict):
        raise UsageError("'filters' must be a JSON object")
    _no_unknown(data, set(_FILTER_FIELDS), "filters")
    values: dict[str, Any] = {}
    for name in ("under", "glob"):
        if data.get(name) is not None:
            values[name] = _string(data[name], name)
    for name in ("after", "before"):
        if data.get(name) is not None:
            values[name] = _number(data[name], name)
    for name in ("min_width", "min_height"):
        if data.get(name) is not None:
            values[name] = _integer(data[name], name, 1, MAX_PIXELS)
    if data.get("formats") is not None:
        values["formats"] = _formats(_strings(data["formats"], "formats"))
    if data.get("labels") is not None:
        values["labels"] = tuple(_strings(data["labels"], "labels")) or None
    if data.get("label_set") is not None:
        values["label_set"] = tuple(_strings(data["label_set"], "label_set"))
    return Filters(**values)


def match_to_json(match: Match) -> dict[str, object]:
    """One result as `imgsearch query --json` prints it; a name that is not UTF-8 gets backslash escapes."""
    item = match.to_dict()
    try:
        match.path.encode("utf-8")
    except UnicodeEncodeError:
        item["path"] = os.fsencode(match.path).decode("utf-8", "backslashreplace")
        item["path_bytes"] = os.fsencode(match.path).hex()  # the exact name, for programs that open it
    item["siblings"] = [os.fsencode(p).decode("utf-8", "backslashreplace") for p in match.siblings]
    return item


def results_to_json(matches: Sequence[Match]) -> dict[str, object]:
    return {"results": [match_to_json(m) for m in matches]}


def _term(data: object) -> Term:
    if not isinstance(data, dict):
        raise UsageError("each term is an object {kind, value, weight}")
    _no_unknown(data, _TERM_KEYS, "term")
    kind, value = data.get("kind", "text"), _string(data.get("value"), "value")
    weight = _number(data.get("weight", 1.0), "weight")
    if kind == "text":
        return Term.text(value, weight)
    if kind == "image":
        if not value:
            raise UsageError("an image term needs a path")
        return Term.image(value, weight)
    raise UsageError(f"a term's kind is 'text' or 'image', not {kind!r}")


@functools.cache
def format_choices() -> tuple[str, ...]:
    """What a `formats` item may be: a file type in lower or upper case (jpg, JPG, cr2, raw) or a stored
    format name (MPO, CR2). Read from the installed decoders, so only a server (which decodes) asks."""
    from ..formats import stored_format_names, type_names

    types = type_names()
    return tuple(sorted({*types, *(name.upper() for name in types), *stored_format_names()}))


def _formats(names: list[str]) -> tuple[str, ...]:
    """Stored format names ('JPEG') pass as they are; a file type ('jpg', 'JPG') is translated."""
    from ..formats import stored_format_names

    out: list[str] = []
    for name in names:
        if name not in format_choices():
            raise UsageError(f"unknown file type {name!r}; known: {', '.join(format_choices())}")
        out.extend([name] if name in stored_format_names() else Filters.formats_for([name]))
    return tuple(dict.fromkeys(out))


def _no_unknown(data: dict[str, Any], known: set[str], what: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(f"unknown {what} field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"'{name}' must be a string")
    return value


def _strings(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"'{name}' must be a list of strings")
    return value


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"'{name}' must be a finite number")
    return float(value)


def _integer(value: object, name: str, minimum: int, maximum: int | None = None) -> int:
    """An integer as JSON reads one: 3 or 3.0, never "3" nor true."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"'{name}' must be an integer of at least {minimum}")
    if maximum is not None and value > maximum:
        raise UsageError(f"'{name}' must be at most {maximum}")
    return value
