"""Run the app with uvicorn: bind first (so --port 0 works and the URL is known), start indexing the folders
when there are any (imgsearch.serve.live), announce the URL in server.json, serve until SIGINT/SIGTERM,
then stop the indexing and remove server.json."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import __version__
from ..errors import ImgsearchError, UsageError
from ..library import Library
from .info import remove_info, write_info


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    library: Library,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    on_ready: Callable[[str], None] | None = None,
    folders: Sequence[str | os.PathLike[str]] = (),
    poll: bool = False,
    reader: str | None = None,
) -> None:
    """Serve `library` until interrupted; `on_ready(url)` is called once the socket listens. With
    `folders`, this process is also the index's writer: it indexes them and follows their changes (as
    `imgsearch watch`, `poll` as its --poll) in a thread beside the requests, which are answered meanwhile
    from whatever is indexed so far. A second signal while the indexing winds down ends the process."""
    import uvicorn

    from .app import create_app
    from .live import LiveIndex

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on sockets that say they are TCP; with
    # it on, a response's body waits for the client's delayed ACK of its headers (40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # from now on clients queue until uvicorn accepts them
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    bound_port = sock.getsockname()[1]
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # "any address": connect to this machine
    url = f"http://{f'[{reach}]' if family == socket.AF_INET6 else reach}:{bound_port}/"
    try:
        model = library.status().model
    except ImgsearchError:  # no index yet: the page says so; server.json just has no model
        model = None
    if model is None and folders:  # the model it will index with
        with contextlib.suppress(ImgsearchError):
            model = library.model_spec().id
    live = LiveIndex(library, folders, poll=poll) if folders else None
    config = uvicorn.Config(create_app(library, token, live=live), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    write_info(library.home, url, token, model, __version__, reader)  # reader: see info.reader_key
    try:
        with _stop_on_signals(server):
            if live is not None:
                live.start()
            if on_ready is not None:
                on_ready(url)
            server.run(sockets=[sock])
    finally:
        try:
            if live is not None:
                live.stop()  # the default handlers are back: a second Ctrl-C does not wait for it
        finally:
            remove_info(library.home)
            sock.close()


@contextlib.contextmanager
def _stop_on_signals(server: Any) -> Iterator[None]:
    """SIGINT/SIGTERM ask uvicorn to stop gently, from the moment the URL is announced: one that arrives
    before uvicorn has put in its own handlers is not lost, and after uvicorn has shut down it re-raises
    the signal for the handler it found, this one, so `serve` returns (and removes server.json) instead
    of dying or raising."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_: object) -> None:
        server.should_exit = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
