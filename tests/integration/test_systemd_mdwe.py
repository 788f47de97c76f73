"""The unit's MemoryDenyWriteExecute=yes does not break the daemon.

The device daemon (`vigil-device simulate`: mock pins, real NMEA, real broker, real
crypto and SQLite) runs under the kernel's own memory-deny-write-execute
(`prctl(PR_SET_MDWE)`, Linux >= 6.3), set before any of our code is imported. Like
systemd's seccomp version it refuses writable+executable mappings; a W+X `mmap`
in the same process proves it is armed. An alarm must still be sealed, published
and opened at a test hub end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import nmea_log
from tests.support.broker import Broker
from tests.support.device_setup import make_device
from tests.support.hub_endpoint import HubEndpoint
from tests.support.notify import NotifySocket
from tests.support.wait import wait_until
from vigil.wire.keys import HubKeys
from vigil.wire.messages import Alarm

pytestmark = pytest.mark.integration
NO_MDWE = 77  # the exit code UNDER_MDWE uses when the kernel cannot arm it

# Arm MDWE, prove it refuses W+X memory, then run the daemon's command line in-process.
UNDER_MDWE = """
import ctypes, mmap, runpy, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(77)  # NO_MDWE: a kernel older than 6.3
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    sys.stderr.write("mdwe armed\\n")
else:
    sys.exit(3)
sys.argv = ["vigil-device", *sys.argv[1:]]
runpy.run_module("vigil.device.cli", run_name="__main__")
"""


def test_daemon_seals_and_publishes_an_alarm_without_wx_memory(
    tmp_path: Path, mosquitto: Broker
) -> None:
    fast = {"alarm": {"hold_seconds": 0.5, "long_press_seconds": 0.3, "heartbeat_interval": 1.0}}
    dev = make_device(
        tmp_path / "dev", port=mosquitto.port, hub_keys=HubKeys.generate(), overrides=fast
    )
    hub = HubEndpoint(mosquitto, dev.hub_keys, dev.device_id, dev.device_keys.public()).start()
    log_path = tmp_path / "daemon.log"
    argv = ["simulate", "--config", str(dev.config_path), "--nmea"]
    argv += [str(nmea_log("gpsd-mt3339.log")), "--nmea-rate", "50"]
    with log_path.open("ab") as log, NotifySocket() as notify:
        env = {**os.environ, **notify.env, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-c", UNDER_MDWE, *argv],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, cwd=tmp_path, env=env,
        )  # fmt: skip
        try:
            _wait_ready(notify, proc)
            text = log_path.read_text()
            assert "mdwe armed" in text, text
            assert proc.stdin is not None
            proc.stdin.write(b"hold\n")
            proc.stdin.flush()
            alarms = wait_until(lambda: hub.unique("alarm"), 20, what="the alarm at the hub")
            assert isinstance(next(iter(alarms.values())).body, Alarm)
            assert proc.poll() is None, log_path.read_text()
        finally:
            hub.stop()
            proc.terminate()
            proc.wait(10)
            if proc.stdin is not None:
                proc.stdin.close()


def _wait_ready(notify: NotifySocket, proc: subprocess.Popen[bytes]) -> None:
    """READY=1 from the daemon under MDWE; a kernel that cannot arm MDWE is a failure."""
    try:
        notify.wait_for("READY=1", 20, process=proc)
    except RuntimeError:
        if proc.returncode == NO_MDWE:
            pytest.fail(
                "this kernel has no PR_SET_MDWE (Linux < 6.3): the unit's "
                "MemoryDenyWriteExecute cannot be checked here; run on Linux >= 6.3"
            )
        raise
