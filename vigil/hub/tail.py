"""`vigil-hub tail`: a live, decoded stream of uplinks, audit events and rejections.

It follows the store (not the broker), so it shows what the hub decided:
stored uplinks with their decoded fields, alerts, escalations, deliveries,
operator actions, and counts of rejected input. Colour on a terminal, plain
text when piped. Each line starts with its time (ISO 8601 with the zone, see
`vigil.hub.views`); operator names, actions and subjects are cut with an
ellipsis at fixed widths (`_ACTOR`, `_ACTION`, `_SUBJECT` cells) so the columns
of a stream stay in line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from vigil.errors import VigilError
from vigil.hub.alerts import CAPTOR
from vigil.hub.store import AuditEntry, DeviceRecord, Store, StoredUplink
from vigil.hub.views import Clock, duration, fit, pad, percent
from vigil.wire.ids import DeviceId
from vigil.wire.messages import Alarm, Cancel, Direction, Heartbeat, Position, decode_payload

_COLOURS = {"alarm": "31;1", "cancel": "33", "position": "36", "audit": "35", "reject": "31"}
_ACTOR, _ACTION, _SUBJECT = 16, 20, 16  # cells of an audit line's columns


def describe_uplink(u: StoredUplink) -> str:
    """One line of decoded fields for a stored uplink."""
    try:
        body = decode_payload(u.payload, Direction.UP).body
    except VigilError:  # pragma: no cover - only valid payloads are stored
        return "(undecodable)"
    if isinstance(body, Alarm):
        parts = [f"trigger {body.trigger.value}", f"battery {percent(body.battery)}"]
        if body.fix is not None:
            fix = body.fix.fix
            parts.append(f"fix {fix.lat:.5f},{fix.lon:.5f} ({duration(body.fix.age)} old)")
        return ", ".join(parts)
    if isinstance(body, Cancel):
        return f"alarm_seq {body.alarm_seq}"  # a duress cancel shows in the audit, not here
    if isinstance(body, Position):
        fix = body.fix.fix
        return f"alarm_seq {body.alarm_seq}, fix {fix.lat:.5f},{fix.lon:.5f}"
    if isinstance(body, Heartbeat):
        fix_age = "no fix" if body.fix is None else duration(body.fix.age)
        return (f"battery {percent(body.battery)}, fix_age {fix_age}, "
                f"signal {percent(body.signal)}, {body.pending} waiting")  # fmt: skip
    return ""


@dataclass
class Follower:
    """Remembers what was shown, and yields new lines on each `poll`."""

    store: Store
    colour: bool = False
    since: float = 0.0
    _seen: set[tuple[str, str, int]] = field(default_factory=set)
    _audit_id: int = 0
    _rejections: dict[str, int] = field(default_factory=dict)

    def _paint(self, kind: str, text: str) -> str:
        code = _COLOURS.get(kind)
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code else text

    def poll(self) -> Iterator[tuple[float, str]]:
        with self.store.read() as tx:  # one consistent view per poll
            uplinks = tx.uplinks.recent(after=self.since)
            entries = tx.audit.entries(after=self._audit_id)
            rejections = tx.rejections.totals()
            compromised = {d.device_id: d for d in tx.devices.all() if d.compromised}
        events = [*self._uplink_events(uplinks, compromised), *self._audit_events(entries)]
        for reason, count in rejections.items():
            new = count - self._rejections.get(reason, 0)
            if new > 0:
                self._rejections[reason] = count
                line = f"reject {reason} x{new} (total {count})"
                events.append((time.time(), self._paint("reject", line)))
        yield from sorted(events, key=lambda ev: ev[0])

    def _uplink_events(
        self, uplinks: list[StoredUplink], compromised: Mapping[DeviceId, DeviceRecord]
    ) -> Iterator[tuple[float, str]]:
        for u in uplinks:
            key = (u.device_id.hex, u.epoch, u.seq)
            if key not in self._seen:
                self._seen.add(key)
                self.since = max(self.since, u.received_at)
                device, kind = u.device_id.hex[:8], f"{u.kind:<9}"
                text = f"up     {device}  seq {u.seq:<5} {kind} {describe_uplink(u)}"
                record = compromised.get(u.device_id)
                if record is not None and record.sent_by_captor(u.received_at):
                    text += f" [{CAPTOR}]"
                yield u.received_at, self._paint(u.kind, text)

    def _audit_events(self, entries: list[AuditEntry]) -> Iterator[tuple[float, str]]:
        for e in entries:
            self._audit_id = max(self._audit_id, e.id)
            yield e.at, self._paint("audit", _audit_line(e))


def _audit_line(e: AuditEntry) -> str:
    columns = (pad(fit(e.actor, _ACTOR), _ACTOR), pad(fit(e.action, _ACTION), _ACTION),
               pad(fit(e.subject, _SUBJECT), _SUBJECT), fit(e.detail, 1000))  # fmt: skip
    return ("event  " + " ".join(columns)).rstrip()


def follow(
    store: Store,
    out: TextIO,
    *,
    colour: bool,
    once: bool,
    clock: Clock | None = None,
    interval: float = 0.5,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Print events as they happen (or what is there now, with `once`)."""
    follower, clock = Follower(store, colour=colour), clock or Clock()
    while True:
        for at, line in follower.poll():
            out.write(f"{clock.at(at)}  {line}\n")
        out.flush()
        if once or stop():
            return
        time.sleep(interval)  # polling the store; a live tail has nothing to wait on
