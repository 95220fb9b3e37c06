"""Filtered search: FAISS with an id selector (what imgsearch does) against the two alternatives.

    python bench/filter_search.py [--count 100000] [--dim 512]

For each fraction of rows a filter keeps, one query, k=10, one thread:
  selector     FAISS IndexIDMap2(IndexFlatIP) searching only the allowed ids (IDSelectorBatch): exact;
  subset       gather the allowed rows from a numpy copy and brute-force them: exact, but needs the copy;
  search wider search the whole index for k / fraction results and filter after: recall below 1 is
               results lost (what "filters must not make results short" forbids).
Vectors are clustered (200 Gaussian clusters on the unit sphere), like real embeddings.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np


def clustered(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, count)] + 0.35 * rng.normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def timed(fn, repeat: int = 20) -> tuple[float, object]:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - start) / repeat * 1000, out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    vectors = clustered(args.count, args.dim, rng)
    ids = np.arange(args.count, dtype=np.int64)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(args.dim))
    index.add_with_ids(vectors, ids)
    query = clustered(1, args.dim, rng)
    k = 10
    print(f"{args.count:,} vectors, {args.dim}-d, k={k}, 1 thread")
    print("kept     selector ms   subset ms   wider ms  wider recall")
    for fraction in (1.0, 0.5, 0.1, 0.01, 0.001):
        allowed = np.sort(rng.choice(ids, max(k, int(args.count * fraction)), replace=False))
        params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        sel_ms, (_, sel_ids) = timed(lambda params=params: index.search(query, k, params=params))
        sub_ms, sub_top = timed(
            lambda allowed=allowed: allowed[np.argsort(-(vectors[allowed] @ query[0]))[:k]]
        )
        wide_k = min(args.count, int(k / fraction))
        allowed_set = set(allowed.tolist())
        wide_ms, (_, wide_ids) = timed(lambda wide_k=wide_k: index.search(query, wide_k))
        wide_top = [i for i in wide_ids[0] if i in allowed_set][:k]
        assert list(sel_ids[0]) == list(sub_top), "the selector must be exact"
        recall = len(set(wide_top) & set(sub_top)) / k
        print(f"{fraction:>6.1%}   {sel_ms:10.2f}  {sub_ms:10.2f}  {wide_ms:9.2f}  {recall:12.2f}")


if __name__ == "__main__":
    main()
