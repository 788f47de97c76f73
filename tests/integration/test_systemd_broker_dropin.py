"""The mosquitto.service drop-in `broker-config` writes: systemd accepts it, and it runs our
config instead of the packaged one (not as well as it)."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from vigil.provision.broker import render_broker_config
from vigil.provision.certs import make_broker_certs

pytestmark = pytest.mark.integration

# Debian's unit, as the mosquitto package installs it (ExecStart replaced by the drop-in).
PACKAGED = """[Unit]
Description=Mosquitto MQTT Broker
[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf
ExecReload=/bin/kill -HUP $MAINPID
[Install]
WantedBy=multi-user.target
"""


def unit_dir_with_dropin(tmp_path: Path) -> Path:
    certs = make_broker_certs(tmp_path / "certs", host="broker.vigil.test")
    files = render_broker_config(tmp_path / "conf", certs=certs, run_as=getpass.getuser())
    units = tmp_path / "units"
    (units / "mosquitto.service.d").mkdir(parents=True)
    (units / "mosquitto.service").write_text(PACKAGED)
    shutil.copyfile(files.dropin, units / "mosquitto.service.d" / "vigil.conf")
    return units


def verify(units: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("systemd-analyze"), *args, str(units / "mosquitto.service")],
        capture_output=True, text=True, timeout=60, check=False,
        env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip


def test_dropin_verifies_and_replaces_exec_start(tmp_path: Path) -> None:
    units = unit_dir_with_dropin(tmp_path)
    result = verify(units, "verify")
    assert result.returncode == 0, result.stderr
    assert "vigil.conf" not in result.stderr, result.stderr  # no warning about the drop-in
    dropin = (units / "mosquitto.service.d" / "vigil.conf").read_text()
    starts = [line for line in dropin.splitlines() if line.startswith("ExecStart=")]
    # The empty ExecStart= clears the packaged command: only ours is left.
    assert starts == [
        "ExecStart=",
        f"ExecStart=/usr/sbin/mosquitto -c {tmp_path}/conf/mosquitto.conf",
    ]


def test_verify_would_catch_a_broken_dropin(tmp_path: Path) -> None:
    units = unit_dir_with_dropin(tmp_path)
    dropin = units / "mosquitto.service.d" / "vigil.conf"
    dropin.write_text(dropin.read_text().replace("ExecStart=/", "ExecStrat=/"))
    assert "Unknown key" in verify(units, "verify").stderr
