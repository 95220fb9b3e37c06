"""Bring vectors made elsewhere (an earlier export, clip-retrieval, a Spark job) into the index without
re-encoding: each dataset row is matched to files on disk, by content hash when it has one (wherever the
file is now), else by path, and written through the catalog as the indexer writes.

No model is loaded. Files the dataset has no vector for are left for `imgsearch index`; files already
indexed and unchanged are left alone; nothing is removed.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DecodeError, ModelMismatch, UsageError
from ..model.specs import CONFIG_FILE, ModelSpec, parse_model_spec
from ..store.catalog import Catalog, CatalogWriter, Content
from ..store.parquet import Dataset, EmbeddingBatch
from ..store.vectors import VectorIndex
from .decode import MAX_PIXELS, open_upright_rgb, try_hash
from .events import IndexEvents
from .scan import FileStat, walk

_THREADS = 4  # hashing and header reads wait on the disk; hashlib releases the GIL
#: A vector whose length is this close to 1 is kept bit for bit (an export's own, read back).
_UNIT_TOLERANCE = 1e-6
_REPORTED_ROWS = 20  # bad rows listed one by one; the rest are counted


@dataclass
class ImportReport:
    imported: int = 0  # files that took a vector from the dataset
    unchanged: int = 0  # files already indexed, left as they were
    without_vector: int = 0  # files the dataset has no vector for: `imgsearch index` encodes them
    unmatched_rows: int = 0  # rows whose file is not in the folders (or which repeat another row)
    bad_rows: int = 0  # rows refused: no vector, a wrong size, non-finite values, or all zeros
    bad_row_examples: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), the first few
    failures: list[tuple[bytes, str]] = field(default_factory=list)  # matched files that cannot be read
    missing_roots: list[bytes] = field(default_factory=list)
    unreadable: list[tuple[bytes, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        line = (
            f"{self.imported} imported, {self.unchanged} unchanged, {self.without_vector} without a vector, "
            f"{self.unmatched_rows} rows matched no file"
        )
        extra = [f"{self.bad_rows} bad rows refused"] if self.bad_rows else []
        extra += [f"{len(self.failures)} files unreadable"] if self.failures else []
        return f"{line} ({'; '.join([*extra, f'{self.seconds:.1f} s'])})"


# -- which model made the vectors -------------------------------------------------------------------------
def vectors_model(dataset: Dataset, requested: ModelSpec | None) -> str:
    """The id of the model the dataset's vectors were made with: the one it records (a --model must name
    the same), else --model; checked against the vector size the model makes, where that is known without
    loading it."""
    if dataset.model is not None:
        if requested is not None and requested.id != dataset.model:
            raise ModelMismatch(
                f"{dataset.location} holds vectors of model {dataset.model} ({dataset.dim}-d), not of "
                f"{requested.id} ({_dim_text(requested.id)}): leave out --model to import them, or import "
                "them into an index of their own model with --home DIR"
            )
        model_id = dataset.model
    elif requested is not None:
        model_id = requested.id
    else:
        raise UsageError(
            f"{dataset.location} does not record which model made its {dataset.dim}-d vectors: name it with "
            "--model (e.g. --model ViT-B-32:laion2b_s34b_b79k)"
        )
    made = model_dim(model_id)
    if made is not None and made != dataset.dim:
        raise ModelMismatch(
            f"{dataset.location} holds {dataset.dim}-d vectors, but model {model_id} makes {made}-d ones: "
            "they were made with another model" + ("" if dataset.model else "; name that one with --model")
        )
    return model_id


def check_fits(dataset: Dataset, model_id: str, recorded: tuple[str, int] | None, home: Path) -> None:
    """Refuse vectors of another model, or of another size, than the index already holds."""
    if recorded is None:
        return
    if recorded != (model_id, dataset.dim):
        raise ModelMismatch(
            f"{dataset.location} holds {dataset.dim}-d vectors of model {model_id}, but the index at {home} "
            f"holds {recorded[1]}-d vectors of model {recorded[0]}: one model per index; import into "
            f"another index with --home DIR, or move this one to {model_id} first with "
            f"`imgsearch reindex --model {model_id}` and then import"
        )


def model_dim(model_id: str) -> int | None:
    """The vector size a model makes, from its config alone (a local folder's, or open_clip's built-in
    ones for NAME:TAG), never importing torch; None where it cannot be known so (a hub model not cached)."""
    spec = parse_model_spec(model_id)
    if spec.kind == "local-dir":
        config = Path(spec.name) / CONFIG_FILE
    elif spec.kind == "name":
        import importlib.util

        found = importlib.util.find_spec("open_clip")  # finds the package without importing it
        folders = list(found.submodule_search_locations or []) if found else []
        if not folders:
            return None
        config = Path(folders[0]) / "model_configs" / f"{spec.name}.json"
    else:
        return None
    try:
        data = json.loads(config.read_text())
        cfg = data.get("model_cfg", data)
        return int(cfg["embed_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _dim_text(model_id: str) -> str:
    made = model_dim(model_id)
    return f"{made}-d" if made is not None else "size not known"


# -- matching rows to files and writing them --------------------------------------------------------------
@dataclass(frozen=True)
class _Waiting:
    """A file on disk that is not indexed as it is now, with its current hash."""

    stat: FileStat
    content_hash: bytes
    known_id: int | None


class Importer:
    """One import of `dataset` into `catalog` over the files under some root folders, keeping `vectors`
    (the FAISS index) in step with every committed batch."""

    def __init__(
        self,
        catalog: Catalog,
        vectors: VectorIndex,
        model_id: str,
        dataset: Dataset,
        events: IndexEvents | None = None,
    ):
        self.catalog = catalog
        self.vectors = vectors
        self.model_id = model_id
        self.dataset = dataset
        self.events = events or IndexEvents()
        self.report = ImportReport()
        self.roots: list[bytes] = []
        self.waiting: dict[bytes, _Waiting] = {}  # by path
        self.waiting_by_hash: dict[bytes, list[bytes]] = defaultdict(list)
        # files indexed as they are now: rows for them are neither imported nor "matched no file"
        self.settled_paths: dict[bytes, bytes] = {}  # path -> hash
        self.settled_hashes: set[bytes] = set()

    def run(self, roots: list[bytes]) -> ImportReport:
        started = time.perf_counter()
        try:
            self._plan(roots)
            self.events.phase("importing", self.dataset.rows)
            for batch in self.dataset.batches():
                self._import(batch)
                self.events.advance(len(batch.paths))
            self.report.without_vector = len(self.waiting)
        finally:
            self.report.seconds = time.perf_counter() - started
        return self.report

    def _plan(self, roots: list[bytes]) -> None:
        """Scan and hash what is not indexed as it is; record the roots, the model, the numerics."""
        on_disk: dict[bytes, FileStat] = {}
        for root in roots:
            if not os.path.isdir(root):
                self.report.missing_roots.append(root)
                continue
            self.roots.append(root)
            for fs in walk(root, self._unreadable):
                on_disk[fs.path] = fs
        known = {}
        for root in self.roots:
            known.update(self.catalog.files_under(root))
        to_hash = []
        for path, fs in on_disk.items():
            old = known.get(path)
            if old is not None and (old.size, old.mtime_ns) == (fs.size, fs.mtime_ns):
                self._settle(path, old.content_hash)
            else:
                to_hash.append(fs)
        hashed = self._hash_all(to_hash)
        with self.catalog.write() as w:
            for root in self.roots:
                w.add_root(root)
            if self.catalog.model() is None:
                w.set_model(self.model_id, self.dataset.dim)
            for part in (self.dataset.numerics or "").split("+"):
                if part:
                    w.note_numerics(part)
            for fs, digest in hashed:
                old = known.get(fs.path)
                if old is not None and old.content_hash == digest:
                    w.touch_image(old.id, fs.size, fs.mtime_ns)  # touched, not changed
                    self._settle(fs.path, digest)
                else:
                    self.waiting[fs.path] = _Waiting(fs, digest, old.id if old is not None else None)
                    self.waiting_by_hash[digest].append(fs.path)

    def _settle(self, path: bytes, content_hash: bytes) -> None:
        self.report.unchanged += 1
        self.settled_paths[path] = content_hash
        self.settled_hashes.add(content_hash)

    def _unreadable(self, folder: bytes, error: OSError) -> None:
        self.report.unreadable.append((folder, error.strerror or str(error)))

    def _hash_all(self, files: list[FileStat]) -> list[tuple[FileStat, bytes]]:
        """(stat as hashed, hash) of each file still there; an unreadable file is reported, not fatal."""
        if not files:
            return []
        self.events.phase("hashing", len(files))
        out = []
        with ThreadPoolExecutor(_THREADS) as pool:
            for fs, result in zip(files, pool.map(try_hash, (f.path for f in files)), strict=True):
                self.events.advance()
                if isinstance(result, tuple):
                    digest, size, mtime_ns = result
                    out.append((FileStat(fs.path, size, mtime_ns), digest))
                elif result is not None:
                    self.report.failures.append((fs.path, result))
                    self.events.failed(fs.path, result)
        return out

    def _import(self, batch: EmbeddingBatch) -> None:
        """Match one batch of rows to waiting files and commit what matched in one transaction."""
        vectors, refused = unit_vectors(batch.vectors)
        matched: list[tuple[int, list[_Waiting]]] = []
        for row in range(len(batch.paths)):
            if row in refused:
                self._refuse(batch.paths[row], refused[row])
                continue
            content_hash = batch.hashes[row] if batch.hashes is not None else None
            if content_hash is None:
                content_hash = self._hash_at(batch.paths[row])
            paths = self.waiting_by_hash.pop(content_hash, []) if content_hash is not None else []
            if paths:
                matched.append((row, [self.waiting.pop(p) for p in paths]))
            elif content_hash is None or content_hash not in self.settled_hashes:
                self.report.unmatched_rows += 1
        if not matched:
            return
        with ThreadPoolExecutor(_THREADS) as pool:
            described = list(pool.map(lambda m: _describe(batch, m[0], m[1][0].stat.path), matched))
        with self.catalog.write() as w:
            for (row, files), info in zip(matched, described, strict=True):
                if isinstance(info, str):
                    self.report.failures += [(f.stat.path, info) for f in files]
                    self.events.failed(files[0].stat.path, info)
                    continue
                content = Content(*info, vectors[row].tobytes())
                for f in files:
                    if f.known_id is None:
                        w.add_image(f.stat.path, f.stat.size, f.stat.mtime_ns, f.content_hash, content)
                    else:
                        w.replace_image(f.known_id, f.stat.size, f.stat.mtime_ns, f.content_hash, content)
                    self.report.imported += 1
        self._follow(w)

    def _hash_at(self, path: str | None) -> bytes | None:
        """The hash of the file on disk that a row without a hash names: by its absolute path, or by its
        path relative to one of the roots."""
        if path is None:
            return None
        raw = os.fsencode(path)
        candidates = [raw] if os.path.isabs(raw) else [os.path.join(root, raw) for root in self.roots]
        for candidate in map(os.path.normpath, candidates):
            waiting = self.waiting.get(candidate)
            if waiting is not None:
                return waiting.content_hash
            if candidate in self.settled_paths:
                return self.settled_paths[candidate]
        return None

    def _refuse(self, path: str | None, reason: str) -> None:
        self.report.bad_rows += 1
        if len(self.report.bad_row_examples) < _REPORTED_ROWS:
            self.report.bad_row_examples.append((path or "(no path)", reason))

    def _follow(self, w: CatalogWriter) -> None:
        if w.changes and w.version is not None:
            self.vectors.apply(w.changes, w.version)


def unit_vectors(vectors: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """The rows scaled to unit length (those already unit, within float32 rounding, kept bit for bit),
    and the rows refused, with why: the index's scores are cosines only between unit vectors."""
    finite = np.isfinite(vectors).all(axis=1)
    norms = np.sqrt(np.square(np.where(finite[:, None], vectors, 0), dtype=np.float64).sum(axis=1))
    refused = {
        int(i): "missing, of another size, or not finite (NaN or infinity)" for i in np.flatnonzero(~finite)
    }
    refused |= {int(i): "all zeros" for i in np.flatnonzero(finite & (norms == 0))}
    scale = finite & (norms > 0) & (np.abs(norms - 1) > _UNIT_TOLERANCE)
    out = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    out[scale] = (out[scale] / norms[scale, None]).astype(np.float32)
    return out, refused


def _describe(batch: EmbeddingBatch, row: int, path: bytes) -> tuple[int, int, str, float | None] | str:
    """(width, height, format, taken_at) from the row when it has them all, else from the file's header;
    a one-line reason when the file cannot be read as an image."""
    widths, heights, formats = batch.widths, batch.heights, batch.formats
    if widths is not None and heights is not None and formats is not None and batch.taken_at is not None:
        width, height, fmt = widths[row], heights[row], formats[row]
        if width is not None and height is not None and fmt is not None:
            return width, height, fmt, batch.taken_at[row]
    try:
        return probe(path)
    except DecodeError as e:
        return str(e)
    except OSError as e:
        return f"cannot read file: {e.strerror or e}"


def probe(path: bytes) -> tuple[int, int, str, float | None]:
    """(width, height, format, taken_at) of an image file as indexing records them (upright size), from its
    header alone where the format allows (camera RAW is opened through LibRaw, as indexing opens it)."""
    from PIL import Image, UnidentifiedImageError

    from ..formats import raw_format
    from .exif import orientation, read_exif, taken_at

    if raw_format(path) is not None:
        with open(path, "rb") as f:
            data = f.read()
        _, fmt, width, height, when = open_upright_rgb(data, None, MAX_PIXELS, path)
        return width, height, fmt, when
    try:
        with Image.open(path) as image:  # reads the header; pixels stay on disk
            width, height = image.size
            exif = read_exif(image)
            fmt = image.format or "unknown"
    except UnidentifiedImageError as e:
        raise DecodeError("not an image (unknown format)") from e
    except Image.DecompressionBombError as e:
        raise DecodeError(f"too many pixels: {e}") from e
    except (SyntaxError, ValueError, EOFError) as e:
        raise DecodeError(f"broken file: {' '.join(str(e).split())}") from e
    if width * height > MAX_PIXELS:
        raise DecodeError(f"too many pixels ({width}x{height} > {MAX_PIXELS:,}): refused")
    if orientation(exif) in (5, 6, 7, 8):
        width, height = height, width
    return width, height, fmt, taken_at(exif)
