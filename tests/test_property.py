"""Property test of the incremental indexer: random create / modify / copy / move / delete sequences on a
folder, with index runs in between; after every run the index equals the folder.

"Equals" means: the same paths; each stored content hash is the file's; each stored vector is the fresh
encoding of the file's bytes by the same model; bad files are recorded as failures, not as images; nothing
extra. The tiny model is real (no stand-in encoder); hypothesis runs derandomized so CI sees the same cases.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from imgsearch import Library
from imgsearch.index.decode import decode_file
from imgsearch.model.encoder import Encoder
from imgsearch.model.specs import parse_model_spec
from tests import index_db
from tests.images import noise_jpeg

pytestmark = pytest.mark.backends

PATHS = ["a.jpg", "b.jpg", "sub/c.jpg", "sub/deep/d.jpg"]
BAD = b"this is not an image, whatever its name says"


def _contents() -> list[bytes]:
    """Distinct small JPEGs of distinct sizes (so equal size and mtime always mean equal bytes), one bad."""
    out: list[bytes] = []
    seed = 0
    while len(out) < 4:
        data = noise_jpeg(seed, blocks=6, size=48, quality=80)
        if all(len(data) != len(c) for c in out):
            out.append(data)
        seed += 1
    return [*out, BAD]


CONTENTS = _contents()

path = st.sampled_from(PATHS)
write = st.tuples(st.just("write"), path, st.integers(0, len(CONTENTS) - 1))  # create or modify
index = st.tuples(st.just("index"))
operation = st.one_of(
    write,
    write,  # twice as likely as the others: most steps make new content
    index,
    st.tuples(st.just("copy"), path, path),
    st.tuples(st.just("move"), path, path),
    st.tuples(st.just("delete"), path),
    st.tuples(st.just("delete folder"), st.sampled_from(["sub", "sub/deep"])),
    index,
)


@pytest.fixture(scope="module")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(parse_model_spec(f"local-dir:{tiny_model_dir}"), device="cpu", precision="fp32")


class Fresh(dict):
    def __repr__(self) -> str:  # hypothesis prints the test's arguments: not 7 JPEGs and their vectors
        return "<fresh vectors>"


@pytest.fixture(scope="module")
def fresh(encoder: Encoder) -> dict[bytes, np.ndarray]:
    """Each good content's vector, encoded alone."""
    out = Fresh()
    with tempfile.TemporaryDirectory() as tmp:
        for data in CONTENTS[:-1]:
            file = Path(tmp) / "x.jpg"
            file.write_bytes(data)
            out[data] = encoder.embed_pixels(decode_file(file, encoder.preprocess).pixels[None].copy())[0]
    return out


def apply(folder: Path, op: tuple) -> None:
    kind, *args = op
    if kind == "write":
        target = folder / args[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(CONTENTS[args[1]])
    elif kind in ("copy", "move"):
        source, target = folder / args[0], folder / args[1]
        if source.is_file() and source != target:
            target.parent.mkdir(parents=True, exist_ok=True)
            if kind == "copy":
                shutil.copyfile(source, target)  # a new file: a new mtime
            else:
                os.replace(source, target)  # keeps its mtime, and may replace a file
    elif kind == "delete":
        with contextlib.suppress(FileNotFoundError):
            (folder / args[0]).unlink()
    elif kind == "delete folder":
        shutil.rmtree(folder / args[0], ignore_errors=True)


def check_equal(folder: Path, home: Path, fresh: dict[bytes, np.ndarray]) -> None:
    disk = {os.fsencode(p): p.read_bytes() for p in folder.rglob("*.jpg")}
    images = index_db.images(home, "content_hash", "vector")
    failures = set(index_db.failures(home))
    assert set(images) == {p for p, data in disk.items() if data != BAD}
    assert failures == {p for p, data in disk.items() if data == BAD}
    for p, (content_hash, vector) in images.items():
        assert content_hash == index_db.content_hash(disk[p]), p
        assert np.allclose(vector, fresh[disk[p]], atol=1e-4), p


@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(operation, min_size=1, max_size=12))
@example(ops=[("write", "a.jpg", 0), ("index",), ("write", "a.jpg", len(CONTENTS) - 1)])  # turns bad
@example(ops=[("write", "a.jpg", 0), ("write", "b.jpg", 1), ("index",), ("move", "a.jpg", "b.jpg")])
def test_index_always_equals_the_folder(ops, tiny_model, encoder, fresh, fresh_index):
    with tempfile.TemporaryDirectory() as tmp:
        folder, home = Path(tmp) / "photos", Path(tmp) / "index"
        folder.mkdir()
        fresh_index()  # each example its own index: a new database on PostgreSQL (on SQLite, the new home)
        library = Library(home, model=tiny_model, encoder=encoder, workers=1)
        for op in [*ops, ("index",)]:
            if op[0] == "index":
                library.index([folder])
                check_equal(folder, home, fresh)
            else:
                apply(folder, op)
