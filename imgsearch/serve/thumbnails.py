"""Thumbnails for the web page, and JPEG renderings of originals a browser cannot show (camera RAW, PSD,
TIFF, HEIC ...), made once and kept in <index home>/thumbnails/.

A thumbnail is named after the content hash of the photo it was made from and its size, so a photo whose
bytes change (and are re-indexed) gets a new one and the old one is simply never asked for again. The source
bytes are hashed while the thumbnail is made and must match the catalog's hash: a file changed on disk but
not yet re-indexed never leaves a thumbnail under the old name.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from ..errors import ImgsearchError
from ..index.decode import hash_bytes, open_upright_rgb
from ..model.preprocess import Preprocess

#: Edge lengths (px) a client may ask for: the grid's and the viewer's.
SIZES = (128, 256, 512, 1024)
#: Pillow formats every current browser displays; an original in any other format is served rendered.
BROWSER_FORMATS = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",  # a JPEG with more pictures after the first
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
    "BMP": "image/bmp",
    "ICO": "image/x-icon",
}
#: The longer edge of a rendered original at most (a screen's worth; a RAW's preview is about this size).
RENDERED_EDGE = 4096
FOLDER = "thumbnails"
QUALITY = 82
RENDERED_QUALITY = 90


class ChangedOnDisk(ImgsearchError):
    """The file's bytes are no longer the ones indexed."""


def thumbnail_path(home: Path, content_hash: bytes, size: int | str) -> Path:
    name = content_hash.hex()
    return home / FOLDER / name[:2] / f"{name}-{size}.jpg"


def thumbnail(home: Path, source: str | bytes, content_hash: bytes, size: int) -> Path:
    """The cached thumbnail of `source` (whose indexed content hash is `content_hash`), made if missing.

    Decoding goes through imgsearch.index.decode (decompression-bomb cap, EXIF orientation, JPEG draft
    mode, RAW previews). Raises DecodeError for an unreadable image and ChangedOnDisk when the bytes no
    longer match.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    return _cached(home, source, content_hash, size, QUALITY)


def rendered(home: Path, source: str | bytes, content_hash: bytes) -> Path:
    """The cached JPEG rendering of an original a browser cannot show, upright, at most RENDERED_EDGE px."""
    return _cached(home, source, content_hash, None, RENDERED_QUALITY)


def _cached(home: Path, source: str | bytes, content_hash: bytes, size: int | None, quality: int) -> Path:
    """The JPEG of `source` at most `size` px (None: a rendering of the original), made if missing."""
    path = thumbnail_path(home, content_hash, size or "full")
    if path.exists():
        return path
    with open(source, "rb") as f:
        data = f.read()
    if hash_bytes(data) != content_hash:
        raise ChangedOnDisk("the file changed since it was indexed; re-index it (or run `imgsearch watch`)")
    prep = Preprocess(size, size) if size is not None else None
    image = open_upright_rgb(data, prep, name=source)[0]
    edge = size or RENDERED_EDGE
    image.thumbnail((edge, edge))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    _write_atomically(path, out.getvalue())
    return path


def _write_atomically(path: Path, data: bytes) -> None:
    """Temp file + rename: a reader sees a whole thumbnail or none, even with two writers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
