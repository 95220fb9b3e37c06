"""Search at scale: exact vs IVF-Flat latency, recall@10, build and add time, memory, cold load.

    python bench/search_scale.py [--sizes 10000,100000,1000000] [--queries 200]

For each size, synthetic embeddings go into a fresh index folder through the catalog (CatalogWriter),
then the writer's path runs as in `imgsearch index`: the FAISS index is rebuilt from SQLite, `fit()` trains
an IVF index when the size calls for one (imgsearch.store.ann), and it is saved. Queries then go through the
reader's path (the saved file, memory-mapped), one at a time, one thread, k=10. Recall@10 is against exact
search on the same vectors.

The vectors are clustered like real CLIP image embeddings, never uniform (uniform random vectors are the
worst case for any approximate index and look like no photo library): a shared mean direction (photos have
much in common: random pairs have cosine ~0.3), sqrt(N) topics with power-law sizes (a few subjects
dominate a library), scenes of ~20 shots around each topic centre, and shots spread around their scene
(nearest neighbours at cosine ~0.85-0.9). Two query sets: image-like (held-out shots: `similar`) and
text-like (a held-out shot's direction blurred by noise and shifted by a fixed offset, like CLIP's gap
between text and image embeddings: best matches at cosine ~0.4 instead of ~0.9). Text-like queries are the
harder case for IVF: they lie off the images' clusters.

The query process's peak RSS and load time are measured in a new process that opens the catalog and the
saved index (no model: that is the cold-query benchmark's part) and answers one query. The file was just
written, so it is in the page cache: "cold" means a new process, not a cold disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import _unit, embeddings

from imgsearch.store import ann
from imgsearch.store.catalog import Catalog, Content
from imgsearch.store.vectors import VectorIndex

DIM = 512
K = 10


def text_like(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gap = _unit(rng.normal(size=images.shape[1]))
    blur = _unit(rng.normal(size=images.shape))
    return _unit(_unit(images + 0.7 * blur) + 1.5 * gap)


def _row(number: int, vector: np.ndarray) -> tuple[bytes, int, int, bytes, Content]:
    path = f"/synthetic/{number // 1000:04d}/{number:07d}.jpg".encode()
    content = Content(4000, 3000, "JPEG", 1.7e9 + number, vector.tobytes())
    return path, 3_000_000, 1_700_000_000_000_000_000 + number, number.to_bytes(16, "big"), content


def insert(catalog: Catalog, vectors: np.ndarray, bulk: bool, batch: int = 20_000) -> None:
    """Through CatalogWriter.add_image, as the indexer stores images (one transaction per `batch`); with
    `bulk` (above 10,000 images), the same rows by one executemany in the same CatalogWriter transaction:
    add_image's 1-4 ms per row on this shared machine would make a million rows take most of an hour.
    The 10,000 images added afterwards always go through add_image."""
    from imgsearch.store.catalog import _content_values
    from imgsearch.store.schema import images

    for start in range(0, len(vectors), batch):
        with catalog.write() as w:
            if start == 0:
                w.set_model("synthetic", DIM)
            rows = [_row(i, vectors[i]) for i in range(start, min(start + batch, len(vectors)))]
            if bulk:
                w.conn.execute(images.insert(), [{"path": r[0], **_content_values(*r[1:])} for r in rows])
                w._bump_vectors_version()
            else:
                for row in rows:
                    w.add_image(*row)


def timed_queries(index: VectorIndex, queries: np.ndarray, allowed: np.ndarray | None = None):
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        _, ids = index.search(q, K, allowed)
        times.append(time.perf_counter() - start)
        found.append(ids)
    return np.array(times) * 1000, found


def recall(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)])
    )


def truth_of(index: VectorIndex, queries: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k: batched through the exact index with every thread."""
    params = ann.search_params(index.index, allowed, exact=True)
    return index.index.search(queries, K, params=params)[1]


CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from imgsearch.store.catalog import Catalog
from imgsearch.store.vectors import VectorIndex
from pathlib import Path
home = Path(sys.argv[1]); mmap = sys.argv[2] == "1"
t1 = time.perf_counter()
catalog = Catalog.open(home / "index.db")
index = VectorIndex.load_or_rebuild(catalog, home, 512, save=False, mmap=mmap)
t2 = time.perf_counter()
q = np.frombuffer(bytes.fromhex(sys.argv[3]), dtype=np.float32)
index.search(q, 10)
t3 = time.perf_counter()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent that forked us
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"imports": t1 - t0, "load": t2 - t1, "search": t3 - t2, "kind": index.describe(),
                  "rss_mb": int(status["VmHWM"].split()[0]) / 1024}))
"""


def child(home: Path, query: np.ndarray, mmap: bool) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(home), "1" if mmap else "0", query.tobytes().hex()],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(count: int, queries_n: int, workdir: Path, rng: np.random.Generator) -> dict:
    row: dict = {"count": count}
    home = workdir / f"lib-{count}"
    home.mkdir()
    vectors = embeddings(count + 10_000 + queries_n, rng)
    images, extra, held = vectors[:count], vectors[count : count + 10_000], vectors[count + 10_000 :]
    image_q, text_q = held, text_like(held, rng)
    catalog = Catalog.open(home / "index.db", create=True)
    start = time.perf_counter()
    row["insert_bulk"] = count > 10_000
    insert(catalog, images, bulk=row["insert_bulk"])
    row["insert_s"] = time.perf_counter() - start
    del images, vectors

    # the writer: rebuild from SQLite, measure exact search, then fit (train) and save
    start = time.perf_counter()
    writer = VectorIndex.load_or_rebuild(catalog, home, DIM, save=False)
    row["rebuild_s"] = time.perf_counter() - start
    ids = faiss.vector_to_array(writer.index.id_map)
    broad = np.sort(rng.choice(ids, count // 2, replace=False))
    narrow = np.sort(rng.choice(ids, max(K, count // 100), replace=False))
    truth = {
        "image": truth_of(writer, image_q),
        "text": truth_of(writer, text_q),
        "broad": truth_of(writer, text_q, broad),
        "narrow": truth_of(writer, text_q, narrow),
    }
    sample = min(queries_n, 60 if count >= 500_000 else queries_n)
    ms, _ = timed_queries(writer, text_q[:sample])
    row["exact_p50"], row["exact_p95"] = np.percentile(ms, [50, 95])
    faiss.omp_set_num_threads(2)
    two = []
    for q in text_q[:20]:
        t = time.perf_counter()
        writer.index.search(q[None], K)
        two.append((time.perf_counter() - t) * 1000)
    row["exact_p50_2threads"] = float(np.median(two))
    start = time.perf_counter()
    row["fit"] = writer.fit()
    row["fit_s"] = time.perf_counter() - start
    row["kind"] = writer.describe()
    start = time.perf_counter()
    saved = writer.save(home)
    row["save_s"] = time.perf_counter() - start
    row["faiss_bytes_per_image"] = saved.stat().st_size / count

    # the reader: the saved file, memory-mapped
    reader = VectorIndex.load_or_rebuild(catalog, home, DIM, mmap=True)
    for name, qs in (("image", image_q), ("text", text_q)):
        ms, found = timed_queries(reader, qs)
        row[f"{name}_p50"], row[f"{name}_p95"] = np.percentile(ms, [50, 95])
        row[f"{name}_recall"] = recall(found, truth[name])
    for name, allowed in (("broad", broad), ("narrow", narrow)):
        ms, found = timed_queries(reader, text_q, allowed)
        row[f"{name}_p50"] = float(np.median(ms))
        row[f"{name}_recall"] = recall(found, truth[name])
        row[f"{name}_outside"] = int(sum(np.setdiff1d(f, allowed).size for f in found))
    if reader.approximate:
        sweep = {}
        default = ann.NPROBE
        for nprobe in (4, 8, 16, 32, 64, 128):
            ann.NPROBE = nprobe
            cells = []
            for name, qs in (("image", image_q), ("text", text_q)):
                ms, found = timed_queries(reader, qs)
                cells.append((float(np.median(ms)), recall(found, truth[name])))
            sweep[nprobe] = cells
        ann.NPROBE = default
        row["sweep"] = sweep

    # 10k new images: stored through the catalog, followed by the writer's index as the indexer does
    nlist_before = getattr(writer.index, "nlist", None)
    start = time.perf_counter()
    with catalog.write() as w:
        for i, v in enumerate(extra):
            number = count + i
            w.add_image(*_row(number, v))
    row["add_insert_s"] = time.perf_counter() - start
    assert w.version is not None
    start = time.perf_counter()
    writer.apply(w.changes, w.version)
    row["add_apply_s"] = time.perf_counter() - start
    start = time.perf_counter()
    row["add_fit"] = writer.fit()
    writer.save(home)
    row["add_fit_save_s"] = time.perf_counter() - start
    row["retrained_on_add"] = (
        getattr(writer.index, "nlist", None) != nlist_before or row["add_fit"] is not None
    )
    del writer, reader

    row["db_bytes_per_image"] = sum(p.stat().st_size for p in home.glob("index.db*")) / (count + 10_000)
    row["child_mmap"] = child(home, text_q[0], mmap=True)
    row["child_read"] = child(home, text_q[0], mmap=False)
    catalog.close()
    return row


def exact_curve(sizes: list[int], rng: np.random.Generator) -> list[tuple[int, float]]:
    """Exact one-query latency against library size (one thread), to place the threshold."""
    out = []
    base = embeddings(max(sizes) + 50, rng)
    for n in sizes:
        index = VectorIndex.build(DIM, np.arange(n), base[:n], 1)
        ms, _ = timed_queries(index, base[-50:])
        out.append((n, float(np.median(ms))))
    return out


def report(rows: list[dict], curve: list[tuple[int, float]]) -> str:
    lines = [
        "Exact search, one query, one thread, by library size:",
        "",
        "| images | " + " | ".join(f"{n:,}" for n, _ in curve) + " |",
        "| --- |" + " --- |" * len(curve),
        "| p50 ms | " + " | ".join(f"{ms:.1f}" for _, ms in curve) + " |",
        "",
    ]
    lines += [
        "| images | index | exact p50 / p95 (2 threads p50) | image-like p50 / p95, recall@10 | "
        "text-like p50 / p95, recall@10 | filter 50%: p50, recall | filter 1%: p50, recall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['count']:,} | {r['kind']} | {r['exact_p50']:.1f} / {r['exact_p95']:.1f} ms "
            f"({r['exact_p50_2threads']:.1f}) | {r['image_p50']:.2f} / {r['image_p95']:.2f} ms, "
            f"{r['image_recall']:.3f} | {r['text_p50']:.2f} / {r['text_p95']:.2f} ms, "
            f"{r['text_recall']:.3f} | "
            f"{r['broad_p50']:.2f} ms, {r['broad_recall']:.3f} | {r['narrow_p50']:.2f} ms, "
            f"{r['narrow_recall']:.3f} |"
        )
    lines += [
        "",
        "| images | insert via CatalogWriter | rebuild from SQLite | fit (train + fill) | save | "
        "add 10k: store / index / fit+save | retrained on add | disk bytes/image (db, faiss) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['count']:,} | {r['insert_s']:.1f} s{' (bulk)' if r['insert_bulk'] else ''} | "
            f"{r['rebuild_s']:.1f} s | {r['fit_s']:.1f} s | "
            f"{r['save_s']:.1f} s | {r['add_insert_s']:.1f} / {r['add_apply_s']:.2f} / "
            f"{r['add_fit_save_s']:.1f} s | {'yes' if r['retrained_on_add'] else 'no'} | "
            f"{r['db_bytes_per_image']:,.0f}, {r['faiss_bytes_per_image']:,.0f} |"
        )
    lines += [
        "",
        "| images | query process: load (mmap / read) | search | peak RSS (mmap / read) |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        m, f = r["child_mmap"], r["child_read"]
        lines.append(
            f"| {r['count']:,} | {m['load'] * 1000:.0f} ms / {f['load'] * 1000:.0f} ms | "
            f"{m['search'] * 1000:.1f} ms | {m['rss_mb']:.0f} MB / {f['rss_mb']:.0f} MB |"
        )
    for r in rows:
        if "sweep" in r:
            lines += [
                "",
                f"nprobe sweep at {r['count']:,} ({r['kind']}): p50 ms, recall@10",
                "",
                "| nprobe | image-like | text-like |",
                "| --- | --- | --- |",
            ]
            for nprobe, ((ims, imr), (tms, tr)) in r["sweep"].items():
                lines.append(f"| {nprobe} | {ims:.2f} ms, {imr:.3f} | {tms:.2f} ms, {tr:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--curve", default="50000,100000,150000,200000,300000")
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--threshold", type=int, help=f"train IVF from this size (default {ann.THRESHOLD:,})")
    args = parser.parse_args()
    if args.threshold is not None:
        ann.THRESHOLD = args.threshold
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    curve = exact_curve([int(s) for s in args.curve.split(",")], rng) if args.curve else []
    rows = []
    with tempfile.TemporaryDirectory(prefix="search-scale-") as tmp:
        for count in sizes:
            rows.append(run_size(count, args.queries, Path(tmp), rng))
            print(json.dumps(rows[-1], default=str), file=sys.stderr, flush=True)
            for folder in Path(tmp).iterdir():  # keep the disk use to one library at a time
                shutil.rmtree(folder)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "curve": curve}, default=str, indent=1))
    print(
        f"faiss {faiss.__version__}, threshold {ann.THRESHOLD:,}, nprobe {ann.NPROBE}, {os.cpu_count()} cores"
    )
    print(report(rows, curve))


if __name__ == "__main__":
    main()
