"""The HTTP API of `imgsearch serve`, in-process (FastAPI's TestClient) over an index built with the tiny
model: every endpoint, errors as JSON, what may and may not be served, uploads, the token, live updates."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgsearch.library import Library
from imgsearch.serve.app import create_app
from imgsearch.serve.info import INFO_FILE, read_info
from imgsearch.serve.thumbnails import FOLDER
from tests.cli_process import output_and_modules
from tests.conftest import SAMPLE_COUNT, SAMPLE_PHOTOS

pytestmark = pytest.mark.backends


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_model, backend) -> tuple[Path, Path]:
    """(home, photos): one index of sample_photos per backend for the tests that only read (indexing costs
    seconds)."""
    root = tmp_path_factory.mktemp("served")
    photos = root / "photos"
    shutil.copytree(SAMPLE_PHOTOS, photos, ignore=shutil.ignore_patterns("*.md"))
    Library(root / "home", model=tiny_model).index([photos])
    return root / "home", photos


@pytest.fixture(scope="module")
def shared_db(shared) -> dict[str, str]:
    """The environment that names the shared index's catalog (IMGSEARCH_DB on PostgreSQL; each test runs
    with a fresh database of its own), for the processes and commands a test starts over that index."""
    url = os.environ.get("IMGSEARCH_DB")
    return {"IMGSEARCH_DB": url} if url else {}


@pytest.fixture(scope="module")
def library(shared) -> Library:
    return Library(shared[0])


@pytest.fixture(scope="module")
def client(library) -> TestClient:
    return TestClient(create_app(library))


@pytest.fixture
def small(tmp_path, isolated_home, library) -> Path:
    """A private index of a few photos that a test may change; the model is the shared, loaded one."""
    photos = tmp_path / "small"
    photos.mkdir()
    for name in SMALL:
        shutil.copy(SAMPLE_PHOTOS / name, photos / name)
    encoder = library.encoder()
    Library(isolated_home, model=encoder.spec.id, encoder=encoder).index([photos])
    return photos


SMALL = ("coffee-cup.jpg", "ladybird.jpg", "kite-in-sky.jpg", "fire-truck.jpg")


def _ids(client: TestClient) -> dict[str, int]:
    """File name -> image id, from a search that returns everything."""
    found = client.get("/api/search", params={"q": "anything", "top": 100}).json()["results"]
    return {os.path.basename(m["path"]): m["id"] for m in found}


def _own_client(home: Path, library: Library, warm: bool = False) -> TestClient:
    """A client over a private index, sharing the already-loaded model; `warm` as `imgsearch serve` sets
    its Library up (Library.warm_up: the catalog stays open between queries)."""
    own = Library(home, encoder=library.encoder())
    if warm:
        own.warm_up()
    app = create_app(own)
    app.state.library = own
    return TestClient(app)


def _error(response, code: int) -> str:
    assert response.status_code == code, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message
    return message


# -- search ------------------------------------------------------------------------------------------------
def test_text_search_answers_like_the_cli(client, cli, shared, shared_db):
    response = client.get("/api/search", params={"q": "a cat on a sofa", "top": 5})
    assert response.status_code == 200
    results = response.json()["results"]
    db = ["--db", shared_db["IMGSEARCH_DB"]] if shared_db else []
    output = cli("query", "a cat on a sofa", "--json", "-n", "5", "--home", shared[0], *db).output
    printed = [json.loads(line) for line in output.splitlines()]
    # the same results and fields; scores agree to float rounding (the CLI may encode text with ONNX Runtime)
    assert [{**r, "score": None} for r in results] == [{**r, "score": None} for r in printed]
    assert [r["score"] for r in results] == pytest.approx([r["score"] for r in printed], abs=1e-4)
    assert len(results) == 5 and all(isinstance(r["id"], int) for r in results)


def test_search_pages_with_offset_and_takes_weights_and_not(client):
    whole = client.get("/api/search", params={"q": "2:a boat", "top": 9}).json()["results"]
    page = client.get("/api/search", params={"q": "2:a boat", "top": 4, "offset": 5}).json()["results"]
    assert page == whole[5:9]
    pushed = client.get("/api/search", params={"q": "a boat", "not": "water", "top": 9}).json()["results"]
    assert [r["id"] for r in pushed] != [r["id"] for r in whole]


def test_post_query_mirrors_library_query(client, library, shared):
    from imgsearch.search.query import Filters, Term

    indexed = shared[1]
    body = {
        "terms": [
            {"kind": "text", "value": "mountains", "weight": 2},
            {"kind": "image", "value": str(indexed / "lake-at-dusk.jpg"), "weight": 1},
            {"kind": "text", "value": "people", "weight": -0.5},
        ],
        "top": 6,
        "filters": {"glob": "*-*-*.jpg", "formats": ["jpg"], "min_width": 10},
        "min_score": -1.0,
        "sort": "date",
    }
    response = client.post("/api/query", json=body)
    assert response.status_code == 200, response.text
    expected = library.query(
        [Term.text("mountains", 2), Term.image(str(indexed / "lake-at-dusk.jpg")), Term.text("people", -0.5)],
        6,
        Filters(glob="*-*-*.jpg", formats=("JPEG", "MPO"), min_width=10),
        -1.0,
        "date",
    )
    assert response.json() == {"results": [m.to_dict() for m in expected]}
    assert all(r["path"].count("-") >= 2 for r in response.json()["results"])
    assert str(indexed / "lake-at-dusk.jpg") not in {r["path"] for r in response.json()["results"]}


def test_wire_round_trip():
    from imgsearch.search.query import Filters, Term
    from imgsearch.serve.wire import Query, query_from_json, query_to_json

    query = Query(
        [Term.text("a", 2.0), Term.image("/x.jpg", -1.0)],
        top=3,
        filters=Filters(under="/p", after=1.0, formats=("PNG",), labels=("cat",), label_set=("dog", "car")),
        min_score=0.1,
        sort="date",
        offset=4,
    )
    assert query_from_json(json.loads(json.dumps(query_to_json(query)))) == query


@pytest.mark.parametrize(
    "body, words",
    [
        ({}, "terms"),
        ({"terms": []}, "terms"),
        ({"terms": [{"kind": "text", "value": "  "}]}, "empty"),
        ({"terms": [{"kind": "sound", "value": "x"}]}, "kind"),
        ({"terms": [{"value": "x"}], "top": 0}, "top"),
        ({"terms": [{"value": "x"}], "sort": "size"}, "sort"),
        ({"terms": [{"value": "x"}], "colour": "red"}, "colour"),
        ({"terms": [{"value": "x"}], "filters": {"formats": ["docx"]}}, "docx"),
        ({"terms": [{"value": "x"}], "filters": {"formats": ["Jpg"]}}, "Jpg"),  # jpg or JPG, as the spec says
        ({"terms": [{"value": "x"}], "top": "10"}, "top"),  # a string is not a number
        ({"terms": [{"value": "x"}], "offset": 10_001}, "offset"),
        ({"terms": [{"value": "x"}], "filters": {"min_width": 2**31}}, "min_width"),
        ({"terms": [{"kind": "image", "value": "/no/such/file.jpg"}]}, "no such image file"),
        ({"terms": [{"value": "x", "weight": 1}, {"value": "x", "weight": -1}]}, "cancel"),
    ],
)
def test_bad_queries_are_400_with_a_message(client, body, words):
    assert words in _error(client.post("/api/query", json=body), 400)


def test_bad_json_and_bad_parameters_are_400(client):
    assert "invalid" in _error(
        client.post("/api/query", content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    _error(client.get("/api/search"), 400)  # no q
    _error(client.get("/api/search", params={"q": "x", "top": "many"}), 400)
    _error(client.get("/api/search", params={"q": "x", "top": 0}), 400)
    _error(client.get("/api/images/1/thumbnail", params={"size": 300}), 400)
    _error(client.get("/api/search", params={"q": "x", "offset": 10_001}), 400)
    assert _error(client.get("/api/nothing-here"), 404)


def test_limits_stand_alone_as_the_spec_states_them(client):
    """top and offset have a maximum each (OpenAPI cannot state one on their sum); 3.0 is an integer."""
    assert client.get("/api/search", params={"q": "x", "top": 10_000, "offset": 10_000}).status_code == 200
    body = {"terms": [{"value": "x"}], "top": 3.0, "offset": 10_000.0, "filters": {"min_width": 2.0}}
    assert client.post("/api/query", json=body).json() == {"results": []}
    spec = client.get("/api/openapi.json").json()
    query = spec["components"]["schemas"]["QueryIn"]["properties"]
    assert (query["top"]["maximum"], query["offset"]["maximum"]) == (10_000, 10_000)
    assert "422" not in json.dumps(spec["paths"])  # an invalid request is a 400, and the spec says so


def test_the_spec_patterns_say_what_the_server_refuses():
    """A text is refused when str.strip() leaves nothing: the spec's patterns name exactly those strings."""
    import re

    from imgsearch.search.query import split_weight
    from imgsearch.serve.wire import NOT_BLANK, WEIGHTED_TEXT

    not_blank = re.compile(NOT_BLANK)
    assert all(bool(not_blank.search(c)) != c.isspace() for c in map(chr, range(sys.maxunicode + 1)))
    for text in ("cat", "2:cat", "2:", " 2: x", "-0.5:\u3000x", "2: ", "2:\n", " ", "", "+1.5:\t", "x: "):
        assert bool(re.search(WEIGHTED_TEXT, text)) == bool(split_weight(text)[1].strip()), repr(text)


# -- similar, duplicates, status, the spec ------------------------------------------------------------------
def test_similar_leaves_the_image_out(client):
    ids = _ids(client)
    results = client.get(f"/api/similar/{ids['cat-chelsea.jpg']}", params={"top": 5}).json()["results"]
    assert len(results) == 5 and ids["cat-chelsea.jpg"] not in {r["id"] for r in results}
    assert "no indexed image" in _error(client.get("/api/similar/999999"), 404)


@pytest.mark.parametrize(
    "url",
    [
        "/api/similar/-92192008920675871883264",
        "/api/similar/9223372036854775808",
        "/api/images/-92192008920675871883264/file",
        "/api/images/92192008920675871883264/thumbnail",
    ],
)
def test_an_id_beyond_64_bits_is_no_image(client, url):
    """SQLite holds signed 64-bit ids: a larger one names no image, and is a 404, not an OverflowError."""
    assert "no indexed image" in _error(client.get(url), 404)


def test_an_unexpected_error_is_a_500_and_its_traceback_is_logged(library, monkeypatch, caplog):
    """The message says what broke; the log says where."""

    def broken() -> None:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(library, "status", broken)
    client = TestClient(create_app(library), raise_server_exceptions=False)
    with caplog.at_level("ERROR", logger="imgsearch"):
        message = _error(client.get("/api/status"), 500)
    assert message == "internal error: RuntimeError: the disk caught fire"
    [record] = [r for r in caplog.records if r.name == "imgsearch"]
    assert record.levelname == "ERROR" and "GET /api/status" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_duplicates_finds_a_copy(small, isolated_home, library):
    shutil.copy(small / "ladybird.jpg", small / "ladybird copy.jpg")
    own = _own_client(isolated_home, library)
    own.app.state.library.index([small])
    groups = own.get("/api/duplicates", params={"threshold": 1}).json()["groups"]
    exact = [g for g in groups if g["kind"] == "exact"]
    assert [sorted(os.path.basename(p) for p in g["paths"]) for g in exact] == [
        ["ladybird copy.jpg", "ladybird.jpg"]
    ]
    _error(own.get("/api/duplicates", params={"threshold": 2}), 400)


def test_status_and_openapi_spec(client, tiny_model):
    status = client.get("/api/status").json()
    assert status["images"] == SAMPLE_COUNT and status["model"] == tiny_model and status["version"]
    spec = client.get("/api/openapi.json").json()
    for path in (
        "/api/query",
        "/api/search",
        "/api/search/image",
        "/api/similar/{image_id}",
        "/api/duplicates",
        "/api/status",
        "/api/images/{image_id}/file",
        "/api/images/{image_id}/thumbnail",
    ):
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN


def test_page_and_its_files_come_from_this_server_only(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>imgsearch</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "app.css"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and len(response.text) > 500
    everything = page.text + client.get("/static/app.js").text + client.get("/static/app.css").text
    assert "http://" not in everything and "https://" not in everything and "//cdn" not in everything


def test_no_index_yet_is_503_with_the_fix(isolated_home):
    client = TestClient(create_app(Library(isolated_home)))
    assert "imgsearch index" in _error(client.get("/api/status"), 503)
    assert "imgsearch index" in _error(client.get("/api/search", params={"q": "x"}), 503)
    assert client.get("/").status_code == 200


# -- files and thumbnails ------------------------------------------------------------------------------------
def test_original_and_cached_thumbnail(client, shared):
    home, indexed = shared
    image_id = _ids(client)["coffee-cup.jpg"]
    original = client.get(f"/api/images/{image_id}/file")
    assert original.status_code == 200 and original.headers["content-type"] == "image/jpeg"
    assert original.content == (indexed / "coffee-cup.jpg").read_bytes()
    thumb = client.get(f"/api/images/{image_id}/thumbnail", params={"size": 128})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.format == "JPEG" and max(image.size) == 128
    cached = list((home / FOLDER).rglob("*-128.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == thumb.content
    made = cached[0].stat().st_mtime_ns
    assert client.get(f"/api/images/{image_id}/thumbnail", params={"size": 128}).content == thumb.content
    assert cached[0].stat().st_mtime_ns == made  # served from the cache, not made again


def test_a_changed_photo_gets_a_new_thumbnail_once_reindexed(small, isolated_home, library):
    client, indexed = _own_client(isolated_home, library), small
    image_id = _ids(client)["coffee-cup.jpg"]
    before = client.get(f"/api/images/{image_id}/thumbnail").content
    shutil.copy(SAMPLE_PHOTOS / "raccoon.jpg", indexed / "coffee-cup.jpg")
    os.utime(indexed / "coffee-cup.jpg", ns=(1, 10**18))
    assert "changed since it was indexed" in _error(client.get(f"/api/images/{image_id}/thumbnail"), 409)
    _error(client.get(f"/api/images/{image_id}/file"), 409)
    Library(isolated_home, encoder=library.encoder()).index([indexed])  # as `imgsearch index` would
    after = client.get(f"/api/images/{image_id}/thumbnail")
    assert after.status_code == 200 and after.content != before
    assert len(list((isolated_home / FOLDER).rglob("*-256.jpg"))) == 2


# -- what may be served ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "/api/images/../../../../etc/passwd/file",
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd/file",
        "/api/images/%2Fetc%2Fpasswd/file",
        "/api/images//etc/passwd/file",
        "/api/images/1%2F..%2F..%2Findex.db/thumbnail",
        "/api/images/-1/file",
        "/api/images/999999/file",
        "/api/images/999999/thumbnail",
        "/static/../index.db",
        "/static/..%2F..%2Fwire.py",
        "/static/%2Fetc%2Fpasswd",
        "/static//etc/passwd",
        "/..%2F..%2Fetc%2Fpasswd",
    ],
)
def test_no_path_from_the_client_reaches_a_file(client, url):
    response = client.get(url)
    assert response.status_code in (400, 403, 404), (url, response.status_code)
    assert b"root:" not in response.content and b"SQLite" not in response.content
    assert b"def " not in response.content


def test_a_symlink_out_of_the_indexed_folder_is_not_served(small, tmp_path, isolated_home, library):
    photos = small
    outside = tmp_path / "private"
    outside.mkdir()
    shutil.copy(SAMPLE_PHOTOS / "raccoon.jpg", outside / "secret.jpg")
    (photos / "link.jpg").symlink_to(outside / "secret.jpg")
    client = _own_client(isolated_home, library)
    client.app.state.library.index([photos])
    ids = _ids(client)
    assert "link.jpg" in ids  # the scanner follows links, so it is searchable...
    assert "outside" in _error(client.get(f"/api/images/{ids['link.jpg']}/file"), 403)  # ...but not served
    _error(client.get(f"/api/images/{ids['link.jpg']}/thumbnail"), 403)
    # an indexed file swapped for a link to elsewhere after indexing
    (photos / "ladybird.jpg").unlink()
    (photos / "ladybird.jpg").symlink_to(outside / "secret.jpg")
    _error(client.get(f"/api/images/{ids['ladybird.jpg']}/file"), 403)
    (photos / "kite-in-sky.jpg").unlink()
    assert "no longer on disk" in _error(client.get(f"/api/images/{ids['kite-in-sky.jpg']}/file"), 404)


# -- uploads -----------------------------------------------------------------------------------------------
def _upload(client: TestClient, data: bytes, name: str = "example.jpg", **fields: object):
    return client.post("/api/search/image", files={"file": (name, data, "image/jpeg")}, data=fields)


def test_upload_finds_the_same_picture_first(client):
    data = (SAMPLE_PHOTOS / "dogs-at-window.jpg").read_bytes()
    results = _upload(client, data, top=3).json()["results"]
    assert os.path.basename(results[0]["path"]) == "dogs-at-window.jpg" and results[0]["score"] > 0.999
    resized = io.BytesIO()
    Image.open(io.BytesIO(data)).resize((200, 150)).save(resized, "PNG")  # new bytes: encoded by the model
    again = _upload(client, resized.getvalue(), "small.png", top=3, offset=0).json()["results"]
    assert os.path.basename(again[0]["path"]) == "dogs-at-window.jpg"


def test_oversized_upload_is_413_before_it_is_read(library):
    client = TestClient(create_app(library, max_upload=10_000))
    big = (SAMPLE_PHOTOS / "hot-air-balloon.jpg").read_bytes()
    assert len(big) > 10_000
    assert "larger than" in _error(_upload(client, big), 413)

    def chunks():  # no Content-Length: counted while read
        for start in range(0, len(big), 16_384):
            yield big[start : start + 16_384]

    response = client.post(
        "/api/search/image", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    _error(response, 413)


def test_broken_upload_is_400_with_the_decoder_reason(client):
    assert "not an image" in _error(_upload(client, b"this is not a picture" * 10), 400)
    truncated = (SAMPLE_PHOTOS / "cat-chelsea.jpg").read_bytes()[:3000]
    assert "broken JPEG" in _error(_upload(client, truncated), 400)
    assert "empty" in _error(_upload(client, b""), 400)
    _error(client.post("/api/search/image", data={"top": 3}), 400)  # no file at all


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's calling card."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    data = bytearray(out.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def test_decompression_bomb_upload_is_refused(client):
    assert "too many pixels" in _error(_upload(client, _png_claiming(30_000, 30_000), "bomb.png"), 400)


# -- the token ---------------------------------------------------------------------------------------------
def test_token_is_needed_on_every_request(library):
    client = TestClient(create_app(library, token="s3cret"))
    for url in (
        "/api/status",
        "/",
        "/static/app.js",
        "/api/openapi.json",
        "/api/search?q=x",
        "/api/images/1/file",
    ):
        assert "token" in _error(client.get(url), 401), url
    _error(client.get("/api/status", params={"token": "wrong"}), 401)
    _error(client.get("/api/status", headers={"Authorization": "Bearer wrong"}), 401)
    assert client.get("/api/status", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/api/status", params={"token": "s3cret"}).status_code == 200
    page = client.get("/", params={"token": "s3cret"})
    assert page.status_code == 200 and "/static/app.js?token=s3cret" in page.text
    assert client.get("/static/app.js", params={"token": "s3cret"}).status_code == 200
    assert _upload(client, b"x").status_code == 401


# -- live updates ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("warm", [False, True])
def test_an_index_update_by_another_process_shows_without_restart(small, isolated_home, library, warm):
    client, indexed = _own_client(isolated_home, library, warm), small
    everything = {"q": "anything", "top": 100}
    assert len(client.get("/api/search", params=everything).json()["results"]) == len(SMALL)
    shutil.copy(SAMPLE_PHOTOS / "fire-truck.jpg", indexed / "new-truck.jpg")
    (indexed / "ladybird.jpg").unlink()
    Library(isolated_home, encoder=library.encoder()).index([indexed])  # another Library
    names = {
        os.path.basename(r["path"]) for r in client.get("/api/search", params=everything).json()["results"]
    }
    assert len(names) == len(SMALL) and "new-truck.jpg" in names and "ladybird.jpg" not in names
    assert client.get("/api/status").json()["images"] == len(SMALL)

    shutil.rmtree(isolated_home)  # the index made again from nothing: a new database file
    (indexed / "new-truck.jpg").unlink()
    encoder = library.encoder()
    Library(isolated_home, model=encoder.spec.id, encoder=encoder).index([indexed])
    found = client.get("/api/search", params=everything).json()["results"]
    assert sorted(os.path.basename(r["path"]) for r in found) == sorted(set(SMALL) - {"ladybird.jpg"})


# -- the command ---------------------------------------------------------------------------------------------
def test_help_does_not_import_the_web_framework():
    for argv in (["--help"], ["serve", "--help"]):
        _, loaded = output_and_modules(argv)
        assert not {"fastapi", "uvicorn", "starlette", "torch"} & loaded, argv


def test_serve_writes_server_json_and_removes_it_on_exit(shared, shared_db, tiny_model):
    """One real server process: server.json, the token over real HTTP, the non-loopback warning, SIGTERM."""
    isolated_home = shared[0]
    env = {**os.environ, **shared_db, "IMGSEARCH_HOME": str(isolated_home), "IMGSEARCH_TOKEN": "t0ken"}
    command = [sys.executable, "-m", "imgsearch", "serve", "--host", "0.0.0.0", "--port", "0"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        assert "serving" in line and "?token=t0ken" in line, line
        info_path = isolated_home / INFO_FILE
        info = json.loads(info_path.read_text())
        assert stat.S_IMODE(info_path.stat().st_mode) == 0o600
        assert set(info) == {"url", "pid", "token", "model", "version", "reader"}
        assert info["pid"] == server.pid and info["token"] == "t0ken" and info["model"] == tiny_model
        assert info["url"] in line and read_info(isolated_home) == info
        import httpx

        assert httpx.get(info["url"] + "api/status", timeout=60).status_code == 401  # may wait for start-up
        status = httpx.get(info["url"] + "api/status", headers={"Authorization": "Bearer t0ken"}, timeout=60)
        assert status.json()["images"] == SAMPLE_COUNT
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        assert "warning: listening on 0.0.0.0" in server.stderr.read()  # type: ignore[union-attr]
        assert not info_path.exists()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_signal_right_after_the_url_is_printed_stops_the_server_cleanly(shared, shared_db):
    """SIGTERM the moment the URL appears (uvicorn not yet started): exit 0 and server.json removed, not a
    killed process nor a lost signal."""
    env = {**os.environ, **shared_db, "IMGSEARCH_HOME": str(shared[0])}
    command = [sys.executable, "-m", "imgsearch", "serve", "--port", "0"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in server.stdout.readline()  # type: ignore[union-attr]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, server.stderr.read()  # type: ignore[union-attr]
        assert not (shared[0] / INFO_FILE).exists()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_stale_server_json_is_ignored(isolated_home):
    isolated_home.mkdir(parents=True, exist_ok=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    info = {
        "url": "http://127.0.0.1:1/",
        "pid": int(dead.stdout),
        "token": None,
        "model": "m",
        "version": "0",
    }
    (isolated_home / INFO_FILE).write_text(json.dumps(info))
    assert read_info(isolated_home) is None
    (isolated_home / INFO_FILE).write_text(json.dumps({**info, "pid": os.getpid()}))
    assert read_info(isolated_home) is not None
    (isolated_home / INFO_FILE).write_text("{garbage")
    assert read_info(isolated_home) is None


def test_a_name_that_is_not_utf8_comes_back_exactly(tmp_path, isolated_home, library):
    """`path` shows backslash escapes, `path_bytes` the exact name (the CLI's client prints it from there);
    other results carry no `path_bytes` but keep every other field, null ones included."""
    photos = tmp_path / "odd"
    photos.mkdir()
    odd = os.fsencode(photos) + b"/caf\xe9.jpg"
    shutil.copy(SAMPLE_PHOTOS / "coffee-cup.jpg", odd)
    shutil.copy(SAMPLE_PHOTOS / "ladybird.jpg", photos / "ladybird.jpg")
    encoder = library.encoder()
    Library(isolated_home, model=encoder.spec.id, encoder=encoder).index([photos])
    found = _own_client(isolated_home, library).get("/api/search", params={"q": "cup"}).json()["results"]
    by_name = {os.path.basename(m["path"]): m for m in found}
    assert bytes.fromhex(by_name["caf\\xe9.jpg"]["path_bytes"]) == odd
    assert "path_bytes" not in by_name["ladybird.jpg"] and by_name["ladybird.jpg"]["taken_at"] is None


def test_the_result_schema_has_every_field_of_a_match():
    import dataclasses

    from imgsearch.search.match import Match
    from imgsearch.serve.app import MatchOut

    assert set(MatchOut.model_fields) == {f.name for f in dataclasses.fields(Match)} | {"path_bytes"}


def test_an_upload_takes_the_page_filters_and_sort(client):
    """The page sends its filters with an example image (the `query` form field, JSON as POST /api/query)."""
    data = (SAMPLE_PHOTOS / "dogs-at-window.jpg").read_bytes()
    query = json.dumps({"filters": {"glob": "*cat*"}, "sort": "date"})
    results = _upload(client, data, top=5, query=query).json()["results"]
    assert results and all(fnmatch_name(r["path"], "*cat*") for r in results)
    with_text = json.dumps({"terms": [{"kind": "text", "value": "a cat", "weight": 2}]})
    assert _upload(client, data, top=3, query=with_text).json()["results"]
    assert "not valid JSON" in _error(_upload(client, data, query="{filters"), 400)
    assert "JSON object" in _error(_upload(client, data, query="[1]"), 400)
    assert "must be a list" in _error(_upload(client, data, query='{"terms": "dog"}'), 400)
    assert "filters" in _error(_upload(client, data, query='{"filters": {"colour": "red"}}'), 400)
    assert "form fields" in _error(_upload(client, data, top=3, query='{"top": 50}'), 400)
    spec = client.get("/api/openapi.json").json()
    form = spec["paths"]["/api/search/image"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["encoding"] == {"query": {"contentType": "application/json"}}  # an object, sent as JSON


def fnmatch_name(path: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatch(os.path.basename(path), pattern)
