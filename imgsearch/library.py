"""The public API: one `Library` object does everything the command line does.

from imgsearch import Library
lib = Library("~/.local/share/imgsearch")
lib.index(["~/Photos"])
for match in lib.search("a red apple on a table", top=5):
    print(match.score, match.path)
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .errors import DecodeError, IndexBusy, IndexNotFound, ModelMismatch, UsageError
from .home import default_home
from .index.events import IndexEvents
from .index.scan import absolute
from .model.encoder import Encoder
from .model.onnx_image import OnnxImage
from .model.onnx_text import OnnxText
from .model.specs import DEFAULT_MODEL, ModelSpec, parse_model_spec
from .search.classify import Classification, ZeroShot, check_arguments, with_wanted
from .search.duplicates import DEFAULT_THRESHOLD, DuplicateGroup, check_threshold, find_duplicates
from .search.nearest import Match, allowed_ids, nearest
from .search.query import Filters, Term, combine
from .store.catalog import Catalog, storage_error
from .store.vectors import VectorIndex, describe_file, remove_stale_temp_files, vectors_file

if TYPE_CHECKING:  # the indexer (multiprocessing, Pillow) and the write lock are for writers only
    from filelock import FileLock

    from .index.indexer import IndexReport

_log = logging.getLogger("imgsearch")

DB_FILE = "index.db"
LOCK_FILE = "write.lock"
TEXT_CACHE = 512  # query and label texts whose vectors a Library keeps (2 KB each at 512-d)
IMAGE_CACHE = 64  # query images (not indexed) whose vectors it keeps, by content hash

_Key = TypeVar("_Key")


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
    search_index: str | None  # 'exact' or the approximate index's shape (see imgsearch.store.ann)
    disk_bytes: int

    def to_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        out["roots"] = [r.__dict__ for r in self.roots]
        return out


class Library:
    """An image index in one folder (`home`): index folders into it, search it by text or by image.

    `model` is a model spec (see imgsearch.model.specs); None means the model the index was built with, or the
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
        self._onnx_text: tuple[ModelSpec, OnnxText | None] | None = None  # the torch-free text encoder
        self._onnx_image: tuple[ModelSpec, OnnxImage | None] | None = None  # and image encoder
        self._export_offered: set[tuple[str, str]] = set()  # (tower, model) exports checked by this Library
        self._warm = False  # set by warm_up: many queries will follow
        self._kept: Catalog | None = None  # see _kept_catalog
        self._kept_identity: tuple[int, int] | None = None
        self._text_vectors: _Recent[tuple[str, str]] = _Recent()  # see _embed_texts
        self._image_vectors: _Recent[tuple[str, bytes]] = _Recent()  # query images, by content hash

    @property
    def db_path(self) -> Path:
        return self.home / DB_FILE

    # -- writing --------------------------------------------------------------------------------------------
    def index(
        self, folders: Sequence[str | os.PathLike[str]] = (), events: IndexEvents | None = None
    ) -> IndexReport:
        """Add folders to the index and bring it up to date; no folders means every folder indexed before."""
        with self._writing(folders, "index") as (catalog, spec, roots):
            report = self._update(catalog, spec, roots, events)[0]
        self._offer_text_export(spec, events)  # after the lock is released: queries wait for nothing
        return report

    def watch(
        self,
        folders: Sequence[str | os.PathLike[str]] = (),
        events: IndexEvents | None = None,
        *,
        settle: float = 1.0,
        rescan_interval: float = 3600.0,
        poll: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """Index folders (no folders: every folder indexed before), then keep the index in step with them
        until `stop` is set (or KeyboardInterrupt), holding the write lock all along.

        Changes are batched (see imgsearch.watch) and each batch re-indexes the deepest existing folders it
        touched through the same Indexer as `index`: moves re-encode nothing, deleted folders leave the
        index, and the FAISS file is saved after every batch so other processes' queries see new images.
        A full rescan runs every `rescan_interval` seconds (0: never) in case events were lost.
        """
        from .watch.events import folders_to_index
        from .watch.watcher import Watcher

        if settle < 0 or rescan_interval < 0:
            raise UsageError("settle and rescan interval must not be negative")
        stop = stop or threading.Event()
        with self._writing(folders, "watch") as (catalog, spec, roots):
            kept: list[VectorIndex | None] = [None]  # the FAISS index, kept in memory between batches

            def run(targets: list[bytes], why: str) -> None:
                report, kept[0] = self._update(catalog, spec, targets, events, kept[0])
                shown = ", ".join(os.fsdecode(t) for t in targets[:3]) + (" ..." if len(targets) > 3 else "")
                _log.info("%s %s: %s", why, shown, report.summary())
                for folder, reason in report.unreadable:
                    _log.warning("cannot read %s: %s; its images are kept", os.fsdecode(folder), reason)
                for root in report.missing_roots:
                    _log.warning("%s is not there (unplugged?); its images are kept", os.fsdecode(root))

            def on_batch(paths: list[bytes]) -> None:
                targets = folders_to_index(paths, roots)
                _log.debug("%d changed paths -> %d folders", len(paths), len(targets))
                if targets:
                    run(targets, "updated")

            watcher = Watcher(roots, on_batch, lambda: run(roots, "rescanned"), settle, rescan_interval, poll)
            _log.info("watching %s", ", ".join(os.fsdecode(r) for r in roots))

            def on_start() -> None:
                run(roots, "caught up")
                if events is not None:
                    events.loading_model(spec.id)
                self.encoder(spec)  # now, not when the first photo arrives
                self._offer_text_export(spec)
                _log.info("model loaded; waiting for changes")

            watcher.run(stop, on_start=on_start)
            _log.info("stopped watching")

    @contextmanager
    def _writing(
        self, folders: Sequence[str | os.PathLike[str]], command: str
    ) -> Iterator[tuple[Catalog, ModelSpec, list[bytes]]]:
        """The write lock, the open catalog, its model, and the roots to index (given, else all known)."""
        roots = [absolute(f) for f in folders]
        for root in roots:
            if not os.path.isdir(root):
                raise UsageError(f"not a folder: {os.fsdecode(root)}")
        lock = self._write_lock()
        try:
            catalog = Catalog.open(self.db_path, create=True)
        except BaseException:
            lock.release()
            raise
        try:
            remove_stale_temp_files(self.home)
            spec, _ = self._model_for(catalog)
            if not roots:
                roots = catalog.roots()
                if not roots:
                    raise UsageError(
                        f"nothing indexed yet: give a folder, e.g. `imgsearch {command} ~/Photos`"
                    )
            yield catalog, spec, roots
        finally:
            catalog.close()
            lock.release()

    def _update(
        self,
        catalog: Catalog,
        spec: ModelSpec,
        roots: list[bytes],
        events: IndexEvents | None,
        vectors: VectorIndex | None = None,
    ) -> tuple[IndexReport, VectorIndex | None]:
        """One indexer pass over `roots`. The FAISS index follows every committed batch and is saved when
        it matches the catalog, also after an interruption; `vectors` is reused while still current."""
        if vectors is None or vectors.version != catalog.vectors_version():
            recorded = catalog.model()  # None until a new index stores its first image
            vectors = (
                VectorIndex.load_or_rebuild(catalog, self.home, recorded[1], save=False) if recorded else None
            )
        from .index.indexer import Indexer

        indexer = Indexer(catalog, vectors, lambda: self.encoder(spec), spec.id, events, self.workers)
        try:
            report = indexer.run(roots)
            if indexer.vectors is not None and indexer.vectors.fit():  # after the commits, never in a query
                _log.info("search index is now %s", indexer.vectors.describe())
            return report, indexer.vectors
        finally:
            current = indexer.vectors
            if current is not None and current.version == catalog.vectors_version() and current.unsaved:
                current.save(self.home)  # a re-scan that changed nothing writes nothing

    def _write_lock(self) -> FileLock:
        from filelock import FileLock, Timeout

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
            raise storage_error(e, self.home) from e
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
            text_vectors = iter(self._embed_texts(spec, texts) if texts else [])
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
        from .index.decode import decode_file, hash_file

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
        remembered = self._image_vectors.recall((spec.id, digest))
        if remembered is not None:  # the same picture again (the server's next page of an upload)
            return remembered, own_id
        encoder = self._image_encoder(spec)
        try:
            decoded = decode_file(path, encoder.preprocess)
        except DecodeError as e:
            raise DecodeError(f"cannot use {os.fsdecode(path)} as a query: {e}") from e
        vector = encoder.embed_pixels(decoded.pixels[None])[0]
        self._image_vectors.remember((spec.id, digest), vector, IMAGE_CACHE)
        if isinstance(encoder, Encoder) and not self._warm:  # torch was loaded for this picture alone
            self._offer_image_export(spec)
        return vector, own_id

    def _image_encoder(self, spec: ModelSpec) -> Encoder | OnnxImage:
        """What encodes a query picture that is not indexed: the torch encoder when it is loaded already (a
        server, or after indexing), else the model's ONNX image export (imgsearch.model.onnx_image: no torch
        import) under the CPU's fp32 or auto numerics, else torch, which then makes the export."""
        held = self._encoder is not None and self._encoder.spec == spec
        if not held and self._exports_fit:
            if self._onnx_image is None or self._onnx_image[0] != spec:
                self._onnx_image = (spec, OnnxImage.open(self.home, spec))
            if self._onnx_image[1] is not None:
                return self._onnx_image[1]
        return self.encoder(spec)

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
                search_index=describe_file(vfile) if vfile.exists() else None,
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
        """Each image's most probable label among `labels` (CLIP zero-shot, see
        imgsearch.search.classify), in path order. Only the label texts are encoded; images use their stored vectors. Images whose best label
        has less than `min_prob` are left out; `temperature` replaces the model's logit scale by 1/T."""
        check_arguments(labels, temperature, min_prob)
        with self._reader() as (catalog, vectors, spec):
            embed = partial(self._embed_texts, spec)
            scale = self._text_encoder(spec).logit_scale
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
        with self._reader() as (catalog, vectors, spec):
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
        embed = partial(self._embed_texts, spec)
        scale = self._text_encoder(spec).logit_scale
        zero_shot = ZeroShot.prepare(label_set, embed, scale, temperature)
        batches = catalog.vector_batches(vectors.dim, _folder_bytes(under))
        return zero_shot.ids_with(batches, wanted, min_prob)

    # -- duplicates -----------------------------------------------------------------------------------------
    def duplicates(
        self, under: str | os.PathLike[str] | None = None, threshold: float = DEFAULT_THRESHOLD
    ) -> list[DuplicateGroup]:
        """Groups of byte-identical copies ("exact") and of images whose cosine is at least `threshold`
        ("near"), largest first (see imgsearch.search.duplicates). Stored vectors and content hashes only: the
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

    def _embed_texts(self, spec: ModelSpec, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors for `texts`, the last TEXT_CACHE texts' from memory: a long-lived Library (the
        server) pages through results, repeats queries and label filters, and each would otherwise cost a
        run of the text tower (~35 ms on one CPU core for ViT-B-32)."""
        found: dict[str, np.ndarray] = {}
        for text in texts:
            vector = self._text_vectors.recall((spec.id, text))
            if vector is not None:
                found[text] = vector
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        if missing:
            for text, vector in zip(missing, self._text_encoder(spec).embed_texts(missing), strict=True):
                found[text] = vector
                self._text_vectors.remember((spec.id, text), vector, TEXT_CACHE)
        return np.stack([found[text] for text in texts])

    def _text_encoder(self, spec: ModelSpec) -> Encoder | OnnxText:
        """What encodes texts (queries, labels): the model's ONNX text export (imgsearch.model.onnx_text:
        no torch import, so a cold query is fast, and over only the query's tokens it is also faster warm) when the
        numerics are the CPU's fp32 or auto and no GPU encoder is held; else the torch encoder, which then
        makes the export for next time.

        A machine with CUDA also takes the export under --device auto until the model is loaded: one
        query's text encoding is milliseconds either way, and the cold cost is importing torch."""
        held = self._encoder if self._encoder is not None and self._encoder.spec == spec else None
        on_cpu = held is None or held.runtime.device == "cpu"
        if on_cpu and self._exports_fit:
            if self._onnx_text is None or self._onnx_text[0] != spec:
                self._onnx_text = (spec, OnnxText.open(self.home, spec, warm=self._warm))
            if self._onnx_text[1] is not None:
                return self._onnx_text[1]
        encoder = self.encoder(spec)
        self._offer_text_export(spec)
        return encoder

    @property
    def _exports_fit(self) -> bool:
        """Whether the requested numerics are the ONNX exports' own: fp32 on the CPU (or auto)."""
        return self.device in ("auto", "cpu") and self.precision in ("auto", "fp32")

    def _kept_catalog(self) -> Catalog:
        """The catalog a warm Library keeps open between queries (opening one costs a few milliseconds),
        as long as the database is the same file; every read is still a fresh snapshot."""
        try:
            st = os.stat(self.db_path)
            identity = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            identity = None
        if self._kept is None or self._kept_identity != identity:
            if self._kept is not None:
                self._kept.close()
                self._kept = None
            self._kept = Catalog.open(self.db_path)
            self._kept_identity = identity
        return self._kept

    def warm_up(self) -> None:
        """Load now what queries need, set up for many of them (a server): the model, and the text export
        with its weights prepacked for this CPU (see imgsearch.model.onnx_text.open_session)."""
        self._warm = True  # also when this fails (no index yet): later queries still find it set
        self._onnx_text = None
        spec = self.model_spec()
        self.encoder(spec)
        self._text_encoder(spec)

    def _offer_text_export(self, spec: ModelSpec, events: IndexEvents | None = None) -> None:
        """With the torch encoder loaded, make the ONNX text export if the index home lacks a usable one
        (once per Library and model; seconds, once per home; a failure only logs); the next text uses it."""
        encoder = self._first_offer("text", spec)
        if encoder is not None:
            from .model.export import ensure_text_export

            say = "preparing fast text queries (once per model)"
            ensure_text_export(encoder, self.home, partial(events.preparing, say) if events else None)
            self._onnx_text = None

    def _offer_image_export(self, spec: ModelSpec) -> None:
        """The same for the image tower, offered only when torch was loaded for a query picture alone (not
        at index time: the export takes disk that only users of such queries should pay)."""
        encoder = self._first_offer("image", spec)
        if encoder is not None:
            from .model.export import ensure_image_export

            ensure_image_export(encoder, self.home)
            self._onnx_image = None

    def _first_offer(self, tower: str, spec: ModelSpec) -> Encoder | None:
        """The torch encoder to check `tower`'s export with, if it is loaded for `spec` and this Library has
        not checked that export before."""
        if (tower, spec.id) in self._export_offered or self._encoder is None or self._encoder.spec != spec:
            return None
        self._export_offered.add((tower, spec.id))
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


class _Recent(OrderedDict[_Key, np.ndarray]):
    """Vectors of recent queries, the least recently used forgotten first."""

    def recall(self, key: _Key) -> np.ndarray | None:
        vector = self.get(key)
        if vector is not None:
            self.move_to_end(key)
        return vector

    def remember(self, key: _Key, vector: np.ndarray, capacity: int) -> None:
        vector.setflags(write=False)  # shared by later queries: nobody may change it in place
        self[key] = vector
        while len(self) > capacity:
            self.popitem(last=False)


class _Reader:
    """Open the catalog and its vectors for one query; close them after."""

    def __init__(self, library: Library):
        self.library = library
        self.catalog: Catalog | None = None

    def __enter__(self) -> tuple[Catalog, VectorIndex, ModelSpec]:
        lib = self.library
        self.catalog = lib._kept_catalog() if lib._warm else Catalog.open(lib.db_path)
        spec, dim = lib._model_for(self.catalog)
        if dim is None:
            raise IndexNotFound(f"the index at {lib.home} has no images yet: run `imgsearch index FOLDER`")
        vectors = lib._vectors
        if vectors is None or vectors.dim != dim or vectors.version != self.catalog.vectors_version():
            vectors = lib._vectors = VectorIndex.load_or_rebuild(self.catalog, lib.home, dim, mmap=True)
        return self.catalog, vectors, spec

    def __exit__(self, *exc: object) -> None:
        if self.catalog is not None and self.catalog is not self.library._kept:
            self.catalog.close()


def _in_folder(under: str | os.PathLike[str] | None) -> Filters | None:
    return Filters(under=os.fspath(under)) if under is not None else None


def _folder_bytes(under: str | os.PathLike[str] | None) -> bytes | None:
    return absolute(under) if under is not None else None


def _check_top(top: int) -> None:
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
