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

from .decode import decode_file, hash_file
from .encoder import Encoder
from .errors import DecodeError, IndexBusy, IndexNotFound, IndexReadOnly, ModelMismatch, UsageError
from .events import IndexEvents
from .indexer import Indexer, IndexReport
from .models import DEFAULT_MODEL, ModelSpec, parse_model_spec
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
        if not text.strip():
            raise UsageError("the query text is empty")
        _check_top(top)
        with self._reader() as (catalog, vectors, spec):
            query = self.encoder(spec).embed_texts([text])[0]
            return nearest(catalog, vectors, query, top, _folder(under))

    def similar(
        self, image: str | os.PathLike[str], top: int = 10, under: str | os.PathLike[str] | None = None
    ) -> list[Match]:
        """Images that look like `image` (an indexed file or any other image), never `image` itself.

        An indexed, unchanged file reuses its stored vector and a copy of an indexed file reuses the
        original's, so neither loads the model.
        """
        _check_top(top)
        path = os.fsencode(os.path.abspath(os.path.expanduser(image)))
        if not os.path.isfile(path):
            raise UsageError(f"no such image file: {os.fsdecode(path)}")
        with self._reader() as (catalog, vectors, spec):
            query, own_id = self._image_vector(catalog, spec, path)
            return nearest(catalog, vectors, query, top, _folder(under), exclude=own_id)

    def _image_vector(self, catalog: Catalog, spec: ModelSpec, path: bytes) -> tuple[np.ndarray, int | None]:
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


def _folder(under: str | os.PathLike[str] | None) -> bytes | None:
    if under is None:
        return None
    return os.fsencode(os.path.abspath(os.path.expanduser(under)))


def _check_top(top: int) -> None:
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
