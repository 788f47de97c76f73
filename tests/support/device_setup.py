"""Make a provisioned test wearable: keys on disk (0600) and a device config TOML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.provision.toml import render_toml
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DeviceKeys, HubKeys


@dataclass
class ProvisionedDevice:
    device_id: DeviceId
    device_keys: DeviceKeys
    hub_keys: HubKeys
    config_path: Path
    state_dir: Path


def make_device(
    tmp_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 1883,
    hub_keys: HubKeys | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    hybrid: bool = False,
) -> ProvisionedDevice:
    """Write keys and a config for a new device under `tmp_path`; return what a test needs
    (`hybrid`: suite 2 both ways, as `vigil-provision device` makes by default)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    device_id = DeviceId.generate()
    device_keys = DeviceKeys.generate(hybrid=hybrid)
    hub_keys = hub_keys or HubKeys.generate()
    keys_path = tmp_path / "device.key"
    device_keys.save(keys_path, force=True)
    state_dir = tmp_path / "state"
    doc: dict[str, dict[str, Any]] = {
        "device": {"id": device_id.hex, "keys": str(keys_path), "state_dir": str(state_dir)},
        "hub": {**hub_keys.public().to_text(), "suite": "mlkem768-x25519" if hybrid else "x25519"},
        "mqtt": {"host": host, "port": port, "keepalive": 5},
    }
    for section, values in (overrides or {}).items():
        doc.setdefault(section, {}).update(values)
    config_path = tmp_path / "device.toml"
    config_path.write_text(render_toml(doc))
    return ProvisionedDevice(device_id, device_keys, hub_keys, config_path, state_dir)
