"""Indexing on a Ray cluster (`index --ray`): the same catalog as the local path, faults survived, on a
local in-process cluster and on a real two-node cluster of separate `ray start` processes on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.index.events import IndexEvents
from tests import cli_process, index_db
from tests.images import add_photos

ray = pytest.importorskip("ray") if not os.environ.get("IMGSEARCH_REQUIRE_RAY") else __import__("ray")

#: What the catalog holds of a file besides its vector: the same on both paths.
COLUMNS = ("size", "mtime_ns", "content_hash", "width", "height", "format", "taken_at")
RAY_BIN = Path(sys.executable).parent / "ray"
#: The loopback cluster runs without Ray's token authentication, and so must its drivers: an in-process
#: `ray.init` (local_cluster) sets RAY_AUTH_MODE=token in this process, which a fork server started
#: afterwards would pass on.
NO_TOKEN = {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    """One in-process Ray cluster of this machine for the module's in-process runs (3 CPU slots: two
    decode tasks and the encoder actor)."""
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def corpus(folder: Path, count: int = 24) -> Path:
    add_photos(folder, count, "p")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "sub").mkdir()
    shutil.copy(folder / "p-000.jpg", folder / "sub" / "copy-of-0.jpg")  # one content, two files
    return folder


def same_catalog(local: Path, clustered: Path) -> None:
    """The same files with the same metadata, failures and vectors (cos >= 0.9999) in both homes."""
    a, b = index_db.images(local, *COLUMNS, "vector"), index_db.images(clustered, *COLUMNS, "vector")
    assert sorted(a) == sorted(b)
    for path in a:
        assert a[path][:-1] == b[path][:-1], path
        va, vb = a[path][-1], b[path][-1]
        assert float(np.dot(va, vb)) >= 0.9999, path
    assert index_db.failures(local) == index_db.failures(clustered)


def index_both(photos: Path, tmp_path: Path, tiny_model: str, ray_address: str = "auto"):
    reports = []
    for name, address in (("local", None), ("ray", ray_address)):
        library = Library(tmp_path / f"home-{name}", model=tiny_model, precision="fp32")
        reports.append(library.index([photos], ray=address))
    return reports


def counts(report) -> tuple[int, ...]:
    r = report
    return (r.new, r.changed, r.moved, r.copied, r.unchanged, r.removed, r.failed, r.encoded, r.known_bad)


def test_ray_catalog_equals_the_local_one_through_moves_copies_deletes_and_bad_files(
    local_cluster, tmp_path, tiny_model
):
    photos = corpus(tmp_path / "photos")
    local, clustered = index_both(photos, tmp_path, tiny_model)
    assert counts(local) == counts(clustered)
    assert clustered.new == 25 and clustered.failed == 1 and clustered.encoded == 24
    same_catalog(tmp_path / "home-local", tmp_path / "home-ray")

    (photos / "p-001.jpg").rename(photos / "sub" / "moved.jpg")
    shutil.copy(photos / "p-002.jpg", photos / "copied.jpg")
    (photos / "p-003.jpg").unlink()
    (photos / "p-004.jpg").write_bytes(b"")
    add_photos(photos / "new", 5, "n")
    (photos / "new" / "also-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    local, clustered = index_both(photos, tmp_path, tiny_model)
    assert counts(local) == counts(clustered)
    assert (clustered.moved, clustered.copied, clustered.removed) == (1, 1, 1)
    assert clustered.new == 5 and clustered.failed == 2  # the emptied file and the broken PNG
    same_catalog(tmp_path / "home-local", tmp_path / "home-ray")

    again = Library(tmp_path / "home-ray", model=tiny_model, precision="fp32").index([photos], ray="auto")
    assert again.encoded == 0 and again.known_bad == 3  # bad files are not retried until they change


def test_a_file_that_crashes_or_hangs_a_ray_decode_task_costs_only_itself(
    local_cluster, tmp_path, tiny_model
):
    """The block a crash takes down is retried file by file; the culprits are reported, the rest embedded."""
    from imgsearch.index.cluster import RayPipeline
    from imgsearch.index.embedding import Embedded
    from imgsearch.index.indexer import _Job
    from imgsearch.index.scan import FileStat
    from imgsearch.model.specs import parse_model_spec
    from tests.misbehaving_decoder import decode_or_misbehave

    names = [f"good{i}.jpg" for i in range(10)] + ["crash.jpg", "hang.jpg"]
    add_photos(tmp_path / "p", len(names), "x")
    jobs = []
    for i, (name, source) in enumerate(zip(names, sorted((tmp_path / "p").iterdir()), strict=True)):
        source.rename(tmp_path / name)
        jobs.append(_Job(bytes([i]), ((FileStat(os.fsencode(tmp_path / name), 0, 0), None),)))
    pipeline = RayPipeline(
        "auto",
        parse_model_spec(tiny_model),
        "cpu",
        "fp32",
        [os.fsencode(tmp_path)],
        limit=2,
        decode=decode_or_misbehave,
    )
    assert pipeline.prepare(len(jobs)) == 32
    started = time.monotonic()
    results = {os.path.basename(job.path).decode(): result for job, result in pipeline.embed(jobs)}
    assert time.monotonic() - started < 120
    assert sorted(results) == sorted(names)  # each file once
    assert all(isinstance(results[n], Embedded) for n in names if n.startswith("good"))
    for bad in ("crash.jpg", "hang.jpg"):
        assert results[bad] == "the decoder crashed or ran over 2 s on this file"


def _actor_processes() -> list[int]:
    """PIDs of this machine's Ray Data encoder actors (Ray names its worker processes after their actor)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if title.startswith(b"ray::MapWorker") and b"_Embedder" in title:
                found.append(int(pid))
    return found


def test_an_actor_killed_mid_run_loses_nothing_and_stores_nothing_twice(
    local_cluster, tmp_path, tiny_model, monkeypatch
):
    import imgsearch.index.cluster as cluster

    monkeypatch.setattr(cluster, "COMMIT_EVERY", 4)
    photos = tmp_path / "photos"
    add_photos(photos, 40, "k")
    killed: list[int] = []

    class KillTheActorAfterTheFirstCommit(IndexEvents):
        def advance(self, n: int = 1) -> None:
            if not killed:
                for pid in _actor_processes():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    library = Library(tmp_path / "home-ray", model=tiny_model, precision="fp32")
    report = library.index([photos], events=KillTheActorAfterTheFirstCommit(), ray="auto")
    assert killed, "no actor was found to kill"
    assert report.new == 40 and report.failed == 0 and report.encoded == 40
    local = Library(tmp_path / "home-local", model=tiny_model, precision="fp32").index([photos])
    assert local.new == 40
    same_catalog(tmp_path / "home-local", tmp_path / "home-ray")


def test_without_ray_nothing_imports_it(tmp_path, tiny_model):
    """`index` without --ray, `--help`, `query` and `status` never import Ray."""
    photos = tmp_path / "photos"
    add_photos(photos, 3, "q")
    env = {**os.environ, "IMGSEARCH_HOME": str(tmp_path / "home")}
    code = (
        "import sys\n"
        "from imgsearch.cli import main\n"
        "try:\n    main(sys.argv[1:], prog_name='imgsearch')\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    for argv in (
        ["index", "--model", tiny_model, str(photos)],
        ["query", "a cat"],
        ["status"],
        ["index", "--help"],
    ):
        done = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stderr[-2000:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_cluster_is_one_line_and_exit_1(tmp_path, tiny_model):
    photos = tmp_path / "photos"
    add_photos(photos, 2, "u")
    env = {**os.environ, "IMGSEARCH_HOME": str(tmp_path / "home")}
    address = f"127.0.0.1:{_free_port()}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "imgsearch", "index", "--model", tiny_model, "--ray", address, str(photos)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"Error: cannot reach the Ray cluster at {address}: "), done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 60


# -- a real two-node cluster: `ray start` processes on loopback ------------------------------------------
@dataclass
class TwoNodes:
    address: str  # the head's
    second: subprocess.Popen  # the second node's `ray start --block`: ending it ends the node


def _ray_start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """`ray start --block ARGS` (the node lives as long as this process), once the node is up."""
    out = log.open("w")
    node = subprocess.Popen(
        [str(RAY_BIN), "start", "--block", "--disable-usage-stats", *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while "Ray runtime started" not in log.read_text():
        assert node.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return node


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> Iterator[TwoNodes]:
    """A head (3 CPUs) and a second node (2 CPUs), separate processes started and stopped here."""
    logs = tmp_path_factory.mktemp("ray-nodes")
    port = _free_port()
    env = {**os.environ, **NO_TOKEN}
    head = _ray_start(
        ["--head", f"--port={port}", "--num-cpus=3", "--include-dashboard=false"], logs / "head", env
    )
    nodes = [head]
    try:
        address = f"127.0.0.1:{port}"
        nodes.append(_ray_start([f"--address={address}", "--num-cpus=2"], logs / "second", env))
        yield TwoNodes(address, nodes[1])
    finally:
        for node in reversed(nodes):
            node.terminate()
            node.wait(60)


def stored(home: Path) -> int:
    """Rows committed so far (0 while the index is still being created)."""
    try:
        return len(index_db.images(home))
    except sqlite3.OperationalError:
        return 0


def driver(tmp_path: Path, tiny_model: str, home: Path, photos: Path, address: str) -> list[str]:
    return [
        "index",
        "--home",
        str(home),
        "--model",
        tiny_model,
        "--precision",
        "fp32",
        "--ray",
        address,
        str(photos),
    ]


def test_a_two_node_cluster_shares_the_work_and_gives_the_local_catalog(two_nodes, tmp_path, tiny_model):
    photos = tmp_path / "photos"
    add_photos(photos, 48, "t")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    home = tmp_path / "home-ray"
    run = cli_process.start(
        driver(tmp_path, tiny_model, home, photos, two_nodes.address), tmp_path / "log", env=NO_TOKEN
    )
    run.join(300)
    log = (tmp_path / "log").read_text()
    assert run.exitcode == 0, log[-3000:]
    assert "decoded on 2 Ray node(s): " in log, log[-3000:]
    assert (
        log.strip()
        .splitlines()[-1]
        .startswith("48 new, 0 changed, 0 moved, 0 copied, 0 unchanged, 0 removed, 1 failed")
    )
    Library(tmp_path / "home-local", model=tiny_model, precision="fp32").index([photos])
    same_catalog(tmp_path / "home-local", home)


def test_a_driver_killed_mid_run_keeps_its_commits_and_the_next_run_resumes(two_nodes, tmp_path, tiny_model):
    photos = tmp_path / "photos"
    add_photos(photos, 140, "d")  # three commits of 64
    home = tmp_path / "home"
    argv = driver(tmp_path, tiny_model, home, photos, two_nodes.address)
    first_commit = ("after a commit, before FAISS follows", 1)
    process = cli_process.start(argv, tmp_path / "log", first_commit, env=NO_TOKEN)
    process.join(300)
    assert process.exitcode == -signal.SIGKILL, (tmp_path / "log").read_text()[-3000:]
    kept = len(index_db.images(home))
    assert 0 < kept < 140
    done = cli_process.start(argv, tmp_path / "log2", env=NO_TOKEN)
    done.join(300)
    log = (tmp_path / "log2").read_text()
    assert done.exitcode == 0, log[-3000:]
    assert log.strip().splitlines()[-1].startswith(f"{140 - kept} new, 0 changed"), log[-3000:]
    Library(tmp_path / "home-local", model=tiny_model, precision="fp32").index([photos])
    same_catalog(tmp_path / "home-local", home)


def test_a_worker_node_lost_mid_run_costs_nothing(two_nodes, tmp_path, tiny_model):
    """The second node ends while the driver waits at its first commit: its tasks and actor are retried on
    the head, and every file is stored once. (Last: it ends the module's second node.)"""
    photos = tmp_path / "photos"
    add_photos(photos, 140, "n")
    home = tmp_path / "home"
    release = tmp_path / "release"
    held = ("after a commit, before FAISS follows", 1, release)
    run = cli_process.start(
        driver(tmp_path, tiny_model, home, photos, two_nodes.address),
        tmp_path / "log",
        hold=held,
        env=NO_TOKEN,
    )
    deadline = time.monotonic() + 300
    while not stored(home):
        assert run.is_alive() and time.monotonic() < deadline, (tmp_path / "log").read_text()[-3000:]
        time.sleep(0.2)
    two_nodes.second.terminate()  # `ray start --block` ends its node: raylet, workers, the actor
    two_nodes.second.wait(60)
    release.touch()
    run.join(300)
    log = (tmp_path / "log").read_text()
    assert run.exitcode == 0, log[-3000:]
    assert log.strip().splitlines()[-1].startswith("140 new, 0 changed"), log[-3000:]
    assert len(index_db.images(home)) == 140


def test_a_model_that_will_not_load_on_the_cluster_says_so_as_locally(
    local_cluster, tmp_path, tiny_model_dir
):
    """Weights that do not load on a worker give the local path's message, and no file is marked bad."""
    from imgsearch.errors import ModelUnavailable

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "open_clip_model.safetensors").write_bytes(b"not safetensors")
    photos = tmp_path / "photos"
    add_photos(photos, 3, "m")
    messages = []
    for name, address in (("local", None), ("ray", "auto")):
        library = Library(tmp_path / f"home-{name}", model=f"local-dir:{broken}", precision="fp32")
        with pytest.raises(ModelUnavailable) as raised:
            library.index([photos], ray=address)
        messages.append(str(raised.value))
        assert not index_db.failures(tmp_path / f"home-{name}")
    assert messages[0] == messages[1]
