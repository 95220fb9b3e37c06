"""A throwaway PostgreSQL cluster for the test session: initdb into a temp folder, started on a free port on
127.0.0.1 with a password for TCP (scram-sha-256) and trust on its own socket, stopped and removed at the end.

initdb and the server refuse to run as root, so as root (here and in CI) they run as the `postgres` user
through `runuser`, in a folder that user owns; as anyone else they run directly. The server runs with
fsync and synchronous_commit off: a test cluster need not survive a power cut, and tests run faster.

    server = PostgresServer.find()          # None when PostgreSQL is not installed
    server.start()
    name, url = server.create_database()    # a fresh database; url = postgresql+psycopg://...
    server.restart(); server.stop(); server.start()
    server.drop_database(name)
    server.close()                          # stop and remove everything (also at exit)
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Where Debian and Ubuntu install the server binaries, one folder per major version.
BIN_GLOB = "/usr/lib/postgresql/*/bin/initdb"
PREFERRED_MAJOR = "15"
NOT_INSTALLED = (
    "PostgreSQL not installed: initdb not found under /usr/lib/postgresql; "
    "the PostgreSQL half of the backend tests is skipped"
)
SUPERUSER = "imgsearch"
OS_USER = "postgres"  #: who runs the cluster when the tests run as root


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: version 15 if installed, else the newest, else pg_config's."""
    found = [Path(p).parent for p in glob.glob(BIN_GLOB)]
    if found:

        def rank(folder: Path) -> tuple[bool, int]:
            major = folder.parent.name
            return (major == PREFERRED_MAJOR, int(major) if major.isdigit() else 0)

        return max(found, key=rank)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        folder = Path(bindir.stdout.strip())
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresError(RuntimeError):
    """The test cluster could not be made, started or stopped (the server's log tail is in the message)."""


class PostgresServer:
    """One private cluster: a data folder, a socket folder, a port, a superuser with a password."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="imgsearch-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.password = "pw-" + secrets.token_hex(12)  # distinctive: a test looks for it in every output
        self.port = 0
        self.superuser = SUPERUSER
        self._as_root = os.geteuid() == 0
        self._names = itertools.count(1)
        self._initialised = False
        atexit.register(self.close)

    @classmethod
    def find(cls) -> PostgresServer | None:
        bindir = find_bindir()
        return cls(bindir) if bindir is not None else None

    # -- running the binaries ----------------------------------------------------------------------------
    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", OS_USER, "--", *command]
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        if check and done.returncode != 0:
            raise PostgresError(
                f"{tool} {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}\n{self.log_tail()}"
            )
        return done

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return "server log: ..." + self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def _initdb(self) -> None:
        for folder in (self.data, self.sockets):
            folder.mkdir(mode=0o700)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as_root:
            import pwd

            owner = pwd.getpwnam(OS_USER)
            for path in (self.root, self.data, self.sockets, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        try:
            self._run(
                "initdb",
                "-D", str(self.data),
                "-U", self.superuser,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E", "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            )  # fmt: skip
        finally:
            pwfile.unlink()
        self._initialised = True

    def _server_options(self) -> str:
        settings = {
            "listen_addresses": "127.0.0.1",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        return f"-p {self.port} -k {self.sockets} " + " ".join(f"-c {k}={v}" for k, v in settings.items())

    # -- the API -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the server (making the cluster the first time); the port stays the same across restarts."""
        if not self._initialised:
            self._initdb()
        if self.running():
            return
        for attempt in range(5):
            if not self.port or attempt:
                self.port = _free_port()  # another process may take it before the server does: retry
            done = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
                             "-o", self._server_options(), check=False)  # fmt: skip
            if done.returncode == 0:
                return
            if "could not bind" not in self.log_tail() and "already in use" not in self.log_tail():
                break
        raise PostgresError(f"pg_ctl start failed: {done.stderr.strip()}\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` ends the clients' connections; `immediate` is a crash."""
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))

    def restart(self, mode: str = "fast") -> None:
        """`pg_ctl restart`: every connection is ended; the server comes back on the same port."""
        self._run("pg_ctl", "restart", "-w", "-t", "60", "-m", mode, "-D", str(self.data),
                  "-l", str(self.log), "-o", self._server_options())  # fmt: skip

    def running(self) -> bool:
        if not self._initialised:
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def url(
        self,
        dbname: str = "postgres",
        user: str | None = None,
        password: str | None = None,
        driver: str = "postgresql+psycopg",
    ) -> str:
        """A URL over TCP on 127.0.0.1, with the superuser and its password unless told otherwise."""
        user = self.superuser if user is None else user
        password = self.password if password is None and user == self.superuser else password
        auth = urllib.parse.quote(user, safe="")
        if password:
            auth += ":" + urllib.parse.quote(password, safe="")
        return f"{driver}://{auth}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> Any:
        """A psycopg connection as the superuser over the socket (trust), in autocommit."""
        import psycopg

        return psycopg.connect(
            host=str(self.sockets), port=self.port, user=self.superuser, dbname=dbname, autocommit=True
        )

    def execute(self, sql: str, params: Sequence[Any] | None = None, dbname: str = "postgres") -> list[Any]:
        """Run one statement as the superuser; returns its rows (none for a statement that returns none)."""
        with self.connect(dbname) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, owner: str | None = None) -> tuple[str, str]:
        """A fresh, empty database (owned by `owner`, else the superuser): (name, superuser URL)."""
        name = f"t{os.getpid()}_{next(self._names)}_{secrets.token_hex(3)}"
        owned = f" OWNER {_identifier(owner)}" if owner else ""
        self.execute(f"CREATE DATABASE {name}{owned}")
        return name, self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending whatever is still connected to it; quietly when the server is down."""
        if self.running():
            self.execute(f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)")

    def create_role(self, name: str, password: str) -> None:
        """A login role with a password and no other rights."""
        self.execute(f"CREATE ROLE {_identifier(name)} LOGIN PASSWORD '{password}'")

    def close(self) -> None:
        """Stop the server (immediately; nothing in it is kept) and remove the cluster; safe to repeat."""
        if not self.root.exists():
            return
        with contextlib.suppress(PostgresError, OSError, subprocess.SubprocessError):
            self.stop("immediate")
        self._kill_postmaster()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        """SIGKILL a postmaster that would not stop (its children end when they see it gone)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.05)


def _identifier(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return name
