"""The reading side of a Library: queries, status, zero-shot labels and duplicates, each over a fresh
snapshot of the catalog and the FAISS index derived from it. A reader never takes the writer's lock."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DecodeError, IndexNotFound, UsageError
from ..formats import decoders
from ..home import cache_home
from ..index.scan import absolute
from ..model.cache import exports_bytes
from ..model.runtime import ModelRuntime
from ..model.specs import ModelSpec, model_for, parse_model_spec
from ..store.catalog import DB_FILE, Catalog
from ..store.vectors import VectorIndex, describe_file, vectors_file
from .classify import Classification, ZeroShot, check_arguments, with_wanted
from .duplicates import DEFAULT_THRESHOLD, DuplicateGroup, check_threshold, find_duplicates
from .match import Match
from .nearest import allowed_ids, nearest
from .query import Filters, Term, combine

if TYPE_CHECKING:
    from ..model.preprocess import Preprocess
    from ..store.parquet import ExportReport


@dataclass(frozen=True)
class RootStatus:
    path: str
    images: int
    failures: int
    present: bool


@dataclass(frozen=True)
class Status:
    home: str
    database: str
    model: str | None
    dim: int | None
    numerics: str | None  # of the stored image vectors, e.g. 'bf16' or 'fp16+fp32' (see model.numerics)
    images: int
    failures: int
    roots: list[RootStatus]
    vectors_version: int
    vectors_file: str | None
    search_index: str | None  # 'exact' or the approximate index's shape (see imgsearch.store.ann)
    disk_bytes: int  # the index folder's files
    exports_bytes: int  # this model's ONNX exports in the per-user cache (imgsearch.model.cache)
    cache: str  # that cache, shared by every index folder of this user
    formats: dict[str, int]  # indexed files per stored format name (JPEG, CR2 ...)
    decoders: dict[str, str]  # what reads the files here, with versions (see imgsearch.formats)

    def to_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["roots"] = [r.__dict__ for r in self.roots]
        return out


class Reader:
    """Answer from the index in `home`; query vectors come from the runtime."""

    def __init__(self, home: Path, runtime: ModelRuntime, requested_model: ModelSpec | None):
        self.home = home
        self.runtime = runtime
        self.requested_model = requested_model
        self._vectors: VectorIndex | None = None  # kept between queries while the index does not change
        self._kept: Catalog | None = None  # see _kept_catalog
        self._kept_identity: tuple[int, int] | None = None

    def query(
        self,
        terms: Sequence[Term],
        top: int = 10,
        filters: Filters | None = None,
        min_score: float | None = None,
        sort: str = "score",
    ) -> list[Match]:
        """The general query: weighted text and image terms (negative weights push away), combined as the
        normalised weighted sum of their unit embeddings, searched exactly among the files that pass
        `filters`. Query images never appear in their own results."""
        _check_top(top)
        if not terms:
            raise UsageError("a query needs a text or an image")
        if sort not in ("score", "date"):
            raise UsageError(f"sort by 'score' or 'date', not {sort!r}")
        with self.reading() as (catalog, vectors, spec):
            texts = [t.value for t in terms if t.kind == "text"]
            text_vectors = iter(self.runtime.embed_texts(spec, texts) if texts else [])
            parts, exclude = [], set()
            for term in terms:
                if term.kind == "text":
                    parts.append(next(text_vectors))
                else:
                    vector, own_id = self._image_vector(catalog, spec, term.value)
                    parts.append(vector)
                    if own_id is not None:
                        exclude.add(own_id)
            query = combine(np.stack(parts), [t.weight for t in terms])
            filters = filters or Filters()
            allowed = allowed_ids(catalog, filters)
            if filters.labels:
                labelled = self._label_ids(
                    catalog, vectors, spec, filters.labels, filters.label_set, filters.under
                )
                allowed = labelled if allowed is None else np.intersect1d(allowed, labelled)
            return nearest(catalog, vectors, query, top, allowed, exclude, min_score, sort)

    def _image_vector(self, catalog: Catalog, spec: ModelSpec, image: str) -> tuple[np.ndarray, int | None]:
        """An image's unit vector (stored, reused from a copy, or encoded now) and its id if it is indexed."""
        from ..index.decode import decode_file, hash_file

        path = absolute(image)
        if not os.path.isfile(path):
            raise UsageError(f"no such image file: {os.fsdecode(path)}")
        stored = catalog.row_by_path(path)
        own_id = stored[0].id if stored else None
        try:
            digest = hash_file(path)[0]
        except OSError as e:
            raise DecodeError(f"cannot read {os.fsdecode(path)}: {e.strerror or e}") from e
        if stored and stored[0].content_hash == digest:
            return np.frombuffer(stored[1], dtype=np.float32), own_id
        reuse = catalog.contents([digest]).get(digest)
        if reuse is not None:
            return np.frombuffer(reuse.vector, dtype=np.float32), own_id

        def decode(prep: Preprocess) -> np.ndarray:
            try:
                return decode_file(path, prep).pixels
            except DecodeError as e:
                raise DecodeError(f"cannot use {os.fsdecode(path)} as a query: {e}") from e

        return self.runtime.embed_image(spec, digest, decode), own_id

    def status(self) -> Status:
        """What is indexed, with which model, and where; never loads the model."""
        catalog = Catalog.open(self.home / DB_FILE)
        try:
            model = catalog.model()
            version = catalog.vectors_version()
            roots = [
                RootStatus(os.fsdecode(root), n, bad, os.path.isdir(root))
                for root, n, bad in catalog.counts_by_root()
            ]
            vfile = vectors_file(self.home, version)
            disk = sum(p.stat().st_size for p in self.home.iterdir() if p.is_file())
            return Status(
                home=str(self.home),
                database=str(self.home / DB_FILE),
                model=model[0] if model else None,
                dim=model[1] if model else None,
                numerics=catalog.numerics(),
                images=catalog.count(),
                failures=catalog.failure_count(),
                roots=roots,
                vectors_version=version,
                vectors_file=str(vfile) if vfile.exists() else None,
                search_index=describe_file(vfile) if vfile.exists() else None,
                disk_bytes=disk,
                exports_bytes=exports_bytes(parse_model_spec(model[0])) if model else 0,
                cache=str(cache_home()),
                formats=catalog.counts_by_format(),
                decoders=decoders(),
            )
        finally:
            catalog.close()

    def failures(self, limit: int | None = None) -> list[tuple[str, str]]:
        """(path, reason) of files that could not be indexed."""
        catalog = Catalog.open(self.home / DB_FILE)
        try:
            return [(os.fsdecode(p), reason) for p, reason in catalog.failure_list(limit)]
        finally:
            catalog.close()

    def export(self, out: str | os.PathLike[str]) -> ExportReport:
        """Write every vector with its metadata as a Parquet dataset in the folder `out` (see
        imgsearch.store.parquet). Reading needs no write lock: an index run may go on meanwhile."""
        from .. import __version__
        from ..store.parquet import write_export

        catalog = Catalog.open(self.home / DB_FILE)
        try:
            return write_export(catalog, Path(out).expanduser().absolute(), __version__)
        finally:
            catalog.close()

    # -- zero-shot labels -----------------------------------------------------------------------------------
    def classify(
        self,
        labels: Sequence[str],
        under: str | os.PathLike[str] | None = None,
        temperature: float | None = None,
        min_prob: float = 0.0,
    ) -> list[Classification]:
        """Each image's most probable label among `labels` (CLIP zero-shot, see imgsearch.search.classify),
        in path order. Only the label texts are encoded; images use their stored vectors. Images whose best
        label has less than `min_prob` are left out; `temperature` replaces the model's logit scale by 1/T."""
        check_arguments(labels, temperature, min_prob)
        with self.reading() as (catalog, vectors, spec):
            embed = partial(self.runtime.embed_texts, spec)
            scale = self.runtime.logit_scale(spec)
            zero_shot = ZeroShot.prepare(labels, embed, scale, temperature)
            batches = catalog.vector_batches(vectors.dim, _folder_bytes(under))
            return list(zero_shot.classify(batches, min_prob))

    def ids_with_label(
        self,
        wanted: str | Sequence[str],
        labels: Sequence[str],
        under: str | os.PathLike[str] | None = None,
        temperature: float | None = None,
        min_prob: float = 0.0,
    ) -> np.ndarray:
        """Sorted ids of the images whose best zero-shot label is one of `wanted`, compared against `labels`
        plus the wanted ones (one label alone would always win): the allowed set of a query filtered by
        label, in the form FAISS takes. The temperature matters only with `min_prob` (it never changes which
        label is most probable)."""
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        with self.reading() as (catalog, vectors, spec):
            return self._label_ids(catalog, vectors, spec, wanted, labels, under, temperature, min_prob)

    def _label_ids(
        self,
        catalog: Catalog,
        vectors: VectorIndex,
        spec: ModelSpec,
        wanted: Sequence[str],
        labels: Sequence[str],
        under: str | os.PathLike[str] | None,
        temperature: float | None = None,
        min_prob: float = 0.0,
    ) -> np.ndarray:
        label_set = with_wanted(wanted, labels)
        if len(label_set) < 2:
            raise UsageError("a label filter needs other labels to compare with, e.g. --labels dog car")
        check_arguments(label_set, temperature, min_prob)
        embed = partial(self.runtime.embed_texts, spec)
        scale = self.runtime.logit_scale(spec)
        zero_shot = ZeroShot.prepare(label_set, embed, scale, temperature)
        batches = catalog.vector_batches(vectors.dim, _folder_bytes(under))
        return zero_shot.ids_with(batches, wanted, min_prob)

    # -- duplicates -----------------------------------------------------------------------------------------
    def duplicates(
        self,
        under: str | os.PathLike[str] | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        exact_only: bool = False,
    ) -> list[DuplicateGroup]:
        """Groups of byte-identical copies ("exact") and of images whose cosine is at least `threshold`
        ("near"), largest first (see imgsearch.search.duplicates). Stored vectors and content hashes only: the
        model is never loaded."""
        check_threshold(threshold)  # before opening the index: a bad argument is the first thing to hear
        with self.reading() as (catalog, vectors, _spec):
            return find_duplicates(catalog, vectors, threshold, _folder_bytes(under), exact_only)

    def _kept_catalog(self) -> Catalog:
        """The catalog a warm Library keeps open between queries (opening one costs a few milliseconds),
        as long as the database is the same file; every read is still a fresh snapshot."""
        try:
            st = os.stat(self.home / DB_FILE)
            identity = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            identity = None
        if self._kept is None or self._kept_identity != identity:
            if self._kept is not None:
                self._kept.close()
                self._kept = None
            self._kept = Catalog.open(self.home / DB_FILE)
            self._kept_identity = identity
        return self._kept

    def reading(self) -> _Reading:
        return _Reading(self)


class _Reading:
    """Open the catalog and its vectors for one query; close them after."""

    def __init__(self, reader: Reader):
        self.reader = reader
        self.catalog: Catalog | None = None

    def __enter__(self) -> tuple[Catalog, VectorIndex, ModelSpec]:
        lib = self.reader
        self.catalog = lib._kept_catalog() if lib.runtime.warm else Catalog.open(lib.home / DB_FILE)
        spec, dim = model_for(self.catalog.model(), lib.requested_model, lib.home)
        if dim is None:
            raise IndexNotFound(f"the index at {lib.home} has no images yet: run `imgsearch index FOLDER`")
        vectors = lib._vectors
        if vectors is None or vectors.dim != dim or vectors.version != self.catalog.vectors_version():
            vectors = lib._vectors = VectorIndex.load_or_rebuild(self.catalog, lib.home, dim, mmap=True)
        return self.catalog, vectors, spec

    def __exit__(self, *exc: object) -> None:
        if self.catalog is not None and self.catalog is not self.reader._kept:
            self.catalog.close()


def _folder_bytes(under: str | os.PathLike[str] | None) -> bytes | None:
    return absolute(under) if under is not None else None


def _check_top(top: int) -> None:
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
