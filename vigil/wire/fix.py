"""A GPS fix, the one value both sides share, and the range checks every wire value uses.

`Fix` is the fix itself, as the receiver reported it. What surrounds it is
context, not a copy: the device observes a fix at a monotonic time
(`vigil.device.events.GpsFix`), and a message carries it with its age
(`AgedFix`, the wire's "fix object" of docs/protocol.md §4.1).

    fix = Fix(lat=52.52, lon=13.405, quality=1, satellites=8, hdop=0.9, fix_time=None)
    AgedFix(fix, age=3.2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vigil.errors import MalformedMessage

# Up to year 2200; a fix or send time outside that is a broken clock or an attack.
MAX_TIME = 7_258_118_400.0
MAX_AGE = 10 * 365 * 86400.0
MAX_HDOP = 99.99


def check_int(name: str, value: object, low: int, high: int) -> None:
    """Reject anything but an int (a bool is not one) in [low, high]."""
    if type(value) is not int or not low <= value <= high:
        raise MalformedMessage(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def check_float(name: str, value: object, low: float, high: float) -> None:
    """Reject anything but a finite int or float in [low, high]."""
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:  # type: ignore[arg-type,operator]
        raise MalformedMessage(f"{name} must be a number in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fix:
    """A good GPS fix: WGS84 position, NMEA GGA quality, satellites, HDOP, receiver UTC time.

    `quality` is the GGA fix quality (1 GPS, 2 DGPS, ...); `hdop` may be unknown;
    `fix_time` is the receiver's UTC time of the fix (Unix seconds), None when
    the receiver gave no date or an implausible one.
    """

    lat: float
    lon: float
    quality: int = 1
    satellites: int = 0
    hdop: float | None = None
    fix_time: float | None = None

    def __post_init__(self) -> None:
        check_float("lat", self.lat, -90.0, 90.0)
        check_float("lon", self.lon, -180.0, 180.0)
        check_int("quality", self.quality, 0, 9)
        check_int("satellites", self.satellites, 0, 99)
        if self.hdop is not None:
            check_float("hdop", self.hdop, 0.0, MAX_HDOP)
        if self.fix_time is not None:
            check_float("fix_time", self.fix_time, 0.0, MAX_TIME)


@dataclass(frozen=True, slots=True)
class AgedFix:
    """A fix as a message carries it: with its age in seconds when the message was made."""

    fix: Fix
    age: float

    def __post_init__(self) -> None:
        if not isinstance(self.fix, Fix):
            raise MalformedMessage(f"fix must be a Fix, got {type(self.fix).__name__}")
        check_float("age", self.age, 0.0, MAX_AGE)

    def to_json(self) -> dict[str, Any]:
        """The wire's flat fix object (docs/protocol.md §4.1)."""
        f = self.fix
        return {
            "lat": f.lat,
            "lon": f.lon,
            "fix_time": f.fix_time,
            "quality": f.quality,
            "satellites": f.satellites,
            "hdop": f.hdop,
            "age": self.age,
        }

    @classmethod
    def from_json(cls, doc: object) -> AgedFix:
        """Parse the flat fix object; raise `MalformedMessage` unless it has exactly its keys."""
        if not isinstance(doc, dict):
            raise MalformedMessage("fix must be an object")
        if set(doc) != _JSON_KEYS:
            raise MalformedMessage(f"fix must have exactly the keys {sorted(_JSON_KEYS)}")
        values = dict(doc)
        age = values.pop("age")
        return cls(Fix(**values), age)


_JSON_KEYS = frozenset({"lat", "lon", "fix_time", "quality", "satellites", "hdop", "age"})
