"""Camera RAW through LibRaw (rawpy): the embedded preview when it is large enough, else a half-size demosaic.

The embedded JPEG preview is what the camera and photo managers show, and decoding it takes a fraction of
a demosaic. It is used when it is at least as large as what is asked for (the model's input when indexing,
a thumbnail's size, or half the sensor for a full rendering); otherwise LibRaw demosaics at half size
(one RGB pixel per 2x2 Bayer block), which is still more than any model input needs.
Orientation comes from the RAW's own flip (previews are stored as the sensor saw them); the date taken from
the file's EXIF (or LibRaw's metadata, which costs an unpack of the sensor data on the preview path).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from ..errors import DecodeError
from .exif import TIFF_MAGIC, read_exif, tiff_exif
from .exif import taken_at as exif_taken_at

#: Whether LibRaw's own messages are silenced (see `silence_libraw`).
_SILENT = False
#: LibRaw's flip (bit 4 transpose, bit 2 flip vertically, bit 1 flip horizontally) as an EXIF orientation.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}


@dataclass
class RawPicture:
    """A RAW file's picture as the camera took it (not yet upright), and what LibRaw says about it."""

    image: Image.Image  # RGB, or a JPEG preview still to be drafted and loaded
    orientation: int  # EXIF orientation (1-8) that makes `image` upright
    width: int  # of the upright full-size picture
    height: int
    taken_at: float | None
    demosaiced: bool  # by LibRaw, at half size: not the embedded preview


def silence_libraw() -> None:
    """Send LibRaw's own messages to /dev/null in this process: it writes "unknown file: Unexpected end of
    file" to stderr, naming no file, while the decode error already says it on the file's own line. Only
    for single-threaded decode workers: it swaps file descriptor 2 for the length of each decode."""
    global _SILENT
    _SILENT = True


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    if not _SILENT:
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_raw(data: bytes, fmt: str, min_edge: int | None, max_pixels: int) -> RawPicture:
    """Open a RAW file's bytes: the preview if its shorter edge reaches `min_edge` (None: half the sensor's),
    else a half-size demosaic. Every failure is a DecodeError."""
    import rawpy

    try:
        with _native_stderr_silenced(), rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            width, height = sizes.width, sizes.height
            if width * height > max_pixels:
                raise DecodeError(f"too many pixels ({width}x{height} > {max_pixels:,}): refused")
            orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
            need = min_edge if min_edge is not None else min(width, height) // 2
            preview = _preview(raw, need, max_pixels)
            if preview is None:
                pixels = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8, user_flip=0)
                image = Image.fromarray(pixels)
                taken_at = _libraw_taken_at(raw)  # free now: the sensor data is unpacked
            else:
                image, taken_at = preview, _preview_taken_at(raw, data, preview)
    except DecodeError:
        raise
    except rawpy.LibRawFileUnsupportedError as e:
        raise DecodeError(f"not a {fmt} file LibRaw can read ({_reason(e)})") from e
    except rawpy.LibRawIOError as e:
        raise DecodeError(
            f"broken {fmt} file: its data ends early or cannot be read (LibRaw: {_reason(e)})"
        ) from e
    except (rawpy.LibRawError, OSError, ValueError, MemoryError) as e:
        raise DecodeError(f"broken {fmt} file: {_reason(e)}") from e
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return RawPicture(image, orientation, width, height, taken_at, demosaiced=preview is None)


def _preview(raw: object, need: int, max_pixels: int) -> Image.Image | None:
    """The embedded preview as an unloaded Pillow image when it is large enough, else None."""
    import rawpy

    try:
        thumb = raw.extract_thumb()  # type: ignore[attr-defined]
    except rawpy.LibRawError:  # none, of a kind LibRaw cannot extract, or damaged: the sensor data remains
        return None
    image: Image.Image
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = Image.open(io.BytesIO(thumb.data))
        else:
            image = Image.fromarray(thumb.data)
    except Exception:  # a preview Pillow cannot read: demosaic instead
        return None
    w, h = image.size
    if min(w, h) < need or w * h > max_pixels:
        return None
    return image


def _preview_taken_at(raw: object, data: bytes, preview: Image.Image) -> float | None:
    """The date taken, without unpacking the sensor data (rawpy's metadata does, for a third of a second
    at 24 MP): a TIFF-structured RAW's own EXIF, else the preview's, else LibRaw's after all."""
    if data.startswith(TIFF_MAGIC):
        return exif_taken_at(tiff_exif(data))
    found = exif_taken_at(read_exif(preview))
    return found if found is not None else _libraw_taken_at(raw)


def _libraw_taken_at(raw: object) -> float | None:
    """LibRaw's timestamp (the camera's date taken, local time, as EXIF gives it); None when unset."""
    try:
        stamp = raw.other.timestamp  # type: ignore[attr-defined]
        seconds = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
    except Exception:  # metadata is optional
        return None
    return seconds if seconds > 0 else None


def _reason(error: BaseException) -> str:
    text = error.args[0] if error.args else error
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return " ".join(str(text).split()) or type(error).__name__
