"""Embedding on a Ray cluster: decode as Ray Data CPU tasks, embed in an actor pool, one model per actor.

Ray Data streams the decode tasks' model-sized pixels into the actors and the vectors back to the driver
(this process), which commits them as the local path does; its backpressure keeps the object store from
filling faster than the actors drain it. Workers read the files at the driver's paths (shared storage) and
load the model from the same spec (a local-dir folder on shared storage, or each node's hub cache).

Crashes are handled as locally (imgsearch.index.workers): a file that kills or hangs its decode task takes
that task's block with it; Ray retries the block once (which also covers a lost node or actor), then gives
it up. The files of given-up blocks are decoded again one per block, so a second loss names the culprit,
which is reported as a bad file; the innocent ones are embedded as usual.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import ClusterUnavailable, ImgsearchError, UsageError
from ..model.preprocess import Preprocess
from ..model.specs import ModelSpec
from .decode import HASH_SIZE, DecodedImage
from .embedding import Embedded, Result
from .workers import DECODE_TIME_LIMIT_S, Job, crash_reason, decode_job, guarded

RAY_MISSING = "indexing on a cluster needs Ray: pip install 'imgsearch[ray]'"
#: Files per decode task in the first pass (the given-up ones are retried one per task).
DECODE_BATCH = 8
#: Vectors per committed batch; the driver's commit rate caps what any cluster can feed it.
COMMIT_EVERY = 64
#: Ray retries a lost decode task or actor call this many times before the block is given up.
RETRIES = 1

#: Encoder actors that may die while starting, one after another, before the run gives up.
ACTOR_START_DEATHS = 3

_OK, _FAILED, _VANISHED, _ENCODER_FAILED = 0, 1, 2, 3


class RayPipeline:
    """The Pipeline (imgsearch.index.embedding) of `imgsearch index --ray ADDRESS`.

    `address` is "local" (a cluster of this machine, started here and stopped at the end), "auto" (the
    cluster RAY_ADDRESS names or `ray start` made on this machine, else a local one) or HOST:PORT of a
    head node. `device` and `precision` are asked of
    every actor: an actor holds a GPU where the cluster has them (device "auto" or "cuda"), else the CPUs.
    """

    def __init__(
        self,
        address: str,
        spec: ModelSpec,
        device: str,
        precision: str,
        roots: Sequence[bytes],
        workers: int | None = None,
        limit: int = DECODE_TIME_LIMIT_S,
        decode: Callable[[bytes, Preprocess], DecodedImage | str | None] = decode_job,
    ):
        self.address = address
        self.spec = spec
        self.device = device
        self.precision = precision
        self.roots = list(roots)
        self.workers = workers
        self.limit = limit
        self.decode = decode  # as imgsearch.index.workers.decode_all takes it (tests inject faults)
        self.work_by_node: dict[str, int] = {}  # files decoded on each node (IP/node id)
        self.engine = "torch on Ray actors"
        self._prep: Preprocess | None = None

    @property
    def commit_every(self) -> int:
        return COMMIT_EVERY

    def prepare(self, count: int) -> int:
        """Join (or start) the cluster, check that every node sees the roots, and describe the model (its
        actors embed with torch, whatever `count`)."""
        ray = _import_ray()
        self._connect(ray)
        self._check_roots(ray)
        self._actors = self._actor_plan(ray)
        try:
            self._prep, dim = ray.get(ray.remote(_describe_model).options(num_cpus=1).remote(self.spec))
        except ray.exceptions.RayTaskError as e:
            raise _cause(e) from None
        return dim

    def embed(self, jobs: Sequence[Job]) -> Iterator[tuple[Job, Result]]:
        ray = _import_ray()
        left = dict(enumerate(jobs))
        for per_task in (DECODE_BATCH, 1):
            if not left:
                return
            for k, result in self._run(ray, left, per_task):
                if k in left:  # a block Ray ran twice (a retry after a lost node) yields its files once
                    yield left.pop(k), result
        _ping(ray)  # files of blocks given up twice are bad, unless the cluster itself is gone
        for job in left.values():
            yield job, crash_reason(self.limit)

    def close(self) -> None:
        """A cluster this process started stays up for its next run (Ray stops it when the process
        ends): Ray Data keeps process-wide handles that a second cluster in one process would not know."""

    # -- the dataset ---------------------------------------------------------------------------------------
    def _run(self, ray: Any, jobs: dict[int, Job], per_task: int) -> Iterator[tuple[int, Result]]:
        try:
            with _ray_quiet():
                for batch in self._dataset(ray, jobs, per_task).iter_batches(
                    batch_size=None, batch_format="numpy"
                ):
                    yield from self._results(batch)
        except ImgsearchError:
            raise
        except Exception as e:
            raise ClusterUnavailable(
                f"lost the Ray cluster at {self.address} ({_one_line(e)}); the work committed so far is "
                "kept and the next run resumes"
            ) from None

    def _dataset(self, ray: Any, jobs: dict[int, Job], per_task: int) -> Any:
        """Paths -> decode tasks (`per_task` files each) -> the actor pool -> vectors and metadata."""
        import ray.data
        from ray.util.annotations import RayDeprecationWarning

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.max_errored_blocks = -1  # a given-up block is retried file by file (see embed)
        # An actor lost while it starts (its node gone, or cancelled by Ray Data as the run ends) is
        # replaced rather than failing the run; a model that will not load fails in prepare() already.
        context.max_consecutive_actor_init_deaths = ACTOR_START_DEATHS
        items = [{"k": k, "path": job.path} for k, job in jobs.items()]
        gpus, count = self._actors
        data = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / per_task)))
        with warnings.catch_warnings():
            # Ray Data retries a lost task forever unless told; the only way to say so, `ray_remote_args`,
            # is deprecated since 2.60 with no replacement yet (pyproject keeps Ray below 2.64).
            warnings.simplefilter("ignore", RayDeprecationWarning)
            data = data.map_batches(
                _decode_batch,
                batch_size=per_task,
                fn_kwargs={"prep": self._prep, "limit": self.limit, "decode": self.decode},
                num_cpus=1,
                max_retries=RETRIES,
            )
            return data.map_batches(
                _Embedder,
                fn_constructor_kwargs={
                    "spec": self.spec,
                    "device": "cuda" if gpus else "cpu",
                    "precision": self.precision,
                },
                batch_size=16 if not gpus else 64,  # the local encoder's batches (imgsearch.model.encoder)
                compute=ray.data.ActorPoolStrategy(size=count),
                num_gpus=1 if gpus else 0,
                num_cpus=1,
                max_restarts=-1,  # a killed actor comes back; its batch is retried up to RETRIES times
                max_task_retries=RETRIES,
                scheduling_strategy="SPREAD",
            )

    def _results(self, batch: dict[str, np.ndarray]) -> Iterator[tuple[int, Result]]:
        for row in range(len(batch["k"])):
            status, k = int(batch["status"][row]), int(batch["k"][row])
            if status == _ENCODER_FAILED:
                raise ImgsearchError(f"the model failed on a Ray actor: {batch['reason'][row]}")
            node = str(batch["node"][row])
            self.work_by_node[node] = self.work_by_node.get(node, 0) + 1
            if status == _VANISHED:
                yield k, None
            elif status == _FAILED:
                yield k, str(batch["reason"][row])
            else:
                taken_at = float(batch["taken_at"][row])
                yield (
                    k,
                    Embedded(
                        vector=np.asarray(batch["vector"][row], dtype=np.float32),
                        precision=str(batch["precision"][row]),
                        width=int(batch["width"][row]),
                        height=int(batch["height"][row]),
                        format=str(batch["format"][row]),
                        taken_at=None if math.isnan(taken_at) else taken_at,
                        size=int(batch["size"][row]),
                        mtime_ns=int(batch["mtime_ns"][row]),
                        content_hash=bytes(batch["content_hash"][row]),
                    ),
                )

    # -- the cluster ---------------------------------------------------------------------------------------
    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():  # a caller (a notebook, a test) connected already: use its cluster
            return
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
        try:
            if self.address == "auto":
                try:
                    ray.init(address="auto", **options)  # RAY_ADDRESS, or a `ray start` on this machine
                except ConnectionError:
                    self._start_local(ray, options)
            elif self.address == "local":
                self._start_local(ray, options)
            else:
                _reachable(self.address)  # Ray itself retries an unreachable head for minutes
                ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as e:
            reason = _one_line(e)
            raise ClusterUnavailable(f"cannot reach the Ray cluster at {self.address}: {reason}") from None

    def _start_local(self, ray: Any, options: dict[str, Any]) -> None:
        # one slot per core for decode tasks and one for the CPU encoder, as the local path runs it
        cores = self.workers or os.cpu_count() or 1
        ray.init(address="local", num_cpus=cores + 1, **options)  # new, whatever `ray start` left behind

    def _check_roots(self, ray: Any) -> None:
        """Workers read files where this process sees them: every node must see every root."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        checks = [
            ray.remote(_missing)
            .options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(self.roots)
            for n in nodes
        ]
        for node, missing in zip(nodes, ray.get(checks), strict=True):
            if missing:
                raise ClusterUnavailable(
                    f"Ray node {node.get('NodeManagerAddress', node['NodeID'])} cannot see "
                    f"{os.fsdecode(missing[0])}: workers read the files at this machine's paths, so mount "
                    "the photos at the same place on every node"
                )

    def _actor_plan(self, ray: Any) -> tuple[bool, int]:
        """(on GPUs, how many actors): one per GPU where the cluster has GPUs, else one per node."""
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if self.device == "cuda" and not gpus:
            raise UsageError("--device cuda: the Ray cluster has no GPU")
        if gpus and self.device in ("auto", "cuda"):
            return True, gpus
        if self.device not in ("auto", "cpu"):
            raise UsageError(f"--device {self.device} is not offered on a Ray cluster; use cuda or cpu")
        return False, max(1, sum(1 for n in ray.nodes() if n.get("Alive")))


# -- what runs on the cluster ------------------------------------------------------------------------------
def _decode_batch(
    batch: dict[str, np.ndarray],
    prep: Preprocess,
    limit: int,
    decode: Callable[[bytes, Preprocess], DecodedImage | str | None],
) -> dict[str, np.ndarray]:
    """A Ray task: decode the batch's files (each under the time limit) into model-sized pixels."""
    import ray

    from .raw import silence_libraw

    silence_libraw()
    n = len(batch["k"])
    out: dict[str, Any] = {
        "k": batch["k"],
        "status": np.zeros(n, np.int8),
        "reason": np.full(n, "", dtype=object),
        "pixels": np.zeros((n, prep.height, prep.width, 3), np.uint8),
        "width": np.zeros(n, np.int64),
        "height": np.zeros(n, np.int64),
        "format": np.full(n, "", dtype=object),
        "taken_at": np.full(n, np.nan),
        "size": np.zeros(n, np.int64),
        "mtime_ns": np.zeros(n, np.int64),
        "content_hash": np.zeros((n, HASH_SIZE), np.uint8),
        "node": np.full(n, _node_name(ray), dtype=object),
    }
    for row, path in enumerate(batch["path"]):
        result = guarded(decode, bytes(path), prep, limit)
        if result is None:
            out["status"][row] = _VANISHED
        elif isinstance(result, str):
            out["status"][row], out["reason"][row] = _FAILED, result
        else:
            _put(out, row, result)
    return out


def _node_name(ray: Any) -> str:
    """IP/node id prefix: nodes that share a machine share an IP."""
    return f"{ray.util.get_node_ip_address()}/{ray.get_runtime_context().get_node_id()[:8]}"


def _put(out: dict[str, Any], row: int, d: DecodedImage) -> None:
    out["pixels"][row] = d.pixels
    out["width"][row], out["height"][row], out["format"][row] = d.width, d.height, d.format
    out["taken_at"][row] = np.nan if d.taken_at is None else d.taken_at
    out["size"][row], out["mtime_ns"][row] = d.size, d.mtime_ns
    out["content_hash"][row] = np.frombuffer(d.content_hash, np.uint8)


class _Embedder:
    """A Ray actor holding one model: pixels in, unit vectors out (the pixels are dropped on the way)."""

    def __init__(self, spec: ModelSpec, device: str, precision: str):
        from ..model.encoder import Encoder

        if device == "cpu":  # Ray limits a task's threads to its CPUs; the encoder uses the node, as locally
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        self.encoder = Encoder.load(spec, device, precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {key: value for key, value in batch.items() if key != "pixels"}
        n, ok = len(batch["k"]), batch["status"] == _OK
        vectors = np.zeros((n, self.encoder.dim), np.float32)
        try:
            if ok.any():
                vectors[ok] = self.encoder.embed_pixels(batch["pixels"][ok])
        except Exception as e:  # not the files' fault: the run stops (see RayPipeline._results)
            out["status"] = np.where(ok, _ENCODER_FAILED, batch["status"]).astype(np.int8)
            out["reason"] = np.full(n, _one_line(e), dtype=object)
        out["vector"] = vectors
        out["precision"] = np.full(n, self.encoder.runtime.precision, dtype=object)
        return out


def _describe_model(spec: ModelSpec) -> tuple[Preprocess, int]:
    from ..model.encoder import Encoder

    encoder = Encoder.load(spec, "cpu", "fp32")
    return encoder.preprocess, encoder.dim


def _missing(roots: list[bytes]) -> list[bytes]:
    return [root for root in roots if not os.path.isdir(root)]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Raise ConnectionError unless the head at `address` ([ray://]HOST[:PORT]) accepts a connection."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        host, port = address.removeprefix("ray://"), "6379"  # Ray's default GCS port
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout).close()
    except OSError as e:
        raise ConnectionError(e.strerror or str(e)) from None


def _ping(ray: Any) -> None:
    try:
        ray.get(ray.remote(_missing).options(num_cpus=0).remote([]), timeout=60)
    except Exception as e:
        reason = _one_line(e)
        message = f"lost the Ray cluster ({reason}); the work committed so far is kept"
        raise ClusterUnavailable(message) from None


def _cause(error: Any) -> Exception:
    """The library error a Ray task raised (a model that will not load says why), else one line."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, ImgsearchError):
        return cause
    return ClusterUnavailable(f"a Ray task failed: {_one_line(cause or error)}")


def _one_line(error: BaseException | str) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


class _ray_quiet:
    """Ray Data logs every given-up block with a traceback; the run reports the files itself."""

    def __enter__(self) -> None:
        self.logger = logging.getLogger("ray.data")
        self.level = self.logger.level
        self.logger.setLevel(logging.CRITICAL)

    def __exit__(self, *exc: object) -> None:
        self.logger.setLevel(self.level)
