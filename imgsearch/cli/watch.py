"""`imgsearch watch`: catch up, then keep the index in step with folders until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

import click

from ..index.events import IndexEvents
from .options import library_options, open_library, workers_option
from .output import display_path

log = logging.getLogger("imgsearch")


class _LogEvents(IndexEvents):
    """A long-running process has no progress bars: failures and model loading go to the log."""

    def __init__(self) -> None:
        self.loaded: set[str] = set()

    def loading_model(self, model_id: str) -> None:
        if model_id not in self.loaded:  # later batches find it loaded already
            self.loaded.add(model_id)
            log.info("loading model %s", model_id)

    def failed(self, path: bytes, reason: str) -> None:
        log.warning("skipped %s: %s", display_path(path), reason)


def _setup_logging(verbose: bool, quiet: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    for name in ("imgsearch", "watchdog"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.propagate = False  # a library that configured the root logger must not print it twice
        logger.setLevel(level if name == "imgsearch" else max(level, logging.INFO))
    return handler


class _Shutdown:
    """SIGINT/SIGTERM: set `stop` and interrupt the work in flight once (its batch rolls back; everything
    committed stays and the FAISS file is saved); later signals are ignored while shutting down."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Shutdown:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            return
        self.stop.set()
        log.info("%s: stopping", signal.Signals(signum).name)
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@click.command()
@click.argument("folders", nargs=-1, type=click.Path(exists=True, file_okay=False))
@library_options
@click.option(
    "--rescan-interval",
    type=click.FloatRange(min=0),
    default=3600,
    show_default=True,
    help="Seconds between full rescans, a safety net for lost events (0: never).",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Seconds without new changes (and with unchanged file sizes) before a batch is indexed.",
)
@click.option("--poll", is_flag=True, help="Poll for changes instead of OS events (network drives).")
@workers_option
@click.option("-v", "--verbose", is_flag=True, help="Log every change seen, and each batch's folders.")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
def watch(
    folders: tuple[str, ...],
    rescan_interval: float,
    settle: float,
    poll: bool,
    workers: int | None,
    verbose: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Index FOLDERS (or every folder indexed before), then follow their changes until Ctrl-C or SIGTERM.

    New, changed, moved and deleted images and folders are indexed in batches through the same path as
    `imgsearch index` (moves re-encode nothing); queries from other processes see them within seconds.
    Only one process writes to an index: a second `watch` or `index` exits 1 at once. Logs go to stderr.
    """
    if verbose and quiet:
        raise click.UsageError("--verbose and --quiet do not go together")
    handler = _setup_logging(verbose, quiet)
    library = open_library(workers=workers, **options)
    try:
        with _Shutdown() as shutdown:
            try:
                library.watch(
                    folders,
                    events=_LogEvents(),
                    settle=settle,
                    rescan_interval=rescan_interval,
                    poll=poll,
                    stop=shutdown.stop,
                )
            except KeyboardInterrupt:
                if not shutdown.stop.is_set():
                    raise
            log.info("stopped; everything committed is kept")
    finally:
        for name in ("imgsearch", "watchdog"):
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).propagate = True


COMMANDS = [watch]
