"""Turn one image file into the model's input pixels, safely; runs in worker processes.

The file is read once: the same bytes are hashed and decoded, so the stored hash always describes the pixels
that were embedded. The resize and crop reproduce open_clip's eval transform (torchvision semantics), with
JPEG DCT draft decoding first so a 12 MP photo is never decoded at full size.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DecodeError
from ..formats import raw_format, register_plugins
from ..model.preprocess import Preprocess
from .exif import orientation as exif_orientation
from .exif import read_exif, upright
from .exif import taken_at as exif_taken_at
from .raw import open_raw

#: Images with more pixels than this are refused (decompression bombs); a 150 MP medium-format photo passes.
MAX_PIXELS = 250_000_000
#: Draft-decode JPEGs to at least this multiple of the model's input size before the exact resize.
DRAFT_FACTOR = 2
HASH_SIZE = 16
_PSD_VERSION_INFO = 0x0421  # image resource: version, hasRealMergedData, ...
_INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}

# Pillow's own guard (89 MP, an error at twice that) would refuse real 100+ MP photos before our check runs.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

register_plugins()  # HEIC/HEIF (phones) when pillow-heif is installed; AVIF is built into Pillow


@dataclass
class DecodedImage:
    """The model-sized pixels of one file, and what we learned about it on the way."""

    pixels: np.ndarray  # uint8, (height, width, 3), the model's input size
    width: int  # of the upright original
    height: int
    format: str
    taken_at: float | None  # EXIF DateTimeOriginal as a Unix time, when present
    size: int  # bytes of the file as read
    mtime_ns: int
    content_hash: bytes


def hash_bytes(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_SIZE).digest()


def hash_file(path: str | bytes) -> tuple[bytes, int, int]:
    """(content hash, size, mtime_ns) of a file, read in one pass."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        digest = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=HASH_SIZE)).digest()
    return digest, st.st_size, st.st_mtime_ns


def try_hash(path: bytes) -> tuple[bytes, int, int] | str | None:
    """hash_file, or a one-line reason; None when the file vanished meanwhile (nothing to report)."""
    try:
        return hash_file(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot read file: {e.strerror or e}"


def decode_file(path: str | bytes, prep: Preprocess, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Read, hash and decode one file; every failure becomes a DecodeError with a one-line reason."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise DecodeError(f"cannot read file: {e.strerror or e}") from e
    image, fmt, width, height, taken_at = open_upright_rgb(data, prep, max_pixels, path)
    pixels = fit_to_model(image, prep)
    return DecodedImage(pixels, width, height, fmt, taken_at, st.st_size, st.st_mtime_ns, hash_bytes(data))


def open_upright_rgb(
    data: bytes, prep: Preprocess | None = None, max_pixels: int = MAX_PIXELS, name: str | bytes = b""
) -> tuple[Image.Image, str, int, int, float | None]:
    """Decode bytes into an upright RGB image (first frame), drafted down towards `prep`'s size when given.

    `name` is the file's name: a camera RAW extension sends the bytes to LibRaw, anything else to Pillow.
    Returns (image, format, original width, original height, taken_at).
    """
    if not data:
        raise DecodeError("empty file")
    raw = raw_format(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check decides
            if raw is not None:
                picture = open_raw(data, raw, min(prep.height, prep.width) if prep else None, max_pixels)
                image, fmt, orientation = picture.image, raw, picture.orientation
                width, height, taken_at = picture.width, picture.height, picture.taken_at
                demosaiced = picture.demosaiced
            else:
                image = Image.open(io.BytesIO(data))
                width, height = image.size
                if width * height > max_pixels:
                    raise DecodeError(f"too many pixels ({width}x{height} > {max_pixels:,}): refused")
                fmt = image.format or "unknown"
                _check_composite(image)
                exif = read_exif(image)
                orientation, taken_at = exif_orientation(exif), exif_taken_at(exif)
                if orientation in (5, 6, 7, 8):
                    width, height = height, width
                demosaiced = False
            if prep is not None:
                image = drafted(image, prep, demosaiced)
            image.load()
    except DecodeError:
        raise
    except UnidentifiedImageError as e:
        raise DecodeError("not an image (unknown format)") from e
    except Image.DecompressionBombError as e:
        raise DecodeError(f"too many pixels: {e}") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise DecodeError(f"broken {raw or fmt_name(data)} file: {' '.join(str(e).split())}") from e
    except Exception as e:  # a decoder plugin's own error type: still one bad file, not a crash
        raise DecodeError(f"cannot decode: {type(e).__name__}: {e}") from e
    return to_rgb(upright(image, orientation)), fmt, width, height, taken_at


def drafted(image: Image.Image, prep: Preprocess, demosaiced: bool = False) -> Image.Image:
    """Shrink an opened image towards DRAFT_FACTOR times `prep`'s size before the exact resize, never below
    it: a JPEG (an MPO, a RAW's preview) by DCT scaling as it is decoded; a RAW that LibRaw demosaiced by
    a whole-factor box reduction, to the same effect. Other formats are resized from their full size."""
    want = max(prep.height, prep.width) * DRAFT_FACTOR
    if image.format in ("JPEG", "MPO"):  # MPO: JPEG + gain map etc.
        image.draft("RGB", (want, want))
    elif demosaiced:
        factor = min(image.size) // want
        if factor >= 2:
            image = image.reduce(factor)
    return image


def _check_composite(image: Image.Image) -> None:
    """Refuse a PSD saved without its composite (Photoshop's "Maximize compatibility" off): Pillow would
    return a blank picture, not the photo."""
    if image.format != "PSD":
        return
    for resource, _name, body in getattr(image, "resources", []):
        if resource == _PSD_VERSION_INFO and len(body) >= 5 and body[4] == 0:
            raise DecodeError(
                "PSD saved without a composite image (Photoshop's 'Maximize compatibility' was off): "
                "re-save it with that option on"
            )


def fmt_name(data: bytes) -> str:
    """A short name for the format the first bytes claim, for error messages."""
    signatures = {
        b"\xff\xd8": "JPEG",
        b"\x89PNG": "PNG",
        b"GIF8": "GIF",
        b"RIFF": "WebP",
        b"II*\x00": "TIFF",
        b"MM\x00*": "TIFF",
        b"BM": "BMP",
    }
    for magic, name in signatures.items():
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":  # ISO media: HEIC/HEIF/AVIF
        return "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIF"
    return "image"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB the way a viewer shows it: 16-bit scaled, alpha over white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            peak = 65535.0
        else:  # 32-bit modes carry no range: 8-bit values stay, anything larger is read as 16-bit
            peak = 255.0 if mode == "F" or values.max(initial=0) <= 255 else 65535.0
        grey = np.clip(values * (255.0 / peak), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise DecodeError(f"unsupported colour mode {mode}") from e


def fit_to_model(image: Image.Image, prep: Preprocess) -> np.ndarray:
    """Resize and crop an RGB image to the model's input exactly as open_clip's eval transform does."""
    resample = _INTERPOLATIONS.get(prep.interpolation, Image.Resampling.BICUBIC)
    th, tw = prep.height, prep.width
    w, h = image.size
    if prep.resize_mode == "squash":
        size = (tw, th)
    elif prep.resize_mode == "shortest" and th == tw:
        # torchvision Resize(int): the short side becomes th, the long side is truncated, not rounded
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = th, int(th * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
    else:
        # open_clip ResizeKeepRatio: shortest (longest=0) or longest (longest=1) edge fits, rounded
        rh, rw = h / th, w / tw
        ratio = max(rh, rw) if prep.resize_mode == "longest" else min(rh, rw)
        size = (round(w / ratio), round(h / ratio))
    if size != (w, h):
        image = image.resize(size, resample)
    return _center_crop_or_pad(np.asarray(image), th, tw, prep.fill_color)


def _center_crop_or_pad(pixels: np.ndarray, th: int, tw: int, fill: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    if h < th or w < tw:
        top, left = max(th - h, 0) // 2, max(tw - w, 0) // 2
        padded = np.full((max(h, th), max(w, tw), 3), fill, dtype=np.uint8)
        padded[top : top + h, left : left + w] = pixels
        pixels, h, w = padded, padded.shape[0], padded.shape[1]
    top, left = round((h - th) / 2.0), round((w - tw) / 2.0)
    return np.ascontiguousarray(pixels[top : top + th, left : left + tw])
