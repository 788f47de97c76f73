"""Escalation policy (pure): which tiers are due for an alert, and who each tier reaches.

- Tiers fire `delay` seconds after the alert opened, each once per alert.
- Acknowledging stops escalation: only `open` alerts escalate.
- A duress alert escalates at once: every tier is due immediately.
- A device-silent alert reaches the first tier only (the operators), who judge it.
- A tier with `radius_km` reaches only recipients within that distance of the
  alert's last position (all of them when the position is unknown: better one
  call too many than none).
- The special channel `contacts` means the wearer's own contacts from the registry.
- Public channels are never in a tier; `broadcast_recipients` serves the
  operator's explicit broadcast of a verified alert.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from vigil.errors import BadTransition
from vigil.hub.alerts import may_broadcast
from vigil.hub.config import Channel, Recipient, Tier
from vigil.hub.store.records import Alert, AlertState, DeviceRecord

CONTACTS = "contacts"
PUBLIC_STEP = "public broadcast"
FLOOD_STEP = "flood"  # one notice to the first tier when a device floods alarms
EARTH_RADIUS_KM = 6371.0088

Planned = tuple[str, str, str]  # (channel, label, url)


def due_tiers(alert: Alert, tiers: Sequence[Tier], fired: set[str], *, now: float) -> list[Tier]:
    """The tiers to fire now for `alert`, given the steps that already fired."""
    if alert.state is not AlertState.OPEN:
        return []
    candidates = tiers if alert.kind.alarm_grade else tiers[:1]
    return [
        t
        for t in candidates
        if t.name not in fired and (alert.duress or now >= alert.opened_at + t.delay)
    ]


def next_due(alert: Alert, tiers: Sequence[Tier], fired: set[str]) -> float | None:
    """When the next tier of `alert` falls due (None if none will): the same tiers
    `due_tiers` would fire, so that the escalation timer never waits for a tier that
    cannot fire (a silent alert's later tiers)."""
    if alert.state is not AlertState.OPEN:
        return None
    candidates = tiers if alert.kind.alarm_grade else tiers[:1]
    pending = [
        alert.updated_at if alert.duress else alert.opened_at + t.delay
        for t in candidates
        if t.name not in fired
    ]
    return min(pending, default=None)


def flood_due(alert: Alert, tiers: Sequence[Tier], fired: set[str]) -> Tier | None:
    """The tier (the first) to tell once that further alarms joined `alert`, if not yet told."""
    if alert.joined == 0 or FLOOD_STEP in fired or not tiers or not alert.active:
        return None
    return tiers[0]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def _near(r: Recipient, alert: Alert, radius_km: float | None) -> bool:
    if radius_km is None or alert.last_fix is None:
        return True
    if r.lat is None or r.lon is None:
        return False
    fix = alert.last_fix
    return distance_km(fix.lat, fix.lon, r.lat, r.lon) <= radius_km


def recipients(
    tier: Tier, channels: Mapping[str, Channel], device: DeviceRecord, alert: Alert
) -> list[Planned]:
    """Everyone `tier` reaches for `alert`, each URL once."""
    out: list[Planned] = []
    seen: set[str] = set()
    for name in tier.channels:
        if name == CONTACTS and name not in channels:
            people = [
                Recipient(label=f"contact of {device.label}", url=u) for u in device.contacts
            ]
        else:
            people = list(channels[name].recipients)
        for r in people:
            if r.url not in seen and _near(r, alert, tier.radius_km):
                seen.add(r.url)
                out.append((name, r.label, r.url))
    return out


def broadcast_recipients(alert: Alert, channels: Mapping[str, Channel]) -> list[Planned]:
    """Recipients of the public channels, for an alert an operator verified."""
    if not may_broadcast(alert):
        raise BadTransition(
            f"alert {alert.id} was not verified by an operator: public broadcast refused"
        )
    return [(c.name, r.label, r.url) for c in channels.values() if c.public for r in c.recipients]
