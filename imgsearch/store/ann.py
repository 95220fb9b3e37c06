"""Approximate search for large libraries: when and how the exact index becomes an IVF-Flat index.

Exact search reads every vector: one 512-d query costs about 70 ns per image on one core of the quiet
2-core machine (issue 6), so it crosses 10 ms near 140,000 images and takes ~70 ms at a million (three
times that when the machine is shared: bench/search_scale.py, BENCHMARKS.md "Search at scale").
From `THRESHOLD` images on, the writer replaces the exact index by an IVF-Flat one: k-means (trained on a
sample) splits the vectors into `nlist` lists and a query scans only the `NPROBE` lists whose centroids
are nearest to it, about 1-2% of the vectors. Why IVF-Flat rather than HNSW or a second index beside the
exact one:

- IVF-Flat stores the full float32 vectors, so scanning every list (nprobe = nlist) is exact again. Narrow
  filters, `duplicates` and any caller that needs exact answers use the same file: one copy of the
  vectors on disk and in memory (a flat index beside it would double 2 GB at a million images).
- New images go into the list of their nearest centroid and removed ones are removed, without training
  again; training runs again only when the library has grown about 4x since (the lists get long).
  HNSW adds incrementally but cannot remove, cannot be exact, and took ~7 min to build at 1M on 2 cores.
- Its lists can be memory-mapped (faiss IO_FLAG_MMAP): a cold query opens the file in about a millisecond
  and reads only the lists it probes, instead of reading 2 GB first.

Training happens in the writer (`index`, `watch`) after its changes are committed, never in a query:
readers only ever load the file saved for the catalog's current `vectors_version` (or rebuild an exact
index in memory when there is none, as before), so a result is never stale.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import faiss
import numpy as np

#: From this many images on, the writer trains an IVF index; below half of it, it goes back to exact.
THRESHOLD = 100_000
#: Lists scanned by an unfiltered query. At a million clustered vectors (2,000 lists) recall@10 was 1.000
#: for image-like and 0.995 for text-like queries at ~6-10 ms on the loaded machine; 16 gave 0.989.
NPROBE = 32
#: A filter that keeps at least this share of the images searches approximately (scanning NPROBE / share
#: lists so about as many allowed vectors are compared as without a filter); a narrower one is exact.
BROAD = 0.25
_SAMPLE_PER_LIST = 64  # k-means training points per list: enough for stable centroids, and fast
_NITER = 10
_CHUNK = 65_536


def nlist_for(count: int) -> int:
    """Lists for a library of `count` images: 2*sqrt(count) (2,000 lists of ~500 vectors at a million),
    with at least 39 images per list (fewer and faiss's k-means gives poor centroids). Twice the lists
    means four times the images: when to train again."""
    return max(1, min(int(2 * math.sqrt(count)), count // 39))


def plan(index: faiss.Index, count: int, threshold: int | None = None) -> str | None:
    """What the writer should do with an index holding `count` images: 'ivf' (train one: the library
    crossed the threshold, or grew ~4x since the last training), 'exact' (it shrank well below), or None."""
    threshold = THRESHOLD if threshold is None else threshold
    if isinstance(index, faiss.IndexIVF):
        if count < threshold // 2:
            return "exact"
        return "ivf" if nlist_for(count) >= 2 * index.nlist else None
    return "ivf" if count >= threshold else None


def is_ivf(index: faiss.Index) -> bool:
    return isinstance(index, faiss.IndexIVF)


def describe(index: faiss.Index) -> str:
    if isinstance(index, faiss.IndexIVF):
        return f"approximate (IVF-Flat, {index.nlist:,} lists, {min(NPROBE, index.nlist)} probed per query)"
    return "exact"


def train_ivf(source: faiss.Index, seed: int = 0) -> faiss.IndexIVFFlat:
    """A new IVF-Flat index holding every (id, vector) of `source` (exact or IVF), trained on a sample."""
    count = int(source.ntotal)
    nlist = nlist_for(count)
    quantizer = faiss.IndexFlatIP(source.d)
    index = faiss.IndexIVFFlat(quantizer, source.d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = _NITER
    index.cp.spherical = True  # unit-length centroids: inner products with them rank like cosines
    index.cp.seed = seed
    share = min(1.0, nlist * _SAMPLE_PER_LIST / max(count, 1))
    rng = np.random.default_rng(seed)
    sample = [v[rng.random(len(v)) < share] for _, v in contents(source)]
    index.train(np.ascontiguousarray(np.concatenate(sample)))
    del sample
    for ids, vectors in contents(source):
        index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(ids))
    index.nprobe = min(NPROBE, nlist)
    return index


def flat_from(source: faiss.Index) -> faiss.IndexIDMap2:
    """An exact index holding every (id, vector) of `source`."""
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(source.d))
    for ids, vectors in contents(source):
        index.add_with_ids(np.ascontiguousarray(vectors), np.ascontiguousarray(ids))
    return index


def contents(index: faiss.Index) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) chunks of an exact or IVF-Flat index, as views into its memory (valid until the
    index changes)."""
    d = index.d
    if isinstance(index, faiss.IndexIVF):
        lists = index.invlists
        assert lists is not None
        for number in range(index.nlist):
            size = lists.list_size(number)
            if size:
                codes = faiss.rev_swig_ptr(lists.get_codes(number), size * d * 4)
                ids = faiss.rev_swig_ptr(lists.get_ids(number), size)
                yield np.asarray(ids), np.asarray(codes).view(np.float32).reshape(size, d)
        return
    count = int(index.ntotal)
    if not count:
        return
    assert isinstance(index, faiss.IndexIDMap2)  # the only other kind this package makes
    flat = faiss.downcast_index(index.index)
    ids = faiss.vector_to_array(index.id_map)
    vectors = faiss.rev_swig_ptr(flat.get_xb(), count * d).reshape(count, d)  # type: ignore[attr-defined]
    for start in range(0, count, _CHUNK):
        yield ids[start : start + _CHUNK], vectors[start : start + _CHUNK]


def search_params(
    index: faiss.Index, allowed: np.ndarray | None, exact: bool = False
) -> faiss.SearchParameters:
    """How to search `index` (among `allowed` ids only, unless None). An exact index is exact anyway; an
    IVF index scans NPROBE lists unfiltered, NPROBE / share lists for a filter that keeps a share of at
    least BROAD, and every list (exact) for a narrower filter or when `exact` is asked for."""
    selector = id_selector(allowed) if allowed is not None else None
    if not isinstance(index, faiss.IndexIVF):
        return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]
    nprobe = index.nlist if exact else min(NPROBE, index.nlist)
    if allowed is not None and not exact:
        share = len(allowed) / max(int(index.ntotal), 1)
        nprobe = math.ceil(nprobe / share) if share >= BROAD else index.nlist
    return faiss.SearchParametersIVF(nprobe=min(nprobe, index.nlist), sel=selector)  # type: ignore[call-arg]


def id_selector(allowed: np.ndarray) -> faiss.IDSelector:
    """A bitmap of the allowed ids (catalog ids are dense row ids): built in ~10 ms for 500,000 ids where
    an IDSelectorBatch (a hash set) took ~270 ms, which made broad filters slower than no filter."""
    ids = allowed.astype(np.int64)
    size = int(ids.max()) + 1 if len(ids) else 1
    bits = np.zeros(size, dtype=bool)
    bits[ids[ids >= 0]] = True
    packed = np.packbits(bits, bitorder="little")  # faiss reads bit (id & 7) of byte (id >> 3)
    selector = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))  # its size is in bytes
    selector.referenced_bitmap = packed  # type: ignore[attr-defined]  # faiss keeps only a pointer
    return selector
