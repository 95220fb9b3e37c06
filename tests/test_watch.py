"""`imgsearch watch` end to end: a real watcher subprocess, real files, queries from another process.

Each step changes the folder, then polls (bounded, with a deadline) until a query from this process returns
exactly the image files on disk: no missing files, no duplicates, no ghosts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import index_db
from tests.cli_process import processes_where
from tests.conftest import REPO, SAMPLE_PHOTOS
from tests.images import add_photos

pytestmark = pytest.mark.backends

SAMPLES = sorted(SAMPLE_PHOTOS.glob("*.jpg"))
BURST = int(os.environ.get("IMGSEARCH_TEST_BURST", "40"))  # 200 for the "done when" check


def on_disk(folder: Path) -> list[str]:
    """The image files the index should hold: hidden ones are never indexed."""
    return sorted(str(p) for p in folder.rglob("*.jpg") if not p.name.startswith("."))


def indexed(home: Path) -> dict[str, int]:
    return {os.fsdecode(p): i for p, (i,) in index_db.images(home, "id").items()}


class WatchProcess:
    def __init__(self, folder: Path, model: str, home: Path, log: Path):
        env = {**os.environ, "IMGSEARCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        self.log_path = log
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imgsearch",
                "watch",
                "--model",
                model,
                "--settle",
                "0.3",
                "-v",
                str(folder),
            ],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: what it leaves behind can be found and cleaned up
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, after: int = 0, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text()[after:]:
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {needle!r} in the log:\n{self.text()}"
            time.sleep(0.05)

    def counted(self, what: str, after: int = 0) -> int:
        """The sum of `N what` over the batch summaries logged after `after` (a burst may be split into
        several batches when the copy stalls for longer than the settle time)."""
        return sum(int(n) for n in re.findall(rf"(\d+) {what},", self.text()[after:]))

    def wait_for_count(self, what: str, expected: int, after: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.counted(what, after) < expected:
            assert time.monotonic() < deadline, f"not {expected} {what} in the log:\n{self.text()}"
            time.sleep(0.05)
        assert self.counted(what, after) == expected, self.text()

    def leftovers(self) -> list[int]:
        """Processes still in the watcher's session (its decoding workers), on Linux."""
        return processes_where(session=self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def start_watch(tiny_model, isolated_home, tmp_path):
    started: list[WatchProcess] = []

    def start(folder: Path) -> WatchProcess:
        # its own log: a restart must not mistake its predecessor's lines for its own
        log = tmp_path / f"watch-{len(started)}.log"
        w = WatchProcess(folder, tiny_model, isolated_home, log)
        started.append(w)
        w.wait_for_log("watching", timeout=60)
        return w

    yield start
    for w in started:
        w.close()


def query_paths(cli) -> list[str] | None:
    """What a query from this process returns, or None while the index has no images yet."""
    result = cli("query", "a photo", "--paths", "-n", "1000")
    if result.exit_code != 0:
        assert "has no images yet" in result.output or "no index" in result.output, result.output
        return None
    return result.output.splitlines()


def wait_until_index_matches(cli, folder: Path, watcher: WatchProcess, timeout: float = 30) -> float:
    """Seconds until a query returns exactly the files on disk (a concurrent query must never fail)."""
    started = time.monotonic()
    while True:
        found = query_paths(cli)
        expected = on_disk(folder)
        if found is not None and sorted(found) == expected:
            assert len(found) == len(set(found))
            return time.monotonic() - started
        assert watcher.proc.poll() is None, watcher.text()
        assert time.monotonic() - started < timeout, (
            f"index != folder after {timeout} s: missing {sorted(set(expected) - set(found or []))[:5]}, "
            f"ghosts {sorted(set(found or []) - set(expected))[:5]}\n{watcher.text()[-3000:]}"
        )
        time.sleep(0.1)


def test_watch_follows_bursts_moves_and_deletions_and_refuses_a_second_writer(
    cli, tmp_path, isolated_home, start_watch
):
    folder = tmp_path / "photos"
    add_photos(folder, 5, "before")  # there before the watcher starts: the catch-up indexes them
    watcher = start_watch(folder)
    wait_until_index_matches(cli, folder, watcher, timeout=60)
    watcher.wait_for_log("model loaded")

    # a burst of new photos
    mark = len(watcher.text())
    add_photos(folder / "burst", BURST, "burst")
    latency = wait_until_index_matches(cli, folder, watcher, timeout=60)
    print(f"{BURST} new photos queryable {latency:.1f} s after the copy ended")  # a figure, not a test
    watcher.wait_for_count("new", BURST, after=mark)

    # a folder rename changes paths only: the same ids, nothing encoded
    before = indexed(isolated_home)
    mark = len(watcher.text())
    (folder / "burst").rename(folder / "renamed")
    wait_until_index_matches(cli, folder, watcher)
    after = indexed(isolated_home)
    assert sorted(after.values()) == sorted(before.values())
    assert after[str(folder / "renamed" / "burst-000.jpg")] == before[str(folder / "burst" / "burst-000.jpg")]
    watcher.wait_for_count("moved", BURST, after=mark)
    assert "(0 encoded" in watcher.text()[mark:] and "1 encoded" not in watcher.text()[mark:]

    # deleted files, and a folder removed with everything in it
    for path in sorted(folder.glob("before-*.jpg"))[:2]:
        path.unlink()
    shutil.rmtree(folder / "renamed")
    wait_until_index_matches(cli, folder, watcher)
    assert len(indexed(isolated_home)) == 3

    # hidden and temp files are not indexed
    (folder / ".hidden.jpg").write_bytes(SAMPLES[0].read_bytes())
    (folder / "x.jpg.part").write_bytes(SAMPLES[0].read_bytes())
    add_photos(folder, 1, "after")
    deadline = time.monotonic() + 30
    while len(indexed(isolated_home)) != 4:
        assert time.monotonic() < deadline, watcher.text()
        time.sleep(0.1)
    assert (
        sorted(query_paths(cli) or [])
        == on_disk(folder)
        == [str(folder / "after-000.jpg")] + [str(p) for p in sorted(folder.glob("before-*.jpg"))]
    )

    # one writer per index: a second watch or index is refused at once, with the reason
    for command in ("watch", "index"):
        refused = cli(command, folder)
        assert refused.exit_code == 1
        assert "another imgsearch process is writing to the index" in refused.output

    # SIGTERM: a clean stop, exit 0
    watcher.proc.send_signal(signal.SIGTERM)
    assert watcher.proc.wait(timeout=30) == 0, watcher.text()
    assert "stopped" in watcher.text()


def test_after_sigkill_mid_burst_a_restart_catches_up_exactly(cli, tmp_path, isolated_home, start_watch):
    folder = tmp_path / "photos"
    folder.mkdir()
    watcher = start_watch(folder)
    watcher.wait_for_log("loading model")
    time.sleep(
        0.5
    )  # let the model finish loading before the burst (not required, makes the kill land mid-way)

    add_photos(folder / "a", 48, "a")
    deadline = time.monotonic() + 60
    while not (index_db.exists(isolated_home) and 0 < len(indexed(isolated_home)) < 48):  # some, not all
        assert time.monotonic() < deadline, watcher.text()
        assert watcher.proc.poll() is None, watcher.text()
        if index_db.exists(isolated_home) and len(indexed(isolated_home)) == 48:
            break  # too late to catch it mid-way: the kill below still tests a restart
        time.sleep(0.01)
    watcher.proc.kill()
    watcher.proc.wait()
    print(f"SIGKILL with {len(indexed(isolated_home))} of 48 photos indexed")
    if sys.platform.startswith("linux"):  # its decoding workers end with it
        deadline = time.monotonic() + 60  # a worker notices only once its own imports are done
        while watcher.leftovers():
            assert time.monotonic() < deadline, f"orphaned workers: {watcher.leftovers()}"
            time.sleep(0.05)
    add_photos(folder / "b", 20, "b")  # changes while nothing watches
    for path in sorted((folder / "a").glob("*.jpg"))[:5]:
        path.unlink()

    restarted = start_watch(folder)
    wait_until_index_matches(cli, folder, restarted, timeout=60)
    assert index_db.integrity(isolated_home) == "ok"
    paths = [os.fsdecode(p) for p in index_db.images(isolated_home)]
    assert sorted(paths) == on_disk(folder) and len(paths) == 63
    restarted.proc.send_signal(signal.SIGINT)
    assert restarted.proc.wait(timeout=30) == 0, restarted.text()
