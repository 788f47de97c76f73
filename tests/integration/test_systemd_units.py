"""The shipped systemd units: `systemd-analyze verify` is clean and the exposure is low."""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import gpiozero.pins.local
import pytest

from tests.conftest import require_tool

pytestmark = pytest.mark.integration

UNITS = Path(__file__).resolve().parents[2] / "systemd"
# Measured (systemd 252): device 1.3, hub 1.1. The device needs its GPIO/UART/I2C devices
# and supplementary groups, so it cannot reach the hub's score.
EXPOSURE_LIMIT = {"vigil-device.service": 2.0, "vigil-hub.service": 1.5}


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("systemd-analyze"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def installable_copy(unit: Path, tmp_path: Path) -> Path:
    """The unit with its ExecStart binary swapped for one that exists on this machine."""
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", unit.read_text(), flags=re.M)
    copy = tmp_path / unit.name
    copy.write_text(text)
    return copy


@pytest.mark.parametrize("name", sorted(u.name for u in UNITS.glob("*.service")))
def test_unit_verifies_cleanly(name: str, tmp_path: Path) -> None:
    result = analyze("verify", str(installable_copy(UNITS / name, tmp_path)))
    assert result.returncode == 0, result.stderr
    assert name not in result.stderr, result.stderr  # no warning about our unit at all


def test_verify_would_catch_a_typo(tmp_path: Path) -> None:
    broken = installable_copy(UNITS / "vigil-device.service", tmp_path)
    broken.write_text(broken.read_text().replace("ProtectSystem=", "ProtectSytem="))
    assert "Unknown key" in analyze("verify", str(broken)).stderr


@pytest.mark.parametrize(("name", "limit"), sorted(EXPOSURE_LIMIT.items()))
def test_exposure_is_below_the_limit(name: str, limit: float) -> None:
    result = analyze("security", "--offline=yes", str(UNITS / name))
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    exposure = float(match.group(1))
    print(f"{name}: exposure {exposure}")  # noqa: T201 - recorded in the test log
    assert exposure < limit


def test_device_unit_leaves_gpiozero_the_board_revision() -> None:
    """ProcSubset=pid would hide the files gpiozero reads before it opens any pin."""
    source = inspect.getsource(gpiozero.pins.local.get_pi_revision)
    assert "/proc/device-tree" in source or "/proc/cpuinfo" in source
    assert "ProcSubset=pid" not in directives(UNITS / "vigil-device.service")


def test_device_does_not_wait_for_the_network_to_arm_the_button() -> None:
    unit = directives(UNITS / "vigil-device.service")
    ordering = [line for line in unit if line.startswith(("After=", "Wants="))]
    assert ordering
    assert not any("network-online" in line for line in ordering)


def directives(unit: Path) -> list[str]:
    """The unit's non-comment lines."""
    return [ln.strip() for ln in unit.read_text().splitlines() if ln.strip()[:1] not in ("#", "")]


def test_device_unit_keeps_what_the_pi_needs() -> None:
    text = (UNITS / "vigil-device.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=",
        "WorkingDirectory=/run/vigil-device",  # gpiozero's lgpio writes into the cwd
        "Environment=GPIOZERO_PIN_FACTORY=lgpio",
        "SupplementaryGroups=gpio dialout i2c",
        "StateDirectory=vigil-device",
        "ExecStart=/opt/vigil/venv/bin/vigil-device run --config /etc/vigil/device.toml",
    ):
        assert line in text
