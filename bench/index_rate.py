"""Indexing throughput against the pipeline limit, in one run, with a real architecture and random weights.

    python bench/index_rate.py [--model ViT-B-32] [--count 96] [--size 1024x768] [--mixed]
                               [--raw preview|demosaic] [--runs 1] [--precision auto] [--json]

Builds the architecture with random weights into a local-dir folder (speed does not depend on the weights),
generates photo-like JPEGs (`--mixed`: a tenth become PNG, a tenth WebP, a twentieth HEIC, plus three
broken files; `--raw`: camera RAW instead, COUNT distinct DNGs made from the sample photos at the sensor
size SIZE, each with a full-size JPEG preview (`preview`) or none (`demosaic`: LibRaw's half-size
demosaic), see `common.make_camera_files`), then measures on this machine:
  - decode: core-seconds per image of the project's own decode path: the CPU time (every thread: LibRaw's
    OpenMP ones too) of one spawned process decoding a sample, as the indexer's decode workers do;
  - encode: seconds per image of batched inference (all threads), i.e. the encoder-only rate;
  - the pipeline limit: cores / (decode core-s + encode core-s), where encode core-s = encode s x cores;
  - end to end: `Library.index` on the folder, the rate over its encoding phase (workers included), and the
    seconds of its hashing phase before it (every new file is read and hashed once in the parent); with
    the ONNX exports off (`exports_off`), so that it embeds with torch, as the limit is measured, and
    starts no background exporter that would share the cores with the next measurement;
  - RUNS times each of these three (each run a new index), for the median and the least ratio; with
    `--quiet-wait S` each measurement first waits up to S seconds for a second in which other processes
    take < 5% of the CPU (bench/numerics.py wait_quiet), and every run records their share meanwhile;
  - memory: peak RSS of a separate `imgsearch index` process with its decode workers, summed: a first run,
    with no exports in the cache yet (torch embeds; at its end it starts the background exporter, a child
    until the run exits, which is left out of the sum and measured apart: exporter_peak_rss_mb), then,
    once that exporter is done, a later run into another new index folder, which finds the exports and
    this machine's engine speeds (imgsearch.model.engine: `later_engine` is the engine `--precision`
    picks for it). The exports' switches are the environment's; the cache is this run's own
    ($IMGSEARCH_CACHE under the work folder: no export of an earlier run is found).
Every encoding runs in `--precision` (the index numerics; auto: bf16 on a CPU with AVX512-BF16 or AMX-BF16,
else fp32; see imgsearch.model.numerics).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    TreeMemory,
    _rss_kb,
    decode_costs,
    imgsearch_command,
    make_camera_files,
    make_model,
    make_photos,
)

BROKEN = 3
EXPORT_SWITCHES = ("IMGSEARCH_TEXT_EXPORT", "IMGSEARCH_IMAGE_EXPORT")
EXPORTER = b"imgsearch.model.exporter"  # in the command line of the background exporter


class IndexMemory(TreeMemory):
    """TreeMemory of an `imgsearch index` process and its decode workers, less the background exporter it
    starts at its end: a child until the run exits, yet its own process (measured apart: exporter_peak)."""

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(
                self.peak_mb, sum(_rss_kb(pid) for pid in _tree_without_exporter(self.pid)) // 1024
            )


def _tree_without_exporter(root: int) -> list[int]:
    found, stack = [], [root]
    while stack:
        current = stack.pop()
        with contextlib.suppress(OSError):
            if current != root and EXPORTER in Path(f"/proc/{current}/cmdline").read_bytes():
                continue
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                stack.extend(int(child) for child in task.read_text().split())
    return found


def exporter_peak(spec: str, timeout: float = 3600) -> int | None:
    """Wait for the background exporter of `spec` (in this run's cache); the peak RSS in MB of it and its
    children from now until it ends, or None when none runs."""
    from imgsearch.home import cache_home
    from imgsearch.model import exporter
    from imgsearch.model.cache import model_key
    from imgsearch.model.specs import parse_model_spec

    model = parse_model_spec(spec)
    try:
        pid = int((cache_home() / "running" / f"{model_key(model)}.pid").read_text())
    except (OSError, ValueError):
        pid = None
    if pid is None:
        exporter.wait(model, timeout)
        return None
    with TreeMemory(pid) as sampler:
        exporter.wait(model, timeout)
    return sampler.peak_mb or None


@contextlib.contextmanager
def exports_off() -> Iterator[None]:
    """Both ONNX exports off in this process (and its children): an index run embeds with torch, neither
    uses nor asks for an export, and so starts no background exporter."""
    before = {name: os.environ.get(name) for name in EXPORT_SWITCHES}
    os.environ.update(dict.fromkeys(EXPORT_SWITCHES, "0"))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def mix_formats(folder: Path) -> None:
    """Re-save some of the JPEGs as PNG, WebP and HEIC, and add broken files, as a real folder has."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    files = sorted(folder.glob("*.jpg"))
    for i, path in enumerate(files):
        kind = {3: ".png", 6: ".webp", 9: ".heic", 13: ".png", 16: ".webp"}.get(i % 20)
        if kind is None:
            continue
        with Image.open(path) as image:
            image.save(path.with_suffix(kind), quality=90)
        path.unlink()
    (folder / "broken-truncated.jpg").write_bytes(files[0].read_bytes()[:2000])
    (folder / "broken-random.jpg").write_bytes(random.Random(0).randbytes(5000))
    (folder / "broken-empty.png").write_bytes(b"")


def measure(
    model: str,
    count: int,
    width: int,
    height: int,
    mixed: bool,
    device: str,
    memory: bool,
    work: Path,
    precision: str = "auto",
    raw: str | None = None,
    runs: int = 1,
    quiet_wait: float = 0.0,
) -> dict[str, object]:
    from numerics import OtherLoad, wait_quiet  # here: numerics imports this module

    from imgsearch.model.encoder import Encoder
    from imgsearch.model.specs import parse_model_spec

    os.environ["IMGSEARCH_CACHE"] = str(work / "cache")  # this run's exports only; its children's too
    cores = os.cpu_count() or 1
    spec = make_model(model, work / "model")
    photos = work / "photos"
    if raw is not None:
        make_camera_files(work, count, width, height, [raw])
        photos = work / raw
    else:
        make_photos(photos, count, width, height)
        if mixed:
            mix_formats(photos)
    files = sorted(p for p in photos.iterdir() if not p.name.startswith("broken"))
    formats: dict[str, int] = {}
    for path in files:
        formats[path.suffix] = formats.get(path.suffix, 0) + 1
    distinct = len({hashlib.blake2b(path.read_bytes(), digest_size=16).digest() for path in files})

    encoder = Encoder.load(parse_model_spec(spec), device=device, precision=precision)
    sample = files[:: max(1, len(files) // 32)][: 12 if raw else 32]
    numerics = f"{encoder.runtime.device} {encoder.runtime.precision}, batch {encoder.runtime.batch_size}"
    rounds: list[dict[str, float]] = []
    report: Any = None
    for run in range(runs):
        waited = wait_quiet(quiet_wait) if quiet_wait else 0.0
        with OtherLoad() as limit_load:
            costs, decoded = decode_costs(sample, encoder.preprocess)
            decode_s = sum(cpu for cpu, _ in costs) / len(costs)
            decode_wall_s = sum(wall for _, wall in costs) / len(costs)
            batch = np.stack([d.pixels for d in (decoded * 8)[: encoder.runtime.batch_size]])
            encoder.embed_pixels(batch)  # warm-up
            started, done = time.perf_counter(), 0
            while time.perf_counter() - started < 8:
                encoder.embed_pixels(batch)
                done += len(batch)
            encode_s = (time.perf_counter() - started) / done
        if encoder.runtime.device == "cpu":  # decoding and inference share the cores
            limit = cores / (decode_s + encode_s * cores)
        else:  # the accelerator encodes while every core decodes: the slower of the two sets the pace
            limit = min(cores / decode_s, 1 / encode_s)
        waited += wait_quiet(quiet_wait) if quiet_wait else 0.0
        with OtherLoad() as index_load, exports_off():
            rate, report, hash_s = index_phases(spec, photos, work / f"home{run or ''}", device, precision)
            reap_children()  # the decode workers' CPU time is this run's own, not others'
        if report.encoded != len(files) or (mixed and report.failed != BROKEN):
            raise RuntimeError(f"unexpected index result: {report.summary()}")
        rounds.append(
            {
                "decode_ms": decode_s * 1000,
                "decode_wall_ms": decode_wall_s * 1000,
                "encoder_img_s": 1 / encode_s,
                "limit_img_s": limit,
                "index_img_s": rate,
                "ratio": rate / limit,
                "hash_s": hash_s,
                "others_share": max(limit_load.share, index_load.share),
                "waited_s": waited,
            }
        )
    del encoder

    cli_wall, peak_mb, later_peak_mb, exit_code, later_engine, exporter_mb = (None,) * 6
    if memory:  # a first run with no exports yet; a later one, into another new index, with them
        cli_wall, peak_mb, exit_code = cli_index(work / "home-cli", spec, device, photos, precision)
        exporter_mb = exporter_peak(spec)  # what that run started in the background
        later_engine = planned_engine(spec, len(files), device, precision)
        _, later_peak_mb, _ = cli_index(work / "home-cli-later", spec, device, photos, precision)
        exporter_peak(spec)  # none, unless something was still missing
    middle = sorted(rounds, key=lambda r: r["ratio"])[(len(rounds) - 1) // 2]  # the median run (lower)
    return {
        "model": model,
        "precision": numerics,
        "cores": cores,
        "images": len(files),
        "distinct": distinct,
        "decode_sample": len(sample),
        "broken": BROKEN if mixed else 0,
        "formats": formats,
        "raw": raw,
        "size": f"{width}x{height}",
        "file_mb": sum(p.stat().st_size for p in files) / len(files) / 1e6,
        **middle,
        "ratio_min": min(r["ratio"] for r in rounds),
        "runs": rounds,
        "summary": report.summary(),
        "cli_wall_s": cli_wall,
        "cli_exit": exit_code,
        "peak_rss_mb": peak_mb,
        "later_peak_rss_mb": later_peak_mb,
        "later_engine": later_engine,
        "exporter_peak_rss_mb": exporter_mb,
    }


def planned_engine(spec: str, count: int, device: str, precision: str) -> str:
    """The engine an index run of `count` new images picks now (as ModelRuntime.index_engine decides,
    from the cache's image export and engine speeds; a new process, so torch is not loaded yet)."""
    from imgsearch.model import onnx_image
    from imgsearch.model.cache import export_folder
    from imgsearch.model.engine import choose
    from imgsearch.model.onnx_text import enabled, usable_meta
    from imgsearch.model.specs import parse_model_spec

    model = parse_model_spec(spec)
    folder = export_folder(model, onnx_image.FOLDER)
    usable = enabled(onnx_image.SWITCH)
    meta = usable_meta(folder, model, onnx_image.FORMAT, "image") if usable else None
    int8 = bool(meta and meta.get("int8", {}).get("supported"))
    return choose(folder if meta else None, int8, count, device, precision).name


def index_rate(
    spec: str, photos: Path, home: Path, device: str, precision: str = "auto"
) -> tuple[float, Any]:
    """`Library.index` of `photos` into a new index `home`: images per second over its encoding phase
    (importing torch and loading the model excluded), and the IndexReport."""
    rate, report, _ = index_phases(spec, photos, home, device, precision)
    return rate, report


def index_phases(
    spec: str, photos: Path, home: Path, device: str, precision: str = "auto"
) -> tuple[float, Any, float]:
    """`index_rate`, and the seconds of the hashing phase before the model loads (0 when it had none)."""
    from imgsearch import Library
    from imgsearch.index.events import IndexEvents

    class Clock(IndexEvents):
        hashing, hashed = 0.0, 0.0

        def phase(self, name: str, total: int) -> None:
            if name == "hashing":
                self.hashing = time.perf_counter()
            self.start = time.perf_counter()

        def loading_model(self, model_id: str) -> None:
            self.hashed = time.perf_counter() - self.hashing if self.hashing else 0.0

        def advance(self, n: int = 1) -> None:
            self.end = time.perf_counter()

    clock = Clock()
    report = Library(home, model=spec, device=device, precision=precision).index([photos], events=clock)
    return report.encoded / (clock.end - clock.start), report, clock.hashed


def reap_children(limit_s: float = 10.0) -> None:
    """Wait for this process's ended children (the decode pool's workers) to be reaped."""
    import multiprocessing

    started = time.perf_counter()
    while multiprocessing.active_children() and time.perf_counter() - started < limit_s:
        time.sleep(0.05)


def cli_index(
    home: Path,
    spec: str,
    device: str,
    photos: Path,
    precision: str = "auto",
    env: dict[str, str] | None = None,
) -> tuple[float, int, int]:
    """`imgsearch index PHOTOS` as a new process: wall seconds, peak RSS of it and its workers (not of the
    background exporter it may start), exit code."""
    env = {**os.environ, **(env or {}), "IMGSEARCH_HOME": str(home), "IMGSEARCH_MODEL": spec}
    started = time.perf_counter()
    process = subprocess.Popen(
        [*imgsearch_command(), "index", "--quiet", "--device", device, "--precision", precision, str(photos)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with IndexMemory(process.pid) as sampler:
        exit_code = process.wait()
    return time.perf_counter() - started, sampler.peak_mb, exit_code


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--count", type=int, default=96)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--mixed", action="store_true", help="some PNG, WebP, HEIC and broken files")
    parser.add_argument(
        "--raw",
        choices=("preview", "demosaic"),
        help="a corpus of distinct DNGs (SIZE is the sensor's) with a full-size JPEG preview or without one",
    )
    parser.add_argument("--runs", type=int, default=1, help="limit and index measured this many times")
    parser.add_argument(
        "--quiet-wait", type=float, default=0.0, help="seconds to wait for a quiet machine before each"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16: the index numerics")
    parser.add_argument("--no-memory", action="store_true", help="skip the separate `imgsearch index` run")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.raw and args.mixed:
        parser.error("--raw and --mixed are two different corpora")
    width, height = (int(x) for x in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(
            args.model,
            args.count,
            width,
            height,
            args.mixed,
            args.device,
            not args.no_memory,
            Path(tmp),
            args.precision,
            args.raw,
            args.runs,
            args.quiet_wait,
        )
    if args.json:
        print(json.dumps(r))
        return
    print(
        f"model {r['model']} (random weights), {r['images']} images {r['size']} {r['formats']}, "
        f"{r['broken']} broken, {r['distinct']} distinct files of {r['file_mb']:.1f} MB on average, "
        f"{r['cores']} cores, {r['precision']}"
    )
    print(
        f"decode + preprocess     {r['decode_ms']:7.1f} ms CPU per image ({r['decode_wall_ms']:.1f} ms wall)"
    )
    print(f"encoder only            {r['encoder_img_s']:7.1f} img/s")
    print(f"pipeline limit          {r['limit_img_s']:7.1f} img/s")
    print(f"index, encoding phase   {r['index_img_s']:7.1f} img/s  ({r['ratio']:.2f} x the limit)")
    if len(r["runs"]) > 1:
        ratios = ", ".join(f"{run['ratio']:.2f}" for run in r["runs"])
        print(f"                        the median of {len(r['runs'])} runs (ratios {ratios})")
    others = max(run["others_share"] for run in r["runs"])
    print(f"                        other processes took up to {others:.0%} of the CPU meanwhile")
    print(f"index, hashing phase    {r['hash_s']:7.1f} s")
    print(f"                        {r['summary']}")
    if r["peak_rss_mb"] is not None:
        print(f"imgsearch index (CLI)   {r['cli_wall_s']:7.1f} s wall, peak RSS {r['peak_rss_mb']} MB")
        print(
            f"  a later run (exports made already, {r['later_engine']}): peak RSS {r['later_peak_rss_mb']} MB"
        )
        if r["exporter_peak_rss_mb"] is not None:
            print(f"  the background exporter the first run started: peak RSS {r['exporter_peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
