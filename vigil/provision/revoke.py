"""Revoke a wearable everywhere: at the hub, in the broker's password file, in the running broker.

The hub goes first (one transaction: the revocation and its audit entry), so
that the device's messages are refused even if the broker steps fail; then its
broker password is removed; then mosquitto is reloaded (SIGHUP), which
re-reads the password file and drops the device's open connection. Each step
reports its own state; the steps are safe to repeat, so a failed run is
finished by running the same command again.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vigil.errors import VigilError
from vigil.hub.config import HubConfig, load_config
from vigil.hub.store import open_store
from vigil.provision.broker import reload_broker, remove_user
from vigil.wire.ids import DeviceId

RELOAD_HINT = "reload mosquitto (systemctl reload mosquitto) so it drops an open connection"


class State(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a revocation: its name, how it went, and why / what it did."""

    name: str
    state: State
    detail: str
    left_to_do: str = ""  # for a failed or skipped step: what the operator must still do

    def __str__(self) -> str:
        return f"{self.name}: {self.state.value}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Revocation:
    device_id: DeviceId
    steps: tuple[Step, ...]

    @property
    def complete(self) -> bool:
        return all(s.state is not State.FAILED for s in self.steps)

    def left_to_do(self) -> list[str]:
        return [s.left_to_do for s in self.steps if s.left_to_do]


def revoke_device(
    device_id_text: str, *, hub_config: Path, broker_pid_file: Path | None
) -> Revocation:
    """Revoke at the hub, then remove the broker password, then reload the broker."""
    device_id = DeviceId.parse(device_id_text)
    cfg = load_config(hub_config)
    hub = _attempt("hub", lambda: _revoke_at_hub(cfg, device_id),
                   left="fix the hub's store (or --hub-config) and run this again")  # fmt: skip
    password = _remove_password(cfg, device_id)
    if broker_pid_file is None:
        reload = Step("broker reload", State.SKIPPED, "no --broker-pid-file given", RELOAD_HINT)
    elif password.state is State.FAILED:
        reload = Step("broker reload", State.SKIPPED, "the password was not removed")
    else:
        reload = _attempt("broker reload", lambda: _reload_broker(broker_pid_file),
                          left=RELOAD_HINT)  # fmt: skip
    return Revocation(device_id, (hub, password, reload))


def _attempt(name: str, action: Callable[[], str], *, left: str) -> Step:
    try:
        return Step(name, State.DONE, action())
    except (VigilError, OSError) as exc:
        return Step(name, State.FAILED, str(exc), left)


def _revoke_at_hub(cfg: HubConfig, device_id: DeviceId) -> str:
    store = open_store(cfg.store_url)
    try:
        now = time.time()
        with store.transaction() as tx:
            tx.devices.revoke(device_id, now=now)
            tx.audit.append(at=now, actor="vigil-provision", action="revoke",
                            subject=f"device {device_id}")  # fmt: skip
    finally:
        store.close()
    return "revoked: the hub refuses its messages"


def _remove_password(cfg: HubConfig, device_id: DeviceId) -> Step:
    if cfg.broker is None or cfg.broker.password_file is None:
        return Step(
            "broker password",
            State.SKIPPED,
            "the hub config has no [broker] password_file",
            "remove the device's password on the broker's machine",
        )
    passwd = cfg.broker.password_file

    def remove() -> str:
        return "removed" if remove_user(passwd, device_id.hex) else "none was found"

    left = f"remove user {device_id.hex} from {passwd} and reload mosquitto"
    return _attempt("broker password", remove, left=left)


def _reload_broker(pid_file: Path) -> str:
    pid = reload_broker(pid_file)
    return f"SIGHUP sent to mosquitto (pid {pid}); it drops the device's connection"
