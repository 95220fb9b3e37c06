"""Warm query latency through the HTTP API: a real `imgsearch serve` process, a real client over loopback.

    python bench/serve_latency.py [--model ViT-B-32] [--sizes 10000,100000] [--queries 200] [--json]

For each size, builds an index of that many images with clustered vectors through the catalog API (the
architecture with random weights in a local-dir folder), starts `imgsearch serve --port 0` on it, sends 20
warm-up queries, then QUERIES different text queries one after another on one keep-alive connection
(GET /api/search?q=...&top=10: text encoding, FAISS search, catalog join, JSON) and reports p50/p95/max of
the client-side wall time. For comparison, the same queries straight through Library.query in this process
(no HTTP, one torch thread like the server) show what the server adds, and their CPU time per query shows
the cost apart from waiting for a busy machine's cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, make_model, running_server, synthetic_library

WORDS = ["apple", "beach", "car", "dog", "forest", "mountain", "lake", "city", "night", "snow", "cat", "boat"]
TARGET_P50_MS = 30.0


def texts(count: int) -> list[str]:
    """Different queries, so nothing can be answered from a cache."""
    return [f"a photo of a {WORDS[i % len(WORDS)]} {i} {WORDS[(i * 7) % len(WORDS)]}" for i in range(count)]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def through_http(url: str, queries: list[str]) -> dict[str, float]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    for text in texts(20):  # warm-up: first requests pay for lazy imports and caches
        _get(conn, text)
    samples = []
    for text in queries:
        started = time.perf_counter()
        _get(conn, text)
        samples.append((time.perf_counter() - started) * 1000)
    conn.close()
    return percentiles(samples)


def _get(conn: http.client.HTTPConnection, text: str) -> None:
    conn.request("GET", f"/api/search?top=10&q={quote(text)}")
    response = conn.getresponse()
    body = response.read()
    if response.status != 200 or len(json.loads(body)["results"]) != 10:
        raise RuntimeError(f"bad answer {response.status}: {body[:300]!r}")


def in_process(home: Path, queries: list[str]) -> dict[str, float]:
    import torch

    from imgsearch.library import Library

    torch.set_num_threads(1)  # as the server runs
    library = Library(home)
    library.warm_up()  # as the server starts: the model loaded, the text export opened for many queries
    for text in texts(20):
        library.search(text)
    samples, cpu = [], []
    for text in queries:
        started, used = time.perf_counter(), time.process_time()
        library.search(text)
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - used) * 1000)
    return {**percentiles(samples), "cpu_p50_ms": round(statistics.median(cpu), 2)}


def server_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "IMGSEARCH_HOME": str(home)}
    env.pop("IMGSEARCH_MODEL", None)
    env.pop("IMGSEARCH_TOKEN", None)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="Print the results as one JSON object.")
    args = parser.parse_args()
    from imgsearch.library import Library
    from imgsearch.model.exporter import export_and_measure
    from imgsearch.model.specs import parse_model_spec

    queries = texts(args.queries + 20)[20:]
    results: dict[str, object] = {"model": args.model, "machine": machine(), "queries": args.queries}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["IMGSEARCH_CACHE"] = str(work / "cache")  # exports of this run's own, server included
        spec = make_model(args.model, work / "model")
        config = json.loads((Path(spec.removeprefix("local-dir:")) / "open_clip_config.json").read_text())
        dim = config["model_cfg"]["embed_dim"]
        for size in (int(s) for s in args.sizes.split(",")):
            home = work / f"home-{size}"
            synthetic_library(home, parse_model_spec(spec).id, dim, work / "photos", size)
            Library(home).index()
            export_and_measure(parse_model_spec(spec))  # as after a real run: the exports, made beforehand
            with running_server(server_env(home)) as url:
                http_ms = through_http(url, queries)
            direct_ms = in_process(home, queries)
            results[str(size)] = {"http": http_ms, "in_process": direct_ms}
            if not args.json:
                met = "met" if http_ms["p50_ms"] <= TARGET_P50_MS else "NOT met"
                print(
                    f"{size:>7,} vectors  HTTP p50 {http_ms['p50_ms']:6.1f} ms  p95 {http_ms['p95_ms']:6.1f}"
                    f" ms  max {http_ms['max_ms']:6.1f} ms  |  in-process p50 {direct_ms['p50_ms']:6.1f} ms"
                    f"  p95 {direct_ms['p95_ms']:6.1f} ms  CPU p50 {direct_ms['cpu_p50_ms']:6.1f} ms"
                    f"  |  target p50 <= {TARGET_P50_MS:.0f} ms: {met}",
                    flush=True,
                )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"model {args.model} (random weights); {results['machine']}")


if __name__ == "__main__":
    main()
