"""Image files the tests make: encoded pictures, random JPEGs, a decompression bomb, distinct copies of the
sample photos; and the codecs a test needs, which fail it (never skip it) when they are missing."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import pytest
from PIL import Image, features

from tests.conftest import SAMPLE_PHOTOS

SAMPLES = sorted(SAMPLE_PHOTOS.glob("*.jpg"))


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_jpeg(
    seed: int, blocks: int = 8, size: int = 64, resample: Image.Resampling | None = None, **options
) -> bytes:
    """A `size` x `size` JPEG of `blocks` x `blocks` random colours (seeded), resized with `resample`
    (Pillow's default when None); `options` go to the JPEG encoder."""
    pixels = np.random.default_rng(seed).integers(0, 256, (blocks, blocks, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels).resize((size, size), resample), "JPEG", **options)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(zeros: int = 64) -> bytes:
    """A PNG whose header claims 100,000 x 100,000 8-bit RGB pixels (30 GB decoded) over an IDAT of
    `zeros` compressed zero bytes."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * zeros))
    return b"\x89PNG\r\n\x1a\n" + chunks + png_chunk(b"IEND", b"")


def add_photos(folder: Path, count: int, tag: str) -> list[Path]:
    """`count` images with distinct content (a sample photo plus a unique tail the decoder ignores), so
    each one is really decoded and encoded rather than reused as a copy."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        target = folder / f"{tag}-{i:03d}.jpg"
        target.write_bytes(SAMPLES[i % len(SAMPLES)].read_bytes() + f"\n{tag}-{i}".encode())
        out.append(target)
    return out


def require_heif() -> None:
    """HEIC/HEIF support as imgsearch has it (pillow-heif's opener, registered by imgsearch.index.decode).
    pillow-heif is a declared dependency: without it the test fails, saying so, instead of passing (or being
    skipped) without ever reading a phone's photo."""
    import imgsearch.index.decode  # noqa: F401 - registers pillow-heif's opener when it can

    if "HEIF" in Image.OPEN:
        return
    try:
        import pillow_heif  # noqa: F401
    except ImportError as e:
        why = f"pillow_heif cannot be imported: {e}"
    else:
        why = "pillow_heif imports, but imgsearch.index.decode did not register its opener"
    pytest.fail(
        f"HEIC/HEIF support is missing ({why}); pillow-heif is a declared dependency of imgsearch "
        "(pyproject.toml): install it, e.g. `pip install -e .`",
        pytrace=False,
    )


def require_avif() -> None:
    """AVIF support, which imgsearch takes from Pillow itself: without it the test fails, saying so."""
    if not features.check("avif"):
        pytest.fail(
            f"Pillow {PIL.__version__} has no AVIF support, which imgsearch reads .avif files with: "
            "install a Pillow built with its AVIF plugin (libavif), as its recent wheels are",
            pytrace=False,
        )
