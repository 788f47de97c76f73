"""`vigil-device simulate` commands drive the mock pins as a finger and a strap would."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from tests.conftest import nmea_log
from tests.support.device_setup import make_device
from tests.support.wait import wait_until
from vigil.device.config import DeviceConfig, load_config
from vigil.device.simulate import NmeaReplay, command_loop, run_command
from vigil.errors import NmeaFileError


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.close()
        Device.pin_factory = previous


@pytest.fixture
def cfg(tmp_path: Path) -> DeviceConfig:
    dev = make_device(
        tmp_path, overrides={"alarm": {"hold_seconds": 0.3, "long_press_seconds": 0.2}}
    )
    return load_config(dev.config_path)


def edges(factory: MockFactory, pin: int) -> list[bool]:
    return [bool(s.state) for s in factory.pin(pin).states]


def test_hold_presses_longer_than_the_hold_time(factory: MockFactory, cfg: DeviceConfig) -> None:
    factory.pin(cfg.pins.button).drive_high()
    factory.pin(cfg.pins.button).clear_states()
    assert run_command("hold", factory, cfg)
    states = factory.pin(cfg.pins.button).states
    assert [bool(s.state) for s in states] == [True, False, True]
    assert states[2].timestamp - states[1].timestamp >= cfg.alarm.hold_seconds


def test_gesture_cut_and_wear(factory: MockFactory, cfg: DeviceConfig) -> None:
    factory.pin(cfg.pins.button).drive_high()
    factory.pin(cfg.pins.button).clear_states()
    assert run_command("gesture .-", factory, cfg)
    assert edges(factory, cfg.pins.button) == [True, False, True, False, True]
    assert run_command("wear", factory, cfg)
    assert not factory.pin(cfg.pins.tamper).state
    assert run_command("cut", factory, cfg)
    assert factory.pin(cfg.pins.tamper).state


def test_unknown_and_bad_commands_are_survivable(factory: MockFactory, cfg: DeviceConfig) -> None:
    stop = threading.Event()
    command_loop(io.StringIO("dance\nhold abc\n\ntap\n"), factory, cfg, stop.set)
    assert not stop.is_set()
    command_loop(io.StringIO("quit\ntap\n"), factory, cfg, stop.set)
    assert stop.is_set()


def test_replay_writes_nmea_without_comments() -> None:
    replay = NmeaReplay(nmea_log("gpsd-mt3339.log"), rate=1000)
    assert all(not line.startswith(b"#") for line in replay.lines)
    replay.start()
    try:
        data = replay.port.read_until(b"\r\n")
        assert data.startswith(b"$")
    finally:
        replay.stop()
        replay.port.close()
        replay.close()


def test_replay_never_waits_for_a_reader_that_stopped_reading() -> None:
    replay = NmeaReplay(nmea_log("gpsd-mt3339.log"), rate=5000)
    replay.start()
    try:  # nobody reads: the terminal's buffer fills, then lines are dropped as on a UART
        wait_until(lambda: replay.dropped > 0, 20, what="a full terminal buffer")
    finally:
        started = time.monotonic()
        replay.stop()
    assert time.monotonic() - started < 2
    replay.port.close()
    replay.close()
    replay.close()  # twice is harmless


def test_replay_refuses_a_file_without_nmea(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("# only a comment\n")
    with pytest.raises(NmeaFileError, match="no NMEA"):
        NmeaReplay(empty)
    with pytest.raises(NmeaFileError, match=r"nope\.log"):
        NmeaReplay(tmp_path / "nope.log")
