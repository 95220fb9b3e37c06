"""`imgsearch serve FOLDERS`: the server indexes the folders and keeps them live (as `watch` does) in a thread
of its own, serving meanwhile; GET /api/progress says how far it got; an empty index answers with a clear
503; another writer is reported, not fatal; Ctrl-C/SIGTERM stops the indexing cleanly.

One real server process for the whole flow (index, query, a new photo appears, SIGTERM); the rest in-process
over the app and the indexing thread (imgsearch.serve.live), with the tiny model loaded once."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from filelock import FileLock

from imgsearch.library import Library
from imgsearch.serve.app import create_app
from imgsearch.serve.info import INFO_FILE
from imgsearch.serve.live import LiveIndex
from tests.conftest import SAMPLE_PHOTOS

FEW = ("coffee-cup.jpg", "ladybird.jpg", "kite-in-sky.jpg", "fire-truck.jpg")


@contextlib.contextmanager
def serving_folders(env: dict[str, str], *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A real `imgsearch serve --port 0 ARGS` process with `env`: yields its URL and the process (stderr is
    piped: read it once the process has ended); SIGTERM after, and it must exit 0."""
    command = [sys.executable, "-m", "imgsearch", "serve", "--port", "0", *args]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "serving" in line, (line, process.stderr.read() if process.poll() is not None else "")  # type: ignore[union-attr]
        yield line.split(" at ", 1)[1].split()[0], process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """Poll `check` until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


def _copy(names: tuple[str, ...], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLE_PHOTOS / name, folder / name)
    return folder


def _names(results: list[dict[str, Any]]) -> set[str]:
    return {os.path.basename(r["path"]) for r in results}


# -- the real command --------------------------------------------------------------------------------------
def test_serve_with_a_folder_indexes_it_serves_meanwhile_and_follows_changes(tmp_path, tiny_model):
    photos = _copy(FEW, tmp_path / "photos")
    home = tmp_path / "home"
    env = {**os.environ, "IMGSEARCH_HOME": str(home), "IMGSEARCH_MODEL": tiny_model}
    with serving_folders(env, str(photos)) as (url, process):
        with httpx.Client(base_url=url, timeout=60) as http:
            early = http.get("/api/search", params={"q": "a cup", "top": 10})  # serving before it has indexed
            assert early.status_code in (200, 503), early.text
            if early.status_code == 503:
                assert "nothing is indexed yet" in early.json()["error"], early.text
            seen: list[str] = []

            def watching() -> bool:
                progress = http.get("/api/progress").json()
                seen.append(progress["state"])
                assert progress["state"] not in ("failed", "stopped"), progress
                return progress["state"] == "watching"

            wait_for(watching, "the first index")
            assert set(seen) <= {"starting", "indexing", "watching"}
            assert http.get("/api/status").json()["images"] == len(FEW)
            everything = {"q": "anything", "top": 100}
            assert _names(http.get("/api/search", params=everything).json()["results"]) == set(FEW)
            progress = http.get("/api/progress").json()
            assert progress["folders"] == [str(photos)] and progress["error"] is None

            shutil.copy(SAMPLE_PHOTOS / "raccoon.jpg", photos / "new raccoon.jpg")
            wait_for(
                lambda: (
                    "new raccoon.jpg" in _names(http.get("/api/search", params=everything).json()["results"])
                ),
                "the new photo",
            )
            assert http.get("/api/status").json()["images"] == len(FEW) + 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        log = process.stderr.read()  # type: ignore[union-attr]
    assert "caught up" in log and "updated" in log and "stopped watching" in log, log
    assert "Traceback" not in log, log
    assert not (home / INFO_FILE).exists()
    FileLock(home / "write.lock").acquire(timeout=0)  # the indexer let go of the index


def test_serve_without_folders_needs_an_index_and_with_them_does_not(tmp_path, cli):
    result = cli("serve", "--home", tmp_path / "none", "--poll")
    assert result.exit_code == 2 and "FOLDERS" in result.output
    assert "FOLDERS" in cli("serve", "--help").output


# -- in-process: the app over a Library whose indexing thread is this test's -------------------------------
@pytest.fixture(scope="module")
def encoder(tiny_model):
    return Library("/nonexistent", model=tiny_model).encoder()


@pytest.fixture
def live(isolated_home, encoder) -> Iterator[Callable[..., tuple[TestClient, LiveIndex]]]:
    """live(folder): (a client of the app, its indexing thread, not started) over an empty index."""
    made: list[LiveIndex] = []

    def make(folder: Path) -> tuple[TestClient, LiveIndex]:
        library = Library(isolated_home, model=encoder.spec.id, encoder=encoder)
        library.warm_up()
        index = LiveIndex(library, [folder], settle=0.1)
        made.append(index)
        return TestClient(create_app(library, live=index)), index

    yield make
    for index in made:
        assert index.stop(timeout=60)


def test_without_folders_progress_is_off(isolated_home):
    client = TestClient(create_app(Library(isolated_home)))
    assert client.get("/api/progress").json() == {
        "state": "off",
        "folders": [],
        "phase": None,
        "done": 0,
        "total": 0,
        "failures": 0,
        "error": None,
    }


def test_an_index_still_empty_answers_503_saying_it_is_being_made(live, tmp_path):
    client, _ = live(_copy(FEW, tmp_path / "photos"))  # not started: nothing indexed yet
    for response in (client.get("/api/search", params={"q": "a cup"}), client.get("/api/status")):
        assert response.status_code == 503
        assert "nothing is indexed yet: this server is starting to index" in response.json()["error"]
        assert str(tmp_path / "photos") in response.json()["error"]
        assert response.headers["retry-after"] == "2"
    assert client.get("/api/progress").json()["state"] == "starting"


def test_a_watched_folder_without_images_says_so(live, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    client, index = live(empty)
    index.start()
    wait_for(lambda: client.get("/api/progress").json()["state"] == "watching", "the first pass")
    response = client.get("/api/search", params={"q": "a cup"})
    assert response.status_code == 503 and "retry-after" not in response.headers
    assert response.json()["error"] == f"nothing is indexed yet: this server is watching {empty}"


def test_indexing_then_watching_then_a_new_photo(live, tmp_path):
    photos = _copy(FEW, tmp_path / "photos")
    client, index = live(photos)
    index.start()
    wait_for(lambda: client.get("/api/progress").json()["state"] == "watching", "the first index")
    assert len(client.get("/api/search", params={"q": "x", "top": 100}).json()["results"]) == len(FEW)
    shutil.copy(SAMPLE_PHOTOS / "raccoon.jpg", photos / "raccoon.jpg")
    wait_for(
        lambda: (
            "raccoon.jpg"
            in _names(client.get("/api/search", params={"q": "x", "top": 100}).json()["results"])
        ),
        "the new photo",
    )
    (photos / "not a picture.jpg").write_text("hello")
    wait_for(lambda: client.get("/api/progress").json()["failures"] == 1, "the bad file")
    assert index.stop(timeout=60)
    assert client.get("/api/progress").json()["state"] == "stopped"
    assert client.get("/api/status").json()["images"] == len(FEW) + 1  # still serves, as a reader


def test_another_writer_is_reported_and_the_server_goes_on_serving(
    live, tmp_path, isolated_home, encoder, caplog
):
    photos = _copy(FEW, tmp_path / "photos")
    Library(isolated_home, model=encoder.spec.id, encoder=encoder).index([photos])
    client, index = live(photos)
    held = FileLock(isolated_home / "write.lock")
    held.acquire(timeout=0)  # as `imgsearch watch` in another process holds it
    try:
        with caplog.at_level("ERROR", logger="imgsearch"):
            index.start()
            progress = wait_for(
                lambda: (p := client.get("/api/progress").json())["state"] == "failed" and p, "the failure"
            )
    finally:
        held.release()
    assert "another imgsearch process is writing" in progress["error"]
    assert any("indexing stopped: another imgsearch process" in r.getMessage() for r in caplog.records)
    assert len(client.get("/api/search", params={"q": "x"}).json()["results"]) == len(FEW)


def test_stop_ends_a_pass_in_flight_and_lets_go_of_the_index(live, tmp_path, isolated_home):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLE_PHOTOS, photos, ignore=shutil.ignore_patterns("*.md"))
    client, index = live(photos)
    index.start()
    assert index.stop(timeout=60)  # at once: in the catch-up, or before it began
    assert client.get("/api/progress").json()["state"] == "stopped"
    FileLock(isolated_home / "write.lock").acquire(timeout=0)
    response = client.get("/api/status")  # whatever was committed is a consistent index
    assert response.status_code in (200, 503), response.text


def test_progress_is_in_the_spec(isolated_home):
    spec = TestClient(create_app(Library(isolated_home))).get("/api/openapi.json").json()
    progress = spec["paths"]["/api/progress"]["get"]["responses"]["200"]["content"]["application/json"]
    schema = spec["components"]["schemas"][progress["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert schema["properties"]["state"]["enum"] == [
        "off",
        "starting",
        "indexing",
        "watching",
        "failed",
        "stopped",
    ]
    assert json.dumps(schema)  # and the fuzz test holds the server to it
