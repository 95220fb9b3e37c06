"""`imgsearch` commands in processes of their own, forked from a server that has imported torch already.

A fresh `python -m imgsearch` spends 3-7 s importing torch and open_clip. The crash and concurrency tests
start dozens of processes and kill them, so they start them from multiprocessing's forkserver with those
modules preloaded (the server imports them and never runs torch, so forking it is safe). Each child runs the
console script's own entry point, `imgsearch.cli.main`, with stdout and stderr in a log file: a real
process, which a real SIGKILL ends, with real decoding workers of its own.

A child can be armed to SIGKILL itself at an exact point (see KILL_POINTS): the n-th hash, model load,
embedding, row insert inside a write transaction, just after a commit, halfway through writing the FAISS
file, between writing and renaming it, after renaming it. Or it can be held at such a point until a file
appears (`hold`), so that a test knows for sure that it is in the middle of its work.

`run_fresh` is the other kind: a command in a fresh interpreter that has imported nothing yet, for the tests
of what a command imports (help and status never import torch, a cold query takes the ONNX path).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PRELOAD = ["torch", "open_clip", "faiss", "imgsearch.cli", "imgsearch.library", "tests.cli_process"]

#: name -> (module, owner attribute path, kill before or after the call, how the attribute is bound)
KILL_POINTS: dict[str, tuple[str, str, str, str]] = {
    "hashing": ("imgsearch.index.indexer", "try_hash", "before", "function"),
    "loading the model": ("imgsearch.model.encoder", "Encoder.load", "before", "classmethod"),
    "embedding a batch": ("imgsearch.model.encoder", "Encoder.embed_pixels", "before", "method"),
    "inside a write transaction": ("imgsearch.store.catalog", "CatalogWriter.add_image", "before", "method"),
    "after a commit, before FAISS follows": (
        "imgsearch.store.vectors",
        "VectorIndex.apply",
        "before",
        "method",
    ),
    "FAISS file half written": ("imgsearch.store.vectors", "faiss.write_index", "half", "function"),
    "FAISS temp file written, not renamed": (
        "imgsearch.store.vectors",
        "faiss.write_index",
        "after",
        "function",
    ),
    "FAISS file renamed, old not removed": ("imgsearch.store.vectors", "fsync_path", "before", "function"),
}


_started: list[Any] = []


def start(
    argv: list[str],
    log: Path,
    kill_point: tuple[str, int] | None = None,
    hold: tuple[str, int, Path] | None = None,
    env: dict[str, str] | None = None,
) -> Any:
    """Start `imgsearch ARGV` in a forked child; returns the started multiprocessing Process.

    `kill_point` (point, n): SIGKILL at the n-th call at that point. `hold` (point, n, release): wait at the
    n-th call until the file `release` exists, then go on. `env` is set in the child: it inherits the
    environment the fork server had when it started, not the test's.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    process = context.Process(target=_main, args=(argv, str(log), kill_point, hold, env or {}))
    process.start()
    _started.append(process)
    return process


def kill_all() -> None:
    """SIGKILL every started process still running (a test's teardown)."""
    while _started:
        process = _started.pop()
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join()


def _main(
    argv: list[str],
    log: str,
    kill_point: tuple[str, int] | None,
    hold: tuple[str, int, Path] | None,
    env: dict[str, str],
) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - the process's own stdout
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.update(env)
    from multiprocessing import resource_tracker

    # its own tracker: what a killed child leaves (its pool's semaphores) is cleaned up and logged there
    resource_tracker._resource_tracker._fd = None
    resource_tracker._resource_tracker._pid = None
    if kill_point is not None:
        _arm(*kill_point)
    if hold is not None:
        _hold(*hold)
    from imgsearch.cli import main

    main(argv, prog_name="imgsearch")


def _arm(point: str, nth: int) -> None:
    """Make the n-th call at `point` SIGKILL this process (before or after the call does its work)."""
    when = KILL_POINTS[point][2]

    def kill(call: Callable[[], Any], args: tuple[Any, ...]) -> Any:
        if when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = call()
        if when == "half":  # as if the process died halfway through writing this file
            os.truncate(args[1], os.path.getsize(args[1]) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
        return result

    _on_nth_call(point, nth, kill)


def _hold(point: str, nth: int, release: Path) -> None:
    """Make the n-th call at `point` wait (at most 5 minutes) until the file `release` exists."""

    def wait(call: Callable[[], Any], _args: tuple[Any, ...]) -> Any:
        deadline = time.monotonic() + 300
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return call()

    _on_nth_call(point, nth, wait)


def _on_nth_call(point: str, nth: int, around: Callable[[Callable[[], Any], tuple[Any, ...]], Any]) -> None:
    """Replace the function at `point` (see KILL_POINTS) so that its n-th call goes through
    `around(call, args)` instead of straight to the function."""
    import importlib

    module_name, attribute, _, kind = KILL_POINTS[point]
    owner: Any = importlib.import_module(module_name)
    *parents, name = attribute.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original: Callable[..., Any] = getattr(owner, name)
    calls = 0
    lock = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        with lock:
            calls += 1
            hit = calls == nth
        call = functools.partial(original, *args, **kwargs)
        return around(call, args) if hit else call()

    setattr(owner, name, staticmethod(wrapper) if kind == "classmethod" else wrapper)


def children(pid: int) -> list[int]:
    """Direct children of a process (its decoding workers), on Linux."""
    return processes_where(parent=pid)


def processes_where(parent: int | None = None, session: int | None = None) -> list[int]:
    """Pids of the live processes with this parent pid and/or session id, from /proc (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        fields = _live_stat(entry.name) if entry.name.isdigit() else None
        if fields and parent in (None, int(fields[1])) and session in (None, int(fields[3])):
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether a process is running (a zombie, ended but not yet reaped, is not), on Linux."""
    return _live_stat(str(pid)) is not None


def _live_stat(pid: str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, session, ...), or None when
    the process is gone or a zombie (it has ended; only its reaping is left)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields


_FRESH = """\
import json, sys
modules, argv = sys.argv[1], sys.argv[2:]
from imgsearch.cli import main
try:
    main(argv, prog_name="imgsearch")
finally:
    with open(modules, "w") as f:
        json.dump(sorted(sys.modules), f)
"""


@dataclass(frozen=True)
class Finished:
    """A command run by `run_fresh`: its exit status, its own stdout and stderr, the modules it imported."""

    returncode: int
    stdout: str
    stderr: str
    modules: frozenset[str]


def run_fresh(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> Finished:
    """`imgsearch ARGV` in a new `python -c` process (environment `env`, else this one's), to its end.

    The names in its sys.modules when the command ends (returned, exited or raised) are written to a file
    of their own, so stdout and stderr are the command's alone."""
    with tempfile.TemporaryDirectory() as tmp:
        modules = Path(tmp) / "modules.json"
        command = [sys.executable, "-c", _FRESH, str(modules), *map(str, argv)]
        done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        imported = json.loads(modules.read_text()) if modules.exists() else []
    return Finished(done.returncode, done.stdout, done.stderr, frozenset(imported))


def output_and_modules(
    argv: list[str], env: dict[str, str] | None = None
) -> tuple[list[str], frozenset[str]]:
    """`run_fresh(argv)` with `env` added to this process's environment, which must exit 0: its output
    lines and the modules it imported."""
    done = run_fresh(argv, {**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines(), done.modules
