"""Two writers at once (`index` + `index`, `index` + `watch`, `watch` + `index`), queries running all along.

One writer at a time holds the index's write lock; the loser exits 1 at once with "another imgsearch process
is writing to the index" (it does not wait). Queries in another process never fail and never see a broken
index, and when the writers are done the index equals the folder.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from imgsearch import Library
from imgsearch.model.encoder import Encoder
from imgsearch.model.specs import parse_model_spec
from tests import cli_process, index_db
from tests.images import noise_jpeg

pytestmark = pytest.mark.backends

BUSY = "another imgsearch process is writing to the index"


def add_images(folder: Path, start: int, count: int) -> None:
    folder.mkdir(exist_ok=True)
    for i in range(start, start + count):
        (folder / f"{i:04d}.jpg").write_bytes(noise_jpeg(i))


def committed(home: Path) -> dict[bytes, bytes]:
    """path -> content hash of every committed row, as another process reads them now."""
    return {path: content_hash for path, (content_hash,) in index_db.images(home, "content_hash").items()}


def on_disk(folder: Path) -> dict[bytes, bytes]:
    return index_db.hashes_on_disk(folder.glob("*.jpg"))


class Queries(threading.Thread):
    """Queries as another process would make them (a fresh Library each time), until stopped."""

    def __init__(self, home: Path, encoder: Encoder):
        super().__init__(daemon=True)
        self.home, self.encoder = home, encoder
        self.stop = threading.Event()
        self.done = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                library = Library(self.home, encoder=self.encoder)
                assert len(library.search("a photo", top=5)) == 5
                library.status()
                self.done += 1
            except BaseException as e:  # every failure is the test's business
                self.errors.append(e)


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_two_writers_and_queries_at_once(tiny_model, tmp_path):
    folder, home, log = tmp_path / "photos", tmp_path / "index", tmp_path / "runs.log"
    common = ["--home", str(home), "--model", tiny_model, "--device", "cpu", "--precision", "fp32"]
    index = ["index", "-q", "-j", "1", *common, str(folder)]
    watch = ["watch", "--settle", "0.3", "-j", "1", *common, str(folder)]

    def run(argv: list[str], process_log: Path = log) -> int:
        process = cli_process.start(argv, process_log)
        process.join(120)
        return process.exitcode

    add_images(folder, 0, 20)
    assert run(index) == 0
    encoder = Encoder.load(parse_model_spec(tiny_model), device="cpu", precision="fp32")
    queries = Queries(home, encoder)
    queries.start()
    try:
        # index + index, index + watch: the second writer is refused while the first one works
        # (the first run is held after its first committed batch until both have been refused, so that it
        # is sure to be still at work however fast or slow this machine is)
        add_images(folder, 20, 200)
        go_on = tmp_path / "go-on"
        first = cli_process.start(index, tmp_path / "first.log", hold=("embedding a batch", 2, go_on))
        wait_for(lambda: len(committed(home)) > 20 or not first.is_alive(), "a first batch")
        assert first.is_alive(), (tmp_path / "first.log").read_text()
        for argv in (index, watch):
            second_log = tmp_path / f"second-{argv[0]}.log"
            assert run(argv, second_log) == 1, log_text(second_log)
            assert BUSY in second_log.read_text()
        assert first.is_alive()
        go_on.touch()
        first.join(120)
        assert first.exitcode == 0, (tmp_path / "first.log").read_text()
        assert committed(home) == on_disk(folder)

        # watch + index: a running watch holds the lock; an index started meanwhile is refused
        watch_log = tmp_path / "watch.log"
        watcher = cli_process.start(watch, watch_log)
        wait_for(lambda: "model loaded" in log_text(watch_log), "the watcher to start")
        add_images(folder, 220, 40)
        (folder / "0003.jpg").unlink()
        os.rename(folder / "0004.jpg", folder / "renamed.jpg")
        assert run(index, tmp_path / "index-during-watch.log") == 1
        assert BUSY in (tmp_path / "index-during-watch.log").read_text()
        wait_for(lambda: committed(home) == on_disk(folder), "the watcher to catch up")
        os.kill(watcher.pid, signal.SIGTERM)
        watcher.join(60)
        assert watcher.exitcode == 0, watch_log.read_text()
    finally:
        queries.stop.set()
        queries.join()
    assert not queries.errors, queries.errors[:3]
    assert queries.done > 10
    print(f"{queries.done} queries, none failed")
    assert index_db.integrity(home) == "ok"
    assert committed(home) == on_disk(folder)
    assert run(index) == 0  # and a last run finds nothing to do
    assert committed(home) == on_disk(folder)
