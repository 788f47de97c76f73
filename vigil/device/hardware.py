"""One hardware factory, chosen by one setting, supplies every part the daemon touches.

As gpiozero picks a pin factory with `GPIOZERO_PIN_FACTORY`, the wearable picks
a backend with `[hardware] backend` in its config, overridden by the
`VIGIL_HARDWARE` environment variable:

- `pi`: the real wearable. GPIO through gpiozero's lgpio factory (or the one
  named by `GPIOZERO_PIN_FACTORY`), the GPS on the UART (`[gps] port`), the
  fuel gauge in sysfs (`[battery] capacity_path`), Wi-Fi link quality from
  /proc/net/wireless, the system clocks, and systemd's notify socket.
- `simulate`: the same daemon with nothing attached. gpiozero's `MockFactory`
  pins driven by commands on stdin, an NMEA capture replayed into a
  pseudo-terminal opened as the GPS's serial port, a fixed battery level and link quality,
  feedback shown on stdout; clocks and systemd notify as on the Pi.

`vigil-device run` and `vigil-device simulate` differ only in which factory
they ask for; the daemon, outbox, MQTT client and GPS reader are the same.

    hardware = open_hardware(cfg)          # or open_hardware(cfg, "simulate", nmea=path)
    feedback = hardware.feedback()
    inputs = hardware.inputs(on_event=daemon.post)
    hardware.start(on_quit=daemon.stop)    # simulate: replay and stdin commands
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TextIO

import serial
from gpiozero.pins.mock import MockFactory, MockPWMPin

from vigil.device.config import BACKEND_ENV, BACKENDS, DeviceConfig
from vigil.device.daemon import NTP_FLAG
from vigil.device.drivers.battery import read_battery
from vigil.device.drivers.gps import SerialPort
from vigil.device.drivers.inputs import Feedback, Inputs
from vigil.device.drivers.link import WIRELESS, read_link_quality
from vigil.device.events import Event
from vigil.device.simulate import NmeaReplay, ShownFeedback, command_loop
from vigil.errors import BadConfigValue, HardwareError, MissingHardwareLibrary
from vigil.runtime.systemd import sd_notify

_LOG = logging.getLogger(__name__)

PIN_FACTORY_ENV = "GPIOZERO_PIN_FACTORY"
SIMULATED_BATTERY = 87  # percent, when the config names no gauge file
SIMULATED_SIGNAL = 80  # percent link quality
_LGPIO_ADVICE = (
    "install it (Raspberry Pi OS: 'sudo apt install python3-lgpio', with a venv made "
    "with --system-site-packages; elsewhere 'pip install lgpio'), or run without a Pi "
    f'with [hardware] backend = "simulate" or {BACKEND_ENV}=simulate'
)


class Hardware:
    """The parts every backend supplies; subclasses choose pins, GPS, battery and link."""

    name = ""
    ntp_flag = NTP_FLAG

    def __init__(self, cfg: DeviceConfig, pins: Any) -> None:
        self.cfg = cfg
        self.pins = pins  # a gpiozero pin factory, passed to every device explicitly

    def feedback(self) -> Any:
        """The vibration motor and LED (call `close()` when done)."""
        return Feedback(self.cfg.pins, pin_factory=self.pins)

    def inputs(self, *, on_event: Callable[[Event], None]) -> Inputs:
        """The panic button and the tamper loop, each edge an event for `on_event`."""
        return Inputs(self.cfg.pins, on_event=on_event, clock=self.clock, pin_factory=self.pins)

    def gps_port(self) -> SerialPort | None:
        """The receiver's serial port, or None when there is none (alarms go without a fix)."""
        raise NotImplementedError

    def battery(self) -> int | None:
        """Battery charge in percent, None when unknown."""
        return read_battery(self.cfg.battery_path)

    def link_quality(self) -> int | None:
        """Uplink quality in percent, None when unknown."""
        return read_link_quality(WIRELESS)

    def clock(self) -> float:
        """Monotonic seconds: every event and deadline of the core."""
        return time.monotonic()

    def wall(self) -> float:
        """Unix time; trusted only while `ntp_flag` exists (the Pi has no RTC)."""
        return time.time()

    def notify(self, state: str) -> bool:
        """Tell systemd how the daemon is (READY=1, WATCHDOG=1, STOPPING=1)."""
        return sd_notify(state)

    def start(self, *, on_quit: Callable[[], None]) -> None:
        """Start what the backend runs by itself once the daemon is wired up."""

    def stop(self) -> None:
        """Stop what `start` started (before the GPS reader closes its port)."""

    def close(self) -> None:
        """Release the pins (after every device on them is closed)."""
        self.pins.close()


class PiHardware(Hardware):
    """The wearable on a Raspberry Pi: lgpio pins, UART GPS, sysfs battery, Wi-Fi quality."""

    name = "pi"

    def __init__(self, cfg: DeviceConfig) -> None:
        super().__init__(cfg, _pi_pin_factory())

    def gps_port(self) -> SerialPort | None:
        gps = self.cfg.gps
        try:
            port: SerialPort = serial.Serial(gps.port, gps.baud, timeout=0.5)
        except (serial.SerialException, OSError) as exc:
            _LOG.error("gps: cannot open %s (%s); alarms go out without a fix", gps.port, exc)
            return None
        return port


class SimulatedHardware(Hardware):
    """The wearable with nothing attached: mock pins, replayed NMEA, stdin commands."""

    name = "simulate"

    def __init__(
        self,
        cfg: DeviceConfig,
        *,
        nmea: Path | None = None,
        nmea_rate: float = 10.0,
        worn: bool = True,
        commands: TextIO | None = None,
        out: TextIO | None = None,
    ) -> None:
        # Read the capture first: a missing file is an error before anything starts.
        self._replay = None if nmea is None else NmeaReplay(nmea, rate=nmea_rate)
        super().__init__(cfg, MockFactory(pin_class=MockPWMPin))
        self._worn = worn
        self._commands = sys.stdin if commands is None else commands
        self._out = sys.stdout if out is None else out

    def feedback(self) -> Any:
        return ShownFeedback(super().feedback(), self._out)

    def inputs(self, *, on_event: Callable[[Event], None]) -> Inputs:
        inputs = super().inputs(on_event=on_event)
        if self._worn:  # close the strap after the pull-up is set, as putting it on would
            self.pins.pin(self.cfg.pins.tamper).drive_low()
        return inputs

    def gps_port(self) -> SerialPort | None:
        return None if self._replay is None else self._replay.port

    def battery(self) -> int | None:
        return SIMULATED_BATTERY if self.cfg.battery_path is None else super().battery()

    def link_quality(self) -> int | None:
        return SIMULATED_SIGNAL

    def start(self, *, on_quit: Callable[[], None]) -> None:
        if self._replay is not None:
            self._replay.start()
        threading.Thread(
            target=command_loop,
            args=(self._commands, self.pins, self.cfg, on_quit),
            name="simulate-stdin",
            daemon=True,  # a blocked read of stdin must not hold up the exit
        ).start()

    def stop(self) -> None:
        if self._replay is not None:
            self._replay.stop()

    def close(self) -> None:
        if self._replay is not None:
            self._replay.close()
        super().close()


def backend_name(cfg: DeviceConfig, environ: dict[str, str] | None = None) -> str:
    """The backend to use: `VIGIL_HARDWARE` if set, else the config's `[hardware] backend`."""
    name = (os.environ if environ is None else environ).get(BACKEND_ENV, "") or cfg.backend
    if name not in BACKENDS:
        raise BadConfigValue(f"{BACKEND_ENV}={name!r} is not a backend; use one of {BACKENDS}")
    return name


def open_hardware(cfg: DeviceConfig, name: str | None = None, **options: Any) -> Hardware:
    """Build the factory for backend `name` (default: `backend_name(cfg)`).

    `options` go to the simulated backend (nmea, nmea_rate, worn, commands, out).
    Raise `HardwareError` with advice when the backend cannot start.
    """
    chosen = name or backend_name(cfg)
    hardware = SimulatedHardware(cfg, **options) if chosen == "simulate" else PiHardware(cfg)
    _LOG.info("hardware backend %s", chosen)
    return hardware


def _pi_pin_factory() -> Any:
    """gpiozero's pin factory for the Pi: lgpio, or the one `GPIOZERO_PIN_FACTORY` names.

    Loaded by name, with no fallback: gpiozero's own search would try four
    factories, warn about each and end in a traceback on a Pi without lgpio.
    """
    name = os.environ.get(PIN_FACTORY_ENV, "") or "lgpio"
    found = [ep for ep in entry_points(group="gpiozero_pin_factories") if ep.name == name.lower()]
    if not found:
        raise HardwareError(f"{PIN_FACTORY_ENV}={name!r} is not a gpiozero pin factory; use lgpio")
    try:
        factory_class = found[0].load()
    except ImportError as exc:
        missing = exc.name or name
        advice = _LGPIO_ADVICE if missing == "lgpio" else f"install {missing}"
        raise MissingHardwareLibrary(
            f"the pi backend needs the Python module {missing!r} for GPIO: {advice}"
        ) from exc
    try:
        return factory_class()
    except Exception as exc:  # each pin library fails in its own way; say which and why
        raise HardwareError(
            f"cannot open the GPIO pins with gpiozero's {name} factory: {exc} "
            "(is this a Raspberry Pi, and is the user in group gpio?)"
        ) from exc
