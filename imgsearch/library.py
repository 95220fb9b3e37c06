"""The public API: one `Library` object does everything the command line does.

from imgsearch import Library
lib = Library("~/.local/share/imgsearch")
lib.index(["~/Photos"])
for match in lib.search("a red apple on a table", top=5):
    print(match.score, match.path)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from .classify import Classification, ZeroShot, check_arguments, with_wanted
from .decode import decode_file, hash_file
from .duplicates import DEFAULT_THRESHOLD, DuplicateGroup, check_threshold, find_duplicates
from .encoder import Encoder
from .errors import DecodeError, IndexBusy, IndexNotFound, IndexReadOnly, ModelMismatch, UsageError
from .events import IndexEvents
from .indexer import Indexer, IndexReport
from .models import DEFAULT_MODEL, ModelSpec, parse_model_spec
from .query import Filters, Term, combine
from .search import Match, nearest
from .store.catalog import Catalog
from .store.vectors import VectorIndex, vectors_file

DB_FILE = "index.db"
LOCK_FILE = "write.lock"


def default_home() -> Path:
    """$IMGSEARCH_HOME, else the platform's per-user data folder (e.g. ~/.local/share/imgsearch)."""
    env = os.environ.get("IMGSEARCH_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("imgsearch", appauthor=False)


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
    images: int
    failures: int
    roots: list[RootStatus]
    vectors_version: int
    vectors_file: str | None
    disk_bytes: int

    def to_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["roots"] = [r.__dict__ for r in self.roots]
        return out


class Library:
    """An image index in one folder (`home`): index folders into it, search it by text or by image.

    `model` is a model spec (see imgsearch.models); None means the model the index was built with, or the
    default for a new index. The encoder is loaded on first need and kept, so a long-lived Library answers
    later queries without loading it again; `encoder` hands it one already loaded.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        model: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        workers: int | None = None,
        encoder: Encoder | None = None,
    ):
        self.home = Path(home).expanduser() if home is not None else default_home()
        model = model or os.environ.get("IMGSEARCH_MODEL")
        self.requested_model = parse_model_spec(model) if model else None
        self.device = device
        self.precision = precision
        self.workers = workers
        self._encoder = encoder  # an already-loaded encoder: a process that shares one, or a test's own
        self._vectors: VectorIndex | None = None  # kept between queries while the index does not change

    @property
    def db_path(self) -> Path:
        return self.home / DB_FILE

    # -- writing --------------------------------------------------------------------------------------------
    def index(
        self, folders: Sequence[str | os.PathLike[str]] = (), events: IndexEvents | None = None
    ) -> IndexReport:
        """Add folders to the index and bring it up to date; no folders means every folder indexed before."""
        roots = [os.fsencode(os.path.abspath(os.path.expanduser(f))) for f in folders]
        for root in roots:
            if not os.path.isdir(root):
                raise UsageError(f"not a folder: {os.fsdecode(root)}")
        lock = self._write_lock()
        catalog = Catalog.open(self.db_path, create=True)
        try:
            spec, dim = self._model_for(catalog)
            if not roots:
                roots = catalog.roots()
                if not roots:
                    raise UsageError("nothing indexed yet: give a folder, e.g. `imgsearch index ~/Photos`")
            vectors = VectorIndex.load_or_rebuild(catalog, self.home, dim, save=False) if dim else None
            indexer = Indexer(catalog, vectors, lambda: self.encoder(spec), spec.id, events, self.workers)
            try:
                return indexer.run(roots)
            finally:
                if indexer.vectors is not None and indexer.vectors.version == catalog.vectors_version():
                    indexer.vectors.save(self.home)
        finally:
            catalog.close()
            lock.release()

    def _write_lock(self) -> FileLock:
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.home / LOCK_FILE)
            lock.acquire(timeout=0)
        except Timeout:
            raise IndexBusy(
                f"another imgsearch process is writing to the index at {self.home}; "
                "wait for it to finish and run this again"
            ) from None
        except OSError as e:
            raise IndexReadOnly(f"cannot write to the index at {self.home}: {e.strerror or e}") from e
        return lock

    # -- reading --------------------------------------------------------------------------------------------
    def search(self, text: str, top: int = 10, under: str | os.PathLike[str] | None = None) -> list[Match]:
        """Images that match a description, best first."""
        return self.query([Term.text(text)], top, _in_folder(under))

    def similar(
        self, image: str | os.PathLike[str], top: int = 10, under: str | os.PathLike[str] | None = None
    ) -> list[Match]:
        """Images that look like `image` (an indexed file or any other image), never `image` itself.

        An indexed, unchanged file reuses its stored vector and a copy of an indexed file reuses the
        original's, so neither loads the model.
        """
        return self.query([Term.image(os.fspath(image))], top, _in_folder(under))

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
        with self._reader() as (catalog, vectors, spec):
            texts = [t.value for t in terms if t.kind == "text"]
            text_vectors = iter(self.encoder(spec).embed_texts(texts) if texts else [])
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
            return nearest(catalog, vectors, query, top, filters, exclude, min_score, sort)

    def _image_vector(self, catalog: Catalog, spec: ModelSpec, image: str) -> tuple[np.ndarray, int | None]:
        """An image's unit vector (stored, reused from a copy, or encoded now) and its id if it is indexed."""
        path = os.fsencode(os.path.abspath(os.path.expanduser(image)))
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
        encoder = self.encoder(spec)
        try:
            decoded = decode_file(path, encoder.preprocess)
        except DecodeError as e:
            raise DecodeError(f"cannot use {os.fsdecode(path)} as a query: {e}") from e
        return encoder.embed_pixels(decoded.pixels[None])[0], own_id

    def status(self) -> Status:
        """What is indexed, with which model, and where; never loads the model."""
        catalog = Catalog.open(self.db_path)
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
                database=str(self.db_path),
                model=model[0] if model else None,
                dim=model[1] if model else None,
                images=catalog.count(),
                failures=catalog.failure_count(),
                roots=roots,
                vectors_version=version,
                vectors_file=str(vfile) if vfile.exists() else None,
                disk_bytes=disk,
            )
        finally:
            catalog.close()

    def failures(self, limit: int | None = None) -> list[tuple[str, str]]:
        """(path, reason) of files that could not be indexed."""
        catalog = Catalog.open(self.db_path)
        try:
            return [(os.fsdecode(p), reason) for p, reason in catalog.failure_list(limit)]
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
        """Each image's most probable label among `labels` (CLIP zero-shot, see imgsearch.classify), in path
        order. Only the label texts are encoded; images use their stored vectors. Images whose best label
        has less than `min_prob` are left out; `temperature` replaces the model's logit scale by 1/T."""
        check_arguments(labels, temperature, min_prob)
        with self._reader() as (catalog, vectors, spec):
            encoder = self.encoder(spec)
            zero_shot = ZeroShot.prepare(labels, encoder.embed_texts, encoder.logit_scale, temperature)
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
        label, in the form FAISS takes."""
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        label_set = with_wanted(wanted, labels)
        check_arguments(label_set, temperature, min_prob)
        with self._reader() as (catalog, vectors, spec):
            encoder = self.encoder(spec)
            zero_shot = ZeroShot.prepare(label_set, encoder.embed_texts, encoder.logit_scale, temperature)
            batches = catalog.vector_batches(vectors.dim, _folder_bytes(under))
            return zero_shot.ids_with(batches, wanted, min_prob)

    # -- duplicates -----------------------------------------------------------------------------------------
    def duplicates(
        self, under: str | os.PathLike[str] | None = None, threshold: float = DEFAULT_THRESHOLD
    ) -> list[DuplicateGroup]:
        """Groups of byte-identical copies ("exact") and of images whose cosine is at least `threshold`
        ("near"), largest first (see imgsearch.duplicates). Stored vectors and content hashes only: the
        model is never loaded."""
        check_threshold(threshold)  # before opening the index: a bad argument is the first thing to hear
        with self._reader() as (catalog, vectors, _spec):
            return find_duplicates(catalog, vectors, threshold, _folder_bytes(under))

    # -- model ----------------------------------------------------------------------------------------------
    def model_spec(self) -> ModelSpec:
        """The model this library uses: the index's own (another request is refused), else the requested one,
        else the default."""
        if not self.db_path.exists():
            return self.requested_model or parse_model_spec(DEFAULT_MODEL)
        catalog = Catalog.open(self.db_path)
        try:
            return self._model_for(catalog)[0]
        finally:
            catalog.close()

    def encoder(self, spec: ModelSpec | None = None) -> Encoder:
        """The loaded encoder (default: `model_spec()`), loaded once and kept."""
        spec = spec or self.model_spec()
        if self._encoder is None or self._encoder.spec != spec:
            self._encoder = Encoder.load(spec, self.device, self.precision)
        return self._encoder

    def _model_for(self, catalog: Catalog) -> tuple[ModelSpec, int | None]:
        """The model this index uses: the recorded one (a different request is refused), else the request."""
        recorded = catalog.model()
        if recorded is None:
            return self.requested_model or parse_model_spec(DEFAULT_MODEL), None
        model_id, dim = recorded
        if self.requested_model is not None and self.requested_model.id != model_id:
            raise ModelMismatch(
                f"the index at {self.home} was built with model {model_id} ({dim}-d vectors), "
                f"not {self.requested_model.id}. Leave out --model (and IMGSEARCH_MODEL) to use {model_id}, "
                "or keep a separate index for the other model with --home DIR."
            )
        return parse_model_spec(model_id), dim

    def _reader(self) -> _Reader:
        return _Reader(self)


class _Reader:
    """Open the catalog and its vectors for one query; close them after."""

    def __init__(self, library: Library):
        self.library = library
        self.catalog: Catalog | None = None

    def __enter__(self) -> tuple[Catalog, VectorIndex, ModelSpec]:
        lib = self.library
        self.catalog = Catalog.open(lib.db_path)
        spec, dim = lib._model_for(self.catalog)
        if dim is None:
            raise IndexNotFound(f"the index at {lib.home} has no images yet: run `imgsearch index FOLDER`")
        import faiss

        faiss.omp_set_num_threads(1)  # one query: threads cost more than they give
        vectors = lib._vectors
        if vectors is None or vectors.dim != dim or vectors.version != self.catalog.vectors_version():
            vectors = lib._vectors = VectorIndex.load_or_rebuild(self.catalog, lib.home, dim)
        return self.catalog, vectors, spec

    def __exit__(self, *exc: object) -> None:
        if self.catalog is not None:
            self.catalog.close()


def _in_folder(under: str | os.PathLike[str] | None) -> Filters | None:
    return Filters(under=os.fspath(under)) if under is not None else None


def _folder_bytes(under: str | os.PathLike[str] | None) -> bytes | None:
    return os.fsencode(os.path.abspath(os.path.expanduser(under))) if under is not None else None


def _check_top(top: int) -> None:
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
