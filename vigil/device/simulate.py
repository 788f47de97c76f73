"""Parts of the simulated wearable: a replayed NMEA track, stdin commands, shown feedback.

The "simulate" hardware factory (vigil.device.hardware) is built from these,
for `vigil-device simulate` (the demo, and anyone without a Pi). Pins are
gpiozero `MockFactory` pins; the commands below drive them exactly as the
real button and strap would, so the daemon under test is the real one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import serial

from vigil.device.config import DeviceConfig
from vigil.device.events import Pattern
from vigil.errors import NmeaFileError

_LOG = logging.getLogger(__name__)

SHORT, LONG, GAP = 0.15, 1.0, 0.3


class NmeaReplay:
    """Write a capture's lines, in a loop, into a pyserial `loop://` port the reader reads."""

    def __init__(self, path: Path, *, rate: float = 10.0) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NmeaFileError(f"cannot read the NMEA capture {path}: {exc.strerror}") from exc
        self.lines = [ln for ln in data.splitlines() if ln and not ln.startswith(b"#")]
        if not self.lines:
            raise NmeaFileError(f"{path} holds no NMEA lines; give a capture of NMEA sentences")
        self.port: Any = serial.serial_for_url("loop://", timeout=0.5)
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nmea-replay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for line in self.lines:
                if self._stop.wait(self._interval):
                    return
                try:
                    self.port.write(line + b"\r\n")
                except serial.SerialException:  # the reader closed the port: we are stopping
                    return


class ShownFeedback:
    """Feedback on mock pins that also says on `out` what the wearer would feel."""

    def __init__(self, inner: Any, out: TextIO) -> None:
        self._inner, self._out = inner, out

    def play(self, pattern: Pattern) -> None:
        print(f"[vibration] {pattern.value}", file=self._out, flush=True)
        self._inner.play(pattern)

    def close(self) -> None:
        self._inner.close()


def _press(pin: Any, seconds: float) -> None:
    pin.drive_low()
    time.sleep(seconds)  # the simulated finger stays on the button this long
    pin.drive_high()


def run_command(line: str, factory: Any, cfg: DeviceConfig) -> bool:
    """Carry out one command line; return False on `quit`."""
    words = line.split()
    if not words:
        return True
    word, rest = words[0].lower(), words[1:]
    button, tamper = factory.pin(cfg.pins.button), factory.pin(cfg.pins.tamper)
    if word in ("q", "quit", "exit"):
        return False
    if word in ("h", "hold"):
        _press(button, float(rest[0]) if rest else cfg.alarm.hold_seconds + 0.5)
    elif word in ("t", "tap"):
        _press(button, SHORT)
    elif word in ("g", "gesture") and rest:
        for mark in rest[0]:
            _press(button, LONG if mark == "-" else SHORT)
            time.sleep(GAP)
    elif word in ("p", "press"):
        button.drive_low()
    elif word in ("r", "release"):
        button.drive_high()
    elif word in ("c", "cut"):
        tamper.drive_high()
    elif word in ("w", "wear"):
        tamper.drive_low()
    else:
        _LOG.warning("simulate: unknown command %r (see --help)", line.strip())
        return True
    _LOG.info("simulate: %s done", word)
    return True


def command_loop(
    stream: TextIO, factory: Any, cfg: DeviceConfig, on_quit: Callable[[], None]
) -> None:
    """Read commands until end of input or `quit`; on `quit` call `on_quit` (EOF does not)."""
    for line in stream:
        try:
            if not run_command(line, factory, cfg):
                on_quit()
                return
        except (ValueError, IndexError) as exc:
            _LOG.warning("simulate: bad command %r: %s", line.strip(), exc)
