"""Fixtures for the device daemon's unit tests: a provisioned device whose hold is 1 s and
whose battery reads 42 %, and a daemon on it with a driven clock and a recorded vibration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon_seams import Clock, Recorder
from tests.support.device_setup import ProvisionedDevice, make_device
from vigil.device.config import DeviceConfig, load_config
from vigil.device.daemon import Daemon
from vigil.device.drivers.link import read_link_quality
from vigil.device.outbox import Outbox


@pytest.fixture
def dev(tmp_path: Path) -> ProvisionedDevice:
    capacity = tmp_path / "capacity"
    capacity.write_text("42\n")
    return make_device(
        tmp_path,
        overrides={"alarm": {"hold_seconds": 1.0}, "battery": {"capacity_path": str(capacity)}},
    )


@pytest.fixture
def parts(dev: ProvisionedDevice, tmp_path: Path) -> Iterator[tuple[Daemon, Clock, Recorder]]:
    cfg: DeviceConfig = load_config(dev.config_path)
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3")
    clock, player = Clock(), Recorder()
    wireless = tmp_path / "wireless"
    wireless.write_text("h1\nh2\n wlan0: 0000   35.  -56.  -256  0 0 0 0 26 0\n")
    daemon = Daemon(
        cfg,
        link_quality=lambda: read_link_quality(wireless),
        keys=dev.device_keys,
        outbox=outbox,
        feedback=player,
        clock=clock,
        wall=lambda: 1_800_000_000.0,
        ntp_flag=tmp_path / "synchronized",
    )
    yield daemon, clock, player
    outbox.close()
