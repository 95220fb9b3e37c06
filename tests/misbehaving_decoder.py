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
    if b"-in-libraw" in name:  # LibRaw holds the file, then its C code crashes or never returns
        import ctypes

        import rawpy

        with rawpy.imread(os.fsdecode(path)) as raw:
            raw.sizes  # noqa: B018 - the file is open in LibRaw
            if name.startswith(b"crash"):
                ctypes.string_at(0)  # a read of address 0 in native code: a real SIGSEGV
            ctypes.CDLL(None).sleep(3600)  # native code that does not return
    if name.startswith(b"crash"):
        os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder bug in C looks like from Python
    if name.startswith(b"hang"):
        time.sleep(3600)  # a decoder stuck in a loop
    return decode_job(path, prep)
