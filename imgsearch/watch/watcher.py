"""Start a watchdog observer on the roots, feed its events through the trigger, stop it in `finally`.

Native observers (inotify on Linux) can run out of watches or instances: that is detected and the watcher
falls back to polling with a warning. Events get lost in the real world (queue overflow, network drives,
sleep/resume), so a full rescan runs every `rescan_interval` seconds as a safety net, and at once after
the kernel reports a queue overflow.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from .events import touched
from .trigger import Trigger

log = logging.getLogger("imgsearch.watch")

#: errno values of "the native observer cannot watch this many folders".
WATCH_LIMIT_ERRORS = frozenset([errno.ENOSPC, errno.EMFILE, errno.ENFILE])


class _Collect(FileSystemEventHandler):
    """Runs in the observer's thread: keep the touched paths, hand them over through a queue."""

    def __init__(self, roots: Sequence[bytes], out: queue.SimpleQueue[list[bytes]]):
        self.roots = list(roots)
        self.out = out

    def dispatch(self, event: FileSystemEvent) -> None:
        paths = touched(event, self.roots)
        if paths:
            log.debug("%s %s", event.event_type, b" -> ".join(paths).decode(errors="replace"))
            self.out.put(paths)


class _OverflowAlarm(logging.Handler):
    """watchdog only logs an inotify queue overflow; hearing that log line schedules a full rescan."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.raised = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.raised.set()


def start_observer(roots: Sequence[bytes], handler: FileSystemEventHandler, poll: bool = False) -> Any:
    """A started observer over every root: native if it can be, else polling (with a warning)."""
    from watchdog.observers import Observer
    from watchdog.observers.polling import PollingObserver

    if not poll:
        observer = Observer()
        try:
            for root in roots:
                observer.schedule(handler, os.fsdecode(root), recursive=True)
            observer.start()
            return observer
        except OSError as e:
            if e.errno not in WATCH_LIMIT_ERRORS:
                raise
            _stop(observer)
            log.warning(
                "cannot watch the folders natively (%s); polling instead, which is slower and costs CPU. "
                "Raise the limit (e.g. sysctl fs.inotify.max_user_watches=524288) and restart to avoid this",
                e.strerror or e,
            )
    observer = PollingObserver()
    for root in roots:
        observer.schedule(handler, os.fsdecode(root), recursive=True)
    observer.start()
    return observer


def _stop(observer: Any) -> None:
    try:
        observer.stop()
        if observer.is_alive():
            observer.join(timeout=10)
    except (RuntimeError, OSError) as e:  # never started, or already torn down
        log.debug("stopping the observer: %s", e)


class Watcher:
    """Follow `roots`: call `on_batch(paths)` for each settled batch of touched paths and `on_rescan()`
    every `rescan_interval` seconds (0: never) and after lost events, until `stop` is set."""

    def __init__(
        self,
        roots: Sequence[bytes],
        on_batch: Callable[[list[bytes]], None],
        on_rescan: Callable[[], None],
        settle: float = 1.0,
        rescan_interval: float = 3600.0,
        poll: bool = False,
        max_delay: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.roots = list(roots)
        self.on_batch = on_batch
        self.on_rescan = on_rescan
        self.rescan_interval = rescan_interval
        self.poll = poll
        self.clock = clock
        self.trigger = Trigger(settle, max_delay if max_delay is not None else max(10.0, settle), clock=clock)
        self.tick = max(0.02, min(0.25, settle / 4))
        self.inbox: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()

    def run(self, stop: threading.Event, on_start: Callable[[], None] | None = None) -> None:
        """Observe until `stop` is set; `on_start` runs once the observer is running (the catch-up: changes
        made while it runs are seen as events, not missed)."""
        alarm = _OverflowAlarm()
        watchdog_log = logging.getLogger("watchdog")
        watchdog_log.addHandler(alarm)
        observer = start_observer(self.roots, _Collect(self.roots, self.inbox), self.poll)
        try:
            if on_start is not None:
                on_start()
            next_rescan = self._next_rescan()
            while not stop.is_set():
                stop.wait(self.tick)
                self.drain()
                batch = self.trigger.poll()
                if batch:
                    self.on_batch(batch)
                if alarm.raised.is_set():
                    alarm.raised.clear()
                    log.warning("filesystem events were lost (queue overflow): rescanning every folder")
                    next_rescan = 0.0
                if next_rescan is not None and self.clock() >= next_rescan and not stop.is_set():
                    self.on_rescan()
                    next_rescan = self._next_rescan()
        finally:
            watchdog_log.removeHandler(alarm)
            _stop(observer)

    def drain(self) -> None:
        """Move what the observer collected into the trigger."""
        while True:
            try:
                paths = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.trigger.add(paths)

    def _next_rescan(self) -> float | None:
        return self.clock() + self.rescan_interval if self.rescan_interval > 0 else None
