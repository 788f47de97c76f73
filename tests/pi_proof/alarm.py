"""Step 4: the installed wearable daemon, under emulation, carries an alarm to the real hub.

The host runs the locked-down mosquitto (TLS, passwords, ACL) and `vigil-hub run` from the
deployment the card was provisioned against; the arm64 root runs `/opt/vigil/venv/bin/
vigil-device simulate` on mock pins with the files first boot installed, as the unit runs
it: user vigil, working directory /run/vigil-device, umask 077. The root shares the host's
network, so the device's `localhost` (its broker name) is the host's loopback.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import NMEA_CORPUS
from tests.pi_proof.roots import Chroot
from tests.support.broker import running_mosquitto_conf
from tests.support.deployment import BIN, Deployment, process, run
from tests.support.wait import wait_until
from vigil.device.core import AlarmSettings

NMEA = "/usr/share/vigil-pi-proof/gpsd-mt3339.log"
# What systemd does for the unit (RuntimeDirectory=, WorkingDirectory=, UMask=, User=).
_AS_THE_UNIT = f"""set -e
install -d -o vigil -g vigil -m 0700 /run/vigil-device
cd /run/vigil-device
umask 077
exec setpriv --reuid=vigil --regid=vigil --init-groups \\
    /opt/vigil/venv/bin/vigil-device simulate --config /etc/vigil/device.toml \\
    --nmea {NMEA} --nmea-rate 50
"""
READY_TIMEOUT = 180.0  # the emulated daemon's start: imports and keys under qemu


@dataclass(frozen=True)
class AlarmResult:
    hold: float  # how long the button must be held for an alarm
    receipt: float  # from pressing the button to the hub's receipt at the device

    def __str__(self) -> str:
        return (
            f"press->receipt {self.receipt:.1f} s (the alarm fires after a {self.hold:.1f} s hold)"
        )


def deliver_alarm(work: Path, deployed: Deployment, chroot: Chroot, label: str) -> AlarmResult:
    """Hold the button; wait for the device's receipt; check the hub stored the alert."""
    nmea = chroot.path(NMEA)
    nmea.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NMEA_CORPUS / "gpsd-mt3339.log", nmea)
    device_log, hub_log = work / "device.log", work / "hub.log"
    device_log.unlink(missing_ok=True)  # this run's lines only
    device_argv = chroot.argv(["sh", "-c", _AS_THE_UNIT], env={"PYTHONDONTWRITEBYTECODE": "1"})
    with (
        running_mosquitto_conf(deployed.mosquitto_conf, deployed.port),
        process([BIN / "vigil-hub", "run", "--config", deployed.hub_toml], hub_log),
        process([*device_argv], device_log, cwd=work) as device,
    ):
        text = lambda: device_log.read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "ready, next seq" in text() or device.poll() is not None,
                   READY_TIMEOUT, what="the emulated wearable to be ready")  # fmt: skip
        if device.poll() is not None:
            raise RuntimeError(f"vigil-device exited {device.returncode}:\n{text()[-2000:]}")
        assert device.stdin is not None
        hold = AlarmSettings().hold_seconds  # provisioning keeps the default
        pressed = time.monotonic()
        device.stdin.write(f"hold {hold + 0.5}\n".encode())
        device.stdin.flush()
        queued = lambda: re.search(r"seq=(\d+) kind=alarm queued", text())  # noqa: E731
        seq = wait_until(queued, 60, what="the alarm in the outbox").group(1)
        stored = f"seq={seq} stored by the hub"
        wait_until(lambda: stored in text(), 120, what="the hub's receipt for the alarm")
        receipt = time.monotonic() - pressed
        device.stdin.write(b"quit\n")  # as simulate takes it; unshare ignores SIGTERM
        device.stdin.flush()
        if device.wait(60) != 0:
            raise RuntimeError(f"vigil-device exited {device.returncode}:\n{text()[-2000:]}")
    alerts = run("vigil-hub", "--config", deployed.hub_toml, "alerts")
    if label not in alerts:
        raise RuntimeError(f"the hub has no alert from {label!r}:\n{alerts}")
    return AlarmResult(hold, receipt)
