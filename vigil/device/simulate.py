"""Parts of the simulated wearable: a replayed NMEA track, stdin commands, shown feedback.

The "simulate" hardware factory (vigil.device.hardware) is built from these,
for `vigil-device simulate` (the demo, and anyone without a Pi). Pins are
gpiozero `MockFactory` pins; the commands below drive them exactly as the
real button and strap would, so the daemon under test is the real one.
"""

from __future__ import annotations

import itertools
import logging
import os
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
    """Write a capture's lines, in a loop, into a pseudo-terminal the reader opens as its port.

    A pty, not pyserial's `loop://`: the reader then runs exactly as on the Pi's UART
    (a real tty in raw mode), and a line costs one write. `loop://` hands bytes over one
    at a time through a Python queue, so the replay itself cost more CPU than everything
    the idle daemon does, and hid what the reader costs. `rate` lines a second go out as
    a receiver prints them: in one burst a second (one every 1/rate s below one a second).
    """

    def __init__(self, path: Path, *, rate: float = 10.0) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NmeaFileError(f"cannot read the NMEA capture {path}: {exc.strerror}") from exc
        self.lines = [ln for ln in data.splitlines() if ln and not ln.startswith(b"#")]
        if not self.lines:
            raise NmeaFileError(f"{path} holds no NMEA lines; give a capture of NMEA sentences")
        self._master, slave = os.openpty()
        try:
            self.port: Any = serial.Serial(os.ttyname(slave), 9600, timeout=0.5)
        except BaseException:
            os.close(self._master)
            raise
        finally:
            os.close(slave)  # pyserial holds its own descriptor of the terminal
        # Never block on a reader that stopped reading: drop the line, as a UART overruns.
        os.set_blocking(self._master, False)
        self.dropped = 0  # lines the reader was too far behind to take
        self._burst = max(1, round(rate))
        self._interval = self._burst / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nmea-replay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(5)

    def close(self) -> None:
        """Hang up the terminal, after `stop()` and after the reader closed its port (a
        hang-up before that would read as a receiver that vanished)."""
        self.stop()
        if self._master >= 0:
            os.close(self._master)
            self._master = -1

    def _run(self) -> None:
        lines = itertools.cycle(self.lines)
        while not self._stop.is_set():
            for line in itertools.islice(lines, self._burst):
                try:
                    os.write(self._master, line + b"\r\n")
                except BlockingIOError:  # the reader is behind: this line is lost
                    self.dropped += 1
                except OSError:  # the reader closed the port: we are stopping
                    return
            self._stop.wait(self._interval)


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
