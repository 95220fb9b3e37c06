"""The catalog on SQLite and on PostgreSQL, side by side in one run.

    python bench/catalog_backends.py [--model ViT-B-32] [--library 100000] [--insert-rows 1000000]
                                     [--batch 64] [--runs 5] [--rescans 3] [--only rescan,query,insert]
                                     [--json]

Starts a throwaway PostgreSQL cluster of its own (initdb into a temp folder; as root through `runuser -u
postgres`, since initdb refuses root) on a free port of 127.0.0.1, with password login over TCP as a user of a
NAS connects, and the server's durability settings left at their defaults: fsync, synchronous_commit and
full_page_writes ON, so every commit waits for its WAL flush as a real server's does. SQLite runs as
imgsearch sets it up (WAL, synchronous=NORMAL). Both databases live on the same disk. Then, each row on both
backends in the same run, alternating:

  rescan   LIBRARY small files on disk (folders of 1,000, as bench/rescan.py) and a catalog of LIBRARY rows
           that records their size and mtime (written in bulk, clustered vectors, nothing encoded), one per
           backend; `imgsearch index` as a new process, one warm-up each, then 3 timed runs alternated.
  query    the same libraries: `imgsearch query TEXT` as a new process (the connect and the psycopg import
           included), with the ONNX text export made beforehand as after a real index run (the background
           exporter, waited for, in a cache of this run's own), so torch is not loaded; one warm-up each,
           then RUNS alternated. Then the same query's calls one by one in new processes (cold_query's
           breakdown), which also records whether torch and psycopg were imported.
  insert   a first index of INSERT_ROWS rows through the real write path, with synthetic 512-d float32
           unit vectors (bench/common.py `embeddings`, made outside the timing): the writer's lock taken as
           Writer takes it, then Catalog.write() transactions of BATCH add_image calls each (the model set
           in the first, note_numerics in every one, as Indexer._store does) and VectorIndex.apply after each
           commit (Indexer._follow); at the end fit() (trains IVF-Flat from imgsearch.store.ann's threshold)
           and save(), as Writer._update does. Both catalogs are filled at once, in alternating segments of
           rows, so that other load on the machine falls on both alike.
  bytes    after the insert: Catalog.size_bytes() (SQLite file + WAL; PostgreSQL pg_total_relation_size of
           the catalog's tables, heap + TOAST + indexes, split out below), and the FAISS file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_query import BREAKDOWN  # a cold text query's calls one by one, and the heavy modules it imported
from common import embeddings, imgsearch_command, make_model, run_timed, synthetic_path

BACKENDS = ("sqlite", "postgresql")
TEXT = "a red apple on a table"
#: Rows each backend takes in turn during the insert: both catalogs grow side by side.
SEGMENT_ROWS = 20_000
#: What the insert row's catalog records (no model is loaded for it).
INSERT_MODEL_ID, INSERT_DIM = "ViT-B-32:laion2b_s34b_b79k", 512
#: Server settings the report names; the cluster's own values are read back, not assumed.
SHOWN_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes", "wal_level",
                  "shared_buffers", "max_wal_size", "checkpoint_timeout")  # fmt: skip


# -- a PostgreSQL cluster of this run's own ------------------------------------------------------------------
class Cluster:
    """initdb + pg_ctl in a temp folder; password login over TCP on 127.0.0.1, fsync on."""

    USER = "imgsearch"

    def __init__(self, bindir: Path):
        self.bindir = bindir
        # in the system temp folder (the same disk as the work folder here), which the postgres user can enter
        self.root = Path(tempfile.mkdtemp(prefix="imgsearch-bench-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.password = "pw-" + secrets.token_hex(8)
        self.port = 0
        self.as_root = os.geteuid() == 0

    @classmethod
    def find(cls) -> Cluster | None:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3] != "15")
        return cls(found[0].parent) if found else None

    def _run(self, tool: str, *args: str) -> str:
        command = [str(self.bindir / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-2000:] if tool == "pg_ctl" else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()} {log}")
        return done.stdout

    def start(self) -> None:
        for folder in (self.data, self.sockets):
            folder.mkdir(mode=0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            import pwd

            owner = pwd.getpwnam("postgres")
            for path in (self.root, self.data, self.sockets, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", self.USER, f"--pwfile={pwfile}",
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-locale")  # fmt: skip
        pwfile.unlink()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
        log = str(self.root / "server.log")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", log, "-o", options)

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(host=str(self.sockets), port=self.port, user=self.USER, dbname=dbname,
                             autocommit=True) as conn:  # fmt: skip
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str) -> str:
        self.sql(f"CREATE DATABASE {name}")
        return f"postgresql://{self.USER}:{self.password}@127.0.0.1:{self.port}/{name}"

    def settings(self) -> dict[str, str]:
        return {name: str(self.sql(f"SHOW {name}")[0][0]) for name in SHOWN_SETTINGS}

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))
        shutil.rmtree(self.root, ignore_errors=True)


# -- libraries -----------------------------------------------------------------------------------------------
def open_catalog(db: str | None, home: Path) -> Any:
    from imgsearch.store.catalog import Catalog, Database

    return Catalog.open(Database.parse(db, home), create=True)


def fill_library(db: str | None, home: Path, model_id: str, dim: int, root: Path, count: int) -> None:
    """As common.synthetic_library(on_disk=True), into either backend: COUNT rows for the files under `root`
    (their stat recorded), written in bulk (setup, not measured), then the FAISS file as `index` leaves it."""
    from imgsearch.store.catalog import Content, _content_values
    from imgsearch.store.schema import images
    from imgsearch.store.vectors import VectorIndex

    rng = np.random.default_rng(1)
    catalog = open_catalog(db, home)
    try:
        with catalog.write() as w:
            w.set_model(model_id, dim)
            w.add_root(os.fsencode(root))
        for start in range(0, count, 20_000):
            n = min(20_000, count - start)
            vectors = embeddings(n, rng, dim)
            rows = []
            for i in range(n):
                path = os.fsencode(synthetic_path(root, start + i))
                st = os.stat(path)
                content = Content(1024, 768, "JPEG", 1_500_000_000.0 + (start + i) * 60, vectors[i].tobytes())
                digest = hashlib.blake2b(path, digest_size=16).digest()
                rows.append({"path": path, **_content_values(st.st_size, st.st_mtime_ns, digest, content)})
            with catalog.write() as w:
                w.conn.execute(images.insert(), rows)
                w._bump_vectors_version()
        folder = catalog.local_folder(home)
        vectors_index = VectorIndex.load_or_rebuild(catalog, folder, dim)
        if vectors_index.fit():
            vectors_index.save(folder)
    finally:
        catalog.close()


def make_files(root: Path, count: int) -> None:
    for number in range(count):
        path = synthetic_path(root, number)
        if number % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8")


def alternated(
    commands: dict[str, tuple[list[str], dict[str, str]]], runs: int, warm_up: bool = True
) -> dict[str, list[tuple]]:
    """Each backend's command once untimed (page cache, connections; unless done already), then RUNS of
    each, alternating (the first backend first in odd rounds, second first in even ones); every run_timed
    result."""
    for command, env in commands.values() if warm_up else ():
        run_timed(command, env)
    out: dict[str, list[tuple]] = {name: [] for name in commands}
    names = list(commands)
    for k in range(runs):
        for name in names if k % 2 == 0 else names[::-1]:
            command, env = commands[name]
            out[name].append(run_timed(command, env))
    return out


def breakdown(env: dict[str, str], runs: int) -> dict[str, Any]:
    measured = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", BREAKDOWN, TEXT], env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"breakdown failed: {done.stderr[-2000:]}")
        measured.append(json.loads(done.stderr.strip().splitlines()[-1]))
    steps = {
        k: statistics.median(m[k] for m in measured)
        for k, v in measured[0].items()
        if not isinstance(v, bool)
    }
    flags = {k: any(m[k] for m in measured) for k, v in measured[0].items() if isinstance(v, bool)}
    return {**steps, **flags}


# -- the insert row ------------------------------------------------------------------------------------------
class Filling:
    """One backend's first index, written through the writer's own calls, a segment at a time."""

    def __init__(self, db: str | None, home: Path, root: Path, batch: int):
        from imgsearch.store.vectors import VectorIndex

        self.home, self.root, self.batch = home, root, batch
        self.catalog = open_catalog(db, home)
        # as Writer._writing takes it: on a server, writes then go through the session that holds it
        self.lock = self.catalog.write_lock()
        self.vectors = VectorIndex(INSERT_DIM)
        self.rows = 0
        self.wall = self.cpu = 0.0
        self.segments: list[float] = []  # rows/s of each segment

    def add(self, start: int, vectors: np.ndarray) -> None:
        from imgsearch.store.catalog import Content

        # everything but the catalog's and FAISS's work is prepared before the clock starts
        items = []
        for i in range(len(vectors)):
            number = start + i
            path = os.fsencode(synthetic_path(self.root, number))
            digest = hashlib.blake2b(path, digest_size=16).digest()
            content = Content(1024, 768, "JPEG", 1_500_000_000.0 + number * 60, vectors[i].tobytes())
            items.append((path, 1_000_000 + number, 1_600_000_000_000_000_000 + number, digest, content))
        wall, cpu = time.perf_counter(), time.process_time()
        for b in range(0, len(items), self.batch):
            with self.catalog.write() as w:  # Indexer._store
                if self.rows == 0 and b == 0:
                    w.set_model(INSERT_MODEL_ID, INSERT_DIM)
                w.note_numerics("fp32")
                for path, size, mtime_ns, digest, content in items[b : b + self.batch]:
                    w.add_image(path, size, mtime_ns, digest, content)
            if w.changes and w.version is not None:  # Indexer._follow
                self.vectors.apply(w.changes, w.version)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.rows += len(items)
        self.wall += wall
        self.cpu += cpu
        self.segments.append(len(items) / wall)

    def finish(self) -> dict[str, Any]:
        """fit + save as Writer._update ends, then what it all takes on disk; closes the catalog."""
        try:
            started = time.perf_counter()
            todo = self.vectors.fit()
            fit_s = time.perf_counter() - started
            started = time.perf_counter()
            saved = self.vectors.save(self.catalog.local_folder(self.home))
            save_s = time.perf_counter() - started
            result = {
                "rows": self.rows,
                "insert_s": self.wall,
                "rows_per_s": self.rows / self.wall,
                "client_cpu_ms_per_row": self.cpu / self.rows * 1000,
                "segments_rows_per_s": self.segments,
                "fit": todo,
                "faiss": self.vectors.describe(),
                "fit_s": fit_s,
                "save_s": save_s,
                "total_s": self.wall + fit_s + save_s,
                "catalog_bytes": self.catalog.size_bytes(),
                "faiss_bytes": saved.stat().st_size,
                "count": self.catalog.count(),
            }
            result["parts"] = self._parts()
            return result
        finally:
            self.lock.release()
            self.catalog.close()

    def _parts(self) -> dict[str, int]:
        """Where the catalog's bytes are: SQLite's file and WAL, or images' heap, TOAST and indexes."""
        if self.catalog.path is not None:
            wal = Path(f"{self.catalog.path}-wal")
            return {
                "file": self.catalog.path.stat().st_size,
                "wal": wal.stat().st_size if wal.exists() else 0,
            }
        queries = {
            "images heap": "pg_relation_size('images')",
            "images TOAST": "pg_total_relation_size("
            "(SELECT reltoastrelid FROM pg_class WHERE relname = 'images'))",
            "images indexes": "pg_indexes_size('images')",
            "vector bytes stored (pg_column_size)": "(SELECT sum(pg_column_size(vector)) FROM images)",
        }
        with self.catalog._read() as conn:
            return {
                name: int(conn.exec_driver_sql(f"SELECT {q}").scalar_one() or 0)
                for name, q in queries.items()
            }


def insert_rows(dbs: dict[str, str | None], work: Path, rows: int, batch: int) -> dict[str, Any]:
    fillings = {
        name: Filling(db, work / f"insert-{name}", work / "insert-photos", batch) for name, db in dbs.items()
    }
    rng = np.random.default_rng(2)
    names = list(fillings)
    for k, start in enumerate(range(0, rows, SEGMENT_ROWS)):
        vectors = embeddings(min(SEGMENT_ROWS, rows - start), rng, INSERT_DIM)
        for name in names if k % 2 == 0 else names[::-1]:
            fillings[name].add(start, vectors)
            print(f"insert {name}: {fillings[name].rows:,} rows, {fillings[name].segments[-1]:,.0f} rows/s",
                  file=sys.stderr, flush=True)  # fmt: skip
    return {name: filling.finish() for name, filling in fillings.items()}


# -- the run -------------------------------------------------------------------------------------------------
def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cpu_line() -> str:
    from imgsearch.model.numerics import describe_cpu

    return f"{os.cpu_count()}-core {describe_cpu()}"


ROWS = ("rescan", "query", "insert")


def measure(
    model: str,
    library: int,
    insert: int,
    batch: int,
    runs: int,
    rescan_runs: int,
    work: Path,
    rows: Sequence[str] = ROWS,
) -> dict[str, Any]:
    from imgsearch.model import exporter
    from imgsearch.model.specs import parse_model_spec

    result: dict[str, Any] = {
        "uptime_before": uptime(),
        "cpu": cpu_line(),
        "python": platform.python_version(),
        "library": library,
        "insert_rows": insert,
        "batch": batch,
        "runs": runs,
        "rescan_runs": rescan_runs,
        "load": {},  # os.getloadavg() as each row starts
    }
    started = time.perf_counter()
    cluster = Cluster.find()
    result["postgresql"] = None if cluster is None else "installed"
    try:
        backends: dict[str, str | None] = {"sqlite": None}
        if cluster is not None:
            cluster.start()
            result["server"] = cluster.settings()
            backends["postgresql"] = "library"
        os.environ["IMGSEARCH_CACHE"] = str(work / "cache")
        # the 100k library on both backends, for the rescan and the query
        root = work / "photos"
        dbs: dict[str, str | None] = {}
        if "rescan" in rows or "query" in rows:
            spec = make_model(model, work / "model")
            model_spec = parse_model_spec(spec)
            config = json.loads((Path(spec.removeprefix("local-dir:")) / "open_clip_config.json").read_text())
            dim = config["model_cfg"]["embed_dim"]
            make_files(root, library)
            for name in backends:
                dbs[name] = (
                    None if cluster is None or name == "sqlite" else cluster.create_database("library")
                )
                fill_library(dbs[name], work / f"home-{name}", model_spec.id, dim, root, library)
        base = {k: v for k, v in os.environ.items() if k not in ("IMGSEARCH_MODEL", "IMGSEARCH_DB")}
        envs = {
            name: {
                **base,
                "IMGSEARCH_HOME": str(work / f"home-{name}"),
                **({"IMGSEARCH_DB": db} if db else {}),
            }
            for name, db in dbs.items()
        }
        index = [*imgsearch_command(), "index"]
        result["load"]["rescan"] = os.getloadavg()
        for name, env in envs.items() if "rescan" in rows else ():  # the warm-up; checks nothing is new
            out = run_timed(index, env)[2]
            if f"0 new, 0 changed, 0 moved, 0 copied, {library} unchanged, 0 removed, 0 failed" not in out:
                raise RuntimeError(f"{name}: expected {library} unchanged files and nothing else: {out}")
        rescans = alternated(
            {name: (index, env) for name, env in envs.items()}, rescan_runs if "rescan" in rows else 0, False
        )
        result["rescan"] = {
            name: {
                "median_s": statistics.median(r[0] for r in rs),
                "min_s": min(r[0] for r in rs),
                "walls": [r[0] for r in rs],
                "peak_rss_mb": max(r[1] for r in rs),
            }
            for name, rs in rescans.items()
            if rs
        }

        result["load"]["query"] = os.getloadavg()
        if "query" in rows:
            exporter.request(model_spec)  # the text export, as a real index run asks for it
            exporter.wait(model_spec, timeout=3600)
        query = [*imgsearch_command(), "query", TEXT]
        queries = alternated(
            {name: (query, env) for name, env in envs.items()}, runs if "query" in rows else 0
        )
        result["query"] = {
            name: {
                "median_s": statistics.median(r[0] for r in rs),
                "min_s": min(r[0] for r in rs),
                "walls": [r[0] for r in rs],
                "peak_rss_mb": max(r[1] for r in rs),
                "breakdown": breakdown(envs[name], runs),
            }
            for name, rs in queries.items()
            if rs
        }
        exporter.wait_all(timeout=3600)
        for name in list(dbs):  # room on the disk for the insert
            shutil.rmtree(work / f"home-{name}", ignore_errors=True)
        if cluster is not None and dbs:
            cluster.sql("DROP DATABASE library WITH (FORCE)")
        shutil.rmtree(root, ignore_errors=True)

        result["load"]["insert"] = os.getloadavg()
        if "insert" in rows:
            inserts = {
                name: None if cluster is None or name == "sqlite" else cluster.create_database("inserted")
                for name in backends
            }
            result["insert"] = insert_rows(inserts, work, insert, batch)
        if cluster is not None:
            result["server_log_tail"] = (cluster.root / "server.log").read_text(errors="replace")[-1500:]
    finally:
        if cluster is not None:
            cluster.close()
    result["minutes"] = (time.perf_counter() - started) / 60
    result["uptime_after"] = uptime()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument(
        "--library", type=int, default=100_000, help="files and rows for the rescan and query"
    )
    parser.add_argument("--insert-rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=64, help="add_image calls per write transaction")
    parser.add_argument("--runs", type=int, default=5, help="timed cold queries per backend")
    parser.add_argument("--rescans", type=int, default=3, help="timed re-scans per backend")
    parser.add_argument(
        "--only", default=",".join(ROWS), help=f"comma-separated rows out of {','.join(ROWS)}"
    )
    parser.add_argument("--work", type=Path, help="work folder (default: a temp folder, removed after)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        r = measure(
            args.model,
            args.library,
            args.insert_rows,
            args.batch,
            args.runs,
            args.rescans,
            Path(tmp),
            args.only.split(","),
        )
    if args.json:
        print(json.dumps(r))
        return
    print(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
