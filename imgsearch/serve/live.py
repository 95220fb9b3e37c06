"""`imgsearch serve FOLDERS`: the server's own writer. One background thread runs `Library.watch` (index the
folders, then follow their changes) while the request threads read the index as any other reader does, and
it keeps what the page shows of it: "indexing: encoding 120 / 4000", then "up to date, watching".

A failure of the watch run (another process holds the write lock, a folder unplugged at start) ends that
thread, not the server: it is logged and kept for the page. `stop` ends the run as Ctrl-C ends `imgsearch
watch`: the batch in flight rolls back, everything committed stays, the FAISS file is saved.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from ..errors import ImgsearchError
from ..index.events import IndexEvents
from ..library import Library

_log = logging.getLogger("imgsearch")

#: How long `imgsearch serve FOLDERS` waits for its indexing thread to stop before it exits anyway.
STOP_TIMEOUT = 60.0

State = Literal["off", "starting", "indexing", "watching", "failed", "stopped"]


@dataclass
class Progress:
    """What the indexing thread is doing, as GET /api/progress shows it."""

    state: State = "off"  # off: no folders given, the server only reads
    folders: list[str] = field(default_factory=list)
    phase: str | None = None  # 'hashing', 'encoding', 'loading the model', ... while indexing
    done: int = 0  # files of the phase done so far
    total: int = 0  # files of the phase
    failures: int = 0  # files skipped since the server started (unreadable, not an image)
    error: str | None = None  # why the indexing thread stopped, when it failed

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class LiveIndex(IndexEvents):
    """Index `folders` into `library` and keep them in step, in a thread of this process (see the module)."""

    def __init__(
        self,
        library: Library,
        folders: Sequence[str | os.PathLike[str]],
        *,
        poll: bool = False,
        settle: float = 1.0,
        rescan_interval: float = 3600.0,
    ):
        self.library = library
        self.folders = [os.path.abspath(os.fspath(f)) for f in folders]
        self.poll, self.settle, self.rescan_interval = poll, settle, rescan_interval
        self._lock = threading.Lock()
        self._progress = Progress("starting", list(self.folders))
        self._stop = _Stop(self._waiting)
        self._thread = threading.Thread(target=self._run, name="imgsearch-watch", daemon=True)

    # -- the thread -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = STOP_TIMEOUT) -> bool:
        """Ask the run to stop and wait for it (at most `timeout` s); whether it has stopped. A pass stops
        at its next file; loading the model, or saving a large FAISS index, is waited for."""
        self._stop.set()
        if self._thread.is_alive():
            _log.info("stopping the indexer")
            self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning("the indexer did not stop within %.0f s; what it committed is kept", timeout or 0)
            return False
        return True

    def _run(self) -> None:
        try:
            self.library.watch(
                self.folders,
                events=self,
                settle=self.settle,
                rescan_interval=self.rescan_interval,
                poll=self.poll,
                stop=self._stop,
            )
        except KeyboardInterrupt:  # raised by advance() once stop() is asked: the run has unwound
            pass
        except Exception as e:
            if self._stop.is_set():  # e.g. Ctrl-C in a terminal also ended the decoding workers
                _log.info("the indexer stopped: %s", e)
            elif isinstance(e, ImgsearchError):
                self._failed(str(e))
                return
            else:  # a bug: the server goes on reading, the page and the log say what broke
                _log.error("the indexer stopped on an internal error", exc_info=e)
                self._failed(f"internal error: {type(e).__name__}: {e}")
                return
        with self._lock:
            self._progress = Progress("stopped", list(self.folders), failures=self._progress.failures)

    def _failed(self, message: str) -> None:
        _log.error("indexing stopped: %s", message)
        with self._lock:
            failures = self._progress.failures
            self._progress = Progress("failed", list(self.folders), failures=failures, error=message)

    def _waiting(self) -> None:
        """The watcher waits for changes: every folder is up to date."""
        with self._lock:
            if self._progress.state != "watching":
                self._progress = Progress("watching", list(self.folders), failures=self._progress.failures)

    # -- what the page shows ----------------------------------------------------------------------------
    def progress(self) -> Progress:
        with self._lock:
            return replace(self._progress)

    def describe(self) -> str:
        """What it does, for a message: 'indexing /home/me/Photos (encoding 120 / 4000)'."""
        p = self.progress()
        where = ", ".join(p.folders)
        if p.state == "indexing":
            step = f"{p.phase} {p.done} / {p.total}" if p.total else p.phase
            return f"indexing {where}" + (f" ({step})" if step else "")
        return {
            "starting": f"starting to index {where}",
            "watching": f"watching {where}",
            "failed": f"not indexing {where}: {p.error}",
        }.get(p.state, f"no longer indexing {where}")

    # -- IndexEvents, called in the indexing thread ------------------------------------------------------
    def phase(self, name: str, total: int) -> None:
        self._check_stop()
        if name == "encoding":
            _all_threads()
        with self._lock:
            self._progress.state, self._progress.phase = "indexing", name
            self._progress.done, self._progress.total = 0, total

    def loading_model(self, model_id: str) -> None:
        self._step("loading the model")

    def preparing(self, what: str) -> None:
        self._step(what)

    def advance(self, n: int = 1) -> None:
        self._check_stop()
        with self._lock:
            self._progress.done += n

    def failed(self, path: bytes, reason: str) -> None:
        _log.warning("skipped %s: %s", os.fsdecode(path), reason)
        with self._lock:
            self._progress.failures += 1

    def _step(self, what: str) -> None:
        self._check_stop()
        with self._lock:
            self._progress.state, self._progress.phase = "indexing", what
            self._progress.done = self._progress.total = 0

    def _check_stop(self) -> None:
        """Once stop() is asked, end the pass in flight as Ctrl-C ends `imgsearch watch`'s."""
        if self._stop.is_set():
            raise KeyboardInterrupt


class _Stop(threading.Event):
    """The watch run's stop event. The watcher waits on it between batches (imgsearch.watch.watcher), which
    is how this thread learns that every folder is up to date."""

    def __init__(self, on_wait: Callable[[], None]) -> None:
        super().__init__()
        self._on_wait = on_wait

    def wait(self, timeout: float | None = None) -> bool:
        if not self.is_set():
            self._on_wait()
        return super().wait(timeout)


def _all_threads() -> None:
    """Torch threads for this (the indexing) thread: every core, as `imgsearch watch` has. Request threads
    set one each (imgsearch.serve.app._one_thread), and torch hands a thread that has not computed yet the
    count set last in any thread."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    from ..model.onnx_text import cpu_threads

    torch.get_num_threads()  # this thread's count is settled from now on, whatever other threads set
    if torch.get_num_threads() != cpu_threads():
        torch.set_num_threads(cpu_threads())
