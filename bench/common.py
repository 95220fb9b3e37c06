"""What the benchmarks share: random-weight models, photo-like images, clustered vectors, synthetic libraries.

Speed does not depend on the weights, so every benchmark builds a real open_clip architecture with random
weights into a local-dir folder and loads it through the project's own loading code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def make_model(name: str, folder: Path) -> str:
    """Save architecture `name` with random weights in open_clip's local-dir layout; return its spec."""
    if name.startswith("local-dir:"):
        return name
    import open_clip
    from safetensors.torch import save_file

    logging.disable(logging.WARNING)  # "initialized randomly" is the point here
    model = open_clip.create_model(name)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {
        "model_cfg": open_clip.get_model_config(name),
        "preprocess_cfg": dict(model.visual.preprocess_cfg),
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    logging.disable(logging.NOTSET)
    return f"local-dir:{folder}"


def make_photos(folder: Path, count: int, width: int, height: int) -> None:
    """Smooth colour fields plus sensor-like noise: JPEG sizes and decode costs like real photos.
    Made on every core: twelve-megapixel ones take about a second each."""
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        list(pool.map(_make_photo, [(folder, i, width, height) for i in range(count)], chunksize=4))


def _make_photo(job: tuple[Path, int, int, int]) -> None:
    folder, i, width, height = job
    rng = np.random.default_rng(i)
    base = rng.random((height // 64 + 1, width // 64 + 1, 3)) * 255
    smooth = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((width, height), Image.BICUBIC))
    noisy = smooth.astype(np.int16) + rng.integers(-12, 12, (height, width, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"img{i:05d}.jpg", quality=90)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def embeddings(count: int, rng: np.random.Generator, dim: int = 512) -> np.ndarray:
    """`count` unit vectors: mean direction + power-law topics + scenes of ~20 shots + shot noise."""
    topics_n = max(20, round(count**0.5))
    scenes_n = max(topics_n, count // 20)
    mean = _unit(rng.normal(size=dim))
    topics = _unit(mean + _unit(rng.normal(size=(topics_n, dim))))
    weights = 1.0 / np.arange(1, topics_n + 1) ** 0.8
    topic_of = rng.choice(topics_n, scenes_n, p=weights / weights.sum())
    spread = rng.uniform(0.5, 1.0, (scenes_n, 1)) * 0.9 / np.sqrt(dim)
    scenes = _unit(topics[topic_of] + spread * rng.normal(size=(scenes_n, dim)))
    out = np.empty((count, dim), np.float32)
    for start in range(0, count, 100_000):
        n = min(100_000, count - start)
        scene = rng.integers(0, scenes_n, n)
        noise = rng.uniform(0.5, 1.5, (n, 1)) * 0.45 / np.sqrt(dim) * rng.normal(size=(n, dim))
        out[start : start + n] = _unit(scenes[scene] + noise.astype(np.float32))
    return out


def synthetic_path(root: Path, number: int) -> Path:
    """Where synthetic image `number` lives: folders of 1,000, like a camera's."""
    return root / f"{number // 1000:04d}" / f"img{number:07d}.jpg"


def synthetic_library(
    home: Path,
    model_id: str,
    dim: int,
    root: Path,
    count: int,
    real_files: Sequence[Path] = (),
    on_disk: bool = False,
) -> None:
    """An index of `count` images with `embeddings` vectors, written through the catalog (no encoding).

    The first len(real_files) rows are those real files (their true hash, size and mtime); the rest are
    `synthetic_path`s under `root`, which need not exist (`on_disk`: they do, and their stat is recorded).
    Rows go in 20,000 per transaction, then the FAISS file is built as `imgsearch index` leaves it: exact,
    or trained as the approximate index from its threshold on (imgsearch.store.ann).
    """
    from imgsearch.index.decode import hash_file
    from imgsearch.store.catalog import Catalog, Content, _content_values
    from imgsearch.store.schema import images

    rng = np.random.default_rng(1)
    catalog = Catalog.open(home / "index.db", create=True)
    try:
        with catalog.write() as w:
            w.set_model(model_id, dim)
            w.add_root(os.fsencode(root))
        for start in range(0, count, 20_000):
            n = min(20_000, count - start)
            vectors = embeddings(n, rng, dim)
            rows = []
            for i in range(n):
                number = start + i
                if number < len(real_files):
                    path = os.fsencode(real_files[number])
                    digest, size, mtime_ns = hash_file(path)
                else:
                    path = os.fsencode(synthetic_path(root, number))
                    digest = hashlib.blake2b(path, digest_size=16).digest()
                    if on_disk:
                        st = os.stat(path)
                        size, mtime_ns = st.st_size, st.st_mtime_ns
                    else:
                        size, mtime_ns = 1_000_000 + number, 1_600_000_000_000_000_000 + number
                content = Content(1024, 768, "JPEG", 1_500_000_000.0 + number * 60, vectors[i].tobytes())
                rows.append({"path": path, **_content_values(size, mtime_ns, digest, content)})
            with catalog.write() as w:  # one executemany: add_image row by row takes minutes at a million
                w.conn.execute(images.insert(), rows)
                w._bump_vectors_version()
    finally:
        catalog.close()
    from imgsearch.store.vectors import VectorIndex

    catalog = Catalog.open(home / "index.db")
    try:
        vectors = VectorIndex.load_or_rebuild(catalog, home, dim)
        if vectors.fit():
            vectors.save(home)
    finally:
        catalog.close()


def run_timed(command: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run a command to completion: wall seconds, its peak RSS in MB, and its stdout.

    The peak is the process's own VmHWM, read from /proc while it runs (the last reading before it exits).
    Not wait4's ru_maxrss: Linux carries the parent's high-water mark across fork and exec, so a child of
    a big benchmark process would report the parent's memory."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak_kb = 0
    output: dict[str, bytes] = {}
    readers = [
        threading.Thread(
            target=lambda: output.__setitem__("out", process.stdout.read() if process.stdout else b"")
        ),
        threading.Thread(
            target=lambda: output.__setitem__("err", process.stderr.read() if process.stderr else b"")
        ),
    ]
    for reader in readers:
        reader.start()
    while process.poll() is None:
        peak_kb = max(peak_kb, _status_kb(process.pid, "VmHWM:"))
        time.sleep(0.005)
    for reader in readers:
        reader.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed ({process.returncode}): {output['err'].decode()[-2000:]}"
        )
    return seconds, peak_kb // 1024, output["out"].decode(errors="replace")


class TreeMemory:
    """Peak resident memory of a process and all its descendants together (decode workers included),
    sampled every 50 ms from /proc while the `with` block runs."""

    def __init__(self, pid: int | None = None):
        self.pid = pid or os.getpid()
        self.peak_mb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, sum(_rss_kb(pid) for pid in _tree(self.pid)) // 1024)


def _tree(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                stack.extend(int(child) for child in task.read_text().split())
    return found


def _rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS:")


def _status_kb(pid: int, field: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    return 0


@contextlib.contextmanager
def running_server(env: dict[str, str]) -> Iterator[str]:
    """A real `imgsearch serve --port 0` for the index that `env` names; yields its URL, stops it after."""
    command = [*imgsearch_command(), "serve", "--port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if "serving" not in line:
            raise RuntimeError(f"imgsearch serve did not start: {line!r}")
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def machine() -> str:
    """One line that names the machine, for every table's caption: the CPU and the flags that decide the
    numerics (imgsearch.model.numerics.describe_cpu), what `--precision auto` resolves to on it, versions."""
    import faiss
    import torch

    from imgsearch.model.numerics import describe_cpu, index_precision

    return (
        f"{os.cpu_count()}-core {describe_cpu()} (`--precision auto`: {index_precision('cpu')}), "
        f"Python {platform.python_version()}, torch {torch.__version__.split('+')[0]}, "
        f"faiss {faiss.__version__}"
    )


def imgsearch_command() -> list[str]:
    """The CLI as a new process, as a user runs it (the venv's console script when there is one)."""
    script = Path(sys.executable).with_name("imgsearch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imgsearch"]


#: Camera-like files `make_camera_files` writes: a JPEG as a camera saves it, a DNG with a full-size JPEG
#: preview (the RAW path that decodes the preview), a DNG without one (the half-size demosaic path).
CAMERA_KINDS = {"jpeg": ".jpg", "preview": ".dng", "demosaic": ".dng"}
SAMPLE_PHOTOS = Path(__file__).resolve().parent.parent / "sample_photos"


def camera_picture(i: int, width: int, height: int) -> Image.Image:
    """Distinct picture `i` at a sensor's size: sample photo i (mirrored on the second pass through them),
    cropped to the aspect and upscaled, plus sensor-like noise seeded by `i`, so that no two are alike and
    a 24 MP JPEG of one is as large as a camera's (about 9 MB at quality 95)."""
    sources = sorted(SAMPLE_PHOTOS.glob("*.jpg"))
    with Image.open(sources[i % len(sources)]) as opened:
        source = opened.convert("RGB")
    if (i // len(sources)) % 2:
        source = source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = source.size
    crop_w, crop_h = (
        (w, round(w * height / width)) if w * height <= h * width else (round(h * width / height), h)
    )
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    big = source.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BICUBIC)
    rng = np.random.default_rng(i)
    noisy = np.asarray(big).astype(np.int16) + rng.integers(-9, 10, (height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_camera_files(
    folder: Path, count: int, width: int, height: int, kinds: Sequence[str]
) -> dict[str, list[Path]]:
    """`count` distinct `camera_picture`s as each of `kinds` (CAMERA_KINDS), each kind in its own subfolder
    of `folder`; DNGs by tests/formats.py's `write_dng` (an RGGB mosaic of the picture, 12 bits; "preview":
    plus the picture as a full-size JPEG preview, quality 95, 4:2:0, as cameras embed it). The JPEG kind
    is saved with the preview's settings, so the two decode the same JPEG stream. Made on every core."""
    for kind in kinds:
        (folder / kind).mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        list(pool.map(_make_camera_file, [(folder, i, width, height, tuple(kinds)) for i in range(count)]))
    return {kind: sorted((folder / kind).iterdir()) for kind in kinds}


def _make_camera_file(job: tuple[Path, int, int, int, tuple[str, ...]]) -> None:
    folder, i, width, height, kinds = job
    sys.path.insert(0, str(SAMPLE_PHOTOS.parent))  # the repository root: tests/formats.py writes DNGs
    from tests.formats import write_dng

    picture = camera_picture(i, width, height)
    for kind in kinds:
        path = folder / kind / f"cam{i:04d}{CAMERA_KINDS[kind]}"
        if kind == "jpeg":
            picture.save(path, quality=95, subsampling=2)
        else:
            write_dng(path, picture, preview=kind == "preview")


def decode_costs(
    paths: Sequence[Path], prep: object, rounds: int = 1
) -> tuple[list[tuple[float, float]], list]:
    """Decode each file `rounds` times through `imgsearch.index.decode.decode_file`, in one spawned process
    as the indexer's decode workers are (no torch there; LibRaw's OpenMP threads as a worker has them).

    Returns per file its (CPU seconds, wall seconds), each the least over the rounds (CPU: process_time,
    every thread of that process), and the decoded images of the last round. The first file is decoded
    once before the timing, as a worker pays for importing its decoders once."""
    import multiprocessing

    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_decode_costs, [str(p) for p in paths], prep, rounds).result()


def _decode_costs(paths: list[str], prep: object, rounds: int) -> tuple[list[tuple[float, float]], list]:
    from imgsearch.index.decode import decode_file

    best = [(float("inf"), float("inf"))] * len(paths)
    decoded: list = []
    if paths:  # a worker imports its decoders (rawpy, Pillow's plugins) once, for its first file
        decode_file(paths[0], prep)  # type: ignore[arg-type]
    for _ in range(rounds):
        decoded = []
        for k, path in enumerate(paths):
            cpu, wall = time.process_time(), time.perf_counter()
            decoded.append(decode_file(path, prep))  # type: ignore[arg-type]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            best[k] = (min(best[k][0], cpu), min(best[k][1], wall))
    return best, decoded
