"""Enrol a wearable: keys, opaque id, broker credentials, hub registry entry, device config.

Re-running `provision_device` on the same folder re-uses its keys, id and
password (and re-enrolling the same keys changes nothing); new keys need
`force`, which also revokes the old ones at the hub and renews the broker
password. A revoked device comes back only with `force`: its old keys and
password may be in other hands.
"""

from __future__ import annotations

import shutil
import time
import tomllib
from pathlib import Path
from typing import Any

from vigil.device.config import PINOUT
from vigil.errors import (
    AlreadyEnrolled,
    BadConfigValue,
    ConfigError,
    KeyFileError,
)
from vigil.hub.channels import accepts_url
from vigil.hub.config import BrokerConfig, HubConfig, load_config
from vigil.hub.store import DeviceRecord, open_store
from vigil.provision.broker import new_password, reload_broker, set_password
from vigil.provision.toml import render_toml
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DeviceKeys, HubKeys, write_atomically

SUITES = {"x25519", "mlkem768-x25519"}
# Post-quantum by default: traffic recorded today must not open with tomorrow's computers.
DEFAULT_SUITE = "mlkem768-x25519"
# Where the files live on the wearable (the SD-image tool puts them there).
ON_DEVICE = {
    "keys": "/var/lib/vigil-device/device.key",
    "state_dir": "/var/lib/vigil-device",
    "password_file": "/etc/vigil/mqtt-password",
    "tls_ca": "/etc/vigil/ca.pem",
}


def provision_device(
    *, label: str, hub_config: Path, out: Path, contacts: list[str], suite: str, force: bool,
    broker_pid_file: Path | None = None,
) -> str:  # fmt: skip
    """Create or re-use the device in `out`, enrol it, grant broker access; return a summary.

    Everything local (id, keys, password, CA, device.toml) is written first, so a
    rerun after a failure at the hub or the broker re-uses the same device id.
    The hub enrols before the broker lets the device in.
    """
    if not label.strip() or len(label) > 100 or not label.isprintable():
        raise BadConfigValue(f"--label must be 1..100 printable characters, got {label!r:.40}")
    for url in contacts:
        _check_contact(url)
    cfg = load_config(hub_config)
    if cfg.broker is None or cfg.broker.password_file is None or cfg.broker.ca_file is None:
        raise ConfigError(f"{hub_config}: [broker] needs device_host, ca_file and password_file")
    device_id = _existing_id(out) or DeviceId.generate()
    keys = _device_keys(out / "device.key", force=force, hybrid=suite == DEFAULT_SUITE)
    # New keys mean the old ones are not trusted: the broker password goes with them.
    password = _password(out / "mqtt-password", renew=force)
    shutil.copyfile(cfg.broker.ca_file, out / "ca.pem")
    config = _device_toml(cfg.keys_path, cfg.broker, device_id, suite=suite)
    write_atomically(out / "device.toml", config, mode=0o644)
    _enrol(cfg, device_id, keys, label=label, contacts=contacts, replace=force)
    set_password(cfg.broker.password_file, device_id.hex, password)
    note = ""
    if suite == DEFAULT_SUITE and keys.hybrid_kem is None:
        note = (" Its keys predate hybrid downlink keys: its downlinks stay x25519 until "
                "--force gives it new keys.")  # fmt: skip
    if broker_pid_file is None:
        return (
            f"device {device_id} ({label}) enrolled; files in {out}. Reload mosquitto "
            f"(systemctl reload mosquitto) so it accepts the device's password.{note}"
        )
    reload_broker(broker_pid_file)
    return f"device {device_id} ({label}) enrolled; files in {out}; broker reloaded.{note}"


def _device_toml(
    hub_keys: Path, broker: BrokerConfig, device_id: DeviceId, *, suite: str
) -> bytes:
    """The wearable's config, naming the paths its files will have on the Pi."""
    hub_public = HubKeys.load(hub_keys).public().to_text()
    doc: dict[str, dict[str, Any]] = {
        "device": {"id": device_id.hex, "keys": ON_DEVICE["keys"],
                   "state_dir": ON_DEVICE["state_dir"]},
        "hub": {**hub_public, "suite": suite},
        "mqtt": {"host": broker.device_host, "port": broker.device_port,
                 "tls_ca": ON_DEVICE["tls_ca"], "username": device_id.hex,
                 "password_file": ON_DEVICE["password_file"]},
        "battery": {"capacity_path": _capacity_path()},
    }  # fmt: skip
    return render_toml(doc).encode()


def _check_contact(url: str) -> None:
    """Refuse a contact the hub could not notify: its alarms would reach nobody there."""
    if len(url) > 2000 or not url.isprintable() or not accepts_url(url):
        raise BadConfigValue(
            f"--contact {url!r:.60} is not a notification URL the hub can use "
            "(an Apprise URL such as mailtos://user:password@example.org)"
        )


def _capacity_path() -> str:
    """Where the fuel gauge's driver shows the charge on the wearable (the pinout)."""
    try:
        return str(tomllib.loads(PINOUT.read_text())["i2c"]["capacity_path"])
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise ConfigError(f"{PINOUT}: no [i2c] capacity_path: {exc}") from exc


def _existing_id(out: Path) -> DeviceId | None:
    config = out / "device.toml"
    if not config.exists():
        return None
    try:
        return DeviceId.parse(tomllib.loads(config.read_text())["device"]["id"])
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{config}: cannot read the device id: {exc}") from exc


def _device_keys(path: Path, *, force: bool, hybrid: bool) -> DeviceKeys:
    """The folder's keys as they are, or new ones (with a hybrid downlink key for suite 2)."""
    if path.exists() and not force:
        return DeviceKeys.load(path)
    keys = DeviceKeys.generate(hybrid=hybrid)
    keys.save(path, force=force)
    return keys


def _password(path: Path, *, renew: bool) -> str:
    if path.exists() and not renew:
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise KeyFileError(f"cannot read {path}: {exc}") from exc
    password = new_password()
    write_atomically(path, password.encode() + b"\n", mode=0o600)
    return password


def _enrol(
    cfg: HubConfig, device_id: DeviceId, keys: DeviceKeys, *, label: str, contacts: list[str],
    replace: bool,
) -> None:  # fmt: skip
    """Enrol (or re-enrol) at the hub: the old keys' revocation, the enrolment and its
    audit entry commit together or not at all."""
    store = open_store(cfg.store_url)
    try:
        now = time.time()
        with store.transaction() as tx:
            known = tx.devices.get(device_id)
            same = known is not None and known.public_keys.to_text() == keys.public().to_text()
            _check_replace(device_id, known, same=same, replace=replace)
            if known is not None and not same and not known.revoked:
                tx.devices.revoke(device_id, now=now)  # new keys replace the old ones
            tx.devices.enroll(device_id, label=label, public_keys=keys.public(),
                              contacts=contacts, now=now)  # fmt: skip
            tx.audit.append(at=now, actor="vigil-provision", action="enroll",
                            subject=f"device {device_id}", detail=label)  # fmt: skip
    finally:
        store.close()


def _check_replace(
    device_id: DeviceId, known: DeviceRecord | None, *, same: bool, replace: bool
) -> None:
    if known is not None and known.revoked and same:
        # The store would quietly revive it; a revoked device's keys may be in other hands.
        raise AlreadyEnrolled(
            f"device {device_id} was revoked and these are its old keys; "
            "pass --force to give it new keys and a new broker password"
        )
    if known is not None and not same and not replace:
        raise AlreadyEnrolled(
            f"device {device_id} is enrolled at the hub with other keys than this "
            "folder's device.key; pass --force to replace them"
        )
