"""`imgsearch query` hands its query to a running `imgsearch serve` for the same index (a warm model): same
results as answering in-process, without importing torch or numpy; and it answers itself when the server
is gone, stale, or for another model."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgsearch.library import Library
from tests.cli_process import Finished, run_fresh
from tests.conftest import SAMPLE_PHOTOS, serving

TOKEN = "client-t0ken"
HEAVY = ("torch", "numpy", "faiss", "sqlalchemy")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model) -> Iterator[Path]:
    """An index of sample_photos with a real server running over it (token required); yields its home."""
    home = tmp_path_factory.mktemp("client") / "home"
    Library(home, model=tiny_model).index([SAMPLE_PHOTOS])
    env = {**os.environ, "IMGSEARCH_HOME": str(home), "IMGSEARCH_TOKEN": TOKEN}
    with serving(env):
        yield home
    assert not (home / "server.json").exists()


def _cli(home: Path, *args: str, cwd: Path | None = None) -> Finished:
    env = {k: v for k, v in os.environ.items() if k not in ("IMGSEARCH_MODEL", "IMGSEARCH_TOKEN")}
    env["IMGSEARCH_HOME"] = str(home)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return run_fresh(list(args), env, cwd=cwd)


def _results(done: Finished) -> list[dict[str, object]]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _loaded(done: Finished) -> str:
    """'loaded:' and the heavy modules the process imported, by name."""
    return "loaded:" + ",".join(sorted(m for m in HEAVY if m in done.modules))


def test_the_server_answers_like_the_process_itself_without_torch_or_numpy(served: Path) -> None:
    args = ("query", "a red apple", "--not", "people", "--glob", "*.jpg", "-n", "7", "--json")
    via_server, local = _cli(served, *args), _cli(served, *args, "--no-server")
    assert _loaded(via_server) == "loaded:"  # nothing heavy: the server did the work
    assert "torch" in _loaded(local) or "numpy" in _loaded(local)
    remote, here = _results(via_server), _results(local)
    assert [r["path"] for r in remote] == [r["path"] for r in here] and len(remote) == 7
    assert all(abs(a["score"] - b["score"]) < 1e-4 for a, b in zip(remote, here, strict=True))  # type: ignore[operator]


def test_relative_image_paths_are_read_by_the_server_and_left_out_of_results(served: Path) -> None:
    name = sorted(p.name for p in SAMPLE_PHOTOS.glob("*.jpg"))[0]
    done = _cli(served, "query", "--image", name, "--json", "-n", "40", cwd=SAMPLE_PHOTOS)
    paths = [r["path"] for r in _results(done)]
    assert _loaded(done) == "loaded:"
    assert str(SAMPLE_PHOTOS / name) not in paths and len(paths) == len(list(SAMPLE_PHOTOS.glob("*.jpg"))) - 1


def test_usage_errors_from_the_server_exit_2_with_its_message(served: Path) -> None:
    done = _cli(served, "query", "--image", "/no/such/photo.jpg")
    assert done.returncode == 2, done.stderr
    assert "no such image file: /no/such/photo.jpg" in done.stderr


def test_another_model_is_answered_here(served: Path, tmp_path: Path) -> None:
    done = _cli(served, "query", "apple", "--model", "ViT-B-32:openai")
    assert done.returncode == 1  # the index refuses another model, as without a server
    assert "was built with model" in done.stderr and "torch" not in _loaded(done)


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A port bound but not listening, held for the test: connecting to it is refused, and nobody else can
    take it meanwhile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize("pid", ["dead", "alive"])
def test_a_stale_server_file_is_ignored(indexed_private: Path, pid: str) -> None:
    """A server killed hard leaves server.json: a dead pid is ignored, a live pid with a closed port too."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    with _closed_port() as port:
        info = {
            "url": f"http://127.0.0.1:{port}/",
            "pid": int(gone.stdout) if pid == "dead" else os.getpid(),
            "token": None,
            "model": None,
            "version": "0",
        }
        home = Path(os.environ["IMGSEARCH_HOME"])
        (home / "server.json").write_text(json.dumps(info))
        done = _cli(home, "query", "a cat", "--json", "-n", "3")
        assert len(_results(done)) == 3


def test_a_query_of_another_catalog_or_path_map_is_answered_here(served: Path, tmp_path: Path) -> None:
    """The server reads the home's own catalog with no path map: a query that names another database, or
    maps paths, must not get its answers (it reads what it was told to read, or fails as it would alone)."""
    elsewhere = _cli(served, "query", "apple", "--db", str(tmp_path / "other"))
    assert elsewhere.returncode == 1 and "no index at" in elsewhere.stderr, elsewhere.stderr
    mapped = _cli(served, "query", "apple", "--json", "--path-map", f"{SAMPLE_PHOTOS}=/mnt/photos")
    assert "torch" in _loaded(mapped) or "numpy" in _loaded(mapped)  # answered in this process
    assert all(str(r["path"]).startswith("/mnt/photos/") for r in _results(mapped))
