"""Thumbnails inline in the terminal: kitty's graphics protocol, iTerm2's inline images, or sixel.

Each protocol is a short escape sequence around the image bytes, so they are written here rather than
pulled in as a dependency. Anything that is not a terminal we recognise gets nothing: previews are a
bonus, never an error.
"""

from __future__ import annotations

import base64
import io
import os
import sys

import numpy as np
from PIL import Image

THUMBNAIL_PX = 192
PROTOCOLS = ("auto", "kitty", "iterm2", "sixel")


def detect(stream: object = None) -> str | None:
    """The protocol this terminal speaks, from its environment; None when unknown or not a terminal."""
    stream = stream or sys.stdout
    if not getattr(stream, "isatty", lambda: False)():
        return None
    term, program = os.environ.get("TERM", ""), os.environ.get("TERM_PROGRAM", "")
    if "kitty" in term or "ghostty" in term or os.environ.get("KITTY_WINDOW_ID"):
        return "kitty"
    if program in ("iTerm.app", "WezTerm") or os.environ.get("LC_TERMINAL") == "iTerm2":
        return "iterm2"
    if "sixel" in term or program in ("mlterm", "foot"):
        return "sixel"
    return None


def thumbnail(path: str) -> Image.Image | None:
    from ..errors import DecodeError
    from ..index.decode import open_upright_rgb

    try:
        with open(path, "rb") as f:
            image = open_upright_rgb(f.read(), name=path)[0]
    except (OSError, DecodeError):
        return None
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return image


def escape_sequence(image: Image.Image, protocol: str) -> bytes:
    if protocol == "sixel":
        return sixel(image)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = base64.b64encode(buffer.getvalue())
    if protocol == "iterm2":
        return b"\x1b]1337;File=inline=1;preserveAspectRatio=1;size=%d:%s\x07" % (
            len(buffer.getvalue()),
            data,
        )
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]  # kitty: at most 4096 bytes a chunk
    out = []
    for i, chunk in enumerate(chunks):
        more = 1 if i < len(chunks) - 1 else 0
        control = b"a=T,f=100,m=%d" % more if i == 0 else b"m=%d" % more
        out.append(b"\x1b_G" + control + b";" + chunk + b"\x1b\\")
    return b"".join(out)


def sixel(image: Image.Image, colours: int = 64) -> bytes:
    """DEC sixel: a palette, then bands six pixels tall, one run-length-coded line per colour."""
    quantized = image.convert("RGB").quantize(colours)
    palette = quantized.getpalette() or []
    indices = np.asarray(quantized)
    height, width = indices.shape
    out = [b"\x1bPq", b'"1;1;%d;%d' % (width, height)]
    used = [int(i) for i in np.unique(indices)]
    for index in used:
        r, g, b = palette[3 * index : 3 * index + 3]
        out.append(b"#%d;2;%d;%d;%d" % (index, r * 100 // 255, g * 100 // 255, b * 100 // 255))
    weights = (1 << np.arange(6))[:, None]
    for top in range(0, height, 6):
        band = indices[top : top + 6]
        lines = []
        for index in used:
            bits = ((band == index) * weights[: len(band)]).sum(axis=0)
            if bits.any():
                lines.append(b"#%d" % index + _run_length([int(v) for v in bits]))
        out.append(b"$".join(lines) + b"-")
    out.append(b"\x1b\\")
    return b"".join(out)


def _run_length(bits: list[int]) -> bytes:
    out, i = [], 0
    while i < len(bits):
        j = i
        while j < len(bits) and bits[j] == bits[i]:
            j += 1
        char = bytes([63 + bits[i]])
        out.append(b"!%d%s" % (j - i, char) if j - i > 3 else char * (j - i))
        i = j
    return b"".join(out)


def show(path: str, protocol: str) -> None:
    """Write one thumbnail on its own line; silently nothing when the image cannot be read."""
    image = thumbnail(path)
    if image is None:
        return
    out = sys.stdout.buffer
    out.write(escape_sequence(image, protocol) + b"\n")
    out.flush()
