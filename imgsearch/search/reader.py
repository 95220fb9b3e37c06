"""The reading side of a Library: queries, status, zero-shot labels and duplicates, each over a fresh
snapshot of the catalog and the FAISS index derived from it. A reader never takes the writer's lock.

A read takes the model and the vectors in more than one snapshot; a reindex that switches the model between
them (imgsearch.index.reindex) is noticed when the read ends, and the read is done again, so an answer never
mixes two models' vectors.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ..errors import DecodeError, ImgsearchError, IndexNotFound, ModelMismatch, UsageError
from ..formats import decoders
from ..home import cache_home
from ..index.scan import absolute
from ..model.cache import exports_bytes
from ..model.runtime import ModelRuntime
from ..model.specs import ModelSpec, model_for, parse_model_spec
from ..store.catalog import Catalog, Database
from ..store.vectors import VectorIndex, describe_file, vectors_file
from .classify import Classification, ZeroShot, check_arguments, with_wanted
from .duplicates import DEFAULT_THRESHOLD, DuplicateGroup, check_threshold, find_duplicates
from .match import Match
from .mounts import Mounts
from .nearest import allowed_ids, nearest
from .query import Filters, Term, combine

if TYPE_CHECKING:
    from ..model.preprocess import Preprocess
    from ..store.parquet import ExportReport

_T = TypeVar("_T")
#: How many times a read is made when each meets the switch of a reindex (see _Switched).
_SWITCH_TRIES = 3


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
    disk_bytes: int  # the index folder's files, and the catalog's own where it is kept elsewhere
    exports_bytes: int  # this model's ONNX exports in the per-user cache (imgsearch.model.cache)
    cache: str  # that cache, shared by every index folder of this user
    formats: dict[str, int]  # indexed files per stored format name (JPEG, CR2 ...)
    decoders: dict[str, str]  # what reads the files here, with versions (see imgsearch.formats)
    reindex_model: str | None = None  # the model of a reindex under way or interrupted (imgsearch reindex)
    reindex_staged: int = 0  # images that have their vector of that model already

    def to_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["roots"] = [r.__dict__ for r in self.roots]
        return out


class Reader:
    """Answer from the catalog in `database`, with the FAISS file this machine keeps for it in `home`; query
    vectors come from the runtime. Safe to share between threads (a server's concurrent requests)."""

    def __init__(
        self,
        home: Path,
        database: Database,
        runtime: ModelRuntime,
        requested_model: ModelSpec | None,
        mounts: Mounts | None = None,
    ):
        self.home = home
        self.database = database
        self.mounts = mounts or Mounts()  # paths in and out are this machine's, the catalog's the writer's
        self.runtime = runtime
        self.requested_model = requested_model
        self._vectors: VectorIndex | None = None  # kept between queries while the index does not change
        self._kept: Catalog | None = None  # see kept_catalog
        self._kept_identity: tuple[int, int] | None = None
        # replacing the kept catalog, or the FAISS index: one thread at a time each (a rebuild takes seconds)
        self._keeping_catalog = threading.Lock()
        self._keeping_vectors = threading.Lock()

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
        matches = _again_on_switch(lambda: self._query(terms, top, filters, min_score, sort))
        if not self.mounts:
            return matches
        shown = self.mounts.shown
        return [replace(m, path=shown(m.path), siblings=tuple(map(shown, m.siblings))) for m in matches]

    def _query(
        self, terms: Sequence[Term], top: int, filters: Filters | None, min_score: float | None, sort: str
    ) -> list[Match]:
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
            if filters.under is not None and self.mounts:
                filters = replace(filters, under=os.fsdecode(self.mounts.to_stored(absolute(filters.under))))
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
        stored = catalog.row_by_path(self.mounts.to_stored(path))
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
        catalog = Catalog.open(self.database)
        try:
            model = catalog.model()
            version = catalog.vectors_version()
            pending = catalog.pending_reindex()
            here = self.mounts.to_local
            roots = [
                RootStatus(os.fsdecode(here(root)), n, bad, os.path.isdir(here(root)))
                for root, n, bad in catalog.counts_by_root()
            ]
            local = catalog.local_folder(self.home)
            vfile = vectors_file(local, version)
            disk = sum(p.stat().st_size for p in local.iterdir() if p.is_file())
            if local != self.home:
                disk += catalog.size_bytes()
            return Status(
                home=str(self.home),
                database=self.database.shown,
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
                reindex_model=pending.model if pending else None,
                reindex_staged=pending.staged if pending else 0,
            )
        finally:
            catalog.close()

    def failures(self, limit: int | None = None) -> list[tuple[str, str]]:
        """(path, reason) of files that could not be indexed."""
        catalog = Catalog.open(self.database)
        try:
            return [(os.fsdecode(self.mounts.to_local(p)), why) for p, why in catalog.failure_list(limit)]
        finally:
            catalog.close()

    def export(self, out: str | os.PathLike[str]) -> ExportReport:
        """Write every vector with its metadata as a Parquet dataset in the folder `out` (see
        imgsearch.store.parquet). Reading needs no write lock: an index run may go on meanwhile."""
        from .. import __version__
        from ..store.parquet import write_export

        catalog = Catalog.open(self.database)
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

        def classify() -> list[Classification]:
            with self.reading() as (catalog, vectors, spec):
                embed = partial(self.runtime.embed_texts, spec)
                scale, bias = self.runtime.logits(spec)
                zero_shot = ZeroShot.prepare(labels, embed, scale, temperature, bias)
                batches = catalog.vector_batches(vectors.dim, self._stored_folder(under))
                return list(zero_shot.classify(batches, min_prob))

        shown = self.mounts.shown
        return [replace(c, path=shown(c.path)) for c in _again_on_switch(classify)]

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

        def label_ids() -> np.ndarray:
            with self.reading() as (catalog, vectors, spec):
                return self._label_ids(catalog, vectors, spec, wanted, labels, under, temperature, min_prob)

        return _again_on_switch(label_ids)

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
        scale, bias = self.runtime.logits(spec)
        zero_shot = ZeroShot.prepare(label_set, embed, scale, temperature, bias)
        batches = catalog.vector_batches(vectors.dim, self._stored_folder(under))
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

        def duplicates() -> list[DuplicateGroup]:
            with self.reading() as (catalog, vectors, _spec):
                return find_duplicates(catalog, vectors, threshold, self._stored_folder(under), exact_only)

        groups = _again_on_switch(duplicates)
        return [group.shown(self.mounts.shown) for group in groups] if self.mounts else groups

    def _stored_folder(self, under: str | os.PathLike[str] | None) -> bytes | None:
        """A folder given on this machine, as the catalog spells its paths."""
        return self.mounts.to_stored(absolute(under)) if under is not None else None

    def kept_catalog(self) -> Catalog:
        """The catalog a warm Library keeps open between queries (opening one costs a few milliseconds, a
        server connection more), as long as the database is the same file; every read is still a fresh
        snapshot. Callers never close it."""
        identity = None
        if self.database.file is not None:
            try:
                st = os.stat(self.database.file)
                identity = (st.st_dev, st.st_ino)
            except FileNotFoundError:
                pass
        with self._keeping_catalog:
            if self._kept is None or self._kept_identity != identity:
                if self._kept is not None:
                    self._kept.close()
                    self._kept = None
                self._kept = Catalog.open(self.database)
                self._kept_identity = identity
            return self._kept

    def current_vectors(self, catalog: Catalog, dim: int) -> VectorIndex:
        """The FAISS index for the catalog's current vectors: the kept one while current, else loaded (or
        rebuilt) once, however many threads ask at the same time."""
        version = catalog.vectors_version()
        vectors = self._vectors
        if vectors is not None and vectors.dim == dim and vectors.version == version:
            return vectors
        with self._keeping_vectors:
            vectors = self._vectors
            if vectors is None or vectors.dim != dim or vectors.version != catalog.vectors_version():
                folder = catalog.local_folder(self.home)
                vectors = self._vectors = VectorIndex.load_or_rebuild(catalog, folder, dim, mmap=True)
            return vectors

    def reading(self) -> _Reading:
        return _Reading(self)


class _Switched(ModelMismatch):
    """The index's model changed while one read was under way (a reindex finished): it is done again."""


def _again_on_switch(read: Callable[[], _T]) -> _T:
    """`read()`, made again when it met a reindex's switch (a switch is rare: a third is not expected)."""
    tries = 1
    while True:
        try:
            return read()
        except _Switched:
            if tries >= _SWITCH_TRIES:
                raise
            tries += 1


class _Reading:
    """Open the catalog and its vectors for one query; close them after. When the model is not the one it
    began with by the end (a reindex switched meanwhile), whatever was read may mix the two: _Switched."""

    def __init__(self, reader: Reader):
        self.reader = reader
        self.catalog: Catalog | None = None
        self.recorded: tuple[str, int] | None = None

    def __enter__(self) -> tuple[Catalog, VectorIndex, ModelSpec]:
        lib = self.reader
        self.catalog = lib.kept_catalog() if lib.runtime.warm else Catalog.open(lib.database)
        try:
            self.recorded = self.catalog.model()
            spec, dim = model_for(self.recorded, lib.requested_model, lib.home)
            if dim is None:
                where = lib.database.where()
                raise IndexNotFound(f"{where} has no images yet: run `imgsearch index FOLDER`")
            return self.catalog, lib.current_vectors(self.catalog, dim), spec
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)  # _Switched instead, if the model changed meanwhile
            raise

    def __exit__(self, kind: type[BaseException] | None, error: object, _tb: object) -> None:
        catalog = self.catalog
        try:
            # a library error other than a mismatch means what it says; anything else may be the switch's
            suspect = kind is None or not issubclass(kind, ImgsearchError) or issubclass(kind, ModelMismatch)
            if catalog is not None and self.recorded is not None and suspect:
                now = catalog.model()
                if now != self.recorded:
                    raise _Switched(
                        f"{self.reader.database.where()} switched from model {self.recorded[0]} to "
                        f"{now[0] if now else None} while this was read (a reindex finished): run it again"
                    )
        finally:
            self.catalog = None
            if catalog is not None and catalog is not self.reader._kept:
                catalog.close()


def _check_top(top: int) -> None:
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
