"""Change the model of an index: re-encode every indexed image with the new model into the same catalog,
beside the live vectors (which go on answering queries), then switch to them in one transaction.

The Writer runs this under the catalog's write lock, so nothing else writes meanwhile. Images are decoded
and embedded by the indexer's own pipeline (imgsearch.index.embedding: decode workers and the batched
encoder, or a Ray cluster), equal bytes once; each batch of new vectors is committed to the staging table
(pending_vectors) with the content hash it was made from. An interrupted reindex keeps them: run again with
the same model, it encodes only the images that have none for their current bytes (one an index run changed
meanwhile is encoded again); with another model it drops them and starts over.

The switch (CatalogWriter.finish_reindex) is one transaction: every image takes its staged vector, the
model, vector size and numerics become the new ones, vectors_version moves on (so every machine's FAISS
file is rebuilt; the old model's is never read again) and the staging empties. Readers see the old model and
its vectors up to that commit, the new ones after it; never a mix. An image left without a vector of the new
model leaves the index then, rather than keep the old model's vector:
  - a file that does not decode now is recorded as a failure, with its stat, as `imgsearch index` records
    a bad file (it is retried once it changes; an interrupted reindex retries it when resumed);
  - a file gone from disk leaves as an index run would remove it;
  - a file whose bytes changed since it was indexed leaves too; the next `imgsearch index` adds it back,
    encoded with the new model.
A reindex with a root folder missing (an unplugged drive) is refused before any work: its images could not
be re-encoded and would all leave the index.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ..errors import ImgsearchError, UsageError
from ..model.specs import ModelSpec
from ..store.catalog import Catalog
from .embedding import Embedded, Pipeline
from .events import IndexEvents


@dataclass
class ReindexReport:
    model: str  # the model the index uses now (or still, for a no-op)
    previous: str | None = None  # the model it used before the switch
    dim: int = 0
    switched: bool = False  # False: the index already used `model`, nothing was re-encoded
    encoded: int = 0  # contents encoded by this run (equal bytes once)
    resumed: int = 0  # images whose vector an interrupted run of the same reindex had staged
    images: int = 0  # images that hold a vector of the new model after the switch
    failures: list[tuple[bytes, str]] = field(default_factory=list)  # left the index: could not be read
    gone: list[tuple[bytes, str]] = field(default_factory=list)  # left the index: deleted or changed since
    cancelled: tuple[str, int] | None = None  # (model, staged vectors) of an unfinished reindex dropped
    engine: str = ""  # what embedded the images, and why
    seconds: float = 0.0

    def summary(self) -> str:
        dropped = ""
        if self.cancelled is not None:
            model, staged = self.cancelled
            dropped = f"; dropped the unfinished reindex to {model} ({staged:,} staged vectors)"
        if not self.switched:
            return f"the index already uses model {self.model}: nothing to re-encode{dropped}"
        line = f"re-encoded {self.images:,} images with {self.model} ({self.dim}-d), was {self.previous}"
        extra = [f"{self.encoded:,} encoded"]
        if self.resumed:
            extra.append(f"{self.resumed:,} kept from the interrupted run")
        if self.failures:
            extra.append(f"{len(self.failures):,} failed")
        if self.gone:
            extra.append(f"{len(self.gone):,} deleted or changed since indexed")
        return f"{line} ({', '.join(extra)} in {self.seconds:.1f} s){dropped}"


@dataclass(frozen=True)
class _Content:
    """One stored content to encode, and every image (id, path) that has it; the first path is decoded."""

    content_hash: bytes
    images: tuple[tuple[int, bytes], ...]

    @property
    def path(self) -> bytes:
        return self.images[0][1]

    def first(self) -> _Content:
        return _Content(self.content_hash, self.images[:1])

    def rest(self) -> _Content:
        return _Content(self.content_hash, self.images[1:])


class Reindexer:
    """One reindex of `catalog` (whose write lock the caller holds) to the model `spec`, embedded by
    `pipeline`."""

    def __init__(self, catalog: Catalog, spec: ModelSpec, pipeline: Pipeline, events: IndexEvents | None):
        self.catalog = catalog
        self.spec = spec
        self.pipeline = pipeline
        self.events = events or IndexEvents()
        self.report = ReindexReport(spec.id)
        self._failed: list[tuple[_Content, str]] = []  # decoded and refused: recorded as failures
        self._gone: list[tuple[_Content, str]] = []  # vanished or changed since indexed: just leave

    def run(self) -> ReindexReport:
        started = time.perf_counter()
        try:
            self._run()
        finally:
            self.pipeline.close()
            self.report.seconds = time.perf_counter() - started
        return self.report

    def _run(self) -> None:
        catalog, report = self.catalog, self.report
        recorded = catalog.model()
        if recorded is None:
            raise UsageError(
                f"nothing indexed yet: index with the model you want, e.g. `imgsearch index --model "
                f"{self.spec.id} ~/Photos`"
            )
        pending = catalog.pending_reindex()
        if recorded[0] == self.spec.id:  # a no-op, which also calls off an unfinished reindex elsewhere
            if pending is not None:
                with catalog.write() as w:
                    w.cancel_reindex()
                report.cancelled = (pending.model, pending.staged)
            report.dim = recorded[1]
            return
        self._check_roots()
        report.previous = recorded[0]
        jobs = self._todo()
        if pending is not None and pending.model == self.spec.id and not jobs:
            dim = pending.dim  # every image was staged before the last run stopped: only the switch is left
        else:
            self.events.loading_model(self.spec.id)
            dim = self.pipeline.prepare(max(1, len(jobs)))
            report.engine = self.pipeline.engine
        with catalog.write() as w:
            resumed = w.begin_reindex(self.spec.id, dim)
        if pending is not None and resumed:
            report.resumed = pending.staged
        elif pending is not None:
            report.cancelled = (pending.model, pending.staged)
            if pending.model == self.spec.id:  # the same id, another vector size: its weights changed
                jobs = self._todo()
        self.events.phase("re-encoding", sum(len(job.images) for job in jobs))
        self._encode(jobs)
        self._switch()

    def _todo(self) -> list[_Content]:
        """What is left to encode: every content (and its images) without a staged vector."""
        contents: dict[bytes, list[tuple[int, bytes]]] = {}
        for image_id, path, content_hash in self.catalog.reindex_todo(self.spec.id):
            contents.setdefault(content_hash, []).append((image_id, path))
        return [_Content(h, tuple(images)) for h, images in contents.items()]

    def _check_roots(self) -> None:
        missing = [root for root in self.catalog.roots() if not os.path.isdir(root)]
        if missing:
            shown = ", ".join(os.fsdecode(root) for root in missing)
            raise ImgsearchError(
                f"{shown} is not there now (unplugged?): its images cannot be re-encoded, and a reindex "
                "would leave them out of the index; make it available and run this again"
            )

    def _encode(self, jobs: list[_Content]) -> None:
        staged: list[tuple[int, bytes, bytes]] = []
        precisions: set[str] = set()
        while jobs:
            again: list[_Content] = []  # copies to decode instead of a first file that changed or vanished
            for job, result in self.pipeline.embed(jobs):
                rest = job.rest()
                if isinstance(result, Embedded) and result.content_hash == job.content_hash:
                    vector = result.vector.tobytes()
                    staged.extend((image_id, job.content_hash, vector) for image_id, _ in job.images)
                    precisions.add(result.precision)
                    self.report.encoded += 1
                elif isinstance(result, Embedded) or result is None:
                    why = "changed since it was indexed" if result is not None else "no longer there"
                    self._gone.append((job.first(), why))
                    self.events.advance(1)
                    if rest.images:
                        again.append(rest)
                    continue
                elif rest.images and _changed(job.path, job.content_hash):
                    self._failed.append((job.first(), result))  # its copies may still hold the bytes
                    self.events.failed(job.path, result)
                    self.events.advance(1)
                    again.append(rest)
                    continue
                else:
                    self._failed.append((job, result))
                    for _, path in job.images:
                        self.events.failed(path, result)
                self.events.advance(len(job.images))
                if len(staged) >= self.pipeline.commit_every:
                    self._stage(staged, precisions)
                    staged, precisions = [], set()
            jobs = again
        self._stage(staged, precisions)

    def _stage(self, staged: list[tuple[int, bytes, bytes]], precisions: set[str]) -> None:
        """Commit one batch of new vectors to the staging table: nothing a query reads changes."""
        if not staged:
            return
        with self.catalog.write() as w:
            w.stage_vectors(staged, precisions)

    def _switch(self) -> None:
        """The one transaction that moves the index to the new model (see CatalogWriter.finish_reindex)."""
        report = self.report
        failed = [(image_id, path, reason) for job, reason in self._failed for image_id, path in job.images]
        stats = {path: _stat(path) for _, path, _ in failed}
        with self.catalog.write() as w:
            for _, path, reason in failed:
                stat = stats[path]
                if stat is not None:  # one line, whatever a decoder put in its message
                    w.record_failure(path, stat[0], stat[1], " ".join(reason.split()))
            dim, left = w.finish_reindex()
        report.switched, report.dim = True, dim
        bad = {image_id: " ".join(reason.split()) for image_id, _, reason in failed}
        report.failures = [(path, bad[i]) for i, path in left if i in bad]
        why = {image_id: reason for job, reason in self._gone for image_id, _ in job.images}
        report.gone = [(path, why.get(i, "not re-encoded")) for i, path in left if i not in bad]
        report.images = self.catalog.count()


def _changed(path: bytes, content_hash: bytes) -> bool:
    """Whether a file no longer holds the bytes it was indexed with (or is gone)."""
    from .decode import hash_file

    try:
        return hash_file(path)[0] != content_hash
    except OSError:
        return True


def _stat(path: bytes) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
