"""A decode function for worker processes that crashes or hangs on request (fault injection).

It lives in its own module so that spawned worker processes can import it by name.
"""

from __future__ import annotations

import os
import signal
import time

from imgsearch.index.workers import decode_job


def decode_or_misbehave(path: bytes, prep):  # type: ignore[no-untyped-def]
    name = os.path.basename(path)
    if name.startswith(b"crash"):
        os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug in C looks like from Python
    if name.startswith(b"hang"):
        time.sleep(3600)  # a decoder stuck in a loop
    return decode_job(path, prep)
