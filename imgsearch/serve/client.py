"""Answer a query through a running `imgsearch serve` for the same index, when there is one.

The server has the model loaded and the vectors in memory, so a new command-line process that hands it the
query skips the seconds that importing torch and loading the model cost. Only the standard library is used
here (and the light wire format), so the command line stays fast on this path. Whenever the server cannot
answer (gone, another model, refused), the caller answers in-process instead: the server is an accelerator,
never a dependency.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ImgsearchError, UsageError
from ..search.match import Match
from .info import read_info, reader_key
from .wire import Query, query_to_json

_log = logging.getLogger(__name__)

#: Seconds to wait for the server. A text query takes milliseconds there; an image it must encode, longer.
TIMEOUT_S = 30.0


def query_via_server(
    home: Path, query: Query, model_id: str | None = None, reader: str | None = None
) -> list[Match] | None:
    """The server's results for `query`, or None when no usable server runs for `home`.

    `model_id` is the model the caller asked for (None: the index's own); a server with another model is
    not used, nor one that reads another catalog or maps paths otherwise (`reader`, see
    imgsearch.serve.info.reader_key; None: the defaults). Usage errors the server reports (a bad filter, a
    missing image) are raised as they would be in-process; anything else falls back to answering
    in-process.
    """
    info = read_info(home)
    if info is None or (model_id is not None and info.get("model") != model_id):
        return None
    if info.get("reader", reader_key(None)) != (reader or reader_key(None)):
        return None
    headers = {"Content-Type": "application/json"}
    if info.get("token"):
        headers["Authorization"] = f"Bearer {info['token']}"
    body = json.dumps(query_to_json(_absolute(query))).encode()
    request = urllib.request.Request(str(info["url"]).rstrip("/") + "/api/query", body, headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            results = json.load(response)["results"]
        return [_match(item) for item in results]
    except urllib.error.HTTPError as e:
        message = _error_message(e)
        if e.code == 400:
            raise UsageError(message) from None
        if e.code == 404:
            raise ImgsearchError(message) from None
        _log.info("the server at %s could not answer (%s): answering here", info["url"], message)
    except (OSError, ValueError, KeyError, TypeError) as e:
        _log.info("the server at %s did not answer (%s): answering here", info["url"], e)
    return None


def _absolute(query: Query) -> Query:
    """Paths as the server must read them: it runs in another folder."""
    terms = [
        replace(t, value=os.path.abspath(os.path.expanduser(t.value))) if t.kind == "image" else t
        for t in query.terms
    ]
    filters = query.filters
    if filters.under:
        filters = replace(filters, under=os.path.abspath(os.path.expanduser(filters.under)))
    return replace(query, terms=terms, filters=filters)


def _match(item: dict[str, Any]) -> Match:
    known = {name: item[name] for name in Match.__dataclass_fields__ if name in item}
    raw = item.get("path_bytes")
    if isinstance(raw, str):  # a name that is not UTF-8, sent as its bytes in hex
        known["path"] = os.fsdecode(bytes.fromhex(raw))
    known["siblings"] = tuple(known.get("siblings", ()))
    return Match(**known)


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(error)["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"HTTP {error.code} {error.reason}"
