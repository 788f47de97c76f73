"""Offline watchdog (pure): which devices went silent, and why.

A device is silent when the broker published its Will (connection lost) or
when nothing proved it alive for `silent_after` seconds. Each silence raises
one alert: a device is flagged again only after it has spoken since its last
silent alert. A device never heard from is watched from its enrolment (one
notice, which operators resolve if it was simply not handed out yet); revoked
ones are not watched.
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
    risk_silent_after: float | None = None,
) -> list[tuple[DeviceRecord, str]]:
    """Return (device, reason) for every device that needs a new device-silent alert.

    Silence is measured from the last time the device's own word proved it alive
    (`alive_at`: a nonce echo, or the first message of its current life), never
    from when a message arrived. Inside a risk window the deadline is
    `risk_silent_after` (the alert is then alarm-grade, see `alerts.device_silent`).
    """
    out: list[tuple[DeviceRecord, str]] = []
    for d in devices:
        if d.revoked:
            continue
        # Never heard at all is watched too, from enrolment: a broker that swallows a
        # wearable's every message from its first day must not make it invisible.
        alive = d.alive_at if d.alive_at is not None else (d.last_seen or d.enrolled_at)
        since = max(alive, d.offline_at or alive)
        flagged = last_silent_alert.get(d.device_id)
        if flagged is not None and flagged >= since:
            continue
        deadline = silent_after
        if risk_silent_after is not None and d.risk_until is not None and now <= d.risk_until:
            deadline = min(silent_after, risk_silent_after)
        if d.offline_at is not None:
            out.append((d, f"connection lost (broker published its Will), last proof of life "
                           f"{round(now - alive)} s ago"))  # fmt: skip
        elif d.last_seen is None and now - alive > deadline:
            out.append((d, f"never heard from since it was enrolled {round(now - alive)} s ago "
                           "(not yet handed out? then resolve this)"))  # fmt: skip
        elif now - alive > deadline:
            out.append((d, f"no proof of life for {round(now - alive)} s "
                           f"(deadline {round(deadline)} s)"))  # fmt: skip
    return out
