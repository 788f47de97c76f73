"""Read the Wi-Fi link quality for heartbeats from Linux's /proc/net/wireless.

The Pi Zero 2 W's brcmfmac driver reports link quality out of 70 (as
`iwconfig` shows "Link Quality=54/70"); we send it as a percentage. No
wireless interface (a cellular modem, or a test machine) means unknown.
"""

from __future__ import annotations

import math
from pathlib import Path

WIRELESS = Path("/proc/net/wireless")
QUALITY_MAX = 70.0


def read_link_quality(path: Path = WIRELESS) -> int | None:
    """Best link quality among wireless interfaces, in percent; None when there is none."""
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()[2:]
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        _, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 2:
            continue
        try:
            quality = float(fields[1].rstrip("."))
        except ValueError:
            continue
        if not math.isfinite(quality) or quality < 0:
            continue
        percent = min(100, round(100 * quality / QUALITY_MAX))
        best = percent if best is None else max(best, percent)
    return best
