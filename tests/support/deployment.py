"""The technician's guide (docs/technician.md) sections 1-2, as the installed commands: a
locked-down broker's certificates and config and a hub's key and config, all under one folder
on loopback. Shared by the guide's own test and by `make pi-proof`."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.broker import free_port
from tests.support.notify import NotifySocket

BIN = Path(sys.executable).parent


def run(tool: str, *args: str | Path, timeout: float = 60) -> str:
    """Run an installed console script, as the technician would; its stdout."""
    result = subprocess.run(
        [str(BIN / tool), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(map(str, args))}: {result.stderr}")
    return result.stdout


@dataclass(frozen=True)
class Deployment:
    """Where `deploy` put things: `root` holds broker/, mosquitto/, hub.key and hub.toml."""

    root: Path
    port: int

    @property
    def hub_toml(self) -> Path:
        return self.root / "hub.toml"

    @property
    def mosquitto_conf(self) -> Path:
        return self.root / "mosquitto" / "mosquitto.conf"

    @property
    def broker_pid_file(self) -> Path:
        return self.root / "mosquitto" / "pid"


def deploy(root: Path, *, port: int | None = None) -> Deployment:
    """Broker certificates and config (TLS on 127.0.0.1:`port`), hub keys and config."""
    port = port or free_port()
    run("vigil-provision", "broker-certs", "--out", root / "broker", "--host", "localhost")
    run("vigil-provision", "broker-config", "--out", root / "mosquitto",
        "--certs", root / "broker", "--port", str(port), "--bind", "127.0.0.1",
        "--run-as", getpass.getuser(), "--pid-file", root / "mosquitto" / "pid")  # fmt: skip
    run("vigil-hub", "keygen", "--out", root / "hub.key")
    (root / "hub.toml").write_text(f"""
[hub]
keys = "hub.key"
[store]
url = "sqlite:///{root / "hub.db"}"
[mqtt]
host = "127.0.0.1"
port = {port}
tls_ca = "broker/ca.pem"
username = "vigil-hub"
password_file = "mosquitto/hub-mqtt-password"
[broker]
device_host = "localhost"
device_port = {port}
ca_file = "broker/ca.pem"
password_file = "mosquitto/passwd"
""")
    run("vigil-hub", "--config", root / "hub.toml", "init")  # the guide's section 2
    return Deployment(root, port)


@contextmanager
def process(
    argv: list[str | Path], log: Path, *, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, ready_timeout: float = 30,
) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """A long-running daemon with stdin for commands and its log in a file, once it has
    told its notify socket READY=1, as it tells systemd. `env` replaces the environment."""
    with log.open("ab") as sink, NotifySocket() as notify:
        proc = subprocess.Popen(
            [str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=sink, cwd=cwd or log.parent,
            env={**(os.environ if env is None else env), **notify.env},
        )  # fmt: skip
        try:
            notify.wait_for("READY=1", ready_timeout, process=proc)
        except (RuntimeError, TimeoutError) as exc:
            proc.kill()
            proc.wait()
            raise AssertionError(
                f"{argv[0]}: {exc}\n{log.read_text(errors='replace')[-2000:]}"
            ) from None
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
