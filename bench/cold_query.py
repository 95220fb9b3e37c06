"""Cold queries: the wall time of `imgsearch query` as a new process, at several library sizes.

    python bench/cold_query.py [--model ViT-B-32] [--sizes 10000,100000] [--runs 5] [--json]

For each size, builds an index of that many images with clustered vectors through the catalog API (the
architecture with random weights in a local-dir folder; one row is a real JPEG so that an indexed image can
be the query). The ONNX exports are then made as after a real index run: by the background exporter
(imgsearch.model.exporter) that such a run starts, waited for, into a cache of this run's own
($IMGSEARCH_CACHE under the work folder, so that no export of an earlier run is found), with the switches
IMGSEARCH_TEXT_EXPORT and IMGSEARCH_IMAGE_EXPORT as the environment has them. Each kind of query runs once
to warm the page cache (reported apart as first_s; should it start an exporter for something still missing,
that is waited for too), then RUNS new processes of it are timed for the median wall time and peak RSS:
  text       imgsearch query "a red apple on a table"
  image      imgsearch query --image INDEXED.jpg     (stored vector: no model)
  new image  imgsearch query --image OTHER.jpg       (an image that is not indexed: the image tower runs,
                                                    from the image export where there is one)
and `imgsearch --help`. The index's disk per image counts the index folder alone; the exports, one per
model in the cache and shared by every index of it, are reported apart (export_bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import imgsearch_command, make_model, make_photos, run_timed, running_server, synthetic_library

QUERIES = {
    "text": ["query", "a red apple on a table"],
    "image": ["query", "--image", "{indexed}"],
    "new image": ["query", "--image", "{other}"],
}


# The steps of `imgsearch query TEXT` in a new process, timed one by one (the CLI runs these same calls).
BREAKDOWN = """
import json, sys, time
t = [time.perf_counter()]
from imgsearch.cli import main
from imgsearch.library import Library
from imgsearch.search.query import Term, combine
from imgsearch.search.nearest import _match
t.append(time.perf_counter())
library = Library()
with library.reader.reading() as (catalog, vectors, spec):
    t.append(time.perf_counter())
    words = library.runtime._text_encoder(spec)
    t.append(time.perf_counter())
    query = combine(words.embed_texts([sys.argv[1]]), [1.0])
    t.append(time.perf_counter())
    scores, ids = vectors.search(query, 10)
    t.append(time.perf_counter())
    rows = catalog.rows(int(i) for i in ids)
    matches = [_match(rows[int(i)], float(s)) for s, i in zip(scores, ids)]
    t.append(time.perf_counter())
from imgsearch.cli.output import print_matches
print_matches(matches, False, False, False)
t.append(time.perf_counter())
names = ["imports", "open index", "load text encoder", "encode text", "search", "metadata join", "print"]
out = {n: b - a for n, a, b in zip(names, t, t[1:])}
out["torch imported"] = "torch" in sys.modules
out["psycopg imported"] = "psycopg" in sys.modules
print(json.dumps(out), file=sys.stderr)
"""


def breakdown(env: dict[str, str], runs: int) -> dict[str, float]:
    """Median seconds of each step of a cold text query, each run a new process."""
    import subprocess

    measured = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", BREAKDOWN, "a red apple on a table"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        measured.append(json.loads(done.stderr.strip().splitlines()[-1]))
    steps = [step for step, value in measured[0].items() if not isinstance(value, bool)]  # not the flags
    return {step: statistics.median(m[step] for m in measured) for step in steps}


def with_server(env: dict[str, str], runs: int, images: dict[str, Path]) -> dict[str, dict[str, float]]:
    """The queries again while `imgsearch serve` runs for the index: the CLI hands them to it."""
    with running_server(env):
        return {
            kind: timed_runs([*imgsearch_command(), *(a.format(**images) for a in QUERIES[kind])], env, runs)
            for kind in ("text", "new image")
        }


def exporters_done() -> None:
    """Wait for the background exporters of this run's cache (none started: at once)."""
    from imgsearch.model.exporter import wait_all

    wait_all(timeout=3600)


def timed_runs(command: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    """Median wall time and peak RSS of RUNS new processes, after a first one that warms the page cache
    (its time is first_s; a query that had to load torch starts the exporter, which is waited for)."""
    first = run_timed(command, env)[0]
    exporters_done()
    measured = [run_timed(command, env) for _ in range(runs)]
    return {
        "first_s": first,
        "wall_s": statistics.median(m[0] for m in measured),
        "peak_rss_mb": max(m[1] for m in measured),
    }


def measure(model: str, sizes: list[int], runs: int, work: Path) -> dict[str, object]:
    from imgsearch import Library
    from imgsearch.model import exporter
    from imgsearch.model.cache import exports_bytes
    from imgsearch.model.specs import parse_model_spec

    os.environ["IMGSEARCH_CACHE"] = str(work / "cache")  # before base_env: the queries' cache too
    spec = make_model(model, work / "model")
    model_spec = parse_model_spec(spec)
    model_id = model_spec.id
    config = json.loads((Path(spec.removeprefix("local-dir:")) / "open_clip_config.json").read_text())
    dim = config["model_cfg"]["embed_dim"]
    make_photos(work / "real", 2, 1024, 768)
    indexed, other = sorted((work / "real").iterdir())
    results: dict[str, object] = {"model": model, "sizes": {}}
    base_env = {k: v for k, v in os.environ.items() if k not in ("IMGSEARCH_MODEL",)}
    results["help"] = timed_runs([*imgsearch_command(), "--help"], base_env, runs)
    for size in sizes:
        home = work / f"home-{size}"
        synthetic_library(home, model_id, dim, work / "photos", size, real_files=[indexed])
        Library(home).index()  # nothing new to encode: no torch, and so no exporter
        exporter.request(model_spec)  # as a real index run asks, once the first size is built
        exporter.wait(model_spec, timeout=3600)
        env = {**base_env, "IMGSEARCH_HOME": str(home)}
        by_kind = {}
        for kind, args in QUERIES.items():
            command = [*imgsearch_command(), *(a.format(indexed=indexed, other=other) for a in args)]
            by_kind[kind] = timed_runs(command, env, runs)
        by_kind["breakdown"] = breakdown(env, runs)
        by_kind["server running"] = with_server(env, runs, {"indexed": indexed, "other": other})
        by_kind["disk_bytes_per_image"] = sum(f.stat().st_size for f in home.rglob("*") if f.is_file()) / size
        results["sizes"][str(size)] = by_kind  # type: ignore[index]
    exporters_done()  # before the work folder goes
    results["export_bytes"] = exports_bytes(model_spec)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args.model, sizes, args.runs, Path(tmp))
    if args.json:
        print(json.dumps(r))
        return
    print(f"imgsearch --help: {r['help']['wall_s']:.2f} s")
    for size, kinds in r["sizes"].items():
        for kind in QUERIES:
            m = kinds[kind]
            print(f"{int(size):>9,}  {kind:<10} {m['wall_s']:6.2f} s  peak RSS {m['peak_rss_mb']:5d} MB")
        print(f"{int(size):>9,}  disk {kinds['disk_bytes_per_image']:.0f} bytes per image")
    print(f"the model's exports in the cache: {r['export_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
