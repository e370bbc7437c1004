"""A throwaway PostgreSQL cluster for the cluster-mode tests, started once per session.

The server binaries come from the machine's PostgreSQL packages (Debian's `postgresql`, which
`make test` installs): `$CHORUS_PG_BINDIR` if set, else the folder of an `initdb` on PATH, else the
newest /usr/lib/postgresql/<version>/bin. The cluster lives in a temporary folder, listens on a free
loopback port (and a unix socket inside that folder), trusts local connections, and skips every
durability cost (fsync, full-page writes, synchronous commit): it is removed at the end anyway.

initdb and the server refuse to run as root, so as root they run as the `postgres` user that the
package creates, in a folder it owns.

`database_url` gives each test its own fresh database, dropped afterwards.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

SUPERUSER = "chorus"
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def server_bindir() -> Path:
    """Where initdb, pg_ctl and postgres are: Debian keeps them off PATH, per major version."""
    candidates = []
    if os.environ.get("CHORUS_PG_BINDIR"):
        candidates.append(Path(os.environ["CHORUS_PG_BINDIR"]))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)

    def major(folder: Path) -> int:
        return int(folder.parent.name) if folder.parent.name.isdigit() else 0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    raise RuntimeError("PostgreSQL server binaries not found (install Debian's `postgresql` package, "
                       "or set CHORUS_PG_BINDIR to the folder holding initdb, pg_ctl and postgres)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One cluster: initdb into `folder`, then pg_ctl start/stop, as the right user."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.user = pwd.getpwnam("postgres") if self.as_root else None
        self.folder = Path(tempfile.mkdtemp(prefix="chorus-pg-"))
        if self.user is not None:
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self.data, self.sockets, self.log = self.folder / "data", self.folder / "sock", self.folder / "server.log"
        self.port = 0

    def _run(self, *args: str) -> None:
        """Run a server tool as the cluster's owner; its output goes into the error when it fails."""
        owner = {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid,
                                              "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        if self.user is not None:
            env["HOME"] = str(self.folder)
        done = subprocess.run([str(self.bindir / args[0]), *args[1:]], cwd=self.folder, env=env,
                              capture_output=True, text=True, timeout=120, **owner)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
                               f"\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                  "--no-locale", "--no-sync", "--no-instructions")
        self.sockets.mkdir()
        if self.user is not None:
            os.chown(self.sockets, self.user.pw_uid, self.user.pw_gid)

    def start(self) -> None:
        """On a free port; another process may take the port between the probe and the bind, so
        a failed start is retried on a fresh one."""
        for attempt in range(3):
            self.port = free_port()
            self._configure()
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
                return
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self._log_tail():
                    raise

    def _configure(self) -> None:
        settings = {**SETTINGS, "port": str(self.port), "unix_socket_directories": f"'{self.sockets}'"}
        # The file ALTER SYSTEM writes, read after postgresql.conf; rewritten whole (it keeps its owner).
        (self.data / "postgresql.auto.conf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A running throwaway cluster's URL (superuser, database `postgres`)."""
    server = Server(server_bindir())
    try:
        server.init()
        server.start()
    except BaseException:
        shutil.rmtree(server.folder, ignore_errors=True)
        raise
    try:
        yield server.url
    finally:
        server.stop()


def create_database(postgres_url: str) -> str:
    """A new empty database on the cluster; returns its URL."""
    name = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(postgres_url: str, url: str) -> None:
    """Drop it, ending any connection a test left open."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(postgres_url: str) -> Iterator[str]:
    """A fresh database for one test, so tests never see each other's rows."""
    url = create_database(postgres_url)
    try:
        yield url
    finally:
        drop_database(postgres_url, url)
