"""From new content to vectors: what an index run asks of a pipeline, and the local one.

The local pipeline decodes in worker processes (imgsearch.index.workers) and embeds in this process, in the
encoder's batches. The Ray pipeline (imgsearch.index.cluster) yields the same results from a cluster. Either
way the Indexer plans and commits, so one writer owns the catalog whatever does the work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .decode import DecodedImage
from .workers import DecodePool, Job, decode_all

if TYPE_CHECKING:
    from ..model.encoder import Encoder
    from ..model.engine import Engine
    from ..model.onnx_image import OnnxImage

    ImageEncoder = Encoder | OnnxImage


@dataclass
class Embedded:
    """The vector of one decoded file, what decoding learned of the file, and the numerics it was made in."""

    vector: np.ndarray  # float32 unit vector
    precision: str
    width: int
    height: int
    format: str
    taken_at: float | None
    size: int  # of the file as read
    mtime_ns: int
    content_hash: bytes

    @classmethod
    def of(cls, decoded: DecodedImage, vector: np.ndarray, precision: str) -> Embedded:
        d = decoded
        return cls(
            vector, precision, d.width, d.height, d.format, d.taken_at, d.size, d.mtime_ns, d.content_hash
        )


#: A run of few new files starts one decode worker per this many files (at most one per core).
FILES_PER_WORKER = 4

#: What a pipeline yields for a job: its vector, a one-line failure reason, or None (the file vanished).
Result = Embedded | str | None


class Pipeline(Protocol):
    #: Files decoded on each node of a cluster (empty for the local pipeline: all of them here).
    work_by_node: dict[str, int]
    #: How the images were embedded, and why so (for `index -v`); set by prepare.
    engine: str

    def prepare(self, count: int) -> int:
        """Load what embedding `count` images needs (the model, a cluster); the vector size."""

    @property
    def commit_every(self) -> int:
        """How many vectors make one committed batch."""

    def embed(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Result]]:
        """Every job's result, in any order, each once."""

    def close(self) -> None:
        """Let go of what prepare took (a cluster this run started)."""


class LocalPipeline:
    """Decode in `workers` processes (a number: started for this run; a DecodePool: kept by the caller),
    embed with the engine `choose_engine(count)` gives on prepare: the torch encoder or the ONNX image
    export (imgsearch.model.runtime.ModelRuntime.index_engine). The workers start before the engine loads,
    so that both happen at once."""

    def __init__(
        self, choose_engine: Callable[[int], tuple[ImageEncoder, Engine]], workers: int | DecodePool
    ):
        self.choose_engine = choose_engine
        self._own_pool = isinstance(workers, int)
        self.pool = DecodePool(workers) if isinstance(workers, int) else workers
        self.work_by_node: dict[str, int] = {}
        self.engine = ""
        self._encoder: ImageEncoder | None = None

    @property
    def encoder(self) -> ImageEncoder:
        if self._encoder is None:
            self.prepare(1)
        assert self._encoder is not None
        return self._encoder

    def prepare(self, count: int) -> int:
        if self._own_pool:  # a few files: fewer workers to start (each is a new Python with Pillow)
            self.pool.workers = min(self.pool.workers, -(-count // FILES_PER_WORKER))
        self.pool.start()
        self._encoder, chosen = self.choose_engine(count)
        self.engine = f"{chosen.name} ({chosen.why})" if chosen.why else chosen.name
        return self._encoder.dim

    @property
    def commit_every(self) -> int:
        return self.encoder.batch_size

    def close(self) -> None:
        """The encoder stays with the runtime that loaded it, for the next run and for queries; a pool
        of this run's own ends."""
        if self._own_pool:
            self.pool.close()

    def embed(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Result]]:
        encoder = self.encoder
        decoded: list[tuple[Job, DecodedImage]] = []
        for job, result in decode_all(jobs, encoder.preprocess, self.pool):
            if isinstance(result, DecodedImage):
                decoded.append((job, result))
                if len(decoded) >= encoder.batch_size:
                    yield from self._embed(decoded)
                    decoded = []
            else:
                yield job, result
        yield from self._embed(decoded)

    def _embed(self, decoded: list[tuple[Job, DecodedImage]]) -> Iterator[tuple[Job, Result]]:
        if not decoded:
            return
        encoder = self.encoder
        vectors = encoder.embed_pixels(np.stack([d.pixels for _, d in decoded]))
        for vector, (job, d) in zip(vectors, decoded, strict=True):
            yield job, Embedded.of(d, vector, encoder.precision)
