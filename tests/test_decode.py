"""Decoding: one file in, the model's exact input pixels out, or a DecodeError that says why.

Every image here is made by the test itself, except the fidelity checks, which use sample_photos.
"""

from __future__ import annotations

import io
import os
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from imgsearch.errors import DecodeError
from imgsearch.index.decode import (
    DRAFT_FACTOR,
    Preprocess,
    decode_file,
    fit_to_model,
    hash_file,
    open_upright_rgb,
)
from tests.conftest import SAMPLE_PHOTOS
from tests.images import encode, png_bomb, require_heif

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ["shortest", "squash", "longest"]
SAMPLE_JPEGS = sorted(SAMPLE_PHOTOS.glob("*.jpg"))
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def decode(data: bytes) -> np.ndarray:
    """Full-size upright RGB pixels of encoded bytes, through the library."""
    image, *_ = open_upright_rgb(data, None)
    assert image.mode == "RGB"
    return np.asarray(image)


def normalised(pixels: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32, as open_clip's ToTensor + Normalize."""
    x = pixels.astype(np.float32).transpose(2, 0, 1) / 255.0
    return (x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]


def open_clip_input(path: Path | Image.Image, size: int, resize_mode: str, mean=MEAN, std=STD) -> np.ndarray:
    """What open_clip's own eval transform feeds the model."""
    from open_clip.transform import image_transform

    transform = image_transform(size, is_train=False, mean=mean, std=std, resize_mode=resize_mode)
    image = path if isinstance(path, Image.Image) else Image.open(path)
    return transform(image).numpy()


def photo_like(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random colour field with sensor-like noise: compresses and resizes like a photo."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (height // 100, width // 100, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12 MP 4000x3000 camera-sized JPEG, the case JPEG draft decoding exists for."""
    path = tmp_path_factory.mktemp("big") / "camera.jpg"
    photo_like(4000, 3000).save(path, "JPEG", quality=90)
    return path


# --- fidelity: our pixels are open_clip's pixels --------------------------------------------------------


@pytest.mark.parametrize("resize_mode", RESIZE_MODES)
@pytest.mark.parametrize("photo", SAMPLE_JPEGS, ids=lambda p: p.name)
def test_full_decode_matches_open_clip_transform(photo: Path, resize_mode: str):
    prep = Preprocess(224, 224, resize_mode=resize_mode)
    image, fmt, width, height, _ = open_upright_rgb(photo.read_bytes(), None)
    ours = normalised(fit_to_model(image, prep))
    reference = open_clip_input(photo, 224, resize_mode)
    assert fmt == "JPEG"
    assert (width, height) == Image.open(photo).size
    assert ours.shape == reference.shape == (3, 224, 224)
    diff = float(np.abs(ours - reference).max())
    assert diff < 1e-5, f"{photo.name} {resize_mode}: max abs diff {diff:.2e}"


def test_sample_photos_are_there():
    assert len(SAMPLE_JPEGS) >= 30


@pytest.mark.parametrize("resize_mode", RESIZE_MODES)
def test_draft_decode_stays_close_to_open_clip_transform(big_photo: Path, resize_mode: str):
    prep = Preprocess(224, 224, resize_mode=resize_mode)
    image, _, width, height, _ = open_upright_rgb(big_photo.read_bytes(), prep)
    assert (width, height) == (4000, 3000)  # the original's size is reported...
    assert image.width < 4000  # ...but it was decoded smaller, though not below DRAFT_FACTOR x the model's
    assert min(image.size) >= DRAFT_FACTOR * 224
    ours = normalised(fit_to_model(image, prep))
    reference = open_clip_input(big_photo, 224, resize_mode)
    diff = np.abs(ours - reference)
    measured = f"{resize_mode}: draft {image.size}, max abs diff {diff.max():.4f}, mean {diff.mean():.5f}"
    print(measured)
    assert diff.max() < 0.1 and diff.mean() < 0.01, measured


def test_multi_picture_jpeg_is_drafted_too(big_photo: Path):
    """MPO: a JPEG with extra pictures appended (iPhone HDR gain maps, 3D cameras); Pillow calls it MPO."""
    primary = Image.open(big_photo)
    data = encode(primary, "MPO", save_all=True, append_images=[photo_like(400, 300, seed=1)], quality=90)
    prep = Preprocess(224, 224)
    image, fmt, width, height, _ = open_upright_rgb(data, prep)
    as_jpeg, *_ = open_upright_rgb(big_photo.read_bytes(), prep)
    assert (fmt, width, height) == ("MPO", 4000, 3000)
    assert image.size == as_jpeg.size == (1000, 750)
    assert np.abs(np.asarray(image, dtype=int) - np.asarray(as_jpeg, dtype=int)).mean() < 1


def test_draft_decode_gives_the_same_embedding(big_photo: Path, tiny_model: str):
    import torch

    from imgsearch.model.encoder import Encoder
    from imgsearch.model.specs import parse_model_spec

    encoder = Encoder.load(parse_model_spec(tiny_model), device="cpu", precision="fp32")
    prep = encoder.preprocess
    cfg = encoder.model.visual.preprocess_cfg
    decoded = decode_file(big_photo, prep)
    ours = encoder.embed_pixels(decoded.pixels[None])[0]

    reference_input = open_clip_input(big_photo, cfg["size"], cfg["resize_mode"], cfg["mean"], cfg["std"])
    with torch.inference_mode():
        features = encoder.model.encode_image(torch.from_numpy(reference_input)[None]).float().numpy()[0]
    reference = features / np.linalg.norm(features)

    cosine = float(ours @ reference)
    # The random tiny model rates even a colour-swapped picture ~0.99 alike, so ask for much closer than that.
    swapped = encoder.embed_pixels(np.ascontiguousarray(decoded.pixels[None, ..., ::-1]))[0]
    control = float(swapped @ reference)
    measured = f"tiny model, draft vs open_clip transform: cosine {cosine:.6f} (R/B swapped: {control:.6f})"
    print(measured)
    assert cosine >= 0.99 and control < 0.999 <= cosine, measured


# --- colour modes become the RGB a viewer shows ---------------------------------------------------------


@pytest.mark.parametrize(
    ("cmyk", "rgb"), [((0, 255, 255, 0), RED), ((255, 0, 0, 0), (0, 255, 255)), ((0, 0, 0, 255), (0, 0, 0))]
)
def test_cmyk_jpeg(cmyk, rgb):
    data = encode(Image.new("CMYK", (16, 16), cmyk), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    pixels = decode(data)
    assert np.abs(pixels.astype(int) - rgb).max() <= 3, pixels[8, 8]


def test_16_bit_greyscale_png_is_scaled_to_8_bits():
    data = encode(Image.fromarray(np.array([[65535, 32768, 0]], dtype=np.uint16)), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert decode(data)[0].tolist() == [[255] * 3, [128] * 3, [0] * 3]


def test_1_bit_png():
    image = Image.new("1", (8, 4), 0)
    image.paste(1, (0, 0, 4, 4))
    pixels = decode(encode(image, "PNG"))
    assert pixels[:, :4].tolist() == [[list(WHITE)] * 4] * 4
    assert pixels[:, 4:].max() == 0


def test_palette_png_transparency_is_white():
    image = Image.new("P", (8, 4), 0)
    image.putpalette([*RED, *BLUE])
    image.paste(1, (0, 0, 4, 4))  # left half blue, right half index 0: red but transparent
    data = encode(image, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    pixels = decode(data)
    assert (pixels[:, :4] == BLUE).all()
    assert (pixels[:, 4:] == WHITE).all()


def test_rgba_png_is_composited_over_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (255, 0, 0, 255), (255, 0, 0, 128)])
    pixels = decode(encode(image, "PNG")).astype(int)
    assert pixels[0, 0].tolist() == list(WHITE)  # invisible red is not red
    assert pixels[0, 1].tolist() == list(RED)
    assert np.abs(pixels[0, 2] - (255, 127, 127)).max() <= 1


def test_grey_with_alpha_png():
    image = Image.new("LA", (2, 1))
    image.putdata([(50, 0), (50, 255)])
    assert decode(encode(image, "PNG"))[0].tolist() == [list(WHITE), [50, 50, 50]]


def test_greyscale_png():
    image = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert image.mode == "L"
    assert decode(encode(image, "PNG"))[0].tolist() == [[0] * 3, [77] * 3, [255] * 3]


# --- EXIF orientation -----------------------------------------------------------------------------------

#: Where the stored top-left corner is seen once the picture is upright, per EXIF orientation.
UPRIGHT_CORNER = {0: "TL", 9: "TL", 1: "TL", 2: "TR", 3: "BR", 4: "BL", 5: "TL", 6: "TR", 7: "BR", 8: "BL"}


def red_corner(pixels: np.ndarray) -> str:
    """Which corner holds the red block (coarse means, so JPEG noise does not matter)."""
    p = pixels.astype(float)
    redness = p[..., 0] - p[..., 1]
    corners = {"TL": redness[:8, :8], "TR": redness[:8, -8:], "BL": redness[-8:, :8], "BR": redness[-8:, -8:]}
    return max(corners, key=lambda c: corners[c].mean())


@pytest.mark.parametrize("orientation", range(10))  # 0 and 9 are invalid: ignored
def test_exif_orientation_is_applied(orientation: int):
    stored = Image.new("RGB", (60, 40), (128, 128, 128))
    stored.paste(RED, (0, 0, 20, 12))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "JPEG", exif=exif, quality=95)

    image, _, width, height, _ = open_upright_rgb(data, None)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    upright = (40, 60) if orientation in (5, 6, 7, 8) else (60, 40)
    assert image.size == reference.size == (width, height) == upright
    assert red_corner(np.asarray(image)) == red_corner(np.asarray(reference)) == UPRIGHT_CORNER[orientation]
    assert np.abs(np.asarray(image, dtype=int) - np.asarray(reference.convert("RGB"), dtype=int)).mean() < 1


def test_exif_orientation_with_draft_decode():
    stored = photo_like(1200, 800)
    stored.paste(RED, (0, 0, 300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", exif=exif)
    image, _, width, height, _ = open_upright_rgb(data, Preprocess(64, 64))
    assert (width, height) == (800, 1200)
    assert image.width < image.height < 1200
    assert red_corner(np.asarray(image)) == "TR"


# --- bad input: always a DecodeError with a reason ------------------------------------------------------


def decode_error(data: bytes, **kwargs) -> str:
    with pytest.raises(DecodeError) as caught:
        open_upright_rgb(data, **kwargs)
    reason = str(caught.value)
    assert reason and "\n" not in reason
    return reason


def test_empty_file():
    assert decode_error(b"") == "empty file"


def test_random_bytes():
    assert "not an image" in decode_error(np.random.default_rng(1).bytes(5000))


def test_text_file_named_jpg(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("shopping list: milk, eggs\n" * 20)
    with pytest.raises(DecodeError, match="not an image"):
        decode_file(path, Preprocess(64, 64))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
@pytest.mark.parametrize(("fmt", "name"), [("JPEG", "JPEG"), ("PNG", "PNG"), ("WEBP", "WebP")])
def test_truncated_file(fmt: str, name: str, fraction: float):
    data = encode(photo_like(300, 200), fmt)
    cut = data[: int(len(data) * fraction)]
    assert f"broken {name} file" in decode_error(cut)
    assert f"broken {name} file" in decode_error(cut, prep=Preprocess(64, 64))


def test_truncated_heic():
    require_heif()  # a declared dependency: missing, this fails rather than skips
    data = encode(photo_like(300, 200), "HEIF")
    assert open_upright_rgb(data, None)[1] == "HEIF"
    assert "broken" in decode_error(data[: len(data) // 2])


def test_a_decoder_plugins_own_error_is_a_decode_error(monkeypatch: pytest.MonkeyPatch):
    class PluginCrash(Exception):
        pass

    def crash(self):
        raise PluginCrash("codec went away")

    data = encode(photo_like(30, 20), "JPEG")
    monkeypatch.setattr(Image.open(io.BytesIO(data)).__class__, "load", crash)
    assert decode_error(data) == "cannot decode: PluginCrash: codec went away"


def test_png_claiming_ten_billion_pixels_is_refused_without_decoding():
    data = png_bomb(zeros=1000)  # 100,000 x 100,000 8-bit RGB
    start = time.perf_counter()
    reason = decode_error(data)
    assert time.perf_counter() - start < 1.0  # 30 GB were never allocated
    assert "pixels" in reason


def test_max_pixels_refuses_a_normal_image():
    data = encode(photo_like(200, 100), "PNG")
    assert decode(data).shape == (100, 200, 3)
    reason = decode_error(data, max_pixels=10_000)
    assert "too many pixels" in reason and "200x100" in reason


# --- what gets decoded -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_uses_first_frame(fmt: str):
    red, blue = Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)
    data = encode(red, fmt, save_all=True, append_images=[blue], duration=100, loop=0, lossless=True)
    animated = Image.open(io.BytesIO(data))
    assert animated.n_frames == 2
    image, found, *_ = open_upright_rgb(data, None)
    assert found == fmt
    assert np.abs(np.asarray(image, dtype=int) - RED).max() <= 2


def test_format_is_read_from_content_not_name(tmp_path: Path):
    path = tmp_path / "really-a-png.jpg"
    photo_like(300, 200).save(path, "PNG")
    decoded = decode_file(path, Preprocess(64, 64))
    assert decoded.format == "PNG"
    assert (decoded.width, decoded.height) == (300, 200)
    assert decoded.pixels.shape == (64, 64, 3) and decoded.pixels.dtype == np.uint8


def jpeg_with_exif_date(tag: int, value: str) -> bytes:
    exif = Image.Exif()
    if tag == 0x9003:  # DateTimeOriginal lives in the Exif sub-IFD
        exif.get_ifd(0x8769)[tag] = value
    else:
        exif[tag] = value
    return encode(Image.new("RGB", (16, 16), RED), "JPEG", exif=exif)


def test_exif_date_taken():
    _, _, _, _, taken_at = open_upright_rgb(jpeg_with_exif_date(0x9003, "2021:07:04 12:30:00"))
    assert taken_at == datetime(2021, 7, 4, 12, 30).timestamp()  # EXIF dates are local time


def test_exif_datetime_is_the_fallback():
    _, _, _, _, taken_at = open_upright_rgb(jpeg_with_exif_date(0x0132, "2019:01:02 03:04:05"))
    assert taken_at == datetime(2019, 1, 2, 3, 4, 5).timestamp()


@pytest.mark.parametrize("value", ["2021:13:45 99:99:99", "yesterday", "0000:00:00 00:00:00", ""])
def test_malformed_exif_date_is_none(value: str):
    image, _, _, _, taken_at = open_upright_rgb(jpeg_with_exif_date(0x9003, value))
    assert taken_at is None
    assert image.size == (16, 16)


def test_no_exif_no_date():
    assert open_upright_rgb(encode(Image.new("RGB", (8, 8)), "PNG"))[4] is None


def test_decode_file_hashes_what_it_read(tmp_path: Path):
    path = tmp_path / "photo.jpg"
    photo_like(300, 200).save(path, "JPEG")
    decoded = decode_file(os.fsencode(path), Preprocess(64, 64))
    content_hash, size, mtime_ns = hash_file(path)
    assert (decoded.content_hash, decoded.size, decoded.mtime_ns) == (content_hash, size, mtime_ns)
    assert size == path.stat().st_size and mtime_ns == path.stat().st_mtime_ns
    assert len(content_hash) == 16

    photo_like(300, 200, seed=1).save(path, "JPEG")
    assert decode_file(path, Preprocess(64, 64)).content_hash != content_hash
