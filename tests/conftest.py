"""Shared fixtures: a private index folder for every test, the tiny local-dir model, sample photos, and one
index of sample_photos for the whole run that the tests which only read an index share.

Backends: a module marked `pytestmark = pytest.mark.backends` runs each of its tests twice, `[sqlite]` (the
catalog in the home's index.db) and `[postgresql]` (IMGSEARCH_DB pointing at a fresh database of the
session's own PostgreSQL server, tests/pg_server.py). A test there about the SQLite file itself is marked
`@pytest.mark.sqlite_only("why")`: its `[postgresql]` run is skipped with that reason. Without PostgreSQL
installed the `[postgresql]` runs skip, saying so, unless IMGSEARCH_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imgsearch.model.encoder import Encoder
from imgsearch.model.specs import parse_model_spec
from tests import cli_process, index_db, pg_server
from tests.pg_server import PostgresServer
from tests.tiny_model import save_tiny_model

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PHOTOS = REPO / "sample_photos"
SAMPLE_COUNT = len(list(SAMPLE_PHOTOS.glob("*.jpg")))
#: The ONNX exports' switches: off in the tests (isolated_home) except where `export_on` turns one on.
EXPORT_SWITCHES = ("IMGSEARCH_TEXT_EXPORT", "IMGSEARCH_IMAGE_EXPORT")
#: The settings besides files and model that shape an index and its answers: a test given the shared
#: sample index (`indexed`) runs under the ones it was made with.
INDEX_SETTINGS = ("IMGSEARCH_MODEL", "IMGSEARCH_CPU_BF16", *EXPORT_SWITCHES)
#: The catalog's backends a `backends` module runs each test on.
BACKENDS = ("sqlite", "postgresql")
#: CI sets this: there a missing PostgreSQL fails the [postgresql] tests instead of skipping them.
REQUIRE_POSTGRES = os.environ.get("IMGSEARCH_REQUIRE_POSTGRES") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends: run each test of the module on SQLite and on PostgreSQL ([sqlite], [postgresql])",
    )
    config.addinivalue_line(
        "markers", "sqlite_only(reason): in a `backends` module, a test of the SQLite file itself: its "
        "[postgresql] run is skipped with the reason",
    )  # fmt: skip


def pytest_report_header(config: pytest.Config) -> str:
    bindir = pg_server.find_bindir()
    if bindir is None:
        return f"postgresql: {pg_server.NOT_INSTALLED}" + (
            " (required: they fail)" if REQUIRE_POSTGRES else ""
        )
    return f"postgresql: {bindir} (a throwaway cluster for the [postgresql] tests)"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line at the end for a run without PostgreSQL: how many tests it skipped, why, and the fix."""
    skipped = [
        r for r in terminalreporter.stats.get("skipped", []) if pg_server.NOT_INSTALLED in str(r.longrepr)
    ]
    if skipped:
        terminalreporter.write_sep("=", "PostgreSQL", yellow=True)
        terminalreporter.write_line(
            f"{len(skipped)} tests skipped: {pg_server.NOT_INSTALLED}. Install postgresql-15 to run them "
            "(IMGSEARCH_REQUIRE_POSTGRES=1 makes a missing PostgreSQL fail them, as in CI)."
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test of a `backends` module twice, through the module-scoped `backend` fixture (so that a
    module-scoped fixture that takes `backend` is made once per backend, and the tests are grouped so)."""
    if metafunc.definition.get_closest_marker("backends") is None:
        return
    only = metafunc.definition.get_closest_marker("sqlite_only")
    postgresql: Any = "postgresql"
    if only is not None:
        why = only.args[0] if only.args else only.kwargs["reason"]
        postgresql = pytest.param("postgresql", marks=pytest.mark.skip(reason=f"SQLite only: {why}"))
    metafunc.parametrize("backend", ["sqlite", postgresql], indirect=True, scope="module")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's own PostgreSQL server (tests/pg_server.py), started once, stopped and removed after."""
    server = PostgresServer.find()
    if server is None:
        if REQUIRE_POSTGRES:
            pytest.fail(
                f"{pg_server.NOT_INSTALLED.split(';')[0]}, and IMGSEARCH_REQUIRE_POSTGRES=1 requires it"
            )
        pytest.skip(pg_server.NOT_INSTALLED)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """'sqlite' or 'postgresql': the catalog this test's index lives in (always 'sqlite' outside the
    `backends` modules). For PostgreSQL, module-scoped fixtures run with IMGSEARCH_DB at a database of the
    module's own; each test then gets a fresh one of its own (`_backend_database`)."""
    name = getattr(request, "param", "sqlite")
    if name != "postgresql":
        yield name
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    database, url = server.create_database()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGSEARCH_DB", url)
        yield name
    server.drop_database(database)


@pytest.fixture
def fresh_index(backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """fresh_index(): from now on this test's IMGSEARCH_DB is a new, empty database (on PostgreSQL; on
    SQLite a new home is already a new index): for a test that makes many indexes, e.g. one per hypothesis
    example. Returns the URL, or None on SQLite. The databases are dropped after the test."""
    made: list[str] = []

    def fresh() -> str | None:
        if backend != "postgresql":
            return None
        server: PostgresServer = request.getfixturevalue("postgres")
        database, url = server.create_database()
        made.append(database)
        monkeypatch.setenv("IMGSEARCH_DB", url)
        return url

    yield fresh
    if made:
        server: PostgresServer = request.getfixturevalue("postgres")
        for database in made:
            server.drop_database(database)


@pytest.fixture(autouse=True)
def _backend_database(backend: str, fresh_index, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the test's own fixtures: IMGSEARCH_DB at a fresh database for a [postgresql] test; unset for
    every other test (the SQLite file in the home)."""
    if backend == "postgresql":
        fresh_index()
    else:
        monkeypatch.delenv("IMGSEARCH_DB", raising=False)


_real_start = cli_process.start


@pytest.fixture(autouse=True)
def _children_use_the_test_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child of tests/cli_process.py inherits the environment its fork server started with, not the
    test's: pass it the test's IMGSEARCH_DB, or an empty one (unset, to click and the library), so that a
    SQLite test's child never gets the database of the test that happened to start the fork server."""

    def start(argv: list[str], log: Path, kill_point=None, hold=None, env=None):
        child_env = {"IMGSEARCH_DB": os.environ.get("IMGSEARCH_DB", ""), **(env or {})}
        return _real_start(argv, log, kill_point, hold, child_env)

    monkeypatch.setattr(cli_process, "start", start)


@pytest.fixture(scope="session", autouse=True)
def _offline_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The environment of the whole run, set before any fixture (module-scoped ones run before the per-test
    `isolated_home`): no hub, no model, token or index folder from the outer environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("IMGSEARCH_HOME", str(tmp_path_factory.mktemp("session-home")))
        patch.setenv("IMGSEARCH_CACHE", str(tmp_path_factory.mktemp("session-cache")))
        # The background exporter waits for a one-off command to exit; the in-process `cli` never does.
        patch.setenv("IMGSEARCH_EXPORTER_WAIT_S", "0")
        for name in ("IMGSEARCH_MODEL", "IMGSEARCH_TOKEN", "IMGSEARCH_DB", "IMGSEARCH_PATH_MAP"):
            patch.delenv(name, raising=False)
        # The exports off for module- and session-scoped fixtures too (servers they start, indexes they
        # build), as `isolated_home` sets them for each test: one setting for a test and its fixtures.
        patch.setenv("IMGSEARCH_TEXT_EXPORT", "0")
        patch.setenv("IMGSEARCH_IMAGE_EXPORT", "0")
        yield


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own index folder; nothing touches the user's real data folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("IMGSEARCH_HOME", str(home))
    monkeypatch.setenv("IMGSEARCH_CACHE", str(tmp_path / "cache"))  # the exports: none shared by tests
    monkeypatch.delenv("IMGSEARCH_MODEL", raising=False)
    # The ONNX text export costs each indexing test a second; the export tests turn theirs back on.
    for switch in EXPORT_SWITCHES:
        monkeypatch.setenv(switch, "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # tests never reach for a hub...
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # ...nor find real weights
    return home


@pytest.fixture
def export_on(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn back on the ONNX export that the test module is about, which isolated_home turns off: the one
    its EXPORT_SWITCH names (the text export in tests/test_text_onnx.py, the image one in test_image_onnx)."""
    switch = getattr(request.module, "EXPORT_SWITCH", None)
    assert switch in EXPORT_SWITCHES, f"{request.module.__name__} names no EXPORT_SWITCH for export_on"
    monkeypatch.setenv(switch, "1")


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """SIGKILL, after each test, whatever it started through tests/cli_process.py that still runs, and the
    background exporters it started (imgsearch.model.exporter) in its cache."""
    yield
    cli_process.kill_all()
    for marker in (Path(os.environ["IMGSEARCH_CACHE"]) / "running").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(marker.read_text()), signal.SIGKILL)  # its own session: the pid is its group


@pytest.fixture
def exports_made() -> Callable[[], None]:
    """Wait for the background exporters this test started (indexing and cold queries start them)."""
    from imgsearch.model.exporter import wait_all

    return lambda: wait_all(timeout=300)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir: Path) -> str:
    """The --model spec of the tiny test model."""
    return f"local-dir:{tiny_model_dir}"


@pytest.fixture(scope="session")
def torch_encoder(tiny_model: str) -> Encoder:
    """The tiny model loaded through torch on the CPU in fp32: the reference the ONNX exports must match."""
    return Encoder.load(parse_model_spec(tiny_model), device="cpu", precision="fp32")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A private copy of sample_photos that a test may change."""
    folder = tmp_path / "photos"
    shutil.copytree(SAMPLE_PHOTOS, folder, ignore=shutil.ignore_patterns("*.md"))
    return folder


def _invoke(runner, tiny_model: str, args: tuple[object, ...], model: bool = True):
    """`imgsearch ARGS` in-process through click's `runner` (index, query and similar with the tiny model
    unless `model` is False); returns click's Result."""
    from imgsearch.cli import main

    argv = [str(a) for a in args]
    if model and argv and argv[0] in ("index", "query", "similar"):
        argv[1:1] = ["--model", tiny_model]
    return runner.invoke(main, argv, catch_exceptions=False)


@pytest.fixture
def cli(tiny_model: str):
    """Run an imgsearch command in-process with the tiny model; returns click's Result."""
    from click.testing import CliRunner

    runner = CliRunner()

    def run(*args: object, model: bool = True):
        return _invoke(runner, tiny_model, args, model)

    return run


@pytest.fixture
def indexed_private(cli, photos) -> Path:
    """The test's own copy of sample_photos indexed into its own index folder, for a test that changes
    either: `indexed` without the sharing (and a second or so slower)."""
    result = cli("index", photos)
    assert result.exit_code == 0, result.output
    return photos


@dataclass(frozen=True)
class SampleIndex:
    home: Path  #: the index folder
    photos: Path  #: the copy of sample_photos it indexes
    settings: dict[str, str | None]  #: INDEX_SETTINGS as they were when it was made
    db: str | None = None  #: its IMGSEARCH_DB: a database of its own on PostgreSQL, None for SQLite


def _index_settings() -> dict[str, str | None]:
    return {name: os.environ.get(name) for name in INDEX_SETTINGS}


@pytest.fixture(scope="session")
def _sample_indexes() -> dict[str, SampleIndex]:
    """backend -> the run's sample index on it, each made the first time a test asks (`sample_index`)."""
    return {}


@pytest.fixture
def sample_index(
    _sample_indexes: dict[str, SampleIndex],
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model: str,
) -> SampleIndex:
    """sample_photos indexed once for the whole run on the test's backend, as `indexed_private` indexes
    them (the CLI, the tiny model, no exports). Tests get it through `indexed`, which checks that they
    leave it as it was."""
    if backend in _sample_indexes:
        return _sample_indexes[backend]
    from click.testing import CliRunner

    root = tmp_path_factory.mktemp(f"sample-index-{backend}")
    db = None
    if backend == "postgresql":  # the session's server drops it with everything else at the end
        server: PostgresServer = request.getfixturevalue("postgres")
        db = server.create_database()[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGSEARCH_HOME", str(root / "home"))
        if db is None:
            patch.delenv("IMGSEARCH_DB", raising=False)
        else:
            patch.setenv("IMGSEARCH_DB", db)
        for switch in EXPORT_SWITCHES:
            patch.setenv(switch, "0")
        shared = SampleIndex(root / "home", root / "photos", _index_settings(), db)
        shutil.copytree(SAMPLE_PHOTOS, shared.photos, ignore=shutil.ignore_patterns("*.md"))
        result = _invoke(CliRunner(), tiny_model, ("index", shared.photos))
    assert result.exit_code == 0, result.output
    _sample_indexes[backend] = shared
    return shared


@pytest.fixture
def indexed(
    sample_index: SampleIndex, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """sample_photos indexed with the tiny model, for a test that only reads: the index (IMGSEARCH_HOME,
    and IMGSEARCH_DB on PostgreSQL) is the run's one sample_index, not one of the test's own; returns its
    photos folder. A test that changes a file or a row of either, or runs under other INDEX_SETTINGS
    (auto_numerics, export_on), fails: such a test takes `indexed_private`."""
    monkeypatch.setenv("IMGSEARCH_HOME", str(sample_index.home))
    if sample_index.db is not None:
        monkeypatch.setenv("IMGSEARCH_DB", sample_index.db)
    before = _files(sample_index), _rows(sample_index)
    yield sample_index.photos
    after = _files(sample_index), _rows(sample_index)
    changed = sorted(
        name for name in before[0].keys() | after[0].keys() if before[0].get(name) != after[0].get(name)
    )
    changed += ["catalog rows"] if before[1] != after[1] else []
    assert not changed, f"this test changed the shared sample index (use indexed_private): {changed}"
    settings = _index_settings()  # checked after the test: fixtures set up after this one count too
    assert settings == sample_index.settings, (
        f"this test ran under {settings}, the shared sample index was made under {sample_index.settings} "
        "(use indexed_private)"
    )


def _rows(shared: SampleIndex) -> object:
    """The stored state of a shared index on a server (on SQLite `_files` sees every change)."""
    if shared.db is None:
        return None
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGSEARCH_DB", shared.db)
        rows = index_db.images(shared.home, "id", "size", "mtime_ns", "content_hash")
        return rows, index_db.failures(shared.home)


def _files(shared: SampleIndex) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file of the shared index and its photos. SQLite's -shm, which readers make
    and remove, is left out; and so is an empty -wal (nothing written)."""
    found = {}
    for path in [*shared.home.rglob("*"), *shared.photos.rglob("*")]:
        st = path.lstat()
        if path.is_dir() or path.name.endswith("-shm") or (path.name.endswith("-wal") and not st.st_size):
            continue
        found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture
def refuse_listing(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """refuse_listing(folder): from now on os.scandir refuses that folder as the kernel refuses one that
    cannot be read (chmod 0 does not stop root, which CI runs as)."""
    real_scandir = os.scandir
    refused: set[bytes] = set()

    def scandir(path="."):
        if isinstance(path, (str, bytes, os.PathLike)) and os.fsencode(path) in refused:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    def refuse(folder: Path) -> None:
        refused.add(os.fsencode(folder))
        monkeypatch.setattr(os, "scandir", scandir)

    return refuse


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[str]:
    """A real `imgsearch serve --port 0` subprocess with `env`; yields the URL it prints, stops it after."""
    command = [sys.executable, "-m", "imgsearch", "serve", "--port", "0"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # type: ignore[union-attr]
        assert "serving" in line, line
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(params=["fp32", "bf16"])
def auto_numerics(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test under each resolution of `--precision auto` on the CPU, whatever this machine's CPU:
    bf16 as on an AVX512-BF16 machine (it computes on AVX2 too, only more slowly), fp32 as on AVX2."""
    monkeypatch.setenv("IMGSEARCH_CPU_BF16", "1" if request.param == "bf16" else "0")
    return str(request.param)
