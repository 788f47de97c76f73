"""A real mosquitto, started on a free loopback port with its own config, for tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.wait import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("mosquitto is not installed; run 'make system-deps'")


def listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on host:port."""
    wait_until(lambda: listening(host, port), timeout, what=f"a listener on {host}:{port}")


@dataclass
class Broker:
    host: str
    port: int
    conf: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.conf.parent / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        process = self.process
        wait_until(lambda: process.poll() is not None or listening(self.host, self.port), 10,
                   what=f"mosquitto to listen on {self.host}:{self.port}")  # fmt: skip
        if process.poll() is not None:  # a config it refused: say why, not "timed out"
            raise RuntimeError(f"mosquitto exited ({process.returncode}):\n{self.log()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.conf.parent / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def running_mosquitto(
    workdir: Path, extra_conf: str = "", *, port: int | None = None
) -> Iterator[Broker]:
    """Start mosquitto on 127.0.0.1 with `extra_conf` appended; stop it afterwards.

    Without extra config the listener is plain and anonymous (for client logic
    tests); the locked-down production config is tested in tests/integration.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = workdir / "mosquitto.conf"
    persistence = workdir / "data"
    persistence.mkdir(exist_ok=True)
    base = extra_conf or "allow_anonymous true\n"
    # Started as root, mosquitto drops to its own user, which cannot reach a test's private
    # folder: it would save nothing ("mosquitto.db.new: Permission denied") and every
    # restart would lose every session, which a real broker keeps. It stays root here.
    stay = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"per_listener_settings false\n{stay}"
        f"persistence true\npersistence_location {persistence}/\n"
        f"listener {port} 127.0.0.1\n{base}"
    )
    broker = Broker("127.0.0.1", port, conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@contextmanager
def running_mosquitto_conf(conf: Path, port: int) -> Iterator[Broker]:
    """Start mosquitto with exactly the config file `conf` (which listens on `port`)."""
    broker = Broker("127.0.0.1", port, conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
