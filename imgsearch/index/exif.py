"""EXIF, as far as indexing needs it: a picture's orientation and the date it was taken.

Malformed EXIF is common in the wild and never costs the picture: every reader here returns "unknown".
"""

from __future__ import annotations

import time

from PIL import Image

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def read_exif(image: Image.Image) -> Image.Exif | None:
    """An opened image's EXIF, or None when it cannot be read."""
    try:
        return image.getexif()
    except Exception:  # malformed EXIF must not cost the picture
        return None


def tiff_exif(data: bytes) -> Image.Exif | None:
    """The EXIF of a TIFF-structured file (most camera RAW: DNG, CR2, NEF, ARW, PEF, SRW) from its own
    tags, without decoding any picture; None for any other file."""
    if not data.startswith(TIFF_MAGIC):
        return None
    try:
        exif = Image.Exif()
        exif.load(data)
    except Exception:  # a RAW maker's own variant of TIFF, or damaged tags
        return None
    return exif


def orientation(exif: Image.Exif | None) -> int:
    """The EXIF orientation (1-8; 1 when unknown)."""
    value = exif.get(_ORIENTATION, 1) if exif is not None else 1
    return value if value in _TRANSPOSE else 1


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation (1-8) to pixels, as a viewer would."""
    method = _TRANSPOSE.get(orientation)
    return image.transpose(method) if method is not None else image


def taken_at(exif: Image.Exif | None) -> float | None:
    """DateTimeOriginal (else DateTime) as a Unix time, read as local time as cameras write it."""
    if exif is None:
        return None
    try:
        value = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if not isinstance(value, str):
            return None
        return time.mktime(time.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S"))
    except Exception:  # dates in the wild are often malformed; they are optional
        return None
