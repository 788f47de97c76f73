"""Step 4: the installed wearable daemon, under emulation, carries an alarm to the real hub.

The host runs the locked-down mosquitto (TLS, passwords, ACL) and `vigil-hub run` from the
deployment the card was provisioned against; the arm64 root runs `/opt/vigil/venv/bin/
vigil-device simulate` on mock pins with the files first boot installed, as the unit runs
it: user vigil, working directory /run/vigil-device, umask 077. The root shares the host's
network, so the device's `localhost` (its broker name) is the host's loopback.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from tests.pi_proof.firstboot import AS_THE_UNIT
from tests.pi_proof.roots import Chroot
from tests.support.broker import running_mosquitto_conf
from tests.support.deployment import BIN, Deployment, process, run
from tests.support.wait import wait_until
from vigil.device.core import AlarmSettings

# Until the emulated daemon tells its notify socket READY=1 (an abstract socket: the root
# shares the host's network namespace, so it reaches it as it would reach systemd's).
READY_TIMEOUT = 180.0


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
    # The GPS: the capture that ships inside the installed package.
    site = "opt/vigil/venv/lib/python3*/site-packages"
    capture = next(chroot.root.glob(f"{site}/vigil/device/captures/gpsd-mt3339.log"))
    device_log, hub_log = work / "device.log", work / "hub.log"
    device_log.unlink(missing_ok=True)  # this run's lines only
    device_argv = chroot.argv(
        [*AS_THE_UNIT, "simulate", "--config", "/etc/vigil/device.toml",
         "--nmea", f"/{capture.relative_to(chroot.root)}", "--nmea-rate", "50"]
    )  # fmt: skip
    device_env = chroot.environment({"PYTHONDONTWRITEBYTECODE": "1"})
    with (
        running_mosquitto_conf(deployed.mosquitto_conf, deployed.port),
        process([BIN / "vigil-hub", "run", "--config", deployed.hub_toml], hub_log),
        process([*device_argv], device_log, env=device_env, cwd=work,
                ready_timeout=READY_TIMEOUT) as device,
    ):  # fmt: skip
        text = lambda: device_log.read_text(errors="replace")  # noqa: E731
        assert device.stdin is not None
        hold = AlarmSettings().hold_seconds  # provisioning keeps the default
        pressed = time.monotonic()
        device.stdin.write(f"hold {hold + 0.5}\n".encode())
        device.stdin.flush()
        # Device logs never name a kind (a seized journal must not say "alarm"); heartbeats
        # are never queued, so the first queued seq after the hold is the alarm.
        queued = lambda: re.search(r"seq=(\d+) queued", text())  # noqa: E731
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
