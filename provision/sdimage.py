"""Write what a wearable's first boot needs onto a stock Raspberry Pi OS image.

Bookworm runs `firstrun.sh` from `cmdline.txt` (`systemd.run=`), as Raspberry Pi
Imager does; Trixie configures first boot with cloud-init files (`user-data`,
`network-config`, `meta-data`) on the boot partition. Both end in the same
`vigil/install.sh`, which installs Vigil from the shipped wheels (no network
needed), moves the keys off the FAT partition into 0600 files, and enables
the service. Everything is written through mtools: no root, no loop mounts.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from provision.fat import FatPartition, boot_partition_offset
from wire.errors import ConfigError
from wire.keys import check_private_file

ROOT = Path(__file__).resolve().parents[1]
FIRSTBOOT = Path(__file__).resolve().parent / "firstboot"
MARKER = "# Vigil: append"
SYSTEMD_RUN = (
    " systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot"
    " systemd.unit=kernel-command-line.target"
)
DEVICE_FILES = ("device.toml", "device.key", "mqtt-password", "ca.pem")


@dataclass(frozen=True, slots=True)
class FirstBoot:
    """Who and what first boot sets up besides Vigil."""

    user: str = "vigil-admin"
    ssh_key: str | None = None
    wifi_ssid: str | None = None
    wifi_psk: str | None = None
    wifi_country: str = "GB"


def write_sd_image(
    image: Path, *, device: Path, wheels: Path, first_boot: FirstBoot, release: str | None = None
) -> str:
    """Prepare `image` for the device provisioned in `device`; return what was done."""
    _check_inputs(device, wheels)
    fat = FatPartition(image, boot_partition_offset(image))
    config, cmdline = fat.read("config.txt"), fat.read("cmdline.txt")
    if config is None or cmdline is None:
        raise ConfigError(f"{image}: the boot partition has no config.txt/cmdline.txt")
    release = release or ("trixie" if fat.read("meta-data") is not None else "bookworm")
    _copy_vigil(fat, device, wheels)
    fat.write("config.txt", _with_vigil_config(config.decode()).encode())
    line = _without_serial_console(cmdline.decode())
    if release == "bookworm":
        fat.write("vigil/firstboot.env", _env(first_boot).encode())
        fat.write("firstrun.sh", b"", source=FIRSTBOOT / "firstrun.sh")
        line = line.replace(SYSTEMD_RUN, "") + SYSTEMD_RUN
    else:
        fat.write("user-data", _user_data(first_boot).encode())
        fat.write("network-config", _network_config(first_boot).encode())
        fat.write("meta-data", f"instance-id: vigil-{_device_id(device)}\n".encode())
    fat.write("cmdline.txt", (line + "\n").encode())
    return f"{image}: {release} first boot prepared for device {_device_id(device)}"


def _check_inputs(device: Path, wheels: Path) -> None:
    for name in DEVICE_FILES:
        if not (device / name).is_file():
            raise ConfigError(f"{device / name} is missing: run 'vigil-provision device' first")
    for secret in ("device.key", "mqtt-password"):
        check_private_file(device / secret)
    if not any(wheels.glob("vigil-*.whl")):
        raise ConfigError(f"{wheels} holds no vigil wheel: see docs/technician.md (wheels)")


def _copy_vigil(fat: FatPartition, device: Path, wheels: Path) -> None:
    fat.mkdir("vigil")
    fat.mkdir("vigil/wheels")
    for name in DEVICE_FILES:
        fat.write(f"vigil/{name}", b"", source=device / name)
    fat.write("vigil/install.sh", b"", source=FIRSTBOOT / "install.sh")
    fat.write("vigil/vigil-device.service", b"", source=ROOT / "systemd" / "vigil-device.service")
    for wheel in sorted(wheels.glob("*.whl")):
        fat.write(f"vigil/wheels/{wheel.name}", b"", source=wheel)


def _with_vigil_config(config: str) -> str:
    if MARKER in config:
        return config  # already prepared: writing twice changes nothing
    fragment = (ROOT / "hardware" / "config.txt").read_text()
    return config.rstrip("\n") + "\n\n" + fragment


def _without_serial_console(cmdline: str) -> str:
    """Free the UART for the GPS: drop `console=serial0,...` (and ttyAMA0) from the line."""
    words = cmdline.split()
    kept = [w for w in words if not w.startswith(("console=serial0", "console=ttyAMA0"))]
    return " ".join(kept)


def _device_id(device: Path) -> str:
    for line in (device / "device.toml").read_text().splitlines():
        if line.startswith("id = "):
            return str(json.loads(line.split("=", 1)[1]))
    raise ConfigError(f"{device / 'device.toml'} has no device id")


def _env(fb: FirstBoot) -> str:
    values = {
        "VIGIL_USER": fb.user,
        "VIGIL_SSH_KEY": fb.ssh_key or "",
        "VIGIL_WIFI_SSID": fb.wifi_ssid or "",
        "VIGIL_WIFI_PSK": fb.wifi_psk or "",
        "VIGIL_WIFI_COUNTRY": fb.wifi_country,
    }
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _user_data(fb: FirstBoot) -> str:
    user: dict[str, object] = {
        "name": fb.user,
        "groups": "sudo,gpio,dialout,i2c",
        "shell": "/bin/bash",
        "lock_passwd": True,
    }
    if fb.ssh_key:
        user["ssh_authorized_keys"] = [fb.ssh_key]
    doc = {
        "users": [user],
        "enable_ssh": bool(fb.ssh_key),
        "runcmd": [["sh", "/boot/firmware/vigil/install.sh"]],
    }
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"  # JSON is valid YAML


def _network_config(fb: FirstBoot) -> str:
    if not fb.wifi_ssid:
        return "network:\n  version: 2\n"
    wifi = {
        "wlan0": {
            "dhcp4": True,
            "optional": True,
            "regulatory-domain": fb.wifi_country,
            "access-points": {fb.wifi_ssid: {"password": fb.wifi_psk or ""}},
        }
    }
    return json.dumps({"network": {"version": 2, "wifis": wifi}}, indent=2) + "\n"
