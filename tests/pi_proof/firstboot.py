"""Steps 2 and 3: a card written by `vigil-provision sd-image`, its boot partition copied to
/boot/firmware of the arm64 root, the real first-boot path run there, and what it left checked.

Bookworm: `firstrun.sh` runs as `systemd.run=` would run it (root, no arguments). Trixie:
cloud-init's own schema check on `user-data` and `network-config`, then the script that
cloud-init's runcmd module makes of `runcmd` (with cloud-init's code), as scripts_user runs
it. cloud-init's other modules (the admin user, SSH keys, netplan) need a booted system and
its datasource, so the proof does not run them.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.test_sdimage import build_image
from tests.pi_proof.roots import Chroot, Release
from tests.support.deployment import Deployment, run
from vigil.provision.fat import boot_partition_offset

BOOT = "/boot/firmware"
SECRETS = ("vigil/device.key", "vigil/mqtt-password")
ADMIN = "vigil-admin"
ELF_AARCH64 = 183  # e_machine of an aarch64 ELF file
# `vigil-device ARGS` as systemd runs the unit: RuntimeDirectory=, WorkingDirectory=, UMask=,
# User= and Group= with the supplementary groups (gpio, dialout, i2c).
AS_THE_UNIT = (
    "sh", "-c",
    "install -d -o vigil -g vigil -m 0700 /run/vigil-device && cd /run/vigil-device && "
    "umask 077 && exec setpriv --reuid=vigil --regid=vigil --init-groups "
    '/opt/vigil/venv/bin/vigil-device "$@"', "vigil-device",
)  # fmt: skip


@dataclass(frozen=True)
class Card:
    image: Path
    device: Path  # the provisioned device folder (device.toml, keys, CA)


def write_card(work: Path, deployed: Deployment, release: Release, wheels: Path) -> Card:
    """Provision a wearable at the hub and write its card, as docs/technician.md 3-4 say."""
    device = work / "wearable"
    run("vigil-provision", "device", "--label", f"pi-proof {release.name}",
        "--hub-config", deployed.hub_toml, "--out", device)  # fmt: skip
    ssh_key = work / "admin.pub"
    ssh_key.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b" technician@laptop\n"
    )
    psk = work / "psk.txt"
    psk.write_text("correct horse battery\n")
    image = build_image(work, trixie=release.cloud_init)
    run("vigil-provision", "sd-image", "--image", image, "--device", device,
        "--wheels", wheels, "--ssh-key-file", ssh_key, "--wifi-ssid", "Office",
        "--wifi-psk-file", psk, "--wifi-country", "MX", "--user", ADMIN)  # fmt: skip
    return Card(image, device)


def copy_boot_partition(card: Card, chroot: Chroot) -> None:
    """Put the card's boot partition where Raspberry Pi OS mounts it: /boot/firmware."""
    dest = chroot.path(BOOT)
    dest.mkdir(parents=True, exist_ok=True)
    target = f"{card.image}@@{boot_partition_offset(card.image)}"
    subprocess.run(["mcopy", "-s", "-n", "-i", target, "::*", str(dest)], check=True)


# Raspberry Pi OS Lite ships python3-lgpio from the Pi's archive, which Debian does not carry
# and which is out of reach here; install.sh falls back to it when no lgpio wheel exists for
# the image's Python (none for 3.13), and checks only that it imports.
LGPIO_STAND_IN = '''"""Stand-in for Raspberry Pi OS's python3-lgpio, put here by make pi-proof."""
def __getattr__(name):
    raise ImportError(f"lgpio.{name}: the pi-proof stand-in has no GPIO (a real Pi has)")
'''


def stand_in_lgpio(chroot: Chroot, wheels: Path) -> bool:
    """Where the card has no lgpio wheel, give the root python3-lgpio's place; whether it did."""
    if any(wheels.glob("lgpio-*.whl")):
        return False
    chroot.path("/usr/lib/python3/dist-packages/lgpio.py").write_text(LGPIO_STAND_IN)
    return True


# cloud-init's runcmd module, as it writes the script that its scripts_user module then runs:
# the user-data's runcmd entries made one shell script by cloud-init's own code.
RUNCMD = "/var/lib/cloud/instance/scripts/runcmd"
_WRITE_RUNCMD = f"""import sys
from cloudinit import util
runcmd = util.load_yaml(util.load_text_file(sys.argv[1]))["runcmd"]
util.write_file("{RUNCMD}", util.shellify(runcmd), 0o700)
"""


def boot(chroot: Chroot, release: Release) -> str:
    """Run the release's first-boot path in the root; return what it printed."""
    if not release.cloud_init:
        return chroot.run("bash", f"{BOOT}/firstrun.sh").stdout
    out = chroot.run("cloud-init", "schema", "--config-file", f"{BOOT}/user-data").stdout
    out += chroot.run("cloud-init", "schema", "--schema-type", "network-config",
                      "--config-file", f"{BOOT}/network-config").stdout  # fmt: skip
    chroot.run("python3", "-c", _WRITE_RUNCMD, f"{BOOT}/user-data")
    # Its exit status is the last command's, install.sh's. `systemctl enable --now ssh` before
    # it is refused in a chroot (systemd 257 will not enable and start with no systemd running).
    return out + chroot.run(RUNCMD).stdout


def check_boot_partition(chroot: Chroot, release: Release) -> list[str]:
    """What first boot must have removed from (or left off) the FAT partition."""
    boot = chroot.path(BOOT)
    problems = [f"{BOOT}/{name} is still there" for name in SECRETS if (boot / name).exists()]
    if (boot / "vigil" / "wheels").exists():
        problems.append(f"{BOOT}/vigil/wheels was not removed")
    if (boot / "vigil-firstboot-FAILED.txt").exists():
        problems.append("first boot left vigil-firstboot-FAILED.txt")
    if not release.cloud_init:
        for name in ("firstrun.sh", "vigil/firstboot.env"):
            if (boot / name).exists():
                problems.append(f"{BOOT}/{name} is still there")
        if "systemd.run" in (boot / "cmdline.txt").read_text():
            problems.append("cmdline.txt still starts firstrun.sh")
    return problems


def check_installed(chroot: Chroot) -> list[str]:
    """Step 3: user, venv on aarch64 wheels, secrets 0600, unit verified and enabled."""
    problems = _check_user(chroot) + _check_venv(chroot) + _check_secrets(chroot)
    problems += _check_daemon(chroot)
    for unit in ("vigil-device.service", "vigil-fuel-gauge.service"):
        verify = chroot.run("systemd-analyze", "verify", f"/etc/systemd/system/{unit}",
                            check=False)  # fmt: skip
        if verify.returncode != 0 or verify.stdout.strip():
            problems.append(f"systemd-analyze verify {unit}: {verify.stdout.strip()[-500:]}")
        enabled = chroot.run("systemctl", "is-enabled", unit, check=False).stdout.strip()
        if enabled != "enabled":
            problems.append(f"{unit} is {enabled!r}, not enabled")
    watchdog = chroot.path("/etc/systemd/system.conf.d/vigil-watchdog.conf")
    if "RuntimeWatchdogSec=10s" not in (watchdog.read_text() if watchdog.exists() else ""):
        problems.append("the hardware watchdog is not set (RuntimeWatchdogSec=10s)")
    return problems


def _check_user(chroot: Chroot) -> list[str]:
    groups = chroot.run("id", "-nG", "vigil", check=False)
    if groups.returncode != 0:
        return ["no service user 'vigil'"]
    missing = {"vigil", "gpio", "dialout", "i2c"} - set(groups.stdout.split())
    return [f"user vigil is not in {sorted(missing)}"] if missing else []


_PROBE = """
import platform, sys
import cryptography, vigil.device.cli, vigil.wire.envelope
from cryptography.hazmat.primitives import hpke
from vigil.device.config import PINOUT, default_pins
assert PINOUT.is_file(), PINOUT
# --system-site-packages: the image's own python3-cryptography (no HPKE) must not win.
assert cryptography.__file__.startswith("/opt/vigil/venv/"), cryptography.__file__
print(platform.machine(), sys.version.split()[0], cryptography.__version__, default_pins()[0])
"""


def _check_venv(chroot: Chroot) -> list[str]:
    probe = chroot.run("/opt/vigil/venv/bin/python", "-c", _PROBE, check=False)
    if probe.returncode != 0 or not probe.stdout.startswith("aarch64 "):
        return [f"the venv does not import vigil on aarch64: {probe.stdout[-800:]}"]
    site = "opt/vigil/venv/lib/python3*/site-packages"
    wheels = chroot.root.glob(f"{site}/cryptography-*.dist-info/WHEEL")
    tags = [ln for w in wheels for ln in w.read_text().splitlines() if ln.startswith("Tag:")]
    if not tags or not all(t.endswith("_aarch64") for t in tags):
        return [f"cryptography is not from an aarch64 wheel: {tags}"]
    rust = next(chroot.root.glob(f"{site}/cryptography/hazmat/bindings/_rust*.so"), None)
    if rust is None or int.from_bytes(rust.read_bytes()[18:20], "little") != ELF_AARCH64:
        return [f"cryptography's native module is not aarch64 code: {rust}"]
    return []


def _check_secrets(chroot: Chroot) -> list[str]:
    problems = []
    for path in ("/var/lib/vigil-device/device.key", "/etc/vigil/mqtt-password"):
        mode = chroot.run("stat", "-c", "%a %U:%G", path, check=False).stdout.strip()
        if mode != "600 vigil:vigil":
            problems.append(f"{path} is {mode!r}, not 600 vigil:vigil")
    return problems


def _check_daemon(chroot: Chroot) -> list[str]:
    """The guide's on-Pi check passes; `run` without a Pi refuses in one line (exit 78)."""
    problems = []
    config = ("--config", "/etc/vigil/device.toml")
    check = chroot.run(*AS_THE_UNIT, "check", *config, check=False)
    if check.returncode != 0:
        problems.append(f"vigil-device check: {check.stdout.strip()[-500:]}")
    run = chroot.run(*AS_THE_UNIT, "run", *config, env={"GPIOZERO_PIN_FACTORY": "lgpio"},
                     check=False, timeout=120)  # fmt: skip
    if run.returncode != 78 or "Traceback" in run.stdout:
        problems.append(
            f"vigil-device run without a Pi: exit {run.returncode}, {run.stdout[-500:]}"
        )
    return problems


def check_admin(chroot: Chroot, release: Release) -> list[str]:
    """Bookworm's firstrun.sh also makes the admin login: locked, key only, sudo checked."""
    if release.cloud_init:
        return []  # cloud-init's users module makes it at boot; not run in a chroot
    problems = []
    status = chroot.run("passwd", "-S", ADMIN, check=False).stdout.split()
    if len(status) < 2 or status[1] != "L":
        problems.append(f"{ADMIN} is not a locked account: {status}")
    keys = f"/home/{ADMIN}/.ssh/authorized_keys"
    if chroot.run("stat", "-c", "%a %U", keys, check=False).stdout.strip() != f"600 {ADMIN}":
        problems.append(f"{keys} is not 600 {ADMIN}")
    if chroot.run("visudo", "-c", check=False).returncode != 0:
        problems.append("sudo refuses the sudoers files first boot wrote")
    conn = "/etc/NetworkManager/system-connections/vigil-wifi.nmconnection"
    if not re.fullmatch(r"600", chroot.run("stat", "-c", "%a", conn, check=False).stdout.strip()):
        problems.append(f"{conn} is missing or not 0600")
    if chroot.run("systemctl", "is-enabled", "ssh.service", check=False).stdout.strip() != (
        "enabled"
    ):
        problems.append("sshd is not enabled although an SSH key was given")
    return problems
