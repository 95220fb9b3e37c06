"""The HTTP app: a JSON API and the web page over one long-lived Library (warm model, cached FAISS index).

Files are served only by catalog id, never by a path from the client, and only while the file still is the
one indexed, inside an indexed folder once symlinks are resolved. Every request needs the token when one is
set. Requests run at the same time, each in a worker thread: the Library's reader is shared by them (FAISS
searches and catalog reads run side by side), and only the making of query vectors takes turns (a lock in
imgsearch.model.runtime). With `live` (`imgsearch serve FOLDERS`) the same process indexes and watches the
folders in a thread of its own (imgsearch.serve.live), and GET /api/progress says how far it got.

A request the server refuses is a 4xx with {"error": ...}, never a 500. The OpenAPI spec (/api/openapi.json)
states each rule that a JSON schema can state, the descriptions state the others, and a schema-driven fuzzer
(tests/test_serve_fuzz.py) holds the server to it. A 500 is a bug: its traceback goes to the "imgsearch" log.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import (
    DatabaseRefused,
    DatabaseUnavailable,
    DecodeError,
    ImgsearchError,
    IndexBusy,
    IndexNotFound,
    IndexReadOnly,
    ModelMismatch,
    ModelUnavailable,
    SchemaTooNew,
    UsageError,
)
from ..formats import raw_format
from ..index.scan import under
from ..library import Library
from ..search.duplicates import DEFAULT_THRESHOLD
from ..search.query import Term, split_weight
from ..store.catalog import ImageRow
from .live import LiveIndex, State
from .thumbnails import BROWSER_FORMATS, SIZES, ChangedOnDisk, rendered, thumbnail
from .wire import (
    MAX_OFFSET,
    MAX_PIXELS,
    MAX_RESULTS,
    NOT_BLANK,
    WEIGHTED_TEXT,
    format_choices,
    query_from_json,
    results_to_json,
)
from .wire import Query as WireQuery

#: Largest request body (an uploaded example image); larger ones get 413 before they are read in full.
MAX_UPLOAD = 50 * 1024 * 1024
STATIC = resources.files("imgsearch.serve") / "static"
#: Image ids are SQLite rowids: signed 64-bit integers. Any other integer names no image (404).
ID_RANGE = (-(2**63), 2**63 - 1)
_log = logging.getLogger("imgsearch")
_UNAVAILABLE = (
    IndexNotFound,
    IndexBusy,
    ModelMismatch,
    ModelUnavailable,
    SchemaTooNew,
    IndexReadOnly,
    DatabaseUnavailable,  # the database server is down: answers come back with it, no restart needed
    DatabaseRefused,
)


# -- request and response shapes (they make the OpenAPI spec; imgsearch.serve.wire does the checking) ---
# A limit that wire checks is stated here with json_schema_extra (the error then is wire's, in its words);
# one that pydantic checks (ge, le, min_length) is the same rule in both places. Request bodies are strict:
# "10" is not a number nor true a weight, as the spec says.
_WEIGHT = "How much the term counts; negative pushes results away."
_TOP = f"How many results (at most {MAX_RESULTS})."
_OFFSET = f"Results to skip, for paging (at most {MAX_OFFSET})."


def _integral(value: object) -> object:
    """An integer as JSON Schema reads one: 3 or 3.0 (a strict model still refuses "3" and true)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


_Integer = Annotated[int, BeforeValidator(_integral)]
#: A pixel count of a filter; the bounds come first, so that the spec states them.
_Pixels = Annotated[int, Field(ge=1, le=MAX_PIXELS), BeforeValidator(_integral)]
_Format = Annotated[str, Field(json_schema_extra={"enum": list(format_choices())})]
#: A label of the `labels` filter: a blank one is always refused (one in label_set only with `labels`).
_Label = Annotated[str, Field(json_schema_extra={"pattern": NOT_BLANK})]
_LABELS = (
    "With `labels`: the labels of both lists together are at least two, none blank, none given twice (case "
    "and runs of spaces do not count)."
)
_CANCEL = "Terms that cancel each other out (a weight of 0, the same text pulled and pushed) are a 400."
#: A `q` or `not` of GET /api/search: [W:]TEXT, TEXT not only spaces (Term.text checks it).
_SearchText = Annotated[str, Field(json_schema_extra={"pattern": WEIGHTED_TEXT})]
_UPLOAD_QUERY = (
    "Optional JSON object as POST /api/query takes it, without top and offset (filters, min_score, sort, "
    "more terms); the upload joins its terms as an image term of weight 1."
)


class TextTermIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["text"] = "text"
    value: str = Field(description="The text: not only spaces.", json_schema_extra={"pattern": NOT_BLANK})
    weight: float = Field(1.0, description=_WEIGHT)


class ImageTermIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["image"]
    value: str = Field(
        description="The path of an image file the server can read (else 400).",
        json_schema_extra={"minLength": 1},
    )
    weight: float = Field(1.0, description=_WEIGHT)


class FiltersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    under: str | None = Field(None, description="Only files inside this folder.")
    glob: str | None = Field(None, description="fnmatch pattern on the full path ('*' crosses folders).")
    after: float | None = Field(None, description="Unix time, inclusive; date taken, else file mtime.")
    before: float | None = Field(None, description="Unix time, exclusive.")
    min_width: _Pixels | None = None
    min_height: _Pixels | None = None
    formats: list[_Format] | None = Field(
        None, description="File types (jpg, PNG, cr2, raw) or stored format names (MPO, CR2)."
    )
    labels: list[_Label] | None = Field(None, description="Best zero-shot label is one of these. " + _LABELS)
    label_set: list[str] | None = Field(None, description="...compared against these labels.")


class QueryIn(BaseModel):
    """Library.query's arguments, plus `offset` for paging."""

    model_config = ConfigDict(extra="forbid", strict=True)
    terms: list[TextTermIn | ImageTermIn] = Field(min_length=1, description=_CANCEL)
    top: _Integer = Field(10, ge=1, le=MAX_RESULTS, description=_TOP)
    offset: _Integer = Field(0, ge=0, le=MAX_OFFSET, description=_OFFSET)
    filters: FiltersIn | None = None
    min_score: float | None = None
    sort: Literal["score", "date"] = "score"


class UploadQueryIn(BaseModel):
    """The `query` part of an upload: POST /api/query's body without top and offset (form fields of their
    own), and with `terms` optional: the upload joins them as an image term of weight 1."""

    model_config = ConfigDict(extra="forbid", strict=True)
    terms: list[TextTermIn | ImageTermIn] = Field([], description=_CANCEL)
    filters: FiltersIn | None = None
    min_score: float | None = None
    sort: Literal["score", "date"] = "score"


class MatchOut(BaseModel):
    path: str
    score: float
    width: int
    height: int
    format: str
    size: int
    mtime: float
    taken_at: float | None
    id: int | None
    siblings: list[str] = Field(
        [],
        description="The other files of a RAW+JPEG photo (same folder, same name), shown once as this one.",
    )
    path_bytes: str | None = Field(
        None,
        description="Only for a name that is not valid UTF-8 (`path` then shows backslash escapes): "
        "the exact name, as hex bytes.",
    )


class Results(BaseModel):
    results: list[MatchOut]


class ImageOut(BaseModel):
    id: int
    path: str
    width: int
    height: int
    format: str
    size: int
    mtime: float
    taken_at: float | None
    path_bytes: str | None = Field(None, description=MatchOut.model_fields["path_bytes"].description)


class ProgressOut(BaseModel):
    state: State = Field(
        description="off: this server only reads (no folders given); starting; indexing (a pass runs: "
        "`phase`, `done` of `total`); watching (every folder up to date, following changes); failed "
        "(`error` says why; the server still serves what is indexed); stopped."
    )
    folders: list[str] = Field(description="The folders this server indexes and watches.")
    phase: str | None = Field(description="While indexing: hashing, encoding, loading the model ...")
    done: int = Field(description="Files of the phase done so far.")
    total: int = Field(description="Files of the phase (0: a step that does not count files).")
    failures: int = Field(description="Files skipped since the server started (see `imgsearch status`).")
    error: str | None = Field(description="Why indexing stopped, when it failed.")


class ErrorOut(BaseModel):
    error: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 413, 500, 503)
}


def create_app(
    library: Library, token: str | None = None, max_upload: int = MAX_UPLOAD, live: LiveIndex | None = None
) -> FastAPI:
    """The app over `library`; with a `token`, every request must carry it (Bearer header or ?token=).
    `live` is the indexing thread of `imgsearch serve FOLDERS`, whose progress the app shows."""
    app = FastAPI(
        title="imgsearch",
        version=__version__,
        description="Search an imgsearch index by words or by example image.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # FastAPI's docs pages load scripts from a CDN; the spec alone works offline
        redoc_url=None,
        responses=_ERRORS,
    )

    # -- errors as JSON ---------------------------------------------------------------------------------
    @app.exception_handler(ImgsearchError)
    async def library_error(_request: Request, error: ImgsearchError) -> JSONResponse:
        if isinstance(error, IndexNotFound) and live is not None:  # not "run imgsearch index": it does
            message = f"nothing is indexed yet: this server is {live.describe()}"
            if live.progress().state in _BUSY:
                return _error(503, message + "; ask again in a moment", {"Retry-After": "2"})
            return _error(503, message)
        return _error(status_for(error), str(error))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(error))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        _log.error("internal error answering %s %s", request.method, request.url.path, exc_info=error)
        return _error(500, f"internal error: {type(error).__name__}: {error}")

    # -- the API ----------------------------------------------------------------------------------------
    def run(query: WireQuery) -> dict[str, object]:
        _one_thread()
        matches = library.query(
            query.terms, query.top + query.offset, query.filters, query.min_score, query.sort
        )
        return results_to_json(matches[query.offset :])

    @app.post(
        "/api/query",
        response_model=Results,
        response_model_exclude_unset=True,
        summary="The general query (as `imgsearch query`)",
    )
    def post_query(body: QueryIn) -> dict[str, object]:
        """Weighted text and image terms, filters, min_score and sort, exactly as Library.query takes them.
        Image terms name files the server can read. Results are `imgsearch query --json` objects."""
        return run(query_from_json(body.model_dump(exclude_none=True)))

    @app.get("/api/search", response_model=Results, response_model_exclude_unset=True, summary="Text search")
    def search(
        q: list[_SearchText] = Query(  # noqa: B008
            description="A description; 'W:TEXT' gives it weight W (repeatable). TEXT is not only spaces."
        ),
        not_: list[_SearchText] = Query(  # noqa: B008
            [], alias="not", description="Push away from this text (repeatable)."
        ),
        top: int = Query(10, ge=1, le=MAX_RESULTS, description=_TOP),
        offset: int = Query(0, ge=0, le=MAX_OFFSET, description=_OFFSET),
    ) -> dict[str, object]:
        """The query syntax of the command line: each q is [W:]TEXT, each not is [W:]TEXT pushed away.
        Weights that cancel each other out (0:TEXT, or the same text in q and not) are refused with 400."""
        terms = [Term.text(text, weight) for weight, text in map(split_weight, q)]
        terms += [Term.text(text, -weight) for weight, text in map(split_weight, not_)]
        return run(WireQuery(terms, top=top, offset=offset))

    @app.post(
        "/api/search/image",
        response_model=Results,
        response_model_exclude_unset=True,
        summary="Search by an uploaded example image",
    )
    def search_image(
        file: UploadFile = File(  # noqa: B008
            description=f"An image, at most {max_upload // 2**20} MB; one that cannot be decoded is a 400.",
            json_schema_extra={"minLength": 1},
        ),
        top: int = Form(10, ge=1, le=MAX_RESULTS, description=_TOP),
        offset: int = Form(0, ge=0, le=MAX_OFFSET, description=_OFFSET),
        query: str | None = Form(None, description=_UPLOAD_QUERY),
    ) -> dict[str, object]:
        """Images that look like the upload. It is decoded like an indexed file (same pixel cap); an upload
        that is byte-identical to an indexed file reuses that file's vector, and the server remembers the
        vectors of recent uploads, so asking for the next page does not encode the image again."""
        extra = _json_object(query, "query")
        terms = extra.get("terms", [])
        if not isinstance(terms, list):
            raise UsageError("'terms' in 'query' must be a list")
        if "top" in extra or "offset" in extra:
            raise UsageError("'top' and 'offset' are form fields of their own, not part of 'query'")
        with tempfile.TemporaryDirectory(prefix="imgsearch-upload-") as tmp:
            # a camera RAW is known by its name alone (LibRaw reads it; Pillow would take a CR2 for a TIFF)
            name = file.filename or ""
            suffix = os.path.splitext(name)[1].lower() if raw_format(name) else ""
            path = os.path.join(tmp, "upload" + suffix)
            with open(path, "wb") as out:
                while chunk := file.file.read(1 << 20):
                    out.write(chunk)
            image = {"kind": "image", "value": path, "weight": 1.0}
            try:
                return run(query_from_json({**extra, "terms": [*terms, image], "top": top, "offset": offset}))
            except DecodeError as e:
                reason = e.__cause__ if isinstance(e.__cause__, DecodeError) else e
                raise UsageError(f"cannot use the upload {file.filename or ''!r} as a query: {reason}") from e

    @app.get(
        "/api/similar/{image_id}",
        response_model=Results,
        response_model_exclude_unset=True,
        summary="Images like an indexed one",
    )
    def similar(
        image_id: int,
        top: int = Query(10, ge=1, le=MAX_RESULTS, description=_TOP),
        offset: int = Query(0, ge=0, le=MAX_OFFSET, description=_OFFSET),
    ) -> dict[str, object]:
        """Images that look like the indexed image `image_id`, never itself."""
        row, _ = indexed_file(image_id)
        return run(WireQuery([Term.image(os.fsdecode(library.local_path(row.path)))], top=top, offset=offset))

    @app.get("/api/duplicates", summary="Groups of copies, exact and near")
    def duplicates(
        under: str | None = None,
        threshold: float = Query(
            DEFAULT_THRESHOLD, gt=0, le=1, description="Least cosine of near copies (not used with `exact`)."
        ),
        exact: bool = Query(False, description="Only the sets of byte-identical files, each a group."),
        explain: bool = Query(False, description="Each group's `links` too: what joins it, strongest first."),
    ) -> dict[str, object]:
        """As `imgsearch duplicates --json` (with --exact, --explain): {"groups": [{kind, score, paths,
        exact, links}]}."""
        groups = library.duplicates(under, threshold, exact_only=exact)
        return {"groups": [g.to_dict(links=explain, show=_display) for g in groups]}

    @app.get("/api/status", summary="What is indexed, with which model")
    def status() -> dict[str, object]:
        """As `imgsearch status --json`, plus the server's version."""
        info = library.status().to_dict()
        return {**info, "version": __version__}

    @app.get("/api/progress", response_model=ProgressOut, summary="How far this server's indexing got")
    def progress() -> dict[str, object]:
        """What `imgsearch serve FOLDERS` is doing with its folders: indexing them (which phase, how many
        files of how many), watching them, or why it stopped. `state` is `off` for a server without
        folders, which only reads the index that `imgsearch index` or `watch` keep."""
        return live.progress().to_dict() if live is not None else _OFF

    @app.get(
        "/api/images/{image_id}",
        response_model=ImageOut,
        response_model_exclude_unset=True,
        summary="An indexed image's details",
    )
    def image(image_id: int) -> dict[str, object]:
        """The indexed image `image_id` as the catalog has it (path, pixels, format, bytes, dates), whether
        or not its file may be served."""
        row = indexed_row(image_id)
        path = os.fsdecode(library.local_path(row.path))
        out: dict[str, object] = {
            "id": row.id,
            "path": _display(path),
            "width": row.width,
            "height": row.height,
            "format": row.format,
            "size": row.size,
            "mtime": row.mtime_ns / 1e9,
            "taken_at": row.taken_at,
        }
        if out["path"] != path:
            out["path_bytes"] = os.fsencode(path).hex()
        return out

    @app.get("/api/images/{image_id}/file", response_class=FileResponse, summary="An indexed original")
    def original(image_id: int, download: bool = False) -> FileResponse:
        """The indexed file, for a browser to show. A format browsers cannot display (camera RAW, PSD, TIFF,
        HEIC ...) is sent as a JPEG rendering (upright, at most 4096 px), and the response says so in its
        `X-Rendered-From` header (the file's own format). `download=true` sends the file's bytes as they
        are, whatever the format, as a download."""
        row, real = indexed_file(image_id)
        headers = {"Cache-Control": "no-cache"}
        if download:
            name = os.path.basename(real)
            return FileResponse(real, media_type="application/octet-stream", headers=headers, filename=name)
        media = BROWSER_FORMATS.get(row.format)
        if media is not None:
            return FileResponse(real, media_type=media, headers=headers)
        path = rendered(library.home, real, row.content_hash)
        return FileResponse(path, media_type="image/jpeg", headers={**headers, "X-Rendered-From": row.format})

    @app.get("/api/images/{image_id}/thumbnail", response_class=FileResponse, summary="A cached thumbnail")
    def thumb(image_id: int, size: int = Query(256, json_schema_extra={"enum": list(SIZES)})) -> FileResponse:
        """A JPEG at most `size` px on its longer side, made once and cached in the index folder."""
        if size not in SIZES:
            raise UsageError(f"size must be one of {', '.join(map(str, SIZES))}")
        row, real = indexed_file(image_id)
        path = thumbnail(library.home, real, row.content_hash, size)
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    def indexed_row(image_id: int) -> ImageRow:
        """The catalog's row of an indexed image (404 for an unknown id)."""
        if not ID_RANGE[0] <= image_id <= ID_RANGE[1]:  # SQLite could not even be asked
            raise HTTPException(404, f"no indexed image with id {image_id}")
        row = library.shared_catalog().rows([image_id]).get(image_id)
        if row is None:
            raise HTTPException(404, f"no indexed image with id {image_id}")
        return row

    def indexed_file(image_id: int) -> tuple[ImageRow, str]:
        """The row of an indexed image and its real path on this machine, if it may be served: 404 unknown
        or gone, 403 outside the indexed folders (a symlink out of them), 409 changed since it was indexed.
        The catalog's paths are the writer's: they are mapped to this machine's first (Library.local_path)."""
        row = indexed_row(image_id)
        roots = [library.local_path(r) for r in library.shared_catalog().roots()]
        local = library.local_path(row.path)
        real = os.path.realpath(local)
        if not any(under(local, r) and under(real, os.path.realpath(r)) for r in roots):
            raise HTTPException(403, f"image {image_id} lies outside the indexed folders; it is not served")
        try:
            st = os.stat(real)
        except OSError:
            raise HTTPException(404, f"image {image_id} is no longer on disk") from None
        if not stat.S_ISREG(st.st_mode):
            raise HTTPException(404, f"image {image_id} is no longer a file")
        if (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):
            raise ChangedOnDisk(f"image {image_id} changed since it was indexed; re-index it")
        return row, os.fsdecode(real)

    # -- the page ---------------------------------------------------------------------------------------
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page(request: Request) -> HTMLResponse:
        given = request.query_params.get("token")
        suffix = html.escape(f"?token={quote(given, safe='')}") if token and given else ""
        return HTMLResponse(page.replace("__TOKEN_QUERY__", suffix), headers=_PAGE_HEADERS)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _as_served(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(_BodyLimit, limit=max_upload)
    if token:
        app.add_middleware(_TokenCheck, token=token)
    return app


def status_for(error: ImgsearchError) -> int:
    """The HTTP status of a library error: the caller's mistake 400, the index not ready 503, else 500."""
    if isinstance(error, UsageError | DecodeError):
        return 400
    if isinstance(error, ChangedOnDisk):
        return 409
    if isinstance(error, _UNAVAILABLE):
        return 503
    return 500


#: GET /api/progress of a server without folders.
_OFF: dict[str, object] = {
    "state": "off",
    "folders": [],
    "phase": None,
    "done": 0,
    "total": 0,
    "failures": 0,
    "error": None,
}
#: Progress states in which an empty index is one still being made.
_BUSY = ("starting", "indexing")

_PAGE_HEADERS = {
    # Everything the page uses comes from this server: no CDN, nothing inline, no framing by other sites.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _one_thread() -> None:
    """One torch thread for this query. A query encodes a few tokens: a second thread gains little, and when
    the cores are busy (an index or watch run beside the server, or this server's own indexing thread)
    threads that wait for each other make every query several times slower. Set here, in the worker thread,
    because OpenMP's setting is per thread (the indexing thread sets its own: imgsearch.serve.live). The
    ONNX text export a warm server uses runs on one thread already (imgsearch.model.onnx_text)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _json_object(text: str | None, name: str) -> dict[str, Any]:
    """A form field holding a JSON object (absent: empty)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise UsageError(f"'{name}' is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise UsageError(f"'{name}' must be a JSON object")
    return value


def _as_served(spec: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's spec, where this app differs from FastAPI's defaults: an invalid request is answered 400
    (never 422), and the upload's `query` form field is a JSON object (sent as its text)."""
    schemas = spec["components"]["schemas"]
    for operations in spec["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    upload_query = UploadQueryIn.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in upload_query.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    schemas[UploadQueryIn.__name__] = upload_query
    body = spec["paths"]["/api/search/image"]["post"]["requestBody"]["content"]["multipart/form-data"]
    form = schemas[body["schema"]["$ref"].rsplit("/", 1)[-1]]
    ref = f"#/components/schemas/{UploadQueryIn.__name__}"
    form["properties"]["query"] = {"$ref": ref, "description": _UPLOAD_QUERY}
    body["encoding"] = {"query": {"contentType": "application/json"}}
    return spec


def _error(code: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=code, headers=headers)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path", "form"))
        parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
    return "invalid request: " + "; ".join(parts)


def _display(path: str) -> str:
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


# -- ASGI middleware: they answer before the app reads anything -------------------------------------------
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_error(send: Send, code: int, message: str, headers: dict[str, str] | None = None) -> None:
    response = _error(code, message, headers)
    await send({"type": "http.response.start", "status": code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class _TokenCheck:
    """401 for any request without the token (header `Authorization: Bearer TOKEN`, or ?token=TOKEN)."""

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            await _send_error(
                send,
                401,
                "this server needs its token: Authorization: Bearer TOKEN, or ?token=TOKEN",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        from starlette.requests import HTTPConnection

        conn = HTTPConnection(scope)
        auth = conn.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else conn.query_params.get("token")
        return given is not None and secrets.compare_digest(given.encode(), self.token)


class _TooLarge(Exception):
    pass


class _BodyLimit:
    """413 for a request body over `limit` bytes: by its Content-Length before reading, else while reading."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than {self.limit // 2**20} MB"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _send_error(
                send,
                413 if length.isdigit() else 400,
                too_large if length.isdigit() else "bad Content-Length",
            )
            return
        seen, exceeded = 0, False

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                exceeded = True
                raise _TooLarge()
            return message

        async def unless_exceeded(message: Message) -> None:
            if not exceeded:
                await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, counted, unless_exceeded)
        if exceeded:
            await _send_error(send, 413, too_large)
