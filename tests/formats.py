"""Files of the formats beyond JPEG/PNG that the indexer reads, written from a picture the test passes in (so
it can compare what is decoded with what was written): camera RAW as DNG (pidng's TIFF writer), MPO, PSD
(psd-tools), the other formats Pillow reads, and broken files of each kind. Everything is made here, offline;
no other project's test images are copied."""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation
from pidng.dng import DNG, DNGTags, Tag, Type, dngIFD
from PIL import Image
from psd_tools import PSDImage
from psd_tools.constants import Resource
from psd_tools.psd import PSD
from psd_tools.psd.image_data import ImageData

#: When the DNGs are taken, as EXIF writes it (LibRaw reads it as local time, rawpy gives it back naive).
TAKEN = "2024:05:06 07:08:09"

# Tags pidng lacks or cannot write: its Tag.SubIFD (type IFD) encodes a str and fails, so the pointers are
# plain Longs that `_tiff` fills in once the layout is known.
_SUB_IFDS = (330, Type.Long)
_EXIF_IFD = (34665, Type.Long)
_YCBCR_SUBSAMPLING = (530, Type.Short)
_PREVIEW_COLOR_SPACE_SRGB = 2
_JPEG = 7  # TIFF Compression: JPEG ("new style"); LibRaw also takes 6 ("old style")
_YCBCR = 6  # PhotometricInterpretation of a JPEG preview

#: XYZ (D65) -> linear sRGB, as a DNG ColorMatrix1: the "camera" records sRGB primaries, so LibRaw's output
#: colours are the picture's and its daylight white balance is 1, 1, 1.
_XYZ_TO_SRGB = (
    (3.2404542, -1.5371385, -0.4985314),
    (-0.9692660, 1.8760108, 0.0415560),
    (0.0556434, -0.2040259, 1.0572252),
)


def bayer_mosaic(picture: Image.Image, bits: int = 12) -> np.ndarray:
    """The RGGB mosaic a sensor of `bits` bits records of `picture`: linear light, one colour per site."""
    srgb = np.arange(256) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    to_sensor = np.rint(linear * ((1 << bits) - 1)).astype(np.uint16)
    rgb = np.asarray(picture.convert("RGB"))
    mosaic = to_sensor[rgb[..., 1]]  # green on every site, then red and blue on theirs
    mosaic[0::2, 0::2] = to_sensor[rgb[0::2, 0::2, 0]]
    mosaic[1::2, 1::2] = to_sensor[rgb[1::2, 1::2, 2]]
    return mosaic


def pack_rows(mosaic: np.ndarray, bits: int) -> bytes:
    """`mosaic` as uncompressed DNG rows of `bits`-bit samples: big-endian bits, each row whole bytes."""
    # pidng.packing's pack14 is wrong and its pack10/pack12 need widths divisible by 4 and 2.
    if bits == 8:
        return mosaic.astype(np.uint8).tobytes()
    if bits == 16:
        return mosaic.astype("<u2").tobytes()
    # Pack the fewest samples whose bits fill whole bytes: 2 x 12 = 24, 4 x 10 = 40, 4 x 14 = 56 bits.
    group = 2 if bits == 12 else 4
    height, width = mosaic.shape
    word_type = np.uint32 if group * bits <= 32 else np.uint64
    samples = np.pad(mosaic, ((0, 0), (0, -width % group))).astype(word_type).reshape(height, -1, group)
    words = samples[..., 0]
    for i in range(1, group):
        words = (words << word_type(bits)) | samples[..., i]
    size = group * bits // 8
    packed = np.empty((*words.shape, size), np.uint8)
    for k in range(size):
        packed[..., k] = words >> word_type(8 * (size - 1 - k))
    return packed.reshape(height, -1)[:, : (width * bits + 7) // 8].tobytes()


def write_dng(
    path: Path,
    picture: Image.Image,
    preview: bool = False,
    orientation: int = 1,
    taken: str | None = TAKEN,
    bits: int = 12,
) -> Path:
    """A DNG whose RGGB sensor saw `picture` (even size), shown turned by `orientation`; a JPEG `preview`."""
    # `taken` goes to EXIF DateTimeOriginal and TIFF DateTime (None: neither). Without a preview the raw is
    # IFD0; with one, IFD0 is a full-size JPEG of `picture` (stored unturned, like the raw) and the raw is its
    # SubIFD, as Adobe's converter and cameras write them. LibRaw reads the orientation from IFD0.
    width, height = picture.size
    if width % 2 or height % 2:
        raise ValueError(f"a Bayer mosaic needs an even width and height, not {width} x {height}")
    if bits not in (8, 10, 12, 14, 16):
        raise ValueError(f"a DNG sample here has 8, 10, 12, 14 or 16 bits, not {bits}")
    if orientation not in range(1, 9):
        raise ValueError(f"TIFF orientation is 1..8, not {orientation}")
    tile = pack_rows(bayer_mosaic(picture, bits), bits)
    raw = DNGTags()
    raw.set(Tag.NewSubfileType, 0)
    raw.set(Tag.ImageWidth, width)
    raw.set(Tag.ImageLength, height)
    raw.set(Tag.BitsPerSample, bits)
    raw.set(Tag.Compression, 1)
    raw.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    raw.set(Tag.SamplesPerPixel, 1)
    raw.set(Tag.TileWidth, width)
    raw.set(Tag.TileLength, height)
    raw.set(Tag.TileOffsets, 0)
    raw.set(Tag.TileByteCounts, len(tile))
    raw.set(Tag.CFARepeatPatternDim, [2, 2])
    raw.set(Tag.CFAPattern, CFAPattern.RGGB)
    raw.set(Tag.BlackLevel, 0)
    raw.set(Tag.WhiteLevel, (1 << bits) - 1)
    main = DNGTags()  # what IFD0 says of the whole file
    main.set(Tag.Make, "imgsearch")
    main.set(Tag.Model, "tests")
    main.set(Tag.Orientation, orientation)
    main.set(Tag.Software, "tests/formats.py")
    main.set(Tag.DNGVersion, DNGVersion.V1_4)
    main.set(Tag.DNGBackwardVersion, DNGVersion.V1_1)
    main.set(Tag.UniqueCameraModel, "imgsearch tests")
    main.set(Tag.ColorMatrix1, [[round(v * 10_000), 10_000] for row in _XYZ_TO_SRGB for v in row])
    main.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    main.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
    if taken is not None:
        main.set(Tag.DateTime, taken)
        main.set(_EXIF_IFD, 0)
    if preview:
        jpeg = io.BytesIO()
        picture.convert("RGB").save(jpeg, "JPEG", quality=95, subsampling=2)  # 4:2:0, as the tags say
        first = DNGTags()
        first.set(Tag.NewSubfileType, 1)  # a preview, not the main image
        first.set(Tag.ImageWidth, width)
        first.set(Tag.ImageLength, height)
        first.set(Tag.BitsPerSample, [8, 8, 8])
        first.set(Tag.Compression, _JPEG)
        first.set(Tag.PhotometricInterpretation, _YCBCR)
        first.set(_YCBCR_SUBSAMPLING, [2, 2])
        first.set(Tag.SamplesPerPixel, 3)
        first.set(Tag.RowsPerStrip, height)
        first.set(Tag.StripOffsets, 0)
        first.set(Tag.StripByteCounts, len(jpeg.getvalue()))
        first.set(Tag.PreviewColorSpace, _PREVIEW_COLOR_SPACE_SRGB)
        first.set(_SUB_IFDS, 0)
        ifds, data, links = [_merge(main, first), raw], [jpeg.getvalue(), tile], [(0, _SUB_IFDS, 1)]
    else:
        ifds, data, links = [_merge(main, raw)], [tile], []
    if taken is not None:
        exif = DNGTags()
        exif.set(Tag.DateTimeOriginal, taken)
        links.append((0, _EXIF_IFD, len(ifds)))
        ifds.append(exif)
        data.append(None)
    return _write(path, _tiff(ifds, data, links))


def _merge(*tag_sets: DNGTags) -> DNGTags:
    merged = DNGTags()
    for tags in tag_sets:
        for tag in tags.list():
            merged.set(tag.Type, tag.rawValue)
    return merged


def _tiff(ifds: list[DNGTags], data: list[bytes | None], links: list[tuple[int, tuple, int]]) -> bytearray:
    """A TIFF of `ifds` and their `data` (pidng's layout); IFDs past IFD0 found by `links` (from, tag, to)."""
    document = DNG()
    for tags in ifds:
        ifd = dngIFD()
        ifd.tags = tags.list()
        document.IFDs.append(ifd)
    document.ImageDataStrips = [block for block in data if block is not None]
    size = document.dataLen()  # places the data after the IFDs (document.StripOffsets)
    strip_offsets = iter(document.StripOffsets.values())
    for tags, block in zip(ifds, data, strict=True):
        if block is not None:
            (tags.get(Tag.StripOffsets) or tags.get(Tag.TileOffsets)).setValue([next(strip_offsets)])
    ifd_offsets = list(itertools.accumulate((ifd.dataLen() for ifd in document.IFDs), initial=8))
    for source, tag, target in links:
        ifds[source].get(tag).setValue([ifd_offsets[target]])
    buffer = bytearray(size)
    document.setBuffer(buffer)
    document.write()
    return buffer


def _write(path: Path, content: bytes | bytearray) -> Path:
    path.write_bytes(content)
    return path


def write_truncated_raw(path: Path, picture: Image.Image) -> Path:
    """A DNG of `picture` (no preview) cut at half its length, in the middle of its raw data."""
    whole = write_dng(path, picture).read_bytes()
    return _write(path, whole[: len(whole) // 2])


def random_bytes(path: Path, n: int = 4096, seed: int = 0) -> Path:
    """`n` random bytes (seeded): under a RAW name (.cr2) a file LibRaw does not recognise."""
    return _write(path, np.random.default_rng(seed).bytes(n))


def write_tiff_as_dng(path: Path, picture: Image.Image) -> Path:
    """A plain RGB TIFF of `picture` from Pillow, under whatever name `path` has (a .dng one, say)."""
    picture.convert("RGB").save(path, "TIFF")
    return path


def write_mpo(path: Path, pictures: list[Image.Image]) -> Path:
    """An MPO (a camera's multi-picture JPEG) of `pictures` as Pillow writes it: frame 0 is the first."""
    first, *others = [picture.convert("RGB") for picture in pictures]
    first.save(path, "MPO", save_all=True, append_images=others, quality=95)
    return path


def write_mpo_broken_second(path: Path, pictures: list[Image.Image]) -> Path:
    """An MPO of `pictures` cut in the middle of its second picture's JPEG; the first is whole."""
    whole = write_mpo(path, pictures).read_bytes()
    with Image.open(path) as image:
        first_size, second_size = (entry["Size"] for entry in image.mpinfo[0xB002][:2])
    return _write(path, whole[: first_size + second_size // 2])


def write_psd(path: Path, picture: Image.Image, composite: bool = True) -> Path:
    """A PSD with `picture` as its one layer and, unless not `composite`, as its merged image too."""
    # Without a composite it is what Photoshop writes with "Maximize compatibility" off: the version info
    # resource (0x0421) says hasRealMergedData false and the merged image data section is white.
    document = PSDImage.new("RGB", picture.size, color=255)
    document.create_pixel_layer(picture.convert("RGB"), name="Picture")
    written = io.BytesIO()
    document.save(written)  # renders the layers into the image data section
    if composite:
        return _write(path, written.getvalue())
    record = PSD.read(io.BytesIO(written.getvalue()))
    record.image_resources[Resource.VERSION_INFO].data.has_composite = False
    record.image_data = ImageData.new(record.header, color=255)
    with path.open("wb") as out:
        record.write(out)
    return path


def write_xpm(path: Path, picture: Image.Image, colours: int = 64) -> Path:
    """An X11 pixmap (text) of `picture` cut down to `colours` colours, two characters a pixel."""
    palette_image = picture.convert("RGB").quantize(colours)
    rgb = np.asarray(palette_image.getpalette()[: 3 * colours], dtype=np.uint8).reshape(-1, 3)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    keys = np.array([a + b for a, b in itertools.product(letters, repeat=2)][: len(rgb)])
    width, height = picture.size
    lines = [f"{width} {height} {len(rgb)} 2"]
    lines += [f"{key} c #{r:02X}{g:02X}{b:02X}" for key, (r, g, b) in zip(keys, rgb, strict=True)]
    lines += ["".join(row) for row in keys[np.asarray(palette_image)]]
    body = ",\n".join(f'"{line}"' for line in lines)
    return _write(path, f"/* XPM */\nstatic char *picture[] = {{\n{body}\n}};\n".encode("ascii"))


def write_fits(path: Path, picture: Image.Image) -> Path:
    """A FITS primary HDU of `picture` in grey (8 bits), rows stored bottom first as FITS does."""
    grey = np.asarray(picture.convert("L"))
    cards = [
        ("SIMPLE", "T"),
        ("BITPIX", "8"),
        ("NAXIS", "2"),
        ("NAXIS1", str(grey.shape[1])),
        ("NAXIS2", str(grey.shape[0])),
    ]
    header = "".join(f"{key:<8}= {value:>20}".ljust(80) for key, value in cards) + "END".ljust(80)
    data = np.flipud(grey).tobytes()
    return _write(path, _pad(header.encode("ascii"), b" ") + _pad(data, b"\0"))


def _pad(block: bytes, fill: bytes) -> bytes:
    return block + fill * (-len(block) % 2880)


def write_sun(path: Path, picture: Image.Image) -> Path:
    """A Sun raster (.ras) of `picture`: 24-bit BGR, rows padded to 16 bits."""
    bgr = np.asarray(picture.convert("RGB"))[..., ::-1]
    rows = np.pad(bgr.reshape(bgr.shape[0], -1), ((0, 0), (0, bgr.shape[1] * 3 % 2)))
    header = struct.pack(">8I", 0x59A66A95, picture.width, picture.height, 24, rows.size, 1, 0, 0)
    return _write(path, header + rows.tobytes())


def write_dcx(path: Path, picture: Image.Image) -> Path:
    """A DCX (a fax's multi-page PCX) whose one page is a PCX of `picture` from Pillow."""
    page = io.BytesIO()
    picture.convert("RGB").save(page, "PCX")
    offsets = struct.pack("<3I", 0x3ADE68B1, 12, 0)  # magic, page 1 after this table, end of table
    return _write(path, offsets + page.getvalue())


def write_cur(path: Path, picture: Image.Image) -> Path:
    """A Windows cursor of `picture` (at most 256 x 256): Pillow's ICO, BMP entries, marked as type 2."""
    small = picture.convert("RGB")
    small.thumbnail((256, 256))
    icon = io.BytesIO()
    small.save(icon, "ICO", sizes=[small.size], bitmap_format="bmp")
    return _write(path, icon.getvalue()[:2] + struct.pack("<H", 2) + icon.getvalue()[4:])


def write_gbr(path: Path, picture: Image.Image) -> Path:
    """A GIMP brush (version 2, RGBA) of `picture`."""
    name = b"picture\0"
    header = struct.pack(">5I4sI", 28 + len(name), 2, picture.width, picture.height, 4, b"GIMP", 25)
    return _write(path, header + name + picture.convert("RGBA").tobytes())


def pillow_writer(fmt: str, mode: str = "RGB", **options) -> Callable[[Path, Image.Image], Path]:
    """A writer that saves the picture, converted to `mode`, in Pillow's format `fmt` with `options`."""

    def write(path: Path, picture: Image.Image) -> Path:
        picture.convert(mode).save(path, fmt, **options)
        return path

    write.__doc__ = f"{fmt} of the picture ({mode}) from Pillow."
    return write


def write_blp(path: Path, picture: Image.Image) -> Path:
    """A BLP (Blizzard texture) of `picture` in 256 colours, which is all Pillow writes BLP in."""
    picture.convert("RGB").quantize(256).save(path, "BLP")
    return path


class ExtraFormat(NamedTuple):
    """A format the scan once skipped: extension, Pillow's name for it, writer, what survives of colour."""

    extension: str
    format: str
    write: Callable[[Path, Image.Image], Path]
    # "exact" (decodes to the picture), "palette" (at most 256 colours), "grey", "bilevel" (1 bit, dithered)
    # or "resized" (ICNS: stretched to squares, the largest 1024 x 1024, which is what Pillow opens).
    colours: str


EXTRA_FORMATS = [
    ExtraFormat(".qoi", "QOI", pillow_writer("QOI"), "exact"),
    ExtraFormat(".pcx", "PCX", pillow_writer("PCX"), "exact"),
    ExtraFormat(".sgi", "SGI", pillow_writer("SGI"), "exact"),
    ExtraFormat(".rgb", "SGI", pillow_writer("SGI"), "exact"),
    ExtraFormat(".dds", "DDS", pillow_writer("DDS"), "exact"),
    ExtraFormat(".tga", "TGA", pillow_writer("TGA"), "exact"),
    ExtraFormat(".im", "IM", pillow_writer("IM"), "exact"),
    ExtraFormat(".ras", "SUN", write_sun, "exact"),
    ExtraFormat(".dcx", "DCX", write_dcx, "exact"),
    ExtraFormat(".cur", "CUR", write_cur, "exact"),
    ExtraFormat(".gbr", "GBR", write_gbr, "exact"),
    ExtraFormat(".icns", "ICNS", pillow_writer("ICNS"), "resized"),
    ExtraFormat(".xpm", "XPM", write_xpm, "palette"),
    ExtraFormat(".blp", "BLP", write_blp, "palette"),
    ExtraFormat(".fits", "FITS", write_fits, "grey"),
    ExtraFormat(".msp", "MSP", pillow_writer("MSP", "1"), "bilevel"),
    ExtraFormat(".xbm", "XBM", pillow_writer("XBM", "1"), "bilevel"),
]


def grey_difference(image: Image.Image, picture: Image.Image) -> float:
    """Mean absolute grey difference (0..255) at 1/8 size: small for a palette or 1-bit copy of `picture`."""
    size = (max(1, picture.width // 8), max(1, picture.height // 8))
    small = [np.asarray(im.convert("L").resize(size, Image.Resampling.BOX), float) for im in (image, picture)]
    return float(np.abs(small[0] - small[1]).mean())
