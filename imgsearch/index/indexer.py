"""Bring the catalog in line with folders on disk: scan, hash, reuse, embed (a pipeline), store.

Work is incremental: files whose size and mtime are unchanged are not opened; a moved, renamed or copied
file is recognised by its content hash and keeps or shares a stored vector; only new content is decoded and
encoded. Each batch is committed on its own, so an interrupted run keeps what it did and the next resumes.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..store.catalog import Catalog, CatalogWriter, Content, KnownFile
from ..store.vectors import VectorIndex
from .decode import hash_file, try_hash
from .embedding import Embedded, Pipeline
from .events import IndexEvents
from .scan import FileStat, under, walk

_HASH_THREADS = 4


@dataclass
class IndexReport:
    new: int = 0
    changed: int = 0
    moved: int = 0
    copied: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    encoded: int = 0
    known_bad: int = 0
    missing_roots: list[bytes] = field(default_factory=list)
    unreadable: list[tuple[bytes, str]] = field(default_factory=list)  # folders that could not be listed
    failures: list[tuple[bytes, str]] = field(default_factory=list)
    nodes: dict[str, int] = field(default_factory=dict)  # files decoded per Ray node (--ray only)
    engine: str = ""  # what embedded the images, and why (empty when nothing was new)
    phases: dict[str, float] = field(default_factory=dict)  # seconds: scan, model, encode, commit, ...
    seconds: float = 0.0

    def summary(self) -> str:
        line = (
            f"{self.new} new, {self.changed} changed, {self.moved} moved, {self.copied} copied, "
            f"{self.unchanged} unchanged, {self.removed} removed, {self.failed} failed"
        )
        extra = f"{self.encoded} encoded in {self.seconds:.1f} s"
        if self.known_bad:
            extra += f"; {self.known_bad} known bad files skipped"
        return f"{line} ({extra})"


@dataclass(frozen=True)
class _Job:
    """One new content to decode and encode, and every file (path stat, id if already indexed) that has it.

    The first file is the one decoded; equal bytes elsewhere share its vector.
    """

    content_hash: bytes
    files: tuple[tuple[FileStat, int | None], ...]

    def with_file(self, fs: FileStat, known_id: int | None) -> _Job:
        return _Job(self.content_hash, (*self.files, (fs, known_id)))

    @property
    def path(self) -> bytes:
        return self.files[0][0].path


class Indexer:
    """One index run over a set of root folders, writing through `catalog` and keeping `vectors` in step;
    `pipeline` turns new content into vectors (locally, or on a cluster)."""

    def __init__(
        self,
        catalog: Catalog,
        vectors: VectorIndex | None,
        pipeline: Pipeline,
        model_id: str,
        events: IndexEvents | None = None,
    ):
        self.catalog = catalog
        self.vectors = vectors
        self.pipeline = pipeline
        self.model_id = model_id
        self.events = events or IndexEvents()
        self.report = IndexReport()

    def run(self, roots: list[bytes]) -> IndexReport:
        started = time.perf_counter()
        try:
            jobs = self._plan(roots)
            self.report.phases["scan"] = time.perf_counter() - started
            if jobs:
                self._encode(jobs)
        finally:
            self.pipeline.close()
            self.report.seconds = time.perf_counter() - started
        return self.report

    # -- planning: everything that needs no model --------------------------------------------------------
    def _plan(self, roots: list[bytes]) -> list[_Job]:
        report = self.report
        on_disk: dict[bytes, FileStat] = {}
        known: dict[bytes, KnownFile] = {}
        bad: dict[bytes, tuple[int, int]] = {}
        present_roots = []
        for root in roots:
            if not os.path.isdir(root):
                report.missing_roots.append(root)  # an unplugged drive must not wipe its images
                continue
            present_roots.append(root)
            on_disk.update((f.path, f) for f in walk(root, self._unreadable))
            known.update(self.catalog.files_under(root))
            bad.update(self.catalog.failures_under(root))

        to_hash: list[FileStat] = []
        for path, fs in on_disk.items():
            old = known.get(path)
            if old is not None and (old.size, old.mtime_ns) == (fs.size, fs.mtime_ns):
                report.unchanged += 1
            elif old is None and bad.get(path) == (fs.size, fs.mtime_ns):
                report.known_bad += 1
            else:
                to_hash.append(fs)
        # a folder we could not list is not a folder whose files were deleted
        unknown = [folder for folder, _ in report.unreadable]
        vanished = {
            path: k
            for path, k in known.items()
            if path not in on_disk and not any(under(path, folder) for folder in unknown)
        }
        gone_bad = [path for path in bad if path not in on_disk]

        hashed = self._hash_all(to_hash)
        vanished_by_hash: dict[bytes, list[bytes]] = defaultdict(list)
        for path, k in vanished.items():
            vanished_by_hash[k.content_hash].append(path)
        reusable = self.catalog.contents(h for h, _ in hashed.values())

        jobs: dict[bytes, _Job] = {}  # by content hash: equal new contents are encoded once
        with self.catalog.write() as w:
            for root in present_roots:
                w.add_root(root)
            for path, (content_hash, fs) in hashed.items():
                old = known.get(path)
                old_id = old.id if old is not None else None
                if old is not None and old.content_hash == content_hash:
                    w.touch_image(old.id, fs.size, fs.mtime_ns)  # touched, not changed
                    report.unchanged += 1
                elif old is None and vanished_by_hash.get(content_hash):
                    source = vanished_by_hash[content_hash].pop()
                    w.move_image(vanished.pop(source).id, path, fs.size, fs.mtime_ns)
                    report.moved += 1
                elif content_hash in reusable:
                    if old is None:
                        w.add_image(path, fs.size, fs.mtime_ns, content_hash, reusable[content_hash])
                        report.copied += 1
                    else:
                        w.replace_image(old.id, fs.size, fs.mtime_ns, content_hash, reusable[content_hash])
                        report.changed += 1
                elif content_hash in jobs:
                    jobs[content_hash] = jobs[content_hash].with_file(fs, old_id)
                else:
                    jobs[content_hash] = _Job(content_hash, ((fs, old_id),))
            w.remove_images(k.id for k in vanished.values())
            w.forget_failures(gone_bad)
            report.removed += len(vanished)
        self._follow(w)
        return list(jobs.values())

    def _unreadable(self, folder: bytes, error: OSError) -> None:
        self.report.unreadable.append((folder, error.strerror or str(error)))

    def _hash_all(self, files: list[FileStat]) -> dict[bytes, tuple[bytes, FileStat]]:
        """Content hashes of files, read in threads (hashlib releases the GIL); unreadable files fail here."""
        out: dict[bytes, tuple[bytes, FileStat]] = {}
        if not files:
            return out
        self.events.phase("hashing", len(files))
        failures: list[tuple[FileStat, str]] = []
        with ThreadPoolExecutor(_HASH_THREADS) as pool:
            for fs, result in zip(files, pool.map(try_hash, (f.path for f in files)), strict=True):
                self.events.advance()
                if isinstance(result, tuple):
                    digest, size, mtime_ns = result
                    out[fs.path] = (digest, FileStat(fs.path, size, mtime_ns))
                elif result is not None:
                    failures.append((fs, result))
        if failures:
            with self.catalog.write() as w:
                for fs, reason in failures:
                    self._fail(w, fs, reason, None)
        return out

    # -- encoding: the pipeline decodes and embeds, each batch of its results is committed here ------------
    def _encode(self, jobs: list[_Job]) -> None:
        self.events.loading_model(self.model_id)
        loading = time.perf_counter()
        self.dim = self.pipeline.prepare(len(jobs))
        self.report.engine = self.pipeline.engine
        encoding = time.perf_counter()
        self.report.phases["model"] = encoding - loading
        self.report.phases["commit"] = 0.0
        if self.vectors is None:  # a new index: its vector size is known now
            self.vectors = VectorIndex(self.dim)
        record_model = self.catalog.model() is None
        self.events.phase("encoding", sum(len(j.files) for j in jobs))
        batch: list[tuple[_Job, Embedded]] = []
        failed: list[tuple[_Job, str]] = []
        while jobs:
            again: list[_Job] = []  # copies whose decoded twin changed or vanished after it was hashed
            for job, result in self.pipeline.embed(jobs):
                first, rest = _Job(job.content_hash, job.files[:1]), _Job(job.content_hash, job.files[1:])
                if isinstance(result, Embedded):
                    if rest.files and result.content_hash != job.content_hash:
                        batch.append((first, result))  # stored as read; the copies still hold the old bytes
                        again.append(rest)
                    else:
                        batch.append((job, result))
                elif isinstance(result, str):
                    if rest.files and not _still(job.path, job.content_hash):
                        failed.append((first, result))
                        again.append(rest)
                    else:
                        failed.append((job, result))
                elif rest.files:  # the decoded file vanished meanwhile: decode one of its copies instead
                    self.events.advance(1)
                    again.append(rest)
                else:
                    self.events.advance(len(job.files))  # vanished meanwhile: nothing to store or report
                if len(batch) >= self.pipeline.commit_every:
                    self._store(batch, failed, record_model)
                    batch, failed, record_model = [], [], False
            jobs = again
        self._store(batch, failed, record_model)
        self.report.nodes = dict(self.pipeline.work_by_node)
        phases = self.report.phases
        phases["encode"] = time.perf_counter() - encoding - phases["commit"]

    def _store(
        self,
        batch: list[tuple[_Job, Embedded]],
        failed: list[tuple[_Job, str]],
        record_model: bool,
    ) -> None:
        """Commit one batch of vectors, with the failures seen meanwhile, in one transaction."""
        if not batch and not failed:
            return
        committing = time.perf_counter()
        with self.catalog.write() as w:
            if record_model:
                w.set_model(self.model_id, self.dim)
            for precision in sorted({e.precision for _, e in batch}):
                w.note_numerics(precision)
            for job, e in batch:
                content = Content(e.width, e.height, e.format, e.taken_at, e.vector.tobytes())
                for i, (fs, known_id) in enumerate(job.files):
                    # the decoded file is stored with the stat and hash of the bytes actually read
                    size, mtime_ns, content_hash = (
                        (e.size, e.mtime_ns, e.content_hash)
                        if i == 0
                        else (fs.size, fs.mtime_ns, job.content_hash)
                    )
                    if known_id is None:
                        w.add_image(fs.path, size, mtime_ns, content_hash, content)
                        self.report.new += 1
                    else:
                        w.replace_image(known_id, size, mtime_ns, content_hash, content)
                        self.report.changed += 1
                self.report.encoded += 1
            for job, reason in failed:
                for fs, known_id in job.files:
                    self._fail(w, fs, reason, known_id)
        self._follow(w)
        self.report.phases["commit"] += time.perf_counter() - committing
        self.events.advance(sum(len(j.files) for j, _ in batch) + sum(len(j.files) for j, _ in failed))

    def _fail(self, w: CatalogWriter, fs: FileStat, reason: str, known_id: int | None) -> None:
        reason = " ".join(reason.split())  # one line, whatever a decoder put in its message
        if known_id is not None:  # its old vector describes bytes that are no longer there
            w.remove_images([known_id])
        w.record_failure(fs.path, fs.size, fs.mtime_ns, reason)
        self.report.failed += 1
        self.report.failures.append((fs.path, reason))
        self.events.failed(fs.path, reason)

    def _follow(self, w: CatalogWriter) -> None:
        if w.changes and w.version is not None and self.vectors is not None:
            self.vectors.apply(w.changes, w.version)


def _still(path: bytes, content_hash: bytes) -> bool:
    """Whether a file still holds the bytes it was hashed with."""
    try:
        return hash_file(path)[0] == content_hash
    except OSError:
        return False
