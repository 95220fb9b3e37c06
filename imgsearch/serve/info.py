"""<home>/server.json: how other processes find a running server for an index (and reuse its warm model).

{"url": "http://127.0.0.1:8765/", "pid": 1234, "token": null, "model": "ViT-B-32:...", "version": "0.1.0"}
Written atomically with mode 0600 (it may hold the token) when the server starts listening, removed when it
stops. A server killed hard leaves the file behind, so a reader trusts it only while the pid is alive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INFO_FILE = "server.json"


def reader_key(db: str | None, path_map: Sequence[str] = (), lang: str | None = None) -> str:
    """Which catalog a process reads (--db), how it maps paths (--path-map) and the language it reads
    texts in (--lang): a server answers another process's query only when all say the same. A hash of the
    settings as given, since a URL may hold a password, and cheap: the query's fast path imports no
    database code."""
    mapped = list(path_map) or [os.environ.get("IMGSEARCH_PATH_MAP", "")]
    settings: list[object] = [db or "", mapped]
    if lang:
        settings.append(lang)  # only when set: keys written before --lang stay the same
    return hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]


def write_info(
    home: Path, url: str, token: str | None, model: str | None, version: str, reader: str | None = None
) -> Path:
    path = home / INFO_FILE
    info = {
        "url": url,
        "pid": os.getpid(),
        "token": token,
        "model": model,
        "version": version,
        "reader": reader or reader_key(None),
    }
    home.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".server-", suffix=".json")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_info(home: Path) -> dict[str, Any] | None:
    """The running server's info, or None when there is none (no file, unreadable, or its process is gone)."""
    try:
        info = json.loads((home / INFO_FILE).read_text())
        pid = int(info["pid"])
        str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if _alive(pid) else None


def remove_info(home: Path) -> None:
    """Remove server.json if it is this process's own (a newer server may have replaced it)."""
    path = home / INFO_FILE
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        if json.loads(path.read_text())["pid"] == os.getpid():
            path.unlink()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
