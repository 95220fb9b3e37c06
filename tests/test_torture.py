"""The torture corpus: every odd, broken or hostile thing a real photo folder holds, indexed end to end.

Every good image is indexed; every bad file is reported once, on one line, with its reason, recorded, and not
tried again until it changes; things that are not files (a FIFO, broken links, link loops) are passed over;
the run's peak memory is measured. Files that change or vanish under a running index are tested through the
indexer's own phase events, so the moment is exact.
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgsearch import Library
from imgsearch.index.decode import decode_file, hash_file
from imgsearch.index.events import IndexEvents
from imgsearch.model.encoder import Encoder
from tests import index_db
from tests.conftest import REPO, SAMPLE_PHOTOS
from tests.images import encode, png_bomb, require_avif, require_heif

SAMPLES = sorted(SAMPLE_PHOTOS.glob("*.jpg"))
#: A bound on the index run's peak RSS: torch and the model take most of it; a decoded bomb would take 30 GB.
PEAK_RSS_LIMIT_MB = 2048

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24


def _as_mortal() -> None:
    """preexec_fn: root without the capabilities that let it ignore file permissions (after exec its
    permitted set is the bounding set), so a chmod 000 file is unreadable to it as to anyone else."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "cannot drop CAP_DAC_OVERRIDE")


def reads_can_be_denied(tmp: Path) -> bool:
    """Whether a chmod 000 file is unreadable to a process started with _as_mortal."""
    probe = tmp / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    code = f"open({str(probe)!r}, 'rb')"
    try:
        run = subprocess.run([sys.executable, "-c", code], preexec_fn=_as_mortal, capture_output=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return b"PermissionError" in run.stderr


def ycck_jpeg(rgb: Image.Image) -> bytes:
    """A YCCK JPEG (Adobe transform 2, as Photoshop writes CMYK): Y, Cb, Cr of inverted C, M, Y; and K."""
    c = np.asarray(rgb.convert("CMYK")).astype(float)
    r, g, b = 255 - c[..., 0], 255 - c[..., 1], 255 - c[..., 2]
    planes = [
        0.299 * r + 0.587 * g + 0.114 * b,
        128 - 0.168736 * r - 0.331264 * g + 0.5 * b,
        128 + 0.5 * r - 0.418688 * g - 0.081312 * b,
        c[..., 3],
    ]
    raw = Image.fromarray(np.stack(planes, -1).round().clip(0, 255).astype(np.uint8), "CMYK")
    data = bytearray(encode(raw, "JPEG", quality=95))
    adobe = data.find(b"Adobe")
    assert adobe > 0 and data[adobe + 11] == 0
    data[adobe + 11] = 2  # the transform flag: these four channels are YCCK, not CMYK
    assert Image.open(io.BytesIO(bytes(data))).info["adobe_transform"] == 2
    return bytes(data)


def build_corpus(
    folder: Path, deny_reads: bool
) -> tuple[set[bytes], set[bytes], dict[bytes, tuple[int, int]]]:
    """Write the corpus; returns (good paths, bad paths, upright (width, height) of EXIF-rotated files)."""
    rng = np.random.default_rng(7)
    folder.mkdir()
    good: dict[str, bytes] = {}
    bad: dict[str, bytes] = {}
    photo = Image.open(SAMPLES[0]).convert("RGB").resize((160, 120))

    good["cmyk.jpg"] = encode(photo.convert("CMYK"), "JPEG")
    good["ycck.jpg"] = ycck_jpeg(photo)
    good["grey16.png"] = encode(Image.fromarray(rng.integers(0, 65535, (50, 70)).astype(np.uint16)), "PNG")
    good["bilevel.png"] = encode(photo.convert("1"), "PNG")
    good["palette-alpha.png"] = encode(photo.convert("P"), "PNG", transparency=0)
    good["rgba.webp"] = encode(photo.convert("RGBA"), "WEBP")
    frames = [Image.new("RGB", (40, 30), c) for c in ("red", "blue")]
    good["animated.gif"] = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    good["animated.webp"] = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    upright = {}
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        name = f"orientation-{orientation}.jpg"
        good[name] = encode(photo, "JPEG", exif=exif)
        upright[name] = (120, 160) if orientation >= 5 else (160, 120)
    good["one-pixel.png"] = encode(Image.new("RGB", (1, 1), "red"), "PNG")
    good["one-pixel.jpg"] = encode(Image.new("L", (1, 1), 200), "JPEG")
    good["wide.png"] = encode(Image.new("RGB", (20000, 10), "green"), "PNG")
    good["png-named.jpg"] = encode(photo, "PNG")
    require_heif()  # the corpus never leaves a format out: a missing codec fails the test
    good["phone.heic"] = encode(photo, "HEIF")
    require_avif()
    good["photo.avif"] = encode(photo, "AVIF")
    good["with space.jpg"] = SAMPLES[1].read_bytes()
    good["new\nline.jpg"] = SAMPLES[2].read_bytes()
    good["emoji \N{CAMERA}.jpg"] = SAMPLES[3].read_bytes()
    good["folder.jpg/inside.jpg"] = SAMPLES[4].read_bytes()  # a folder named like an image

    jpeg, png, webp = (encode(photo, fmt) for fmt in ("JPEG", "PNG", "WEBP"))
    for fraction in (10, 50, 90):
        for name, data in (("jpg", jpeg), ("png", png), ("webp", webp)):
            bad[f"truncated-{fraction}.{name}"] = data[: len(data) * fraction // 100]
    bad["zero.png"] = b""
    bad["random.jpg"] = rng.bytes(3000)
    bad["notes.jpg"] = b"shopping list: milk, eggs\n" * 20
    bad["bomb.png"] = png_bomb()  # claims 10 gigapixels
    mp4 = struct.pack(">I", 24) + b"ftypisom\x00\x00\x02\x00isomiso2" + struct.pack(">I", 8) + b"free"
    bad["video.jpg"] = mp4 + struct.pack(">I", 4008) + b"mdat" + rng.bytes(4000)
    avi = b"RIFF" + struct.pack("<I", 4100) + b"AVI LIST" + rng.bytes(4092)
    bad["movie.png"] = avi
    bad["broken\nname.jpg"] = rng.bytes(500)
    if deny_reads:
        bad["unreadable.jpg"] = SAMPLES[5].read_bytes()

    for name, data in [*good.items(), *bad.items()]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    latin1 = os.fsencode(folder) + b"/latin1-\xe9t\xe9.jpg"  # a name that is not UTF-8
    with open(latin1, "wb") as f:
        f.write(SAMPLES[6].read_bytes())
    if deny_reads:
        (folder / "unreadable.jpg").chmod(0)

    # not files: passed over without a word
    (folder / "link-to-good.jpg").symlink_to(folder / "cmyk.jpg")  # a link to a file is that file
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    (folder / "loop-a.jpg").symlink_to(folder / "loop-b.jpg")
    (folder / "loop-b.jpg").symlink_to(folder / "loop-a.jpg")
    (folder / "sub").mkdir()
    (folder / "sub" / "up").symlink_to(folder)  # a folder cycle: walked once
    os.mkfifo(folder / "fifo.jpg")  # opening it would block forever
    (folder / ".hidden.jpg").write_bytes(SAMPLES[7].read_bytes())

    base = os.fsencode(folder) + b"/"
    good_paths = {base + os.fsencode(n) for n in good} | {latin1, base + b"link-to-good.jpg"}
    return (
        good_paths,
        {base + os.fsencode(n) for n in bad},
        {base + n.encode(): s for n, s in upright.items()},
    )


#: Starts argv[2:] as a mortal (see _as_mortal) child of this small interpreter and writes the child's peak
#: RSS to argv[1]. A child's ru_maxrss includes the peak of the process it was forked from (Linux keeps the
#: old memory's high-water mark at exec), so forking `imgsearch index` straight from the test process
#: would count pytest's own peak (gigabytes, after the model-family tests) as the index run's.
_LAUNCHER = f"""
import ctypes, os, sys
pid = os.fork()
if pid == 0:
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in ({_CAP_DAC_OVERRIDE}, {_CAP_DAC_READ_SEARCH}):
            if libc.prctl({_PR_CAPBSET_DROP}, cap, 0, 0, 0) != 0:
                os._exit(99)
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def index_subprocess(folder: Path, home: Path, model: str) -> tuple[int, str, int]:
    """`imgsearch index` in a fresh process without root's permission bypass: (exit code, stderr+stdout,
    peak RSS in MB of the process and its decoding workers)."""
    env = {**os.environ, "IMGSEARCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    argv = ["-m", "imgsearch", "index", "--model", model, "--device", "cpu", str(folder)]
    peak = home.parent / "index-peak-rss"
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(peak), *argv],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return done.returncode, done.stdout.decode("utf-8", "replace"), int(peak.read_text()) // 1024


def skipped_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("skipped ")]


def test_torture_corpus(tiny_model, tmp_path, isolated_home):
    deny = reads_can_be_denied(tmp_path)
    folder = tmp_path / "corpus"
    good, bad, upright = build_corpus(folder, deny)

    code, output, peak_mb = index_subprocess(folder, isolated_home, tiny_model)
    print(f"torture corpus: {len(good)} good, {len(bad)} bad files; peak RSS {peak_mb} MB")
    assert code == 0, output
    assert peak_mb < PEAK_RSS_LIMIT_MB
    images = index_db.images(isolated_home, "width", "height", "format")
    failures = index_db.failures(isolated_home)
    assert set(images) == good
    assert set(failures) == bad
    for path, size in upright.items():
        assert images[path][:2] == size, path
    # every bad file reported once, on one line that names it (a newline in a name is shown as \n)
    lines = skipped_lines(output)
    assert len(lines) == len(bad)
    for path in bad:
        shown = path.decode().replace("\n", "\\n")
        assert sum(line.startswith(f"skipped {shown}: ") for line in lines) == 1, shown
    reason = {os.path.basename(p).decode(): r for p, r in failures.items()}
    assert reason["zero.png"] == "empty file"
    assert "pixels" in reason["bomb.png"]
    assert reason["video.jpg"].startswith("not an image") and reason["movie.png"].startswith("not an image")
    assert reason["truncated-90.jpg"].startswith("broken JPEG file")
    if deny:
        assert reason["unreadable.jpg"] == "cannot read file: Permission denied"
    assert "failed" in output.splitlines()[-1] and f"{len(bad)} failed" in output

    # not retried until changed; a repaired file is indexed (as a copy: no model needed)
    shutil.copyfile(folder / "cmyk.jpg", folder / "truncated-50.jpg")
    code, output, _ = index_subprocess(folder, isolated_home, tiny_model)
    assert code == 0, output
    assert not skipped_lines(output)
    assert f"{len(bad) - 1} known bad files skipped" in output
    assert "1 copied" in output and "0 failed" in output
    assert set(index_db.images(isolated_home)) == good | {os.fsencode(folder / "truncated-50.jpg")}


class AtPhase(IndexEvents):
    """Does something to the folder at the start of one indexing phase: between scan and hash ('hashing'),
    or between hash and decode ('encoding')."""

    def __init__(self, phase: str, action):
        self.at, self.action, self.failures = phase, action, []

    def phase(self, name: str, total: int) -> None:
        if name == self.at:
            self.action()

    def failed(self, path: bytes, reason: str) -> None:
        self.failures.append(path)


def stored(home: Path) -> dict[str, tuple[bytes, np.ndarray]]:
    return {os.fsdecode(p): row for p, row in index_db.images(home, "content_hash", "vector").items()}


def fresh(encoder: Encoder, path: Path) -> np.ndarray:
    return encoder.embed_pixels(decode_file(path, encoder.preprocess).pixels[None].copy())[0]


def test_files_deleted_between_scan_and_decode_are_passed_over(tiny_model, tmp_path, isolated_home):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, sample in enumerate(SAMPLES[:6]):
        shutil.copy(sample, folder / f"{i}.jpg")
    library = Library(isolated_home, model=tiny_model, device="cpu", workers=1)
    events = AtPhase("hashing", lambda: (folder / "5.jpg").unlink())  # listed, gone before it was hashed
    library.index([folder], events=events)
    assert not events.failures
    assert sorted(stored(isolated_home)) == sorted(str(p) for p in folder.rglob("*.jpg"))

    shutil.copy(SAMPLES[6], folder / "6.jpg")  # listed before sub/: the copy that is decoded for both
    shutil.copy(SAMPLES[6], folder / "sub" / "6-copy.jpg")
    shutil.copy(SAMPLES[7], folder / "7.jpg")

    def delete_after_hashing() -> None:
        (folder / "6.jpg").unlink()
        (folder / "7.jpg").unlink()

    events = AtPhase("encoding", delete_after_hashing)
    report = library.index([folder], events=events)
    # the deleted files are neither stored nor reported; the surviving copy is stored, with its own vector
    assert not events.failures and report.failed == 0
    assert sorted(stored(isolated_home)) == sorted(str(p) for p in folder.rglob("*.jpg"))
    encoder = library.encoder()
    for path, (_, vector) in stored(isolated_home).items():
        assert np.allclose(vector, fresh(encoder, Path(path)), atol=1e-4), path


def exact_where_trusted(home: Path, encoder: Encoder) -> None:
    """Every row whose size and mtime match the file (what the next run trusts without reading it) holds that
    file's hash and its fresh vector."""
    for stored_path, row in index_db.images(home, "content_hash", "vector", "size", "mtime_ns").items():
        path, (content_hash, vector, size, mtime_ns) = os.fsdecode(stored_path), row
        st = os.stat(path)
        if (size, mtime_ns) == (st.st_size, st.st_mtime_ns):
            assert content_hash == hash_file(path)[0], path
            assert np.allclose(vector, fresh(encoder, Path(path)), atol=1e-4), path


def test_a_file_rewritten_after_hashing_is_stored_as_it_was_read(tiny_model, tmp_path, isolated_home):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(SAMPLES[0], folder / "a.jpg")  # listed before sub/: decoded for both copies
    shutil.copy(SAMPLES[0], folder / "sub" / "b.jpg")
    shutil.copy(SAMPLES[1], folder / "c.jpg")

    def rewrite() -> None:
        (folder / "a.jpg").write_bytes(SAMPLES[2].read_bytes())
        (folder / "c.jpg").write_bytes(SAMPLES[3].read_bytes())

    library = Library(isolated_home, model=tiny_model, device="cpu", workers=1)
    library.index([folder], events=AtPhase("encoding", rewrite))
    encoder = library.encoder()
    assert sorted(stored(isolated_home)) == sorted(str(p) for p in folder.rglob("*.jpg"))
    exact_where_trusted(isolated_home, encoder)
    report = library.index([folder])  # what was stored is what was read: nothing to redo
    assert report.encoded == 0 and report.unchanged == 3


def test_a_file_rewritten_again_and_again_during_a_run(tiny_model, tmp_path, isolated_home):
    """A file rewritten in place (truncate, write) while the index runs: reads may be torn. Whatever the run
    stored or reported, the next run after the writes stop makes the index exact."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, sample in enumerate(SAMPLES[:20]):
        shutil.copy(sample, folder / f"{i:02d}.jpg")
    versions = [SAMPLES[20].read_bytes(), SAMPLES[21].read_bytes()]
    stop = threading.Event()

    def rewrite() -> None:
        n = 0
        while not stop.is_set():
            for name in ("03.jpg", "11.jpg"):
                with open(folder / name, "wb") as f:
                    f.write(versions[n % 2][: len(versions[n % 2]) // 2])
                    f.flush()
                    f.write(versions[n % 2][len(versions[n % 2]) // 2 :])
            n += 1
            time.sleep(0.02)  # so that each version has an mtime of its own

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        library = Library(isolated_home, model=tiny_model, device="cpu", workers=2)
        library.index([folder])
        library.index([folder])
    finally:
        stop.set()
        writer.join()
    encoder = library.encoder()
    exact_where_trusted(isolated_home, encoder)
    library.index([folder])
    rows = stored(isolated_home)
    assert sorted(rows) == sorted(str(p) for p in folder.glob("*.jpg"))
    for path, (content_hash, vector) in rows.items():
        assert content_hash == hash_file(path)[0], path
        assert np.allclose(vector, fresh(encoder, Path(path)), atol=1e-4), path
    assert not Library(isolated_home).failures()
