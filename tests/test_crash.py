"""SIGKILL `imgsearch index` at many moments; after each kill the index must be whole and consistent.

One index and one folder are used throughout. Each round changes the folder (new, changed, deleted, renamed
and copied files), starts `imgsearch index` in a process of its own (see tests/cli_process.py) and kills it
with SIGKILL: half the rounds after a random delay, half at an exact point (hashing, loading the model,
embedding, inside a write transaction, just after a commit, mid FAISS save). After each kill:
- the index opens and answers a query; `PRAGMA integrity_check` is ok;
- every row committed before the kill, as a separate reader saw it, is still there (unless its file has
  left the folder, which the run may have recorded just before the kill);
- every stored vector is the fresh encoding of the bytes its content hash names;
- FAISS agrees with SQLite: a file named for the current version is complete and equal, else the index is
  rebuilt on open;
- the killed process's decoding workers die with it.
Finally an uninterrupted run makes the index equal the folder exactly.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgsearch import Library
from imgsearch.index.decode import decode_file
from imgsearch.model.encoder import Encoder
from imgsearch.model.specs import parse_model_spec
from imgsearch.store.vectors import VectorIndex, vectors_file
from tests import cli_process, index_db
from tests.images import noise_jpeg

pytestmark = pytest.mark.backends

START_FILES = 200
KILLS = 32
SEED = 20260127
#: How often a round reaches a kill point (about 13 new contents, one batch): the n-th call is drawn
#: from these.
CALLS_PER_ROUND = {"hashing": 12, "inside a write transaction": 10, "after a commit, before FAISS follows": 2}


class Photos:
    """A folder of small distinct JPEGs, and every content ever written, by hash."""

    def __init__(self, folder: Path, rng: random.Random):
        self.folder = folder
        self.rng = rng
        self.made = 0
        self.contents: dict[bytes, bytes] = {}
        folder.mkdir()

    def new_bytes(self) -> bytes:
        self.made += 1
        data = noise_jpeg(self.rng.getrandbits(32), resample=Image.Resampling.BILINEAR, quality=85)
        self.contents[index_db.content_hash(data)] = data
        return data

    def files(self) -> list[Path]:
        return sorted(self.folder.rglob("*.jpg"))

    def add(self, count: int) -> None:
        for _ in range(count):
            sub = self.folder / self.rng.choice(["", "a", "b/c"])
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"p{self.made:05d}.jpg").write_bytes(self.new_bytes())

    def mutate(self) -> None:
        """A little of everything an index run must follow."""
        self.add(10)
        files = self.files()
        picked = self.rng.sample(files, 11)
        for path in picked[:3]:
            path.write_bytes(self.new_bytes())  # changed
        for path in picked[3:6]:
            path.unlink()  # deleted
        for path in picked[6:9]:
            path.rename(path.with_name(f"moved-{self.made}-{path.name}"))  # renamed
            self.made += 1
        for path in picked[9:11]:
            shutil.copyfile(path, path.with_name(f"copy-{self.made}-{path.name}"))  # copied
            self.made += 1


class Vectors:
    """Fresh encodings of contents by hash, with the tiny model loaded in this process."""

    def __init__(self, encoder: Encoder, photos: Photos, tmp: Path):
        self.encoder = encoder
        self.photos = photos
        self.tmp = tmp
        self.known: dict[bytes, np.ndarray] = {}

    def of(self, hashes: set[bytes]) -> dict[bytes, np.ndarray]:
        missing = sorted(hashes - set(self.known))
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            pixels = []
            for h in chunk:
                path = self.tmp / "fresh.jpg"
                path.write_bytes(self.photos.contents[h])
                pixels.append(decode_file(path, self.encoder.preprocess).pixels)
            for h, v in zip(chunk, self.encoder.embed_pixels(np.stack(pixels)), strict=True):
                self.known[h] = v
        return {h: self.known[h] for h in hashes}


def rows(home: Path) -> dict[bytes, tuple[int, bytes]]:
    """path -> (id, content hash) as a separate read-only reader sees it now."""
    if not index_db.exists(home):
        return {}
    try:
        return index_db.images(home, "id", "content_hash")
    except index_db.SCHEMA_NOT_THERE:  # the schema is not there yet
        return {}


class Reader(threading.Thread):
    """Keeps the latest committed state a reader could see while a run goes on."""

    def __init__(self, home: Path):
        super().__init__(daemon=True)
        self.home = home
        self.seen: dict[bytes, tuple[int, bytes]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.seen = rows(self.home)
            time.sleep(0.01)


def check_consistent(home: Path, before: dict[bytes, tuple[int, bytes]], vectors: Vectors, library: Library):
    if not index_db.exists(home):  # killed before it made one
        assert not before
        return
    assert index_db.integrity(home) == "ok"
    found = index_db.images(home, "id", "content_hash", "vector") if "images" in index_db.tables(home) else {}
    stored = {i: (p, h, v) for p, (i, h, v) in found.items()}
    after = {p: (i, h) for i, (p, h, _) in stored.items()}
    # A run may rightly drop the rows of files gone from the folder between a reader's look and the kill;
    # a committed row of a file still there must survive.
    lost = {p for p in set(before) - set(after) if os.path.lexists(os.fsdecode(p))}
    assert not lost, f"committed rows lost by the kill: {sorted(lost)[:3]}"
    if not stored:  # killed before its first batch (or mid-migration): the next open finishes the schema
        with index_db.catalog(home):
            return
    fresh = vectors.of({h for _, h, _ in stored.values()})
    for i, (path, h, got) in stored.items():
        assert np.allclose(got, fresh[h], atol=1e-4), f"row {i} {path!r}: vector is not its content's"

    with index_db.catalog(home) as catalog:
        version, dim = catalog.vectors_version(), catalog.model()[1]  # type: ignore[index]
        ids = np.array(sorted(stored), dtype=np.int64)
        local = catalog.local_folder(home)  # the home itself for its own index.db
        saved = vectors_file(local, version)
        if saved.exists():  # the file for the current version is whole and equal, never half written
            import faiss

            index = faiss.read_index(str(saved))
            assert sorted(faiss.vector_to_array(index.id_map)) == list(ids)
        opened = VectorIndex.load_or_rebuild(catalog, local, dim, save=False)
        assert sorted(faiss_ids(opened)) == list(ids)
        for i in ids[:: max(1, len(ids) // 20)]:
            assert np.allclose(opened.index.reconstruct(int(i)), stored[i][2])
    assert len(library.search("a photo", top=5)) == min(5, len(stored))


def faiss_ids(vectors: VectorIndex) -> list[int]:
    import faiss

    return [int(i) for i in faiss.vector_to_array(vectors.index.id_map)]


def test_sigkill_at_random_moments_never_loses_or_corrupts_anything(tiny_model, tmp_path):
    rng = random.Random(SEED)
    photos = Photos(tmp_path / "photos", rng)
    photos.add(START_FILES)
    home = tmp_path / "index"
    log = tmp_path / "index.log"
    encoder = Encoder.load(parse_model_spec(tiny_model), device="cpu", precision="fp32")
    vectors = Vectors(encoder, photos, tmp_path)
    argv = ["index", "-q", "-j", "1", "--home", str(home), "--model", tiny_model, "--device", "cpu"]
    argv += ["--precision", "fp32", str(photos.folder)]
    points = sorted(cli_process.KILL_POINTS)

    killed: list[str] = []
    rounds = 0
    started = time.monotonic()
    while len(killed) < KILLS:
        rounds += 1
        assert rounds <= 3 * KILLS, f"only {len(killed)} kills in {rounds - 1} rounds"
        external = rounds % 2 == 1
        name = points[(rounds // 2 - 1) % len(points)]
        point = None if external else (name, rng.randint(1, CALLS_PER_ROUND.get(name, 1)))
        reader = Reader(home)
        reader.start()
        process = cli_process.start(argv, log, point)
        workers: set[int] = set()
        if external:
            deadline = time.monotonic() + rng.uniform(0.05, 2.5)
            while time.monotonic() < deadline and process.is_alive():
                workers.update(cli_process.children(process.pid))
                time.sleep(0.02)
            with_rows = reader.seen
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
        process.join(60)
        reader.done.set()
        reader.join()
        if not external:
            with_rows = reader.seen
        assert process.exitcode in (0, -signal.SIGKILL), log.read_text(errors="replace")[-3000:]
        if process.exitcode == -signal.SIGKILL:
            killed.append("after a random delay" if external else point[0])  # type: ignore[index]
        deadline = time.monotonic() + 60  # a worker notices only once its own imports are done
        while any(cli_process.alive(w) for w in workers):  # decoding workers end with their process
            assert time.monotonic() < deadline, f"orphaned decoding workers {workers}"
            time.sleep(0.05)
        check_consistent(home, with_rows, vectors, Library(home, encoder=encoder))
        photos.mutate()

    process = cli_process.start(argv, log)  # and now a run that finishes
    process.join(120)
    assert process.exitcode == 0, log.read_text(errors="replace")[-3000:]
    check_consistent(home, {}, vectors, Library(home, encoder=encoder))
    on_disk = index_db.hashes_on_disk(photos.files())
    assert {p: h for p, (_, h) in rows(home).items()} == on_disk  # same paths, same contents: nothing extra
    with index_db.catalog(home) as catalog:
        version, local = catalog.vectors_version(), catalog.local_folder(home)
    assert [p.name for p in local.glob("*.faiss")] == [vectors_file(local, version).name]
    assert not list(local.glob(".vectors-*"))  # temp files of killed saves are cleaned up
    print(
        f"{len(killed)} kills in {rounds} rounds, {time.monotonic() - started:.0f} s: "
        + ", ".join(f"{k} x{killed.count(k)}" for k in sorted(set(killed)))
    )
