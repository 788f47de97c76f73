"""Real GPS captures that ship with the package, for `vigil-device simulate` and the demo.

Provenance and license: README.md and LICENSE-gpsd.txt beside this file.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: An Adafruit GPS HAT for the Raspberry Pi (MT3339) with a steady fix: what the demo replays.
PI_GPS_HAT = _HERE / "gpsd-mt3339.log"
