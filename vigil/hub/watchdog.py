"""Offline watchdog (pure): which devices went silent, and why.

A device is silent when the broker published its Will (connection lost) or
when nothing arrived from it for `silent_after` seconds. Each silence raises
one alert: a device is flagged again only after it has spoken since its last
silent alert. Devices never heard from (not yet deployed) and revoked ones are
not watched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vigil.hub.store.records import DeviceRecord
from vigil.wire.ids import DeviceId


def silent_devices(
    devices: Iterable[DeviceRecord],
    *,
    now: float,
    silent_after: float,
    last_silent_alert: Mapping[DeviceId, float],
) -> list[tuple[DeviceRecord, str]]:
    """Return (device, reason) for every device that needs a new device-silent alert."""
    out: list[tuple[DeviceRecord, str]] = []
    for d in devices:
        if d.revoked or d.last_seen is None:
            continue
        since = max(d.last_seen, d.offline_at or d.last_seen)
        flagged = last_silent_alert.get(d.device_id)
        if flagged is not None and flagged >= since:
            continue
        if d.offline_at is not None:
            out.append((d, f"connection lost (broker published its Will), last message "
                           f"{round(now - d.last_seen)} s ago"))  # fmt: skip
        elif now - d.last_seen > silent_after:
            out.append((d, f"no message for {round(now - d.last_seen)} s "
                           f"(deadline {round(silent_after)} s)"))  # fmt: skip
    return out
