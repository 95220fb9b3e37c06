"""Run the app with uvicorn: bind first (so --port 0 works and the URL is known), announce it in server.json,
serve until SIGINT/SIGTERM, then remove server.json."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import threading
from collections.abc import Callable, Iterator
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
) -> None:
    """Serve `library` until interrupted; `on_ready(url)` is called once the socket listens."""
    import uvicorn

    from .app import create_app

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
    config = uvicorn.Config(create_app(library, token), log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    write_info(library.home, url, token, model, __version__)
    try:
        with _stop_on_signals(server):
            if on_ready is not None:
                on_ready(url)
            server.run(sockets=[sock])
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
