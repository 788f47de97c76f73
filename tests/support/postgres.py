"""A throwaway PostgreSQL server for the test run: `initdb` + `pg_ctl` on a free loopback port.

The store tests never depend on a server someone left running: the session starts
its own in a temporary folder, trusts only 127.0.0.1, and removes it afterwards.
initdb and postgres refuse to run as root (CI runs as root), so as root the server
runs as the unprivileged `nobody`, through `runuser`; as anyone else it runs as
that user. Readiness is a real connection, never a line in the server's log.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.broker import free_port
from tests.support.wait import wait_until

UNPRIVILEGED_USER = "nobody"  # who runs the server when the tests run as root
_DEBIAN_BIN = Path("/usr/lib/postgresql")  # Debian keeps the server tools off PATH


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", folder.parent.name)) or (0,)


def server_bin_dir() -> Path:
    """The folder with `initdb`, `pg_ctl` and `postgres`: PATH first, then Debian's newest."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = [d for d in _DEBIAN_BIN.glob("*/bin") if (d / "initdb").exists()]
    if found:
        return max(found, key=_version_key)
    raise FileNotFoundError(
        "PostgreSQL's server tools (initdb, pg_ctl) are not installed: "
        "run 'make system-deps' (installs the postgresql package)"
    )


@dataclass(frozen=True)
class PostgresServer:
    """A running server: connect as `postgres` (trusted on 127.0.0.1) to database `postgres`."""

    port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database on this server; return its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def pid(self) -> int:
        """The server's main process (its backends and workers run below it)."""
        return int((self.folder / "data" / "postmaster.pid").read_text().split()[0])

    def restart(self, *, timeout: float = 60.0) -> None:
        """Crash the server (`pg_ctl stop -m immediate`: no checkpoint) and start it again."""
        self.crash()
        self.start(timeout=timeout)

    def crash(self) -> None:
        """Stop at once, as a crash would (committed work survives only when durable)."""
        _run([str(server_bin_dir() / "pg_ctl"), "stop", "--wait", "-m", "immediate",
              "-D", str(self.folder / "data")], self.folder)  # fmt: skip

    def start(self, *, timeout: float = 60.0) -> None:
        data, log = self.folder / "data", self.folder / "server.log"
        _run([str(server_bin_dir() / "pg_ctl"), "start", "--no-wait", "-D", str(data),
              "-l", str(log)], self.folder)  # fmt: skip
        wait_until(lambda: accepts_connections(self.url), timeout,
                   what=f"PostgreSQL to accept connections again on port {self.port}")  # fmt: skip


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # util-linux; sbin may be off PATH
    return [runuser, "-u", UNPRIVILEGED_USER, "--", *argv]


def _run(argv: list[str], folder: Path) -> None:
    done = subprocess.run(
        _as_server_user(argv), cwd=folder, capture_output=True, text=True, check=False,
        timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")


def accepts_connections(url: str) -> bool:
    """Whether the server at `url` completes a login and answers a query."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def _configure(data: Path, port: int, *, durable: bool) -> None:
    """Loopback TCP only (no Unix socket to place); no fsync unless `durable` (the tests
    throw the data away; a benchmark of durable commits needs them as shipped)."""
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(
            f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
        )
        if not durable:
            conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")


@contextmanager
def running_postgres(*, timeout: float = 60.0, durable: bool = False) -> Iterator[PostgresServer]:
    """Create a cluster in a fresh temporary folder, start it, yield it; stop and remove it.

    `durable`: fsync and synchronous commits on, as a production server has them."""
    bin_dir = server_bin_dir()
    # Not under pytest's tmp folder: that is private to the test user, and the server
    # user (nobody, when we are root) must be able to enter its own data folder.
    folder = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
    data, port = folder / "data", free_port()
    server = PostgresServer(port, folder)
    started = False
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(folder, user.pw_uid, user.pw_gid)
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "--no-locale", "-E", "UTF8", "--no-sync"], folder)  # fmt: skip
        _configure(data, port, durable=durable)
        _run([str(bin_dir / "pg_ctl"), "start", "--no-wait", "-D", str(data),
              "-l", str(folder / "server.log")], folder)  # fmt: skip
        started = True
        try:
            wait_until(lambda: accepts_connections(server.url), timeout,
                       what=f"PostgreSQL to accept connections on 127.0.0.1:{port}")  # fmt: skip
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}; its log:\n{server.log()[-2000:]}") from None
        yield server
    finally:
        try:
            if started:
                _run([str(bin_dir / "pg_ctl"), "stop", "--wait", "-m", "fast",
                      "-D", str(data)], folder)  # fmt: skip
        finally:
            shutil.rmtree(folder, ignore_errors=True)
