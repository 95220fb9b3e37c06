"""Which files are photos, and what their formats are called: derived from the decoders installed.

Pillow (with pillow-heif) registers every extension it reads; LibRaw (rawpy) reads camera RAW, whose
extensions LibRaw does not list, so they are named here. A file with no extension at all (phone backups,
recovered files) is judged by its first bytes with the same decoders' signature checks.

Importing this module is free: Pillow and rawpy are imported the first time a list is asked for, so the
command line stays light where no file is read.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable

#: Camera RAW extensions LibRaw reads, and the format name stored for each (LibRaw keeps no such list).
RAW_FORMATS = {
    ".3fr": "3FR",  # Hasselblad
    ".arw": "ARW",  # Sony
    ".cr2": "CR2",  # Canon
    ".cr3": "CR3",
    ".crw": "CRW",
    ".dcr": "DCR",  # Kodak
    ".dng": "DNG",  # Adobe, Leica, Pentax, Ricoh, phones (ProRAW)
    ".erf": "ERF",  # Epson
    ".iiq": "IIQ",  # Phase One
    ".kdc": "KDC",
    ".mos": "MOS",  # Leaf
    ".mrw": "MRW",  # Minolta
    ".nef": "NEF",  # Nikon
    ".nrw": "NRW",
    ".orf": "ORF",  # Olympus / OM System
    ".pef": "PEF",  # Pentax
    ".raf": "RAF",  # Fujifilm
    ".raw": "RAW",  # Panasonic, Leica
    ".rw2": "RW2",  # Panasonic
    ".rwl": "RWL",  # Leica
    ".sr2": "SR2",  # Sony
    ".srf": "SRF",
    ".srw": "SRW",  # Samsung
    ".x3f": "X3F",  # Sigma
}
#: What `--type raw` selects.
RAW_TYPE = "raw"
#: Pillow formats that are not pictures to index: stubs without a decoder, a video, and save-only formats.
_NOT_PHOTOS = frozenset(["BUFR", "GRIB", "HDF5", "WMF", "MPEG", "PDF", "PALM"])
#: How many first bytes the signature checks look at.
SNIFF_BYTES = 32


def raw_format(name: str | bytes) -> str | None:
    """The RAW format a file name says (CR2, DNG ...), or None for every other file."""
    ext = os.path.splitext(os.fsdecode(name))[1].lower()
    return RAW_FORMATS.get(ext)


@functools.cache
def pillow_formats() -> dict[str, str]:
    """Extension ('.jpg') -> Pillow format name ('JPEG') for every format the installed Pillow decodes."""
    from PIL import EpsImagePlugin, Image

    register_plugins()
    Image.init()
    readable = set(Image.OPEN) | {"MPO"}  # MPO is opened by the JPEG decoder
    if not EpsImagePlugin.has_ghostscript():  # Pillow reads EPS only through Ghostscript
        readable.discard("EPS")
    return {ext: fmt for ext, fmt in Image.registered_extensions().items() if fmt in readable - _NOT_PHOTOS}


@functools.cache
def register_plugins() -> None:
    """Register the optional Pillow plugins that are installed (HEIC/HEIF through pillow-heif)."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # pragma: no cover - optional plugin
        return
    register_heif_opener()


@functools.cache
def raw_available() -> bool:
    """Whether rawpy (LibRaw) is installed; found without importing it (a tenth of a second), since only
    the decode workers that read a RAW need it loaded."""
    return importlib.util.find_spec("rawpy") is not None


@functools.cache
def candidate_extensions() -> frozenset[bytes]:
    """Every extension (lower case, bytes, with the dot) a photo folder's files are read for."""
    names = set(pillow_formats())
    if raw_available():
        names |= set(RAW_FORMATS)
    return frozenset(os.fsencode(name) for name in names)


def is_candidate_name(name: bytes) -> bool | None:
    """True for a visible file with an image extension, False for any other extension or a hidden file,
    None for a visible file with no extension at all: only its first bytes can tell (see `sniff`)."""
    if name.startswith(b"."):
        return False
    ext = os.path.splitext(name)[1].lower()
    if not ext:
        return None
    return ext in candidate_extensions()


def sniff(prefix: bytes) -> bool:
    """Whether the first bytes of a file are a picture's, by the signature checks of Pillow's decoders.

    Decoders with no signature (TGA, which could match any bytes) are not asked.
    """
    for accept in _signature_checks():
        try:
            if accept(prefix):
                return True
        except Exception:  # a plugin's check on bytes it did not expect
            continue
    return False


@functools.cache
def _signature_checks() -> tuple[Callable[[bytes], object], ...]:
    """The signature check of every decoder in `pillow_formats` that has one."""
    from PIL import Image

    readable = set(pillow_formats().values())  # every plugin imported
    return tuple(accept for fmt, (_f, accept) in Image.OPEN.items() if accept is not None and fmt in readable)


def sniff_file(path: bytes) -> bool:
    """`sniff` on a file's first bytes; an unreadable file is not a picture here (it is reported if named)."""
    try:
        with open(path, "rb") as f:
            return sniff(f.read(SNIFF_BYTES))
    except OSError:
        return False


@functools.cache
def type_names() -> dict[str, tuple[str, ...]]:
    """What a user may type for --type ('jpg', 'cr2', 'raw', 'jpeg2000'), and the stored format names."""
    names: dict[str, list[str]] = {}
    for ext, fmt in {**pillow_formats(), **RAW_FORMATS}.items():
        for name in (ext.lstrip("."), fmt.lower()):
            names.setdefault(name, [])
            if fmt not in names[name]:
                names[name].append(fmt)
    for fmts in names.values():
        if "JPEG" in fmts and "MPO" not in fmts:  # an MPO is a JPEG with more pictures after the first
            fmts.append("MPO")
    for name, fmts in {"heic": ["HEIF"], "heif": ["HEIF"], "avif": ["AVIF"]}.items():
        names.setdefault(name, fmts)  # known even where the decoder is missing: an index may hold them
    names[RAW_TYPE] = sorted(set(RAW_FORMATS.values()))
    return {name: tuple(fmts) for name, fmts in sorted(names.items())}


def stored_format_names() -> frozenset[str]:
    """Every format name the catalog may hold for a file (Pillow's names and RAW_FORMATS' names)."""
    return frozenset(fmt for fmts in type_names().values() for fmt in fmts)


def decoders() -> dict[str, str]:
    """The installed decoders and their versions, for `status`."""
    import PIL

    found = {"Pillow": PIL.__version__}
    try:
        import pillow_heif

        found["pillow-heif"] = pillow_heif.__version__
    except ImportError:  # pragma: no cover - optional plugin
        pass
    if raw_available():
        import rawpy

        found["LibRaw"] = ".".join(str(part) for part in rawpy.libraw_version)
    return found
