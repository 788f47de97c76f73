"""Hardware factories: one setting picks the backend; each supplies every part or says why not."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from tests.support.device_setup import make_device
from tests.support.wait import wait_until
from vigil.device.captures import PI_GPS_HAT
from vigil.device.config import DeviceConfig, load_config
from vigil.device.drivers.gps import GpsReader
from vigil.device.events import Event, Pattern, TamperClosed
from vigil.device.hardware import (
    SIMULATED_BATTERY,
    SIMULATED_SIGNAL,
    PiHardware,
    SimulatedHardware,
    backend_name,
    open_hardware,
)
from vigil.errors import BadConfigValue, HardwareError, MissingHardwareLibrary, NmeaFileError


@pytest.fixture
def cfg(tmp_path: Path) -> DeviceConfig:
    return load_config(make_device(tmp_path).config_path)


@pytest.fixture
def simulated(cfg: DeviceConfig) -> Iterator[SimulatedHardware]:
    hardware = SimulatedHardware(cfg, nmea=PI_GPS_HAT, nmea_rate=500,
                                 commands=io.StringIO(""), out=io.StringIO())  # fmt: skip
    yield hardware
    hardware.stop()
    hardware.close()


def test_the_environment_overrides_the_config(cfg: DeviceConfig) -> None:
    assert backend_name(cfg, {}) == "pi"
    assert backend_name(cfg, {"VIGIL_HARDWARE": "simulate"}) == "simulate"
    with pytest.raises(BadConfigValue, match="VIGIL_HARDWARE='raspberry'"):
        backend_name(cfg, {"VIGIL_HARDWARE": "raspberry"})


def test_the_config_key_picks_the_backend(tmp_path: Path) -> None:
    dev = make_device(tmp_path / "a", overrides={"hardware": {"backend": "simulate"}})
    assert backend_name(load_config(dev.config_path), {}) == "simulate"
    bad = make_device(tmp_path / "b", overrides={"hardware": {"backend": "arduino"}})
    with pytest.raises(BadConfigValue, match=r"hardware\.backend"):
        load_config(bad.config_path)


def test_simulate_supplies_every_part(simulated: SimulatedHardware) -> None:
    events: list[Event] = []
    inputs = simulated.inputs(on_event=events.append)
    try:
        assert isinstance(simulated.pins, MockFactory)
        assert isinstance(inputs.initial_events()[0], TamperClosed)  # worn
        assert simulated.battery() == SIMULATED_BATTERY
        assert simulated.link_quality() == SIMULATED_SIGNAL
        assert simulated.clock() <= simulated.clock()
        assert simulated.notify("READY=1") in (True, False)  # no systemd here: not sent
    finally:
        inputs.close()


def test_simulated_gps_is_a_replayed_capture(simulated: SimulatedHardware) -> None:
    port = simulated.gps_port()
    assert port is not None
    fixes: list[object] = []
    reader = GpsReader(port, on_fix=fixes.append, not_before=0)
    simulated.start(on_quit=lambda: None)
    reader.start()
    try:
        wait_until(lambda: fixes, 10, what="a fix from the replay")
    finally:
        simulated.stop()
        reader.stop()


def test_simulated_feedback_is_shown(cfg: DeviceConfig) -> None:
    out = io.StringIO()
    hardware = SimulatedHardware(cfg, commands=io.StringIO(""), out=out)
    feedback = hardware.feedback()
    try:
        feedback.play(Pattern.STORED)
        assert "[vibration] stored" in out.getvalue()
        assert hardware.gps_port() is None  # no --nmea: alarms go out without a fix
    finally:
        feedback.close()
        hardware.close()


def test_quit_on_stdin_stops_the_daemon(cfg: DeviceConfig) -> None:
    hardware = SimulatedHardware(cfg, commands=io.StringIO("tap\nquit\n"), out=io.StringIO())
    quits: list[bool] = []
    hardware.start(on_quit=lambda: quits.append(True))
    try:
        wait_until(lambda: quits, 10, what="quit")
    finally:
        hardware.close()


def test_a_missing_capture_is_refused_before_anything_starts(cfg: DeviceConfig) -> None:
    with pytest.raises(NmeaFileError, match=r"nope\.nmea"):
        open_hardware(cfg, "simulate", nmea=Path("/nonexistent/nope.nmea"))


def test_pi_backend_honours_gpiozero_pin_factory(
    cfg: DeviceConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    hardware = PiHardware(cfg)
    try:
        assert isinstance(hardware.pins, MockFactory)
    finally:
        hardware.close()
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "bananapi")
    with pytest.raises(HardwareError, match="bananapi"):
        PiHardware(cfg)


def test_pi_backend_without_lgpio_names_the_package_and_the_way_out(
    cfg: DeviceConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setitem(sys.modules, "lgpio", None)  # as on a machine without it: import fails
    monkeypatch.delitem(sys.modules, "gpiozero.pins.lgpio", raising=False)
    with pytest.raises(MissingHardwareLibrary) as info:
        PiHardware(cfg)
    message = str(info.value)
    assert "python3-lgpio" in message
    assert 'backend = "simulate"' in message
    assert "\n" not in message
