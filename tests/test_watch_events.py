"""The watcher's parts with hand-built events and a hand-driven clock: filter, debounce, fallback."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)

from imgsearch.watch import watcher as watcher_module
from imgsearch.watch.events import folders_to_index, touched
from imgsearch.watch.trigger import Trigger
from imgsearch.watch.watcher import Watcher, _Collect, start_observer

ROOT = b"/photos"


def t(event) -> list[bytes]:
    return touched(event, [ROOT])


def test_image_events_count_and_moves_touch_both_ends():
    assert t(FileCreatedEvent("/photos/a.jpg")) == [b"/photos/a.jpg"]
    assert t(FileModifiedEvent("/photos/trip/b.PNG")) == [b"/photos/trip/b.PNG"]
    assert t(FileClosedEvent("/photos/a.heic")) == [b"/photos/a.heic"]
    assert t(FileDeletedEvent(b"/photos/a.jpg")) == [b"/photos/a.jpg"]
    assert t(FileMovedEvent("/photos/a.jpg", "/photos/b/a.jpg")) == [b"/photos/a.jpg", b"/photos/b/a.jpg"]


def test_hidden_temp_junk_and_non_image_files_are_ignored():
    for path in (
        "/photos/.a.jpg",  # hidden file
        "/photos/.thumbnails/a.jpg",  # inside a hidden folder
        "/photos/@eaDir/a.jpg",  # NAS thumbnails
        "/photos/notes.txt",
        "/photos/a.jpg.part",
        "/photos/a.jpg.crdownload",
        "/photos/a.tmp",
        "/photos/~$a.jpg",
        "/photos/.a.jpg.swp",
        "/elsewhere/a.jpg",  # not under a root
    ):
        assert t(FileCreatedEvent(path)) == [], path
    # a download renamed to its final name counts once, for the final name
    assert t(FileMovedEvent("/photos/a.jpg.crdownload", "/photos/a.jpg")) == [b"/photos/a.jpg"]


def test_reads_and_folder_modified_events_are_ignored():
    """Our own hashing opens and closes files; a folder's 'modified' is covered by its files' events."""
    assert t(FileOpenedEvent("/photos/a.jpg")) == []
    assert t(FileClosedNoWriteEvent("/photos/a.jpg")) == []
    assert t(DirModifiedEvent("/photos/trip")) == []


def test_folder_events_always_count_whatever_their_name():
    assert t(DirCreatedEvent("/photos/2024.01")) == [b"/photos/2024.01"]
    assert t(DirDeletedEvent("/photos/trip")) == [b"/photos/trip"]
    assert t(DirMovedEvent("/photos/trip", "/photos/trip 2023")) == [b"/photos/trip", b"/photos/trip 2023"]
    assert t(DirCreatedEvent("/photos/.git")) == []  # hidden folders still are not


def test_folders_to_index_are_the_deepest_existing_ones_without_nesting(tmp_path: Path):
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "a" / "b" / "x.jpg").write_bytes(b"x")
    r = os.fsencode(root)
    paths = [
        os.fsencode(root / "a" / "b" / "x.jpg"),  # a file: its folder
        os.fsencode(root / "c" / "gone" / "deeper" / "y.jpg"),  # under a deleted folder: nearest existing
        os.fsencode(root / "a" / "b"),  # a folder that exists: itself
    ]
    assert folders_to_index(paths, [r]) == [os.fsencode(root / "a" / "b"), os.fsencode(root / "c")]
    paths.append(os.fsencode(root / "a"))  # a folder around another replaces it
    assert folders_to_index(paths, [r]) == [os.fsencode(root / "a"), os.fsencode(root / "c")]
    assert folders_to_index([os.fsencode(root / "gone.jpg")], [r]) == [r]
    assert (
        folders_to_index([os.fsencode(tmp_path / "missing" / "x.jpg")], [os.fsencode(tmp_path / "missing")])
        == []
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Disk:
    """What stat would say: (size, mtime) per path, None for gone."""

    def __init__(self) -> None:
        self.files: dict[bytes, tuple[int, int] | None] = {}

    def __call__(self, path: bytes) -> tuple[int, int] | None:
        return self.files.get(path)


def make_trigger(settle=1.0, max_delay=10.0, max_unsettled=60.0):
    clock, disk = Clock(), Disk()
    return Trigger(settle, max_delay, max_unsettled, clock=clock, stat=disk), clock, disk


def test_a_burst_is_one_batch_after_a_quiet_period():
    trigger, clock, disk = make_trigger(settle=1.0)
    paths = [b"/photos/%d.jpg" % i for i in range(1000)]
    for i, path in enumerate(paths):
        clock.now = i * 0.001  # 1,000 files copied within a second
        disk.files[path] = (100, 1)
        trigger.add([path])
        assert trigger.poll() is None
    clock.now = 2.0  # quiet long enough: the first look
    assert trigger.poll() is None
    clock.now = 2.1  # the second look agrees: one batch with everything
    assert trigger.poll() == sorted(paths)
    assert trigger.poll() is None and len(trigger) == 0


def test_a_file_still_growing_is_not_handed_over():
    trigger, clock, disk = make_trigger(settle=1.0)
    disk.files[b"/photos/big.jpg"] = (10, 1)
    trigger.add([b"/photos/big.jpg"])
    clock.now = 2.0
    assert trigger.poll() is None  # first look
    disk.files[b"/photos/big.jpg"] = (20, 2)  # written to without an event reaching us yet
    clock.now = 2.1
    assert trigger.poll() is None  # size changed between looks
    clock.now = 2.2
    assert trigger.poll() == [b"/photos/big.jpg"]  # two equal looks


def test_new_events_restart_the_quiet_period_but_max_delay_caps_the_wait():
    trigger, clock, disk = make_trigger(settle=1.0, max_delay=5.0)
    for step in range(70):  # a file every 0.1 s, never quiet
        clock.now = step * 0.1
        path = b"/photos/%d.jpg" % step
        disk.files[path] = (1, 1)
        trigger.add([path])
        batch = trigger.poll()
        if batch:
            break
    assert batch is not None
    assert 5.0 <= clock.now < 5.5  # the first look at 5.0, the batch at the next poll
    assert len(batch) == len(set(batch)) > 40
    assert path not in batch and len(trigger) == 1  # touched just now: it waits for its own looks


def test_deleted_paths_and_folders_settle_on_their_second_look():
    trigger, clock, _ = make_trigger(settle=0.5)
    trigger.add([b"/photos/gone.jpg", b"/photos/old-folder"])
    clock.now = 0.5
    assert trigger.poll() is None
    assert trigger.poll() == [b"/photos/gone.jpg", b"/photos/old-folder"]


def test_a_file_that_never_settles_is_let_through_eventually():
    trigger, clock, disk = make_trigger(settle=1.0, max_delay=2.0, max_unsettled=3.0)
    trigger.add([b"/photos/log.jpg"])
    for step in range(100):
        clock.now = 1.0 + step * 0.5
        disk.files[b"/photos/log.jpg"] = (step, step)
        if trigger.poll():
            break
    assert 3.0 <= clock.now <= 3.5  # max_unsettled after it was touched


def test_the_collector_feeds_the_trigger_through_the_watcher_loop():
    clock = Clock()
    batches: list[list[bytes]] = []
    w = Watcher([ROOT], batches.append, lambda: None, settle=1.0, clock=clock)
    handler = _Collect([ROOT], w.inbox)
    handler.dispatch(FileCreatedEvent("/photos/a.jpg"))
    handler.dispatch(FileOpenedEvent("/photos/a.jpg"))  # ignored
    handler.dispatch(DirMovedEvent("/photos/x", "/photos/y"))
    w.drain()
    assert len(w.trigger) == 3


def test_watch_limit_errors_fall_back_to_polling_with_a_warning(tmp_path, monkeypatch, caplog):
    class FullObserver:
        def schedule(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")

        def stop(self):
            pass

        def is_alive(self):
            return False

    import watchdog.observers

    monkeypatch.setattr(watchdog.observers, "Observer", FullObserver)
    observer = start_observer([os.fsencode(tmp_path)], _Collect([os.fsencode(tmp_path)], None))  # type: ignore[arg-type]
    try:
        from watchdog.observers.polling import PollingObserver

        assert isinstance(observer, PollingObserver)
    finally:
        observer.stop()
        observer.join()
    assert "polling instead" in caplog.text
    assert "max_user_watches" in caplog.text


def test_other_observer_errors_are_not_hidden(tmp_path, monkeypatch):
    class BrokenObserver:
        def schedule(self, *args, **kwargs):
            raise OSError(errno.EACCES, "permission denied")

    import watchdog.observers

    monkeypatch.setattr(watchdog.observers, "Observer", BrokenObserver)
    with pytest.raises(OSError):
        start_observer([os.fsencode(tmp_path)], _Collect([], None))  # type: ignore[arg-type]


def test_the_loop_rescans_on_schedule_and_stops(tmp_path):
    """The real loop with a polling observer: a clock that jumps an hour per look forces rescans."""
    clock = Clock()
    stop = threading.Event()
    rescans: list[float] = []

    def rescan() -> None:
        rescans.append(clock.now)
        if len(rescans) == 2:
            stop.set()

    def tick() -> float:
        clock.now += 1800.0
        return clock.now

    w = Watcher(
        [os.fsencode(tmp_path)],
        lambda b: None,
        rescan,
        settle=0.0,
        rescan_interval=3600,
        poll=True,
        clock=tick,
    )
    w.tick = 0.0
    w.run(stop)
    assert len(rescans) == 2
    assert watcher_module.log.name == "imgsearch.watch"


def test_an_inotify_queue_overflow_triggers_a_full_rescan(tmp_path):
    """watchdog only logs an overflow; the watcher hears it and rescans at once (no periodic rescan here)."""
    import logging

    stop, started = threading.Event(), threading.Event()
    rescans: list[str] = []

    def rescan() -> None:
        rescans.append("rescan")
        stop.set()

    w = Watcher([os.fsencode(tmp_path)], lambda b: None, rescan, settle=0.0, rescan_interval=0, poll=True)
    thread = threading.Thread(target=w.run, args=(stop,), kwargs={"on_start": started.set})
    thread.start()
    try:
        assert started.wait(30)
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost"
        )
        assert stop.wait(30)
    finally:
        stop.set()
        thread.join(30)
    assert rescans == ["rescan"]
