"""How results are printed: aligned text, JSON lines, or bare paths for pipes."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import click

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127]} | {10: "\\n", 9: "\\t", 13: "\\r"}


def display_path(path: bytes | str) -> str:
    """A path for people to read, one line whatever its name: bytes that are not UTF-8 and control characters
    (a newline in a file name) shown as backslash escapes. --paths, -0 and --json keep the exact name."""
    raw = path if isinstance(path, bytes) else os.fsencode(path)
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)


def print_matches(
    matches: Sequence[Any], as_json: bool, paths_only: bool, nul: bool, preview: str | None = None
) -> None:
    if as_json:
        from ..serve.wire import match_to_json  # the HTTP API's results are these same objects

        for m in matches:
            click.echo(json.dumps(match_to_json(m), ensure_ascii=False))
    elif paths_only or nul:
        out = sys.stdout.buffer
        for m in matches:  # the exact bytes of the name, whatever its encoding
            out.write(m.raw_path + (b"\0" if nul else b"\n"))
        out.flush()
    else:
        for m in matches:  # score, date (taken, else modified), pixel size, path: the path last, whole
            day = time.strftime("%Y-%m-%d", time.localtime(m.date))
            click.echo(f"{m.score:.4f}  {day}  {f'{m.width}x{m.height}':>11}  {display_path(m.path)}")
            for other in m.siblings:  # the same photo's other files (RAW+JPEG), under its path
                click.echo(f"{'':33}+ {display_path(os.path.basename(other))}")
            if preview:
                from .preview import show

                show(m.path, preview)
