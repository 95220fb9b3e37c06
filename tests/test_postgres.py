"""Faults on a real PostgreSQL server (the session's own, tests/pg_server.py), through the real CLI in
processes of their own (tests/cli_process.py) with the tiny model:

- the server restarted, or stopped and started, in the middle of `imgsearch index`: the writer says so in
  one line and exits 1, every batch it committed is kept, and the next run makes the index equal a clean
  index of the same files;
- readers while the server is down: `imgsearch query` exits 1 saying so, and answers again once it is back;
  a long-lived Library and a running `imgsearch serve` recover without a restart;
- the write lock (a session advisory lock): a SIGKILLed writer frees it, a second writer is refused at once;
- wrong password, missing database, no permission to create tables, a schema newer than the code: each its
  own one-line message and exit 1;
- the password appears in no output of any of these commands, nor in `status` and `status --json`.

These only make sense on PostgreSQL, so they are not run per backend (the `backends` modules are).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from imgsearch import Library
from imgsearch.errors import ImgsearchError
from tests import cli_process, index_db
from tests.conftest import SAMPLE_COUNT, serving
from tests.images import add_photos
from tests.pg_server import PostgresServer

BUSY = "another imgsearch process is writing to the index"
#: The one-line messages, by condition (the backend's wording of each, as specified for issue 13).
DOWN = "cannot reach the database server"
LOST = "lost the connection to"
AUTH = "authentication failed"
MISSING = "does not exist"
NO_PERMISSION = "no permission to create"
TOO_NEW = "newer imgsearch"
#: What a writer whose server went away mid-run may say: the connection lost, or (reconnecting meanwhile)
#: the server down, or in the middle of shutting down or starting up.
MID_RUN = (LOST, DOWN, "is starting or shutting down")
#: Photos in a folder indexed "mid-run": 16 to a batch on the CPU, so several batches.
MANY = 96


@dataclass
class Ran:
    code: int | None
    output: str

    def error_line(self) -> str:
        """The one line a failed command printed: nothing else, no traceback."""
        lines = [line for line in self.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), self.output[-3000:]
        return lines[0]


@dataclass
class Commands:
    """`imgsearch` commands in processes of their own, with this test's home and IMGSEARCH_DB (the
    conftest passes it to the child); every output is kept, for the password check at the end."""

    tmp: Path
    model: str
    home: Path
    outputs: list[str] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    _n: int = 0

    def argv(self, *args: object) -> list[str]:
        argv = [str(a) for a in args]
        if argv[0] in ("index", "query", "watch"):
            argv[1:1] = ["--model", self.model, "--device", "cpu", "--precision", "fp32"]
        if argv[0] in ("index", "watch"):
            argv[1:1] = ["-j", "1"]
        return argv

    def start(self, *args: object, env: dict[str, str] | None = None, **how: Any) -> tuple[Any, Path]:
        self._n += 1
        log = self.tmp / f"{self._n:02d}-{args[0]}.log"
        self.logs.append(log)
        env = {"IMGSEARCH_HOME": str(self.home), **(env or {})}
        return cli_process.start(self.argv(*args), log, env=env, **how), log

    def run(self, *args: object, env: dict[str, str] | None = None, timeout: float = 180) -> Ran:
        process, log = self.start(*args, env=env)
        process.join(timeout)
        assert not process.is_alive(), f"imgsearch {args[0]} still running after {timeout} s"
        output = log.read_text(errors="replace")
        self.outputs.append(output)
        return Ran(process.exitcode, output)

    def finish(self, process: Any, log: Path, timeout: float = 180) -> Ran:
        process.join(timeout)
        assert not process.is_alive(), log.read_text(errors="replace")[-3000:]
        output = log.read_text(errors="replace")
        self.outputs.append(output)
        return Ran(process.exitcode, output)


@pytest.fixture
def server(postgres: PostgresServer) -> Iterator[PostgresServer]:
    """The session's server, running again after the test whatever the test did to it."""
    yield postgres
    if not postgres.running():
        postgres.start()


@pytest.fixture
def database(server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database, IMGSEARCH_DB for this test and its commands; its name."""
    name, url = server.create_database()
    monkeypatch.setenv("IMGSEARCH_DB", url)
    yield name
    server.drop_database(name)


@pytest.fixture
def commands(
    tmp_path: Path, tiny_model: str, isolated_home: Path, server: PostgresServer
) -> Iterator[Commands]:
    made = Commands(tmp_path, tiny_model, isolated_home)
    yield made
    for log in made.logs:  # also those of processes a test started and left to the teardown to kill
        if log.exists():
            made.outputs.append(log.read_text(errors="replace"))
    leaked = [out for out in made.outputs if server.password in out]
    assert not leaked, f"the password appears in an output: {leaked[0][-2000:]}"


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def committed(home: Path) -> dict[bytes, bytes]:
    """path -> content hash of every committed row, as another process reads them now."""
    try:
        return {path: h for path, (h,) in index_db.images(home, "content_hash").items()}
    except index_db.SCHEMA_NOT_THERE:
        return {}


def writer_lock_held(server: PostgresServer, database: str) -> bool:
    """Whether some session holds an advisory lock in this database (the writer's lock)."""
    (count,) = server.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = %s",
        (database,),
    )[0]
    return bool(count)


def stored(home: Path) -> tuple[dict[bytes, tuple[Any, ...]], dict[bytes, str]]:
    return index_db.images(home, "content_hash", "width", "height", "format", "vector"), index_db.failures(
        home
    )


def assert_same_index(got: tuple[dict, dict], clean: tuple[dict, dict]) -> None:
    (images, failures), (clean_images, clean_failures) = got, clean
    assert set(images) == set(clean_images)
    assert failures == clean_failures
    for path, (*meta, vector) in images.items():
        *clean_meta, clean_vector = clean_images[path]
        assert meta == clean_meta, path
        assert np.allclose(vector, clean_vector, atol=1e-4), path


def clean_index(server: PostgresServer, commands: Commands, folder: Path) -> tuple[dict, dict]:
    """What an uninterrupted first run makes of `folder`, in a database and a home of its own."""
    name, url = server.create_database()
    try:
        home = commands.tmp / "clean-home"
        ran = commands.run("index", "-q", folder, env={"IMGSEARCH_DB": url, "IMGSEARCH_HOME": str(home)})
        assert ran.code == 0, ran.output
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("IMGSEARCH_DB", url)
            return stored(home)
    finally:
        server.drop_database(name)


# -- the server goes away in the middle of an index run ------------------------------------------------
@pytest.mark.parametrize("outage", ["restart", "stop, then start"])
def test_an_outage_mid_index_keeps_every_committed_batch_and_the_next_run_completes(
    server, database, commands, tmp_path, isolated_home, outage
):
    folder = tmp_path / "photos"
    add_photos(folder, MANY, "p")
    go_on = tmp_path / "go-on"
    # held before its third batch is embedded: at work for sure, with a batch or two committed
    writer, log = commands.start("index", "-q", folder, hold=("embedding a batch", 3, go_on))
    wait_for(lambda: len(committed(isolated_home)) >= 16 or not writer.is_alive(), "a first committed batch")
    assert writer.is_alive(), log.read_text()
    before = committed(isolated_home)
    assert 16 <= len(before) < MANY

    if outage == "restart":
        server.restart()
    else:
        server.stop()
    go_on.touch()
    ran = commands.finish(writer, log)
    assert ran.code == 1, ran.output
    line = ran.error_line()
    assert any(message in line for message in MID_RUN), line
    if outage != "restart":
        server.start()

    after = committed(isolated_home)
    assert {p: h for p, h in after.items() if p in before} == before, "committed rows lost"
    assert index_db.integrity(isolated_home) == "ok"

    rerun = commands.run("index", "-q", folder)
    assert rerun.code == 0, rerun.output
    assert committed(isolated_home) == index_db.hashes_on_disk(folder.glob("*.jpg"))
    assert_same_index(stored(isolated_home), clean_index(server, commands, folder))
    found = commands.run("query", "a photo", "--paths", "-n", "5")
    assert found.code == 0 and len(found.output.splitlines()) == 5, found.output


# -- readers while the server is down --------------------------------------------------------------------
def test_readers_fail_cleanly_while_the_server_is_down_and_answer_once_it_is_back(
    server, database, commands, photos, isolated_home, tiny_model
):
    assert commands.run("index", "-q", photos).code == 0
    library = Library(isolated_home, device="cpu")  # long-lived, as in `serve`
    expected = [m.path for m in library.search("a cat", top=3)]
    assert commands.run("query", "a cat", "--paths", "-n", "3").output.splitlines() == expected

    server.stop()
    down = commands.run("query", "a cat", "--paths", "-n", "3")
    assert down.code == 1, down.output
    assert DOWN in down.error_line()
    status = commands.run("status")
    assert status.code == 1 and DOWN in status.error_line()
    with pytest.raises(ImgsearchError, match=f"{DOWN}|{LOST}") as raised:
        library.search("a cat", top=3)
    assert server.password not in str(raised.value)

    server.start()
    back = commands.run("query", "a cat", "--paths", "-n", "3")
    assert back.code == 0, back.output
    assert back.output.splitlines() == expected
    assert [m.path for m in library.search("a cat", top=3)] == expected  # the same object, no restart


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_running_serve_recovers_from_an_outage_without_a_restart(server, database, commands, photos):
    assert commands.run("index", "-q", photos).code == 0
    env = {**os.environ, "IMGSEARCH_HOME": str(commands.home)}
    with serving(env) as url:
        search = f"{url.rstrip('/')}/api/search?q=a+cat&top=3"
        code, before = _get(search)
        assert code == 200 and len(before["results"]) == 3, before
        server.stop()
        try:
            down_code, down = _get(search)
        finally:
            server.start()
        code, after = _get(search)
        assert code == 200, after
        assert [m["path"] for m in after["results"]] == [m["path"] for m in before["results"]]
        assert server.password not in json.dumps(down)
        assert DOWN in down["error"], down
        assert down_code == 503, (down_code, down)  # the index is unavailable for now, not broken


# -- the write lock ------------------------------------------------------------------------------------------
def test_a_writer_killed_while_it_holds_the_lock_frees_it(
    server, database, commands, tmp_path, isolated_home
):
    folder = tmp_path / "photos"
    add_photos(folder, 48, "p")
    writer, _ = commands.start("index", "-q", folder, hold=("embedding a batch", 2, tmp_path / "never"))
    wait_for(lambda: writer_lock_held(server, database) or not writer.is_alive(), "the writer's lock")
    assert writer.is_alive()
    os.kill(writer.pid, signal.SIGKILL)
    writer.join(30)
    nxt = commands.run("index", "-q", folder)
    assert nxt.code == 0, nxt.output
    assert BUSY not in nxt.output
    assert committed(isolated_home) == index_db.hashes_on_disk(folder.glob("*.jpg"))
    assert not writer_lock_held(server, database)  # and it let go of it in turn


def test_a_second_writer_is_refused_at_once(server, database, commands, tmp_path, isolated_home):
    folder = tmp_path / "photos"
    add_photos(folder, 48, "p")
    go_on = tmp_path / "go-on"
    first, first_log = commands.start("index", "-q", folder, hold=("embedding a batch", 2, go_on))
    wait_for(lambda: writer_lock_held(server, database) or not first.is_alive(), "the first writer's lock")
    assert first.is_alive(), first_log.read_text()
    started = time.monotonic()
    second = commands.run("index", "-q", folder)
    took = time.monotonic() - started
    assert second.code == 1, second.output
    assert took < 60, f"the second writer waited {took:.0f} s"  # the first one is held for 5 minutes
    line = second.error_line()
    go_on.touch()
    done = commands.finish(first, first_log)
    assert done.code == 0, done.output
    assert BUSY in line, line


# -- refused before anything happens -------------------------------------------------------------------
def test_a_wrong_password_says_so(server, database, commands, photos):
    wrong = "wrong-" + secrets.token_hex(8)
    url = server.url(database, password=wrong)
    for args in (("index", "-q", photos), ("query", "a cat"), ("status",)):
        ran = commands.run(*args, env={"IMGSEARCH_DB": url})
        assert ran.code == 1, ran.output
        assert AUTH in ran.error_line()
        assert wrong not in ran.output


def test_a_missing_database_says_so(server, commands, photos):
    url = server.url("no_such_database")
    for args in (("index", "-q", photos), ("query", "a cat")):
        ran = commands.run(*args, env={"IMGSEARCH_DB": url})
        assert ran.code == 1, ran.output
        line = ran.error_line()
        assert MISSING in line and "no_such_database" in line, line


def test_a_role_that_may_not_create_tables_says_so(server, database, commands, photos):
    role, password = f"reader_{secrets.token_hex(3)}", "pw-" + secrets.token_hex(8)
    server.create_role(role, password)
    try:
        # the database is the superuser's; PostgreSQL 15 grants no CREATE on its public schema to others
        url = server.url(database, user=role, password=password)
        ran = commands.run("index", "-q", photos, env={"IMGSEARCH_DB": url})
        assert ran.code == 1, ran.output
        line = ran.error_line()
        assert NO_PERMISSION in line and role in line, line
        assert password not in ran.output
        assert index_db.tables(commands.home) == set()  # nothing made halfway
    finally:
        server.drop_database(database)  # before the role: it may hold nothing by then
        server.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_schema_newer_than_the_code_is_refused_on_both_backends(
    server, database, commands, photos, tmp_path, monkeypatch
):
    assert commands.run("index", "-q", photos).code == 0
    index_db.tamper(commands.home, "UPDATE alembic_version SET version_num = 'zzzz'")
    sqlite_home = tmp_path / "sqlite-home"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("IMGSEARCH_DB")
        assert (
            commands.run(
                "index", "-q", photos, env={"IMGSEARCH_DB": "", "IMGSEARCH_HOME": str(sqlite_home)}
            ).code
            == 0
        )
        index_db.tamper(sqlite_home, "UPDATE alembic_version SET version_num = 'zzzz'")
    for env in ({}, {"IMGSEARCH_DB": "", "IMGSEARCH_HOME": str(sqlite_home)}):
        for args in (("index", "-q", photos), ("query", "a cat"), ("status",)):
            ran = commands.run(*args, env=env)
            assert ran.code == 1, ran.output
            assert TOO_NEW in ran.error_line()


# -- the password ------------------------------------------------------------------------------------------
def test_status_never_shows_the_password(server, database, commands, photos):
    assert commands.run("index", "-q", photos).code == 0
    status = commands.run("status")
    assert status.code == 0, status.output
    assert database in status.output and f"{SAMPLE_COUNT:,}" in status.output
    as_json = commands.run("status", "--json")
    assert as_json.code == 0, as_json.output
    info = json.loads(as_json.output)
    assert info["images"] == SAMPLE_COUNT
    assert database in json.dumps(info)
    # and the password in the environment only (PGPASSWORD, libpq's way), with none in the URL
    bare = server.url(database, password="")
    assert commands.run("status", env={"IMGSEARCH_DB": bare, "PGPASSWORD": server.password}).code == 0
    # the `commands` fixture checks every output of this test (and of every test here) for the password


def test_an_index_moved_between_backends_answers_the_same(server, database, commands, photos, tmp_path):
    """`imgsearch db copy --to` both ways: PostgreSQL -> a SQLite folder -> another PostgreSQL database."""
    assert commands.run("index", "-q", photos).code == 0
    expected = commands.run("query", "a cat", "--json", "-n", "10").output
    folder = tmp_path / "copied-home"
    copied = commands.run("db", "copy", "--to", folder)
    assert copied.code == 0, copied.output
    sqlite = {"IMGSEARCH_DB": "", "IMGSEARCH_HOME": str(folder)}
    assert commands.run("query", "a cat", "--json", "-n", "10", env=sqlite).output == expected
    other, url = server.create_database()
    try:
        back = commands.run("db", "copy", "--to", url, env=sqlite)
        assert back.code == 0, back.output
        again = commands.run("query", "a cat", "--json", "-n", "10", env={"IMGSEARCH_DB": url})
        assert again.output == expected
    finally:
        server.drop_database(other)
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)


def test_the_messages_name_no_password_even_when_the_url_is_malformed(commands):
    secret = "pw-" + secrets.token_hex(8)
    ran = commands.run("status", env={"IMGSEARCH_DB": f"postgresql://u:{secret}@127.0.0.1:1:2/x"})
    assert ran.code in (1, 2), ran.output
    assert secret not in ran.output
    assert re.search(r"\*\*\*|database", ran.output), ran.output
