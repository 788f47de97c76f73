"""Read the GPS receiver on the UART: NMEA lines in, last good fix (with its age) out.

Wiring: the receiver's TX goes to the Pi's RXD (GPIO 15, header pin 10), its
RX to TXD (GPIO 14); enable the UART with `enable_uart=1` and
`dtoverlay=disable-bt`, and open `/dev/serial0` (9600 baud for most modules).

`NmeaDecoder` is pure: bytes in, `GpsFix` events (a `vigil.wire.Fix` observed
at a monotonic time) out. It understands RMC, GGA and
GSA from any talker (GP, GN, GL, BD, GA...), resynchronises after binary
garbage, and counts and skips bad checksums, truncated lines, garbage and
no-fix sentences; none of them is fatal. `GpsReader` runs a decoder over a
pyserial port in its own thread and keeps the last good fix.

    reader = GpsReader(serial.Serial("/dev/serial0", 9600, timeout=0.5), on_fix=print)
    reader.start()
    reader.last_fix()   # -> GpsFix | None, `at` is time.monotonic() of the sentence
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import pynmea2

from vigil.device.events import GpsFix
from vigil.wire.fix import MAX_HDOP, Fix

_LOG = logging.getLogger(__name__)

MAX_LINE = 255  # NMEA says 82; a longer run is garbage (or binary) and must not grow memory
# Receivers without a valid almanac report dates from before they were built (week rollover).
NOT_BEFORE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
_NOT_AFTER = dt.datetime(2200, 1, 1, tzinfo=dt.UTC).timestamp()
_SPLIT = re.compile(rb"[\r\n]+")


class NmeaDecoder:
    """Turn a byte stream from a receiver into fixes; count what it had to skip.

    `stats` keys: good, checksum, malformed, garbage, nofix, ignored.
    """

    def __init__(self, *, not_before: float = NOT_BEFORE) -> None:
        self.stats: Counter[str] = Counter()
        self.has_fix = False
        self._buffer = b""
        self._not_before = not_before
        self._date: dt.date | None = None
        self._quality, self._satellites = 1, 0
        self._hdop: float | None = None
        self._quality_seen = False

    def feed(self, data: bytes, at: float) -> list[GpsFix]:
        """Consume raw bytes (any line ends); return the fixes completed by them."""
        self._buffer += data
        *lines, self._buffer = _SPLIT.split(self._buffer)
        if len(self._buffer) > MAX_LINE:
            self.stats["garbage"] += 1
            self._buffer = b""
        out = []
        for line in lines:
            reading = self.feed_line(line, at)
            if reading is not None:
                out.append(reading)
        return out

    def feed_line(self, raw: bytes, at: float) -> GpsFix | None:
        """Parse one line; return a fix if it carried a good one."""
        start = raw.rfind(b"$")  # resync after binary garbage or a collision
        if start < 0 or len(raw) > MAX_LINE:
            if raw.strip():
                self.stats["garbage"] += 1
            return None
        try:
            text = raw[start:].decode("ascii").strip()
            sentence = pynmea2.parse(text, check=True)  # check: no "*HH" is an error too
        except UnicodeDecodeError:
            self.stats["garbage"] += 1
            return None
        except pynmea2.ChecksumError:
            self.stats["checksum"] += 1
            return None
        except (pynmea2.ParseError, ValueError, TypeError, AttributeError):
            self.stats["malformed"] += 1
            return None
        try:
            return self._interpret(sentence, at)
        except (ValueError, TypeError, AttributeError, OverflowError):
            self.stats["malformed"] += 1
            return None

    def _interpret(self, sentence: Any, at: float) -> GpsFix | None:
        kind = getattr(sentence, "sentence_type", "")
        if kind == "RMC":
            return self._rmc(sentence, at)
        if kind == "GGA":
            return self._gga(sentence, at)
        if kind == "GSA":
            if str(sentence.mode_fix_type) in ("", "1"):
                self._lost()
            else:
                self.stats["good"] += 1
            return None
        self.stats["ignored"] += 1
        return None

    def _rmc(self, s: Any, at: float) -> GpsFix | None:
        if s.status != "A":
            self._lost()
            return None
        self._date = s.datestamp if s.datestamp else None
        return self._position(s, at)

    def _gga(self, s: Any, at: float) -> GpsFix | None:
        quality = int(s.gps_qual or 0)
        if quality == 0:
            self._lost()
            return None
        self._quality, self._quality_seen = quality, True
        self._satellites = min(99, int(s.num_sats or 0))
        hdop = float(s.horizontal_dil) if s.horizontal_dil else None
        self._hdop = hdop if hdop is not None and 0 <= hdop <= MAX_HDOP else None
        return self._position(s, at)

    def _position(self, s: Any, at: float) -> GpsFix | None:
        """A fix from a sentence with a position; `Fix` itself rejects out-of-range values."""
        if not s.lat or not s.lon or (float(s.latitude), float(s.longitude)) == (0.0, 0.0):
            self.stats["malformed"] += 1  # 0,0 is a receiver's placeholder, not a place
            return None
        fix = Fix(  # a MalformedMessage (ValueError) here is counted as malformed by the caller
            lat=float(s.latitude),
            lon=float(s.longitude),
            fix_time=self._fix_time(s.timestamp),
            quality=self._quality if self._quality_seen else 1,
            satellites=self._satellites,
            hdop=self._hdop,
        )
        self.stats["good"] += 1
        self.has_fix = True
        return GpsFix(at, fix)

    def _fix_time(self, timestamp: dt.time | None) -> float | None:
        if self._date is None or timestamp is None:
            return None
        moment = dt.datetime.combine(self._date, timestamp)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        value = moment.timestamp()
        return value if self._not_before <= value < _NOT_AFTER else None

    def _lost(self) -> None:
        self.stats["nofix"] += 1
        self.has_fix = False


class SerialPort(Protocol):
    """The part of a pyserial port the reader uses."""

    @property
    def in_waiting(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def close(self) -> None: ...


class GpsReader:
    """Read a receiver on a serial port in a daemon thread; keep the last good fix.

    `clock` is `time.monotonic` in production; `on_fix` runs on the reader
    thread for every good fix (keep it short: put it on a queue).
    """

    def __init__(
        self,
        port: SerialPort,
        *,
        on_fix: Callable[[GpsFix], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        not_before: float = NOT_BEFORE,
    ) -> None:
        self._port = port
        self._on_fix = on_fix
        self._clock = clock
        self.decoder = NmeaDecoder(not_before=not_before)
        self._last: GpsFix | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gps-reader", daemon=True)
        self.bytes_read = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._port.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def last_fix(self) -> GpsFix | None:
        with self._lock:
            return self._last

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._port.read(max(1, min(self._port.in_waiting, 4096)))
            except Exception as exc:  # a vanished UART must not kill the daemon
                _LOG.error("gps read failed: %s", exc)
                self._stop.wait(1.0)
                continue
            if not data:
                continue
            for reading in self.decoder.feed(data, self._clock()):
                with self._lock:
                    self._last = reading
                if self._on_fix is not None:
                    self._on_fix(reading)
            self.bytes_read += len(data)  # counted once decoded: all read is all handled
