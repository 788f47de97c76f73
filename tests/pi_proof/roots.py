"""Minimal arm64 Debian roots with what Raspberry Pi OS Lite has that first boot relies on,
built with mmdebstrap, cached under the user's cache dir, and run through qemu-user.

Commands run in the root with `chroot` inside private mount and PID namespaces (`unshare`),
which mount /proc, /sys, /dev and an empty /run and /tmp for it: when the command ends, the
namespaces, their mounts and any process left behind are gone, whatever happened. There
systemctl sees it runs in a chroot and only edits unit files (enable, disable);
`daemon-reload` and `start` it ignores ("Running in chroot, ignoring command"), which is as
far as a chroot can go: nothing in the first-boot scripts is replaced for the proof.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Raspberry Pi OS Lite 64-bit is Debian arm64 plus the Pi's archive. From Debian: what first
# boot uses (python3-venv, systemd, sudo, openssl, useradd from passwd, sshd which an SSH
# key enables, NetworkManager whose keyfile firstrun.sh writes, rfkill); Trixie also boots
# through cloud-init, with netplan for its network-config.
BASE_PACKAGES = (
    "python3", "python3-venv", "systemd", "sudo", "openssl", "passwd", "openssh-server",
    "network-manager", "rfkill",
)  # fmt: skip
# What the Pi's own packages (raspberrypi-sys-mods) add that Debian has not: the gpio and
# i2c groups the service user joins; and a hosts file naming localhost, as every image has.
HOOKS = (
    'chroot "$1" groupadd --system gpio',
    'chroot "$1" groupadd --system i2c',
    'printf "127.0.0.1\\tlocalhost\\n::1\\t\\tlocalhost ip6-localhost\\n" > "$1/etc/hosts"',
)
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The CPU qemu-user emulates (it reads QEMU_CPU from each emulated process's environment): the
# Pi Zero 2 W's Cortex-A53, ARMv8.0 like every Pi and Debian's arm64 baseline. qemu's default,
# "max", has pointer authentication, which Trixie's binaries use (branch protection) and qemu
# computes in software at every call and return: everything ran 5-10 times slower than on
# Bookworm. On an A53, as on any Pi, those instructions are no-ops, and so they are here.
QEMU_CPU = "cortex-a53"
# PID 1 of the new PID namespace is this shell, outside the chroot: systemd's tools tell they
# are in a chroot by comparing / with /proc/1/root (which a sandbox may forbid reading for the
# host's PID 1). When PID 1 exits, the kernel ends whatever the command left running. It
# passes SIGTERM on to the command and keeps the command's stdin (fd 3: an asynchronous
# command's stdin is otherwise /dev/null).
_IN_NAMESPACE = """set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
set +e
exec 3<&0
chroot "$root" "$@" <&3 3<&- &
child=$!
trap 'kill -TERM "$child"' TERM INT
wait "$child"
status=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
exit "$status"
"""


@dataclass(frozen=True)
class Release:
    """A Raspberry Pi OS release by its Debian base: its Python and its extra packages."""

    name: str
    python: str
    extra: tuple[str, ...] = ()
    cloud_init: bool = False

    @property
    def packages(self) -> tuple[str, ...]:
        return (*BASE_PACKAGES, *self.extra)


RELEASES = {
    "bookworm": Release("bookworm", "3.11"),
    # netplan: Imager's network-config (Wi-Fi) is netplan's, which cloud-init hands on to it and
    # checks with netplan's own parser (its built-in schema knows no `wifis`).
    "trixie": Release(
        "trixie", "3.13", ("cloud-init", "netplan.io", "python3-netplan"), cloud_init=True
    ),
}


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vigil" / "pi-proof"


def root_tar(release: Release, log: Path) -> tuple[Path, bool]:
    """The cached root of `release` (built first if missing); whether it was built now."""
    recipe = json.dumps([release.name, sorted(release.packages), HOOKS]).encode()
    tar = cache_dir() / f"{release.name}-{hashlib.sha256(recipe).hexdigest()[:12]}.tar"
    if tar.exists():
        return tar, False
    tar.parent.mkdir(parents=True, exist_ok=True)
    partial = tar.with_suffix(".partial.tar")
    argv = [
        "mmdebstrap", "--variant=apt", "--architectures=arm64",
        f"--include={','.join(release.packages)}",
        *(f"--customize-hook={hook}" for hook in HOOKS),
        release.name, str(partial),
    ]  # fmt: skip
    with log.open("ab") as sink:
        subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT, check=True, timeout=3600,
                       env={**os.environ, "QEMU_CPU": QEMU_CPU})  # fmt: skip
    partial.rename(tar)  # only a complete root is ever taken from the cache
    for stale in tar.parent.glob(f"{release.name}-*.tar"):  # older recipes': never used again
        if stale != tar and not stale.name.endswith(".partial.tar"):
            stale.unlink()
    return tar, True


def unpack(tar: Path, dest: Path) -> Path:
    """Extract the cached root into `dest` (owners and modes kept); return `dest`."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xpf", str(tar), "--numeric-owner", "-C", str(dest)], check=True)
    return dest


@dataclass(frozen=True)
class Chroot:
    """An unpacked arm64 root; `argv` runs its commands under qemu-aarch64 (binfmt_misc)."""

    root: Path

    def argv(self, command: Sequence[str]) -> list[str]:
        """The host command line that runs `command` as root in the chroot."""
        return [
            "unshare", "--mount", "--propagation", "private", "--pid", "--fork",
            "--kill-child=SIGTERM", "sh", "-c", _IN_NAMESPACE, "sh", str(self.root), *command,
        ]  # fmt: skip

    @staticmethod
    def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
        """A clean environment for `argv` (nothing of the host's leaks into the root)."""
        return {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "QEMU_CPU": QEMU_CPU,
                **(extra or {})}  # fmt: skip

    def run(
        self, *command: str, env: dict[str, str] | None = None, timeout: float = 600,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run `command` as root in the chroot; its output (stderr folded into stdout)."""
        result = subprocess.run(
            self.argv(command), env=self.environment(env), capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        output = result.stdout + result.stderr
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {result.returncode}:\n{output[-3000:]}"
            )
        return subprocess.CompletedProcess(result.args, result.returncode, output, "")

    def path(self, inside: str) -> Path:
        """The host path of `inside` (an absolute path in the root)."""
        return self.root / inside.lstrip("/")
