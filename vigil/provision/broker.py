"""Render the locked-down mosquitto config and manage its password file.

Passwords are hashed by mosquitto's own `mosquitto_passwd` (PBKDF2-SHA512, `$7$`),
so the format is always the one the installed broker reads. Mosquitto 2.0 uses
only 101 PBKDF2 iterations; our passwords are 256 random bits, so guessing them
from a stolen password file stays out of reach regardless.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vigil.errors import BadConfigValue, ConfigError
from vigil.provision.certs import HOST_RE, BrokerCerts
from vigil.wire.keys import write_atomically

TEMPLATES = Path(__file__).resolve().parents[2] / "broker"
HUB_USER = "vigil-hub"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")  # MQTT user / login: no space, '+', '#', '/'
PID_FILE = Path("/run/mosquitto/mosquitto.pid")  # where Debian's mosquitto.service keeps it


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    conf: Path
    acl: Path
    passwd: Path
    hub_password: Path
    dropin: Path
    more_hub_passwords: tuple[Path, ...] = ()


def render_broker_config(
    out: Path, *, certs: BrokerCerts, port: int = 8883, bind: str = "0.0.0.0",  # noqa: S104
    hub_user: str = HUB_USER, run_as: str = "mosquitto", pid_file: Path = PID_FILE,
    more_hub_users: Sequence[str] = (),
) -> BrokerFiles:  # fmt: skip
    """Write mosquitto.conf, the ACL, a password file with the hub user, and its password.

    Also a systemd drop-in that points the packaged mosquitto.service at this config.
    The broker makes each client id its username, so every running hub instance needs
    its own user: `more_hub_users` (passwords in `hub-mqtt-password.<user>`).
    """
    hub_users = [hub_user, *more_hub_users]
    if len(set(hub_users)) != len(hub_users):
        raise BadConfigValue(f"each hub instance needs its own user, got {hub_users}")
    for user in hub_users:
        _check_options(out=out, bind=bind, hub_user=user, run_as=run_as, pid_file=pid_file)
    for needed in (certs.ca, certs.server, certs.server_key):
        if not needed.is_file():
            raise ConfigError(f"{needed} is missing; run 'vigil-provision broker-certs' first")
    files = BrokerFiles(
        out / "mosquitto.conf", out / "acl", out / "passwd", out / "hub-mqtt-password",
        out / "mosquitto.service.d-vigil.conf",
        tuple(out / f"hub-mqtt-password.{user}" for user in more_hub_users),
    )  # fmt: skip
    (out / "data").mkdir(parents=True, exist_ok=True)
    conf = (TEMPLATES / "mosquitto.conf.template").read_text().format(
        passwd=files.passwd.resolve(), acl=files.acl.resolve(), data=(out / "data").resolve(),
        port=port, bind=bind, user=run_as, ca=certs.ca.resolve(), cert=certs.server.resolve(),
        key=certs.server_key.resolve(), pid_file=pid_file,
    )  # fmt: skip
    write_atomically(files.conf, conf.encode(), mode=0o644)
    dropin = (TEMPLATES / "mosquitto-dropin.conf.template").read_text()
    write_atomically(files.dropin, dropin.format(conf=files.conf.resolve()).encode(), mode=0o644)
    template = (TEMPLATES / "acl.template").read_text()
    hub_block = template[template.index("user {hub_user}") :]
    acl = template.format(hub_user=hub_user)
    acl += "".join("\n" + hub_block.format(hub_user=user) for user in more_hub_users)
    write_atomically(files.acl, acl.encode(), mode=0o644)
    for user, secret in zip(
        hub_users, (files.hub_password, *files.more_hub_passwords), strict=True
    ):
        # A rerun keeps a hub's password: the running hub would otherwise be locked out.
        password = _read_secret(secret) or new_password()
        set_password(files.passwd, user, password)
        write_atomically(secret, password.encode() + b"\n", mode=0o600)
    return files


def _check_options(*, out: Path, bind: str, hub_user: str, run_as: str, pid_file: Path) -> None:
    """Refuse values that would break out of their line in mosquitto.conf or the ACL."""
    if not _NAME.fullmatch(hub_user):
        raise BadConfigValue(
            f"--hub-user must be letters, digits, '.', '_', '-'; got {hub_user!r}"
        )
    if not _NAME.fullmatch(run_as):
        raise BadConfigValue(f"--run-as must be a login name, got {run_as!r}")
    if not (HOST_RE.fullmatch(bind) or _is_ip(bind)):
        raise BadConfigValue(f"--bind must be an IP address or host name, got {bind!r}")
    for option, path in (("--out", out), ("--pid-file", pid_file)):
        if not str(path).isprintable():
            raise BadConfigValue(f"{option} must be a printable path on one line")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def new_password() -> str:
    """A random broker password (256 bits)."""
    return secrets.token_urlsafe(32)


def set_password(passwd: Path, user: str, password: str) -> None:
    """Add or replace `user` in mosquitto's password file (created 0600 if absent)."""
    if not password or not password.isprintable():
        raise ConfigError(f"the broker password for {user} must be printable, on one line")
    if not passwd.exists():
        write_atomically(passwd, b"", mode=0o600)
    # On stdin, not with -b: a command line is readable by every local user (ps).
    _mosquitto_passwd(str(passwd), user, stdin=f"{password}\n{password}\n")


def remove_user(passwd: Path, user: str) -> bool:
    """Delete `user` from the password file; return whether it was there."""
    if not passwd.exists() or not any(
        line.split(":", 1)[0] == user for line in passwd.read_text().splitlines()
    ):
        return False
    _mosquitto_passwd("-D", str(passwd), user)
    return True


def reload_broker(pid_file: Path) -> int:
    """Send SIGHUP to the mosquitto whose pid is in `pid_file` (it re-reads passwd and ACL).

    Returns the pid. mosquitto 2 then disconnects every client that no longer
    authenticates (see tests/integration/test_provision_device.py).
    """
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot reload the broker from {pid_file}: {exc}") from exc
    return pid


def _mosquitto_passwd(*args: str, stdin: str | None = None) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        raise ConfigError("mosquitto_passwd is not installed (package mosquitto)")
    result = subprocess.run(  # noqa: S603 - fixed tool, arguments are ours
        [tool, *args], input=stdin, capture_output=True, text=True, check=False, timeout=30
    )
    if result.returncode != 0:
        raise ConfigError(f"mosquitto_passwd failed: {result.stderr.strip() or result.stdout}")
