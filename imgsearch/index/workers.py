"""The decode worker pool: files -> model-sized pixels in worker processes, each file under a time limit.

A leaf module: a spawned worker imports this, imgsearch.index.decode (Pillow) and nothing of the catalog,
FAISS or torch, so workers start in a fraction of a second and hold little memory.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol, TypeVar

from ..errors import DecodeError
from ..model.preprocess import Preprocess
from .decode import DecodedImage, decode_file
from .raw import silence_libraw

#: A file whose decoding takes longer than this is abandoned (its worker is ended) and reported as bad.
DECODE_TIME_LIMIT_S = 60


class _HasPath(Protocol):
    @property
    def path(self) -> bytes: ...


Job = TypeVar("Job", bound=_HasPath)


def decode_job(path: bytes, prep: Preprocess) -> DecodedImage | str | None:
    """Worker entry point: a decoded image, a failure reason, or None when the file vanished."""
    try:
        return decode_file(path, prep)
    except FileNotFoundError:
        return None
    except DecodeError as e:
        return str(e)
    except MemoryError:
        return "out of memory while decoding"


def crash_reason(limit: int) -> str:
    """What a file is recorded with when decoding it killed or stalled its worker, named alone."""
    return f"the decoder crashed or ran over {limit} s on this file"


def _pool(workers: int, context: multiprocessing.context.BaseContext) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, context, initializer=_start_worker, initargs=(os.getpid(),))


def _start_worker(parent: int) -> None:
    """Worker initializer. On Linux, end with the indexing process even when it is killed with SIGKILL
    (idle pool workers otherwise outlive it; `imgsearch watch` may be stopped that way)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)
    silence_libraw()  # its messages name no file; each failure is reported on the file's own line


def guarded(
    decode: Callable[[bytes, Preprocess], DecodedImage | str | None],
    path: bytes,
    prep: Preprocess,
    limit: int,
) -> DecodedImage | str | None:
    """Run one decode in a worker under an alarm whose default action ends the worker, so a decoder stuck
    in C code cannot stall the run (the pool notices the dead worker; see decode_all)."""
    alarm = getattr(signal, "alarm", None)  # POSIX only
    if alarm is not None and limit > 0:
        alarm(limit)
    try:
        return decode(path, prep)
    finally:
        if alarm is not None and limit > 0:
            alarm(0)


def decode_all(
    jobs: Iterable[Job],
    prep: Preprocess,
    workers: int,
    decode: Callable[[bytes, Preprocess], DecodedImage | str | None] = decode_job,
    limit: int = DECODE_TIME_LIMIT_S,
) -> Iterator[tuple[Job, DecodedImage | str | None]]:
    """Decode in worker processes, a bounded window ahead of the consumer, in completion order.

    A worker that dies (a decoder crash, or the time limit's alarm) breaks the pool. The pool is replaced
    and the files that were in flight are retried one at a time, alone in the pool, so that a second death
    names the culprit exactly: it is reported as a bad file and the innocent ones are decoded as usual.
    """
    queue = list(jobs)[::-1]
    suspects: list[Job] = []
    window = workers * 4 + 32
    context = multiprocessing.get_context("spawn")
    pool = _pool(workers, context)
    pending: dict[Future, Job] = {}
    alone: Job | None = None
    try:
        while queue or suspects or pending:
            if suspects:
                if not pending:
                    alone = suspects.pop()
                    pending[pool.submit(guarded, decode, alone.path, prep, limit)] = alone
            else:
                alone = None
                while queue and len(pending) < window:
                    job = queue.pop()
                    pending[pool.submit(guarded, decode, job.path, prep, limit)] = job
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            results: list[tuple[Job, DecodedImage | str | None]] = []
            broken = False
            for future in done:
                job = pending.pop(future)
                try:
                    results.append((job, future.result()))
                except BrokenProcessPool:
                    broken = True
                    if job is alone:
                        results.append((job, crash_reason(limit)))
                    else:
                        suspects.append(job)
            if broken:
                suspects.extend(pending.values())
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = _pool(workers, context)
            yield from results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
