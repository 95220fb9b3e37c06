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


class DecodePool:
    """`workers` decode processes, started ahead of need (`start`: while the model loads) and kept across
    decode_all calls, so a watch run's batches do not each pay for starting Python and Pillow."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Launch every worker now; each imports its modules while the caller goes on."""
        pool = self.executor()
        for _ in range(self.workers):
            pool.submit(_ready)

    def executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.workers, context, initializer=_start_worker, initargs=(os.getpid(),)
            )
        return self._pool

    def replace(self) -> ProcessPoolExecutor:
        """A new pool for one whose worker died (the old one is unusable)."""
        self.close()
        return self.executor()

    def close(self) -> None:
        """Stop the workers now: nothing they still hold is wanted. They are terminated, not only told to
        stop: after a run ended by an error mid-batch, the executor's shutdown can leave a worker waiting on
        its call queue for ever, and Python's exit then waits for that worker (the command never ends)."""
        if self._pool is not None:
            processes = list(self._pool._processes.values())  # private, but the only handle on them
            self._pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                with contextlib.suppress(OSError, ValueError):
                    process.terminate()
            self._pool = None


def _ready() -> None:
    """A task that only makes a worker start."""


def _start_worker(parent: int) -> None:
    """Worker initializer. Ctrl-C is the indexing process's to handle (it stops the pool), not each
    worker's traceback. On Linux, end with the indexing process even when it is killed with SIGKILL
    (idle pool workers otherwise outlive it; `imgsearch watch` may be stopped that way)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

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
    workers: int | DecodePool,
    decode: Callable[[bytes, Preprocess], DecodedImage | str | None] = decode_job,
    limit: int = DECODE_TIME_LIMIT_S,
) -> Iterator[tuple[Job, DecodedImage | str | None]]:
    """Decode in worker processes (a number: a pool of this call's own; a DecodePool: kept after it), a
    bounded window ahead of the consumer, in completion order.

    A worker that dies (a decoder crash, or the time limit's alarm) breaks the pool. The pool is replaced
    and the files that were in flight are retried one at a time, alone in the pool, so that a second death
    names the culprit exactly: it is reported as a bad file and the innocent ones are decoded as usual.
    """
    queue = list(jobs)[::-1]
    suspects: list[Job] = []
    own = not isinstance(workers, DecodePool)
    pools = DecodePool(workers) if isinstance(workers, int) else workers
    window = pools.workers * 4 + 32
    pool = pools.executor()
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
                pool = pools.replace()
            yield from results
    finally:
        if own:
            pools.close()
        else:  # the consumer stopped early: what is still queued is not needed
            for future in pending:
                future.cancel()
