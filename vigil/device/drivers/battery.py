"""Read the battery level from Linux's power-supply class (a fuel gauge such as the MAX17048).

The kernel driver exposes `/sys/class/power_supply/<name>/capacity` (percent);
the path is configurable (`[battery] capacity_path`) and absent means unknown.
"""

from __future__ import annotations

from pathlib import Path


def read_battery(path: Path | None) -> int | None:
    """Return the capacity in percent, or None when there is no gauge or it reads garbage."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit() or len(text) > 3:
        return None
    return min(100, int(text))
