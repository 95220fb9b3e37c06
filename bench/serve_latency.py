"""Warm query latency through the HTTP API: a real `imgsearch serve` process, a real client over loopback.

    python bench/serve_latency.py [--model ViT-B-32] [--sizes 10000,100000] [--queries 200]
                                  [--clients 1,4,16] [--json]

For each size, builds an index of that many images with clustered vectors through the catalog API (the
architecture with random weights in a local-dir folder), starts `imgsearch serve --port 0` on it, sends 20
warm-up queries, then QUERIES different text queries one after another on one keep-alive connection
(GET /api/search?q=...&top=10: text encoding, FAISS search, catalog join, JSON) and reports p50/p95/max of
the client-side wall time. For comparison, the same queries straight through Library.query in this process
(no HTTP, one torch thread like the server) show what the server adds, and their CPU time per query shows
the cost apart from waiting for a busy machine's cores.

Then several people at once (issue 13): for each count in --clients, that many clients, each on its own
keep-alive connection, start together and send about QUERIES / clients different texts each, one after
another; p50/p95/max of every request's wall time, the requests answered per second, and how many failed
(not 200, or not 10 results: any failure makes the script exit 1). Query vectors are made one at a time in
the server; FAISS search, the catalog join and JSON run side by side.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
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
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
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


def concurrent(url: str, clients: int, queries: list[str]) -> dict[str, float]:
    """`clients` clients at once, sharing `queries` out between them (see the module)."""
    parts = urlsplit(url)
    share = [queries[c::clients] for c in range(clients)]
    start = threading.Barrier(clients + 1)
    samples: list[float] = []
    failed: list[str] = []
    lock = threading.Lock()

    def client(texts: list[str]) -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
        mine, errors = [], []
        try:
            conn.connect()
            start.wait()
            for text in texts:
                began = time.perf_counter()
                try:
                    _get(conn, text)
                except (OSError, RuntimeError, http.client.HTTPException, ValueError) as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
                mine.append((time.perf_counter() - began) * 1000)
        finally:
            conn.close()
            with lock:
                samples.extend(mine)
                failed.extend(errors)

    threads = [threading.Thread(target=client, args=(texts,)) for texts in share]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failed:
        print(f"{len(failed)} requests failed with {clients} clients, e.g. {failed[0]}", file=sys.stderr)
    return {
        **percentiles(samples),
        "requests": len(samples),
        "failed": len(failed),
        "per_s": round(len(samples) / wall, 1),
    }


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
    parser.add_argument(
        "--clients", default="1,4,16", help="Clients at once, one measurement each (empty: none)."
    )
    parser.add_argument("--json", action="store_true", help="Print the results as one JSON object.")
    args = parser.parse_args()
    from imgsearch.library import Library
    from imgsearch.model.exporter import export_and_measure
    from imgsearch.model.specs import parse_model_spec

    queries = texts(args.queries + 20)[20:]
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    failures = 0
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
            together: dict[str, dict[str, float]] = {}
            with running_server(server_env(home)) as url:
                http_ms = through_http(url, queries)
                for n, clients in enumerate(levels):
                    first = 10_000 * (n + 1)  # texts no earlier measurement sent: none is cached
                    together[str(clients)] = concurrent(url, clients, texts(first + args.queries)[first:])
                    failures += int(together[str(clients)]["failed"])
            direct_ms = in_process(home, queries)
            results[str(size)] = {"http": http_ms, "in_process": direct_ms, "concurrent": together}
            if not args.json:
                met = "met" if http_ms["p50_ms"] <= TARGET_P50_MS else "NOT met"
                print(
                    f"{size:>7,} vectors  HTTP p50 {http_ms['p50_ms']:6.1f} ms  p95 {http_ms['p95_ms']:6.1f}"
                    f" ms  max {http_ms['max_ms']:6.1f} ms  |  in-process p50 {direct_ms['p50_ms']:6.1f} ms"
                    f"  p95 {direct_ms['p95_ms']:6.1f} ms  CPU p50 {direct_ms['cpu_p50_ms']:6.1f} ms"
                    f"  |  target p50 <= {TARGET_P50_MS:.0f} ms: {met}",
                    flush=True,
                )
                for level, got in together.items():
                    print(
                        f"{size:>7,} vectors  {int(level):>2} clients at once: p50 {got['p50_ms']:6.1f} ms"
                        f"  p95 {got['p95_ms']:6.1f} ms  max {got['max_ms']:6.1f} ms  {got['per_s']:5.1f}"
                        f" requests/s  {int(got['requests'])} requests, {int(got['failed'])} failed",
                        flush=True,
                    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"model {args.model} (random weights); {results['machine']}")
    if failures:
        sys.exit(f"{failures} requests failed")


if __name__ == "__main__":
    main()
