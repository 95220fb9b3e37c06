"""A full disk and a read-only index folder: a clear one-line error and exit 1 for writes; the index that was
there still opens and answers queries.

The real cases need a small or read-only file system: the tests mount a tmpfs where they may (root in a
sandbox or CI container) and are skipped elsewhere, where the fault-injection test still covers the full disk
at both write calls (SQLite and the FAISS file).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from tests import index_db
from tests.conftest import SAMPLE_PHOTOS
from tests.images import add_photos

SAMPLES = sorted(SAMPLE_PHOTOS.glob("*.jpg"))


class Tmpfs:
    def __init__(self, path: Path):
        self.path = path

    def remount(self, ro: bool) -> None:
        option = "remount,ro" if ro else "remount,rw"
        subprocess.run(["mount", "-o", option, str(self.path)], check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs of our own."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip()}); test_disk_full_injected covers it"
        )
    try:
        yield Tmpfs(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file until the file system has no byte left."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)
    assert os.statvfs(folder).f_bavail == 0
    return filler


def one_clear_line(output: str, needle: str) -> None:
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], output


def test_disk_full(cli, photos, tmpfs):
    home = tmpfs.path / "index"
    assert cli("index", "--home", home, photos).exit_code == 0
    before = cli("query", "--home", home, "a cat", "--paths", "-n", "5")
    assert before.exit_code == 0
    filler = fill(tmpfs.path)
    add_photos(photos, 20, "new")

    result = cli("index", "--home", home, photos)
    assert result.exit_code == 1
    one_clear_line(result.output, "the disk is full")
    # the previous index still opens and answers, on the full disk
    after = cli("query", "--home", home, "a cat", "--paths", "-n", "5")
    assert after.exit_code == 0, after.output
    assert after.output == before.output
    assert cli("status", "--home", home).exit_code == 0

    filler.unlink()
    assert cli("index", "--home", home, photos).exit_code == 0
    assert index_db.integrity(home) == "ok"
    found = cli("query", "--home", home, "a cat", "--paths", "-n", "1000").output.split("\n")
    assert sorted(filter(None, found)) == sorted(str(p) for p in photos.glob("*.jpg"))


@pytest.mark.parametrize("where", ["sqlite", "faiss"])
def test_disk_full_injected(cli, photos, isolated_home, monkeypatch, where):
    """ENOSPC at the write call itself (no special file system needed)."""
    from imgsearch.store import catalog, vectors

    assert cli("index", photos).exit_code == 0
    before = cli("query", "a cat", "--paths", "-n", "5").output
    add_photos(photos, 3, "new")
    with pytest.MonkeyPatch.context() as patch:
        if where == "sqlite":
            full = sqlite3.OperationalError("database or disk is full")

            def add_image(self, *args, **kwargs):
                raise OperationalError("INSERT INTO images ...", {}, full)

            patch.setattr(catalog.CatalogWriter, "add_image", add_image)
        else:

            def write_index(index, path):
                with open(path, "wb") as f:
                    f.write(b"partial")
                raise RuntimeError(f"write error in {path}: 7 != 4096 (No space left on device)")

            patch.setattr(vectors.faiss, "write_index", write_index)
        result = cli("index", photos)
    assert result.exit_code == 1
    one_clear_line(result.output, "the disk is full")
    assert not list(isolated_home.glob(".vectors-*"))
    after = cli("query", "a cat", "--paths", "-n", "5")
    assert after.exit_code == 0
    if where == "sqlite":  # nothing new was committed
        assert after.output == before
    assert cli("index", photos).exit_code == 0
    found = cli("query", "a cat", "--paths", "-n", "1000").output.split("\n")
    assert sorted(filter(None, found)) == sorted(str(p) for p in photos.glob("*.jpg"))


def test_read_only_index_folder(cli, photos, tmpfs):
    home = tmpfs.path / "index"
    assert cli("index", "--home", home, photos).exit_code == 0
    before = cli("query", "--home", home, "a cat", "--paths", "-n", "5").output
    tmpfs.remount(ro=True)
    with pytest.raises(OSError) as refused:
        (home / "probe").write_bytes(b"")
    assert refused.value.errno == errno.EROFS

    after = cli("query", "--home", home, "a cat", "--paths", "-n", "5")
    assert after.exit_code == 0, after.output
    assert after.output == before
    similar = cli("similar", "--home", home, photos / "cat-chelsea.jpg", "--paths", "-n", "3")
    assert similar.exit_code == 0, similar.output
    assert cli("status", "--home", home).exit_code == 0
    shutil.copy(SAMPLES[0], photos / "new.jpg")
    for command in ("index", "watch"):
        result = cli(command, "--home", home, photos)
        assert result.exit_code == 1
        one_clear_line(result.output, "read-only")
    tmpfs.remount(ro=False)
    assert index_db.integrity(home) == "ok"
