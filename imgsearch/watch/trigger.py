"""Debounce: collect touched paths and hand them over as one batch once things are quiet and settled.

A batch fires when no new path arrived for `settle` seconds, or when the first pending path has waited
`max_delay` seconds (a steady stream of events still gets indexed). Either way every pending file must look
the same (size and mtime) at two looks in a row, so a file still being copied is not read half-written; a
file that never settles is let through after `max_unsettled` seconds (its next change indexes it again).
The clock and the stat function are injected, so tests drive it by hand with no sleeps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

Look = tuple[int, int] | None  # (size, mtime_ns), or None when the path is gone or not a file
_UNSEEN = (-1, -1)


def look(path: bytes) -> Look:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if not os.path.isdir(path) else None


class Trigger:
    def __init__(
        self,
        settle: float = 1.0,
        max_delay: float = 10.0,
        max_unsettled: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        stat: Callable[[bytes], Look] = look,
    ):
        if settle < 0 or max_delay < settle:
            raise ValueError("need 0 <= settle <= max_delay")
        self.settle = settle
        self.max_delay = max_delay
        self.max_unsettled = max_unsettled
        self.clock = clock
        self.stat = stat
        self.pending: dict[bytes, tuple[Look | tuple[int, int], float]] = {}  # path -> (last look, since)
        self.first_at: float | None = None
        self.last_at = 0.0

    def __len__(self) -> int:
        return len(self.pending)

    def add(self, paths: Iterable[bytes]) -> None:
        """Paths touched just now: each waits for the quiet period and two equal looks again."""
        now = self.clock()
        added = False
        for path in paths:
            since = self.pending[path][1] if path in self.pending else now
            self.pending[path] = (_UNSEEN, since)
            added = True
        if added:
            self.last_at = now
            if self.first_at is None:
                self.first_at = now

    def poll(self) -> list[bytes] | None:
        """The batch to index now (sorted paths), or None to keep waiting.

        After a quiet period every pending path goes once all of them look settled. Under a steady stream
        of changes, `max_delay` after the first one the settled paths go and the others keep waiting.
        """
        if not self.pending or self.first_at is None:
            return None
        now = self.clock()
        overdue = now - self.first_at >= self.max_delay
        if now - self.last_at < self.settle and not overdue:
            return None
        unsettled = set()
        for path, (seen, since) in self.pending.items():
            current = self.stat(path)
            if current != seen:
                self.pending[path] = (current, since)
                if now - since < self.max_unsettled:
                    unsettled.add(path)
        if unsettled and not overdue:
            return None
        batch = sorted(p for p in self.pending if p not in unsettled)
        if not batch:
            return None
        self.pending = {p: v for p, v in self.pending.items() if p in unsettled}
        self.first_at = now if self.pending else None  # what is left gets its own max_delay
        return batch
