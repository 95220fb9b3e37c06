"""Indexing on Ray against the local path, the driver's commit rate, and the object store's peak, in one run.

    python bench/ray_index.py [--model ViT-B-32] [--count 160] [--size 1024x768] [--runs 3]
                              [--big-count 24] [--big-size 4000x3000] [--commit-rows 20000] [--json]

Builds the architecture with random weights into a local-dir folder (speed does not depend on the weights)
and COUNT distinct photo-like JPEGs, starts a Ray cluster of this machine in this process as
`index --ray local` does (one CPU slot per core for decode tasks and one for the encoder actor), then:
  - RUNS alternating pairs of `Library.index` into new index folders, the local path and `ray="auto"`
    (which joins that cluster): the rate over the encoding phase (the model load and, on Ray, the actor's
    start inside it: what a user waits for), the steady rate after the first commit, the start-up before
    it, and the whole call; the Ray rates over the local ones;
  - the Ray path's cost before its first file: `ray.init` of a local cluster, timed once;
  - the driver's commit rate alone: COMMIT_ROWS synthetic vectors through the real Indexer and catalog
    from a pipeline that costs nothing (what caps any cluster a driver feeds);
  - the object store's peak (every node's plasma bytes in use, sampled every 50 ms, through Ray's internal
    memory-info call) during a Ray run over BIG_COUNT BIG_SIZE photos.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, make_model, make_photos


class Timeline:
    """IndexEvents that time the encoding phase: from its start to the last committed batch."""

    def __init__(self) -> None:
        from imgsearch.index.events import IndexEvents

        timeline = self

        class Events(IndexEvents):
            def loading_model(self, model_id: str) -> None:
                timeline.started = time.perf_counter()

            def phase(self, name: str, total: int) -> None:  # hashing, then encoding
                timeline.done, timeline.first = 0, 0.0

            def advance(self, n: int = 1) -> None:
                timeline.last = time.perf_counter()
                if not timeline.first:
                    timeline.first, timeline.first_files = timeline.last, n
                timeline.done += n

        self.events = Events()
        self.started = self.last = self.first = 0.0
        self.first_files = self.done = 0


def index_once(photos: Path, model: str, precision: str, ray: str | None) -> dict[str, float]:
    from imgsearch import Library

    home = Path(tempfile.mkdtemp(prefix="ray-bench-home-"))
    try:
        timeline = Timeline()
        started = time.perf_counter()
        report = Library(home, model=model, precision=precision).index(
            [photos], events=timeline.events, ray=ray
        )
        wall = time.perf_counter() - started
        return {
            "encoded": report.encoded,
            "encode_s": timeline.last - timeline.started,
            "img_s": report.encoded / (timeline.last - timeline.started),
            # after the first commit: the start-up (model, actors, Ray Data) is behind
            "steady_img_s": (timeline.done - timeline.first_files) / (timeline.last - timeline.first)
            if timeline.last > timeline.first
            else float("nan"),
            "startup_s": timeline.first - timeline.started,
            "wall_s": wall,
            "nodes": len(report.nodes),
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)


def commit_rate(rows: int, dim: int = 512) -> float:
    """Rows per second the driver commits from a pipeline that costs nothing (synthetic vectors)."""
    from imgsearch.index.embedding import Embedded
    from imgsearch.index.indexer import Indexer, _Job
    from imgsearch.index.scan import FileStat
    from imgsearch.store.catalog import DB_FILE, Catalog

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    class Free:
        def __init__(self) -> None:
            self.work_by_node: dict[str, int] = {}
            self.commit_every = 64
            self.engine = "free: precomputed vectors"

        def prepare(self, count: int) -> int:
            return dim

        def embed(self, jobs: Any) -> Any:
            for i, job in enumerate(jobs):
                yield (
                    job,
                    Embedded(vectors[i], "fp32", 1024, 768, "JPEG", None, 1000 + i, i, job.content_hash),
                )

        def close(self) -> None:
            pass

    home = Path(tempfile.mkdtemp(prefix="ray-bench-commit-"))
    try:
        catalog = Catalog.open(home / DB_FILE, create=True)
        jobs = [
            _Job(i.to_bytes(16, "big"), ((FileStat(f"/photos/{i:08d}.jpg".encode(), 1000 + i, i), None),))
            for i in range(rows)
        ]
        indexer = Indexer(catalog, None, Free(), "bench-model")
        started = time.perf_counter()
        indexer._encode(jobs)
        seconds = time.perf_counter() - started
        catalog.close()
        return rows / seconds
    finally:
        shutil.rmtree(home, ignore_errors=True)


class StorePeak:
    """The most object-store bytes in use on all nodes together, sampled while the `with` block runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> StorePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        state = get_state_from_address(ray.get_runtime_context().gcs_address)
        while not self._stop.wait(0.05):
            reply = get_memory_info_reply(state)
            self.peak = max(self.peak, int(reply.store_stats.object_store_bytes_used))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big-count", type=int, default=24)
    parser.add_argument("--big-size", default="4000x3000")
    parser.add_argument("--commit-rows", type=int, default=20000)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        model = make_model(args.model, work / "model")
        width, height = map(int, args.size.split("x"))
        make_photos(work / "photos", args.count, width, height)
        big_w, big_h = map(int, args.big_size.split("x"))
        make_photos(work / "big", args.big_count, big_w, big_h)

        started = time.perf_counter()
        ray.init(
            address="local", num_cpus=(os.cpu_count() or 1) + 1, include_dashboard=False, log_to_driver=False
        )
        init_s = time.perf_counter() - started

        runs: list[tuple[dict[str, float], dict[str, float]]] = []
        index_once(work / "photos", model, args.precision, "auto")  # warm: the actor image, the page cache
        for _ in range(args.runs):
            local = index_once(work / "photos", model, args.precision, None)
            clustered = index_once(work / "photos", model, args.precision, "auto")
            runs.append((local, clustered))
        ratios = [c["img_s"] / loc["img_s"] for loc, c in runs]
        steady = [c["steady_img_s"] / loc["steady_img_s"] for loc, c in runs]

        with StorePeak() as store:
            big = index_once(work / "big", model, args.precision, "auto")
        rate = commit_rate(args.commit_rows)
        result = {
            "machine": machine(),
            "model": args.model,
            "images": args.count,
            "size": args.size,
            "runs": args.runs,
            "local_img_s": [r[0]["img_s"] for r in runs],
            "ray_img_s": [r[1]["img_s"] for r in runs],
            "local_wall_s": [r[0]["wall_s"] for r in runs],
            "ray_wall_s": [r[1]["wall_s"] for r in runs],
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "local_steady_img_s": [r[0]["steady_img_s"] for r in runs],
            "ray_steady_img_s": [r[1]["steady_img_s"] for r in runs],
            "steady_ratio_median": statistics.median(steady),
            "local_startup_s": [r[0]["startup_s"] for r in runs],
            "ray_startup_s": [r[1]["startup_s"] for r in runs],
            "ray_init_s": init_s,
            "commit_rows_s": rate,
            "big_images": args.big_count,
            "big_size": args.big_size,
            "big_img_s": big["img_s"],
            "store_peak_mb": store.peak / 2**20,
        }
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:16} {value}")


if __name__ == "__main__":
    main()
