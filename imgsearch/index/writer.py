"""The writing side of a Library: one writer at a time (the catalog's write lock: a lock file beside a SQLite
file, an advisory lock on a server), index runs and the watch loop, each pass through the Indexer, and this
machine's FAISS file kept in step with every commit."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ImgsearchError, UsageError
from ..model.cache import remove_old_exports
from ..model.runtime import ModelRuntime
from ..model.specs import ModelSpec, model_for
from ..store.catalog import Catalog, Database
from ..store.vectors import VectorIndex, remove_stale_temp_files
from .embedding import LocalPipeline, Pipeline
from .events import IndexEvents
from .indexer import Indexer, IndexReport
from .scan import absolute
from .workers import DecodePool

if TYPE_CHECKING:
    from .imports import ImportReport
    from .reindex import ReindexReport

_log = logging.getLogger("imgsearch")


class Writer:
    """Index folders into the catalog in `database` with the runtime's index encoder; `home` holds what this
    machine derives from it (the FAISS file)."""

    def __init__(
        self,
        home: Path,
        database: Database,
        runtime: ModelRuntime,
        requested_model: ModelSpec | None,
        workers: int | None,
    ):
        self.home = home
        self.database = database
        self.runtime = runtime
        self.requested_model = requested_model
        self.workers = workers

    def index(
        self,
        folders: Sequence[str | os.PathLike[str]] = (),
        events: IndexEvents | None = None,
        ray: str | None = None,
    ) -> IndexReport:
        """Add folders to the index and bring it up to date; no folders means every folder indexed before.

        `ray` embeds new content on a Ray cluster (imgsearch.index.cluster): "local" starts one on this
        machine, "auto" joins the one this machine belongs to, HOST:PORT a given head. This process still
        scans, plans and commits.
        """
        with self._writing(folders, "index") as (catalog, spec, roots):
            report = self._update(catalog, spec, roots, events, ray=ray)[0]
        if self.runtime.holds_torch(spec):  # it paid for torch: the exports spare the next run that
            asking = time.perf_counter()
            if self.runtime.offer_exports(spec):
                report.phases["export (started in the background)"] = time.perf_counter() - asking
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
        from ..watch.events import folders_to_index
        from ..watch.watcher import Watcher

        if settle < 0 or rescan_interval < 0:
            raise UsageError("settle and rescan interval must not be negative")
        stop = stop or threading.Event()
        pool = DecodePool(self._workers())  # kept across batches: each would otherwise start its workers
        with self._writing(folders, "watch") as (catalog, spec, roots), closing(pool):
            kept: list[VectorIndex | None] = [None]  # the FAISS index, kept in memory between batches

            def run(targets: list[bytes], why: str) -> None:
                report, kept[0] = self._update(catalog, spec, targets, events, kept[0], pool=pool)
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
                # now, not when the first photo arrives: what a batch of a few photos will take
                engine = self.runtime.index_engine(spec, count=1)[1]
                if engine.runtime == "torch":
                    self.runtime.offer_exports(spec)
                _log.info("model loaded (%s); waiting for changes", engine.name)

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
        with self._locked(create=True) as catalog:
            spec = model_for(catalog.model(), self.requested_model, self.home)[0]
            if not roots:
                roots = catalog.roots()
                if not roots:
                    raise UsageError(
                        f"nothing indexed yet: give a folder, e.g. `imgsearch {command} ~/Photos`"
                    )
            yield catalog, spec, roots

    @contextmanager
    def _locked(self, create: bool) -> Iterator[Catalog]:
        """The open catalog under its write lock, with what killed writers left behind cleaned up."""
        catalog = Catalog.open(self.database, create=create)
        try:
            lock = catalog.write_lock()
        except BaseException:
            catalog.close()
            raise
        try:
            remove_stale_temp_files(catalog.local_folder(self.home))
            remove_old_exports(self.home)
            yield catalog
        finally:
            lock.release()
            catalog.close()

    def reindex(
        self, spec: ModelSpec, events: IndexEvents | None = None, ray: str | None = None
    ) -> ReindexReport:
        """Re-encode every indexed image with the model `spec` and switch the index to it (see
        imgsearch.index.reindex), holding the write lock all along; queries meanwhile answer with the old
        model. Then this machine's FAISS file is built for the new vectors, and, where torch was loaded for
        it, the new model's ONNX exports are asked for, as after an index run (the old model's stay in the
        per-user cache, which other indexes may share). `ray` embeds on a Ray cluster, as for `index`."""
        from .reindex import Reindexer

        with self._locked(create=False) as catalog:
            pipeline = self._pipeline(spec, ray, catalog.roots())
            report = Reindexer(catalog, spec, pipeline, events).run()
            if report.switched:
                self._rebuild_vectors(catalog, report.dim)
        if report.switched and self.runtime.holds_torch(spec):
            self.runtime.offer_exports(spec)
        return report

    def _rebuild_vectors(self, catalog: Catalog, dim: int) -> None:
        """This machine's FAISS file for a whole new set of vectors (saving it removes the older ones); where
        it cannot be saved, the first query rebuilds it."""
        local = catalog.local_folder(self.home)
        vectors = VectorIndex.load_or_rebuild(catalog, local, dim, save=False)
        vectors.fit()
        try:
            vectors.save(local)
        except ImgsearchError as e:
            _log.warning("the search index was not saved (%s); queries rebuild it", e)

    def _update(
        self,
        catalog: Catalog,
        spec: ModelSpec,
        roots: list[bytes],
        events: IndexEvents | None,
        vectors: VectorIndex | None = None,
        ray: str | None = None,
        pool: DecodePool | None = None,
    ) -> tuple[IndexReport, VectorIndex | None]:
        """One indexer pass over `roots`. The FAISS index follows every committed batch and is saved when
        it matches the catalog, also after an interruption; `vectors` is reused while still current."""
        if vectors is None or vectors.version != catalog.vectors_version():
            recorded = catalog.model()  # None until a new index stores its first image
            vectors = (
                VectorIndex.load_or_rebuild(catalog, catalog.local_folder(self.home), recorded[1], save=False)
                if recorded
                else None
            )
        indexer = Indexer(catalog, vectors, self._pipeline(spec, ray, roots, pool), spec.id, events)
        try:
            report = indexer.run(roots)
            if indexer.vectors is not None and indexer.vectors.fit():  # after the commits, never in a query
                _log.info("search index is now %s", indexer.vectors.describe())
            return report, indexer.vectors
        finally:
            current = indexer.vectors
            if current is not None and current.version == catalog.vectors_version() and current.unsaved:
                saving = time.perf_counter()
                current.save(catalog.local_folder(self.home))  # a re-scan that changed nothing writes nothing
                indexer.report.phases["save"] = time.perf_counter() - saving

    def _pipeline(
        self, spec: ModelSpec, ray: str | None, roots: list[bytes], pool: DecodePool | None = None
    ) -> Pipeline:
        """Where new content is embedded: on a Ray cluster when one was asked for, else here (decoded by
        `pool`, a watch run's, else by workers of this run's own)."""
        if ray is not None:
            from .cluster import RayPipeline

            return RayPipeline(ray, spec, self.runtime.device, self.runtime.precision, roots, self.workers)
        return LocalPipeline(partial(self.runtime.index_engine, spec), pool or self._workers())

    def _workers(self) -> int:
        return self.workers or max(1, os.cpu_count() or 1)

    def import_embeddings(
        self,
        dataset: str | os.PathLike[str],
        folders: Sequence[str | os.PathLike[str]] = (),
        model: ModelSpec | None = None,
        events: IndexEvents | None = None,
    ) -> ImportReport:
        """Give the files under `folders` (none: every folder indexed before) the vectors an embeddings
        dataset has for them (imgsearch.store.parquet), matched by content hash, else path, without loading
        a model (imgsearch.index.imports). `model` names the model that made them where the dataset does not
        say. Another model, or another vector size, than the dataset's or the index's is refused before
        anything is written."""
        from ..store.parquet import open_dataset
        from .imports import Importer, check_fits, vectors_model

        opened = open_dataset(dataset)
        model_id = vectors_model(opened, model or self.requested_model)
        if not folders and self.database.file is not None and not self.database.file.exists():
            raise UsageError(
                "nothing indexed yet: give the folders to match, e.g. `imgsearch import DATASET ~/Photos`"
            )
        with self._writing(folders, "import DATASET") as (catalog, _spec, roots):
            recorded = catalog.model()
            check_fits(opened, model_id, recorded, self.home)
            vectors = (
                VectorIndex.load_or_rebuild(catalog, catalog.local_folder(self.home), opened.dim, save=False)
                if recorded
                else VectorIndex(opened.dim)
            )
            try:
                report = Importer(catalog, vectors, model_id, opened, events).run(roots)
                if vectors.fit():  # after the commits, as an index run does
                    _log.info("search index is now %s", vectors.describe())
                return report
            finally:
                if vectors.version == catalog.vectors_version() and vectors.unsaved:
                    vectors.save(catalog.local_folder(self.home))
