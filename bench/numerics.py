"""Indexing numerics, bf16 against fp32, on this CPU: the image tower's speed and fidelity, `imgsearch index`
under each precision, and the query vectors (always fp32) under each. Real architectures, random weights.

    python bench/numerics.py [--model ViT-B-32] [--also ViT-B-16] [--runs 7] [--batches 3] [--noise 32]
                             [--count 48] [--size 1024x768] [--index-runs 2] [--max-wait 15] [--json]

Each model is built with seeded random weights (bench/common.make_model) and loaded twice through the
project's own code, `Encoder.load(precision="fp32")` and `"bf16"` (fp32 weights, only the image tower cast).
  - speed: img/s of `Encoder.embed_pixels` on one batch of 16 model-sized photos, as the indexer calls it;
    after two warm-up batches each, rounds alternate the two encoders (fp32 first in odd rounds, bf16 first
    in even ones), each timing BATCHES batches. Machines here are shared: each round waits (up to MAX_WAIT
    s) for a quiet second, /proc/stat says how much of the CPU other processes took meanwhile, and rounds
    run until RUNS are clean (others < 10%) or 2 x RUNS were tried. Reported: the best and the median
    round, the median of the rounds' bf16/fp32 ratios (each taken side by side: the fairest figure on a
    busy machine), and CPU-seconds per image of this process (less sensitive to others' load).
  - fidelity: cosine between the bf16 and fp32 vectors of every photo in sample_photos/ (decoded by
    imgsearch.index.decode with the encoder's preprocess) and of NOISE uniform-noise images (seeded). As
    context for what random weights leave room for: the mean cosine between different photos' fp32 vectors,
    and how many photos keep the same nearest other photo under bf16.
  - `imgsearch index` (the first model only): COUNT photo-like JPEGs (bench/common.make_photos) indexed into
    new homes under `--precision fp32` and `bf16`, alternated INDEX_RUNS times each: the encoding-phase rate
    of `Library.index` (bench/index_rate.index_rate) and the wall time and peak RSS of `imgsearch index` as a
    new process (importing torch, loading the model, scan, decode, encode, store), the ONNX exports off
    (bench/index_rate.exports_off: torch embeds under the precision asked for, and no background exporter
    starts; the text export is timed by bench/text_export.py); plus the cosine between the vectors the two
    indexes stored for the same files.
  - queries (the first model only): the text vectors of the bf16-loaded encoder against the fp32-loaded one
    (bitwise), and those of the ONNX text export made from the bf16-loaded encoder (the export takes the
    fp32 text tower of whichever encoder it is given; the background exporter itself loads one in fp32)
    against torch fp32.
Whatever the exports' code keeps goes to a cache of this run's own ($IMGSEARCH_CACHE under the work folder).
The `--also` models get speed and fidelity only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_model, make_photos
from index_rate import cli_index, exports_off, index_rate

SAMPLE_PHOTOS = Path(__file__).resolve().parent.parent / "sample_photos"
PRECISIONS = ("fp32", "bf16")
MIN_COS = 0.999  # the bar for `--precision auto` to pick bf16
QUIET = 0.10  # a timed block is clean when other processes took less than this share of the CPU
TEXTS = [
    "a red apple on a table",
    "mountain lake in winter",
    "two dogs playing in the snow at dusk",
    "東京タワーの夜景",
    "a black and white photograph of an old steam train crossing a bridge",
    "",
]


def load_pair(model: str, folder: Path) -> tuple[str, dict[str, Any]]:
    """The model with seeded random weights (its --model spec), loaded on the CPU once per precision."""
    import torch

    from imgsearch.model.encoder import Encoder
    from imgsearch.model.specs import parse_model_spec

    torch.manual_seed(0)
    text = make_model(model, folder)
    spec = parse_model_spec(text)
    return text, {p: Encoder.load(spec, device="cpu", precision=p) for p in PRECISIONS}


def sample_pixels(preprocess: Any) -> np.ndarray:
    """Every photo in sample_photos/, decoded and preprocessed as the indexer does."""
    from imgsearch.index.decode import decode_file

    files = sorted(p for p in SAMPLE_PHOTOS.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return np.stack([decode_file(str(f), preprocess).pixels for f in files])


def embed(encoder: Any, pixels: np.ndarray) -> np.ndarray:
    size = encoder.runtime.batch_size
    return np.concatenate([encoder.embed_pixels(pixels[i : i + size]) for i in range(0, len(pixels), size)])


class OtherLoad:
    """The share of the whole machine's CPU time that other processes (and the hypervisor: steal) took
    while the `with` block ran, from /proc/stat minus this process and the children it reaped meanwhile."""

    share = 0.0

    def __enter__(self) -> OtherLoad:
        self._start = _ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        busy, total, own = (b - a for a, b in zip(self._start, _ticks(), strict=True))
        self.share = max(0.0, (busy - own) / total) if total else 0.0


def _ticks() -> tuple[int, int, int]:
    """(busy ticks of all CPUs, all their ticks, this process's own with its reaped children's)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    stat = Path("/proc/self/stat").read_text()
    utime, stime, cutime, cstime = (int(x) for x in stat[stat.rindex(")") + 2 :].split()[11:15])
    return sum(fields) - fields[3] - fields[4], sum(fields), utime + stime + cutime + cstime


def wait_quiet(limit_s: float, below: float = QUIET / 2) -> float:
    """Wait, up to `limit_s`, for a second in which other processes use less than `below` of the machine;
    the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        with OtherLoad() as load:
            time.sleep(1.0)
        if load.share < below:
            break
    return time.perf_counter() - started


def speed(
    encoders: dict[str, Any], batch: np.ndarray, runs: int, batches: int, max_wait: float
) -> dict[str, Any]:
    """img/s of each encoder in rounds that alternate them, each round after waiting (up to `max_wait`)
    for a quiet machine; a round is clean when other processes took under QUIET of the CPU during both its
    blocks. Up to 2 x `runs` rounds until `runs` are clean; the figures come from the clean rounds when
    at least half are, else from all (and say so). Also CPU-seconds per image (this process's threads)."""
    for encoder in encoders.values():
        for _ in range(2):
            encoder.embed_pixels(batch)
    rounds: list[dict[str, Any]] = []
    while len(rounds) < 2 * runs and sum(r["clean"] for r in rounds) < runs:
        wait_quiet(max_wait)
        row: dict[str, Any] = {}
        for p in PRECISIONS if len(rounds) % 2 == 0 else PRECISIONS[::-1]:
            with OtherLoad() as load:
                started, cpu = time.perf_counter(), time.process_time()
                for _ in range(batches):
                    encoders[p].embed_pixels(batch)
                wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            row[p] = {"img_s": batches * len(batch) / wall, "cpu_ms": cpu / (batches * len(batch)) * 1000}
            row[p]["others"] = load.share
        row["clean"] = all(row[p]["others"] < QUIET for p in PRECISIONS)
        rounds.append(row)
    clean = [r for r in rounds if r["clean"]]
    used = clean if len(clean) * 2 >= runs else rounds
    rates = {p: [r[p]["img_s"] for r in used] for p in PRECISIONS}
    ratios = [r["bf16"]["img_s"] / r["fp32"]["img_s"] for r in used]
    cpu_ms = {p: statistics.median(r[p]["cpu_ms"] for r in used) for p in PRECISIONS}
    return {
        **{f"{p}_img_s_best": max(rates[p]) for p in PRECISIONS},
        **{f"{p}_img_s_median": statistics.median(rates[p]) for p in PRECISIONS},
        **{f"{p}_cpu_ms_median": cpu_ms[p] for p in PRECISIONS},
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "cpu_ratio": cpu_ms["fp32"] / cpu_ms["bf16"],
        "rounds": len(rounds),
        "clean": len(clean),
        "used": "clean" if used is clean else "all",
        "others_max": max(r[p]["others"] for r in used for p in PRECISIONS),
        "raw": rounds,
    }


def cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = (a * b).sum(axis=1)
    return {"min": float(cos.min()), "mean": float(cos.mean()), "n": len(cos)}


def fidelity(encoders: dict[str, Any], photos: np.ndarray, noise: int) -> dict[str, Any]:
    prep = encoders["fp32"].preprocess
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (noise, prep.height, prep.width, 3), dtype=np.uint8)
    out: dict[str, Any] = {}
    for name, pixels in (("photos", photos), ("noise", noisy)):
        exact, bf16 = embed(encoders["fp32"], pixels), embed(encoders["bf16"], pixels)
        out[name] = cosines(bf16, exact)
        if name == "photos":  # how far apart different photos are, and whether neighbours survive bf16
            pairs_exact, pairs_bf16 = exact @ exact.T, bf16 @ bf16.T
            np.fill_diagonal(pairs_exact, -2)
            np.fill_diagonal(pairs_bf16, -2)
            off = pairs_exact[~np.eye(len(exact), dtype=bool)]
            out["photos"]["between_photos_mean"] = float(off.mean())
            out["photos"]["between_photos_max"] = float(off.max())
            same = pairs_exact.argmax(axis=1) == pairs_bf16.argmax(axis=1)
            out["photos"]["same_nearest"] = int(same.sum())
    worst = min(out["photos"]["min"], out["noise"]["min"])
    out["min"] = worst
    out["met"] = worst >= MIN_COS
    return out


def text_numerics(encoders: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Text vectors under each index precision, and the ONNX export made from the bf16-loaded encoder into
    `folder`."""
    from imgsearch.model.export import export_text
    from imgsearch.model.onnx_text import OnnxText

    exact, bf16 = encoders["fp32"].embed_texts(TEXTS), encoders["bf16"].embed_texts(TEXTS)
    out: dict[str, Any] = {
        "texts": len(TEXTS),
        "bitwise_equal": bool(np.array_equal(exact, bf16)),
        "max_abs_diff": float(np.abs(exact - bf16).max()),
        "torch_bf16_vs_fp32": cosines(bf16, exact),
    }
    started = time.perf_counter()
    meta = export_text(encoders["bf16"], folder)
    out["export_s"] = time.perf_counter() - started
    out["export_supported"] = bool(meta.get("supported"))
    out["export_verified"] = meta.get("verified")
    onnx = OnnxText.load(folder, meta) if meta.get("supported") else None
    if onnx is not None:
        batched = onnx.embed_texts(TEXTS)
        alone = np.concatenate([onnx.embed_texts([t]) for t in TEXTS])
        out["onnx_vs_torch_fp32"] = cosines(np.concatenate([batched, alone]), np.concatenate([exact, exact]))
    return out


def stored_vectors(home: Path) -> dict[bytes, np.ndarray]:
    with contextlib.closing(sqlite3.connect(home / "index.db")) as db:
        return {
            path: np.frombuffer(v, np.float32) for path, v in db.execute("SELECT path, vector FROM images")
        }


def index_numerics(
    spec: str, work: Path, count: int, width: int, height: int, runs: int, max_wait: float
) -> dict[str, Any]:
    """`Library.index` and `imgsearch index` under each precision, alternated, on the same photos, each
    after waiting (up to `max_wait`) for a quiet machine; other processes' share of the CPU is recorded
    for the CLI runs (whose decode workers it reaps, so their time counts as its own)."""
    photos = work / "photos"
    make_photos(photos, count, width, height)
    keys = ("rate", "cli_s", "cli_mb", "others")
    rows: dict[str, dict[str, list[float]]] = {p: {k: [] for k in keys} for p in PRECISIONS}
    with exports_off():
        for round_ in range(runs):
            for p in PRECISIONS if round_ % 2 == 0 else PRECISIONS[::-1]:
                wait_quiet(max_wait)
                rate, report = index_rate(spec, photos, work / f"home-{p}-{round_}", "cpu", p)
                if report.encoded != count:
                    raise RuntimeError(f"unexpected index result: {report.summary()}")
                rows[p]["rate"].append(rate)
                wait_quiet(max_wait)
                with OtherLoad() as load:
                    wall, peak_mb, code = cli_index(work / f"cli-{p}-{round_}", spec, "cpu", photos, p)
                if code != 0:
                    raise RuntimeError(f"imgsearch index --precision {p} exited {code}")
                rows[p]["cli_s"].append(wall)
                rows[p]["cli_mb"].append(peak_mb)
                rows[p]["others"].append(load.share)
    from imgsearch import Library

    recorded = {p: Library(work / f"home-{p}-0").status().numerics for p in PRECISIONS}
    exact, bf16 = stored_vectors(work / "home-fp32-0"), stored_vectors(work / "home-bf16-0")
    paths = sorted(exact)
    stored = cosines(np.stack([bf16[k] for k in paths]), np.stack([exact[k] for k in paths]))
    return {
        "images": count,
        "size": f"{width}x{height}",
        "runs": runs,
        "recorded_numerics": recorded,
        **{
            f"{p}_{key}": statistics.median(values) if key in ("rate", "cli_s") else max(values)
            for p in PRECISIONS
            for key, values in rows[p].items()
        },
        "rate_ratio": statistics.median(rows["bf16"]["rate"]) / statistics.median(rows["fp32"]["rate"]),
        "stored_bf16_vs_fp32": stored,
        "raw": rows,
    }


def measure_model(
    model: str, work: Path, runs: int, batches: int, noise: int, max_wait: float
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Speed and fidelity of one architecture; also its spec and its two encoders, for more tests."""
    spec, encoders = load_pair(model, work / "model")
    prep = encoders["fp32"].preprocess
    photos = sample_pixels(prep)
    batch = photos[np.arange(encoders["fp32"].runtime.batch_size) % len(photos)]
    out = {
        "model": model,
        "input": f"{prep.width}x{prep.height}",
        "batch": len(batch),
        "speed": speed(encoders, batch, runs, batches, max_wait),
        "fidelity": fidelity(encoders, photos, noise),
    }
    return out, spec, encoders


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from imgsearch.model.numerics import describe_cpu, index_precision

    os.environ["IMGSEARCH_CACHE"] = str(work / "cache")
    width, height = (int(x) for x in args.size.split("x"))
    started = time.perf_counter()
    wait = args.max_wait
    first, spec, encoders = measure_model(
        args.model, work / "first", args.runs, args.batches, args.noise, wait
    )
    first["text"] = text_numerics(encoders, work / "first" / "text-export")
    del encoders
    first["index"] = index_numerics(spec, work / "first", args.count, width, height, args.index_runs, wait)
    models = [first]
    for extra in [m for m in args.also.split(",") if m]:
        result, _, encoders = measure_model(
            extra, work / extra, args.runs, max(1, args.batches - 1), args.noise, wait
        )
        del encoders
        models.append(result)
    return {
        "cpu": describe_cpu(),
        "auto": index_precision("cpu"),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "min_cos_target": MIN_COS,
        "models": models,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32", help="architecture or local-dir:FOLDER")
    parser.add_argument("--also", default="", help="comma-separated architectures: speed and fidelity only")
    parser.add_argument("--runs", type=int, default=7, help="alternated rounds of the speed test")
    parser.add_argument("--batches", type=int, default=3, help="batches of 16 per round")
    parser.add_argument("--noise", type=int, default=32, help="random-noise images for the fidelity test")
    parser.add_argument("--count", type=int, default=48, help="photos for the `imgsearch index` runs")
    parser.add_argument("--size", default="1024x768", help="their size")
    parser.add_argument("--index-runs", type=int, default=2, help="`imgsearch index` runs per precision")
    parser.add_argument(
        "--max-wait", type=float, default=15, help="seconds to wait for a quiet machine before each timing"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args, Path(tmp))
    if args.json:
        print(json.dumps(r))
        return
    print(f"{r['cpu']}, auto = {r['auto']}, torch {r['torch_cpu_capability']}, {r['threads']} threads")
    for m in r["models"]:
        s, f = m["speed"], m["fidelity"]
        print(
            f"{m['model']} {m['input']}, batch {m['batch']}: fp32 {s['fp32_img_s_median']:.1f} img/s "
            f"(best {s['fp32_img_s_best']:.1f}), bf16 {s['bf16_img_s_median']:.1f} (best "
            f"{s['bf16_img_s_best']:.1f}), bf16/fp32 {s['ratio_median']:.2f}; CPU ms/img fp32 "
            f"{s['fp32_cpu_ms_median']:.0f}, bf16 {s['bf16_cpu_ms_median']:.0f}; {s['clean']} of "
            f"{s['rounds']} rounds clean, {s['used']} used, others up to {s['others_max']:.0%}"
        )
        print(
            f"  cos bf16 vs fp32: photos min {f['photos']['min']:.6f} mean {f['photos']['mean']:.6f}; noise "
            f"min {f['noise']['min']:.6f} mean {f['noise']['mean']:.6f}; >= {MIN_COS}: {f['met']}"
        )
        if "text" in m:
            print(f"  text: {json.dumps(m['text'])}")
            print(f"  index: {json.dumps({k: v for k, v in m['index'].items() if k != 'raw'})}")


if __name__ == "__main__":
    main()
