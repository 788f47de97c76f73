"""Write what a wearable's first boot needs onto a stock Raspberry Pi OS image.

Bookworm runs `firstrun.sh` from `cmdline.txt` (`systemd.run=`), as Raspberry Pi
Imager does; Trixie configures first boot with cloud-init files (`user-data`,
`network-config`, `meta-data`) on the boot partition, and Imager also names the
NoCloud instance on the command line (`ds=nocloud;i=...`) so cloud-init need not
rediscover it at every boot. An image that ships `meta-data` on its boot
partition has cloud-init; one without gets `firstrun.sh`. Both end in the same
`vigil/install.sh`, which installs Vigil from the shipped wheels (no network
needed), moves the keys off the FAT partition into 0600 files, and enables
the service. Everything is written through mtools: no root, no loop mounts.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from vigil.errors import BadConfigValue, BadImage, ConfigError
from vigil.provision.fat import FatPartition, boot_partition_offset
from vigil.wire.keys import check_private_file

ROOT = Path(__file__).resolve().parents[2]
FIRSTBOOT = Path(__file__).resolve().parent / "firstboot"
MARKER = "# Vigil: append"
# Imager writes `systemd.run=/boot/firstrun.sh`, and Bookworm's initramfs (raspberrypi-sys-mods
# `imager_fixup`) rewrites that to /boot/firmware, where the FAT partition is mounted, and
# replaces the script's last lines. Naming /boot/firmware directly needs no fixup.
SYSTEMD_RUN = (
    " systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot"
    " systemd.unit=kernel-command-line.target"
)
DEVICE_FILES = ("device.toml", "device.key", "mqtt-password", "ca.pem")
UNITS = ("vigil-device.service", "vigil-fuel-gauge.service")
SLACK = 1 << 20  # leave the boot partition a MiB to breathe (FAT clusters, directories)
_LOGIN = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_SSH_KEY = re.compile(r"(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( [ -~]*)?")


@dataclass(frozen=True, slots=True)
class FirstBoot:
    """Who and what first boot sets up besides Vigil."""

    user: str = "vigil-admin"
    ssh_key: str | None = None
    wifi_ssid: str | None = None
    wifi_psk: str | None = None
    wifi_country: str = "GB"

    def __post_init__(self) -> None:
        # These end up in a shell file, a NetworkManager keyfile and cloud-init YAML:
        # a newline or a stray character would break out of its line there.
        if not _LOGIN.fullmatch(self.user) or self.user in ("root", "vigil"):
            raise BadConfigValue(f"--user {self.user!r}: a login name is [a-z_][a-z0-9_-]*")
        if self.ssh_key is not None and not _SSH_KEY.fullmatch(self.ssh_key):
            raise BadConfigValue("--ssh-key-file must hold one OpenSSH public key line")
        if self.wifi_ssid is not None:
            _check_wifi(self.wifi_ssid, self.wifi_psk)
        elif self.wifi_psk is not None:
            raise BadConfigValue("--wifi-psk-file needs --wifi-ssid")
        if not re.fullmatch(r"[A-Z]{2}", self.wifi_country):
            raise BadConfigValue(f"--wifi-country {self.wifi_country!r}: two capital letters")


def _check_wifi(ssid: str, psk: str | None) -> None:
    if not 1 <= len(ssid.encode()) <= 32 or not ssid.isprintable():
        raise BadConfigValue("--wifi-ssid: 1 to 32 bytes of printable text")
    if psk is None:
        return  # an open network
    if not (8 <= len(psk) <= 63 and psk.isascii() and psk.isprintable()) and not re.fullmatch(
        r"[0-9a-fA-F]{64}", psk
    ):
        raise BadConfigValue("--wifi-psk-file: a WPA passphrase is 8 to 63 printable ASCII")


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
    _check_room(fat, image, device, wheels)
    _copy_vigil(fat, device, wheels)
    fat.write("config.txt", _with_vigil_config(config.decode()).encode())
    line = _without_serial_console(cmdline.decode())
    if release == "bookworm":
        fat.write("vigil/firstboot.env", _env(first_boot).encode())
        fat.write("firstrun.sh", b"", source=FIRSTBOOT / "firstrun.sh")
        line = line.replace(SYSTEMD_RUN, "") + SYSTEMD_RUN
    else:
        fat.write("user-data", _user_data(first_boot).encode())
        if first_boot.wifi_ssid:  # as Imager: without Wi-Fi the image's own file stays
            network = _network_config(first_boot, first_boot.wifi_ssid)
            fat.write("network-config", network.encode())
        instance = f"vigil-{_device_id(device)}"
        fat.write("meta-data", f"instance-id: {instance}\n".encode())
        line = (
            " ".join(w for w in line.split() if not w.startswith("ds="))
            + f" ds=nocloud;i={instance}"
        )
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
    for unit in UNITS:
        fat.write(f"vigil/{unit}", b"", source=ROOT / "systemd" / unit)
    for wheel in sorted(wheels.glob("*.whl")):
        fat.write(f"vigil/wheels/{wheel.name}", b"", source=wheel)


def _check_room(fat: FatPartition, image: Path, device: Path, wheels: Path) -> None:
    """Refuse before writing anything when the files cannot fit: no half-written card."""
    files = [device / n for n in DEVICE_FILES] + [ROOT / "systemd" / u for u in UNITS]
    files += [FIRSTBOOT / "install.sh", FIRSTBOOT / "firstrun.sh", *wheels.glob("*.whl")]
    needed = sum(f.stat().st_size for f in files) + SLACK
    free = fat.free_bytes()
    if free is not None and needed > free:
        raise BadImage(
            f"{image}: the boot partition has {free // 1024} KiB free, "
            f"Vigil needs {needed // 1024} KiB (fewer or smaller wheels?)"
        )


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
        "VIGIL_WIFI_PSK": _wpa_key(fb),
        "VIGIL_WIFI_COUNTRY": fb.wifi_country,
    }
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _wpa_key(fb: FirstBoot) -> str:
    """The 64-hex-digit WPA key, so the passphrase (often reused) never lands on the card."""
    if not fb.wifi_ssid or not fb.wifi_psk or len(fb.wifi_psk) == 64:
        return fb.wifi_psk or ""
    # IEEE 802.11i PSK = PBKDF2-HMAC-SHA1(passphrase, SSID, 4096, 32): the Wi-Fi format, as
    # Raspberry Pi Imager writes it; NetworkManager and netplan take it in place of the text.
    key = hashlib.pbkdf2_hmac("sha1", fb.wifi_psk.encode(), fb.wifi_ssid.encode(), 4096, 32)
    return key.hex()


def _user_data(fb: FirstBoot) -> str:
    # As Raspberry Pi Imager writes it: singular `user` renames the image's default user and
    # keeps its groups (a `users` list without `default` makes a group-less account);
    # cloud-init's ssh module never enables sshd on Raspberry Pi OS, so runcmd does.
    user: dict[str, object] = {"name": fb.user, "shell": "/bin/bash", "lock_passwd": True}
    runcmd: list[list[str]] = []
    if fb.ssh_key:
        user["ssh_authorized_keys"] = [fb.ssh_key]
        user["sudo"] = "ALL=(ALL) NOPASSWD:ALL"  # a key-only login has no password for sudo
        runcmd.append(["systemctl", "enable", "--now", "ssh"])
    else:
        user["sudo"] = None  # no way to log in, and no inherited sudo rule either
    runcmd.append(["sh", "/boot/firmware/vigil/install.sh", "--start"])
    doc = {"manage_resolv_conf": False, "user": user, "ssh_pwauth": False, "runcmd": runcmd}
    return "#cloud-config\n" + _yaml(doc)


def _network_config(fb: FirstBoot, ssid: str) -> str:
    point: dict[str, object] = (
        {"password": _wpa_key(fb)} if fb.wifi_psk else {"auth": {"key-management": "none"}}
    )
    wifi = {
        "wlan0": {
            "dhcp4": True,
            "optional": True,
            "regulatory-domain": fb.wifi_country,
            "access-points": {ssid: point},
        }
    }
    return _yaml({"network": {"version": 2, "wifis": wifi}})


def _yaml(doc: dict[str, object]) -> str:
    """JSON, which is valid YAML, in UTF-8: cloud-init's YAML reader turns JSON's escaped
    surrogate pairs (an emoji in an SSID) into two broken characters, so none are escaped."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
