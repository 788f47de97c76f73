"""How the operator's commands show things: dated times, units, aligned columns (pure).

- Times are ISO 8601 to the second with their zone: the local zone by default
  (the `TZ` environment variable, else the system's), e.g.
  `2025-11-24T17:00:00+01:00`, or UTC with `vigil-hub --utc`, e.g.
  `2025-11-24T16:00:00Z`. Spans read `17 min ago`, `0.9 s`.
- Text that came from people or devices (labels, operator names, notes) has
  its control characters escaped, so it cannot move the cursor or recolour
  the operator's terminal, and is measured in terminal cells (wcwidth), so a
  wide character does not push a column out of line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import wcwidth

from vigil.errors import BadTransition
from vigil.hub import alerts
from vigil.hub.store import (
    Alert,
    AlertKind,
    AlertState,
    AuditEntry,
    Delivery,
    DeviceRecord,
    LastFix,
)

GAP = "  "  # between table columns
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class Clock:
    """Writes hub times (seconds since the epoch) in one zone; `None` is the local zone."""

    zone: tzinfo | None = None

    @classmethod
    def choose(cls, *, utc: bool) -> Clock:
        return cls(UTC if utc else None)

    def at(self, t: float | None) -> str:
        """`2025-11-24T17:00:00+01:00` (local) or `2025-11-24T16:00:00Z` (UTC)."""
        if t is None:
            return "never"
        try:
            when = datetime.fromtimestamp(t, self.zone or UTC)
        except (OverflowError, OSError, ValueError):  # a corrupt row must not end the listing
            return f"invalid time {t!r}"
        if self.zone is None:
            when = when.astimezone()
        text = when.isoformat(timespec="seconds")
        return text.removesuffix("+00:00") + "Z" if self.zone is UTC else text

    def at_ago(self, t: float | None, *, now: float) -> str:
        """The time and how long ago: `2025-11-24T16:00:00Z (17 min ago)`."""
        return "never" if t is None else f"{self.at(t)} ({ago(now - t)})"


def duration(seconds: float) -> str:
    """A span with its unit: `0.9 s`, `42 s`, `17 min`, `2 h 5 min`, `3 d 4 h`."""
    if not math.isfinite(seconds):
        return "unknown"
    s = abs(seconds)
    if s < 10:
        return f"{s:.1f} s"
    whole = round(s)
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min"
    if whole < 2 * 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def ago(seconds: float) -> str:
    """`17 min ago`; a time ahead of the hub's clock says so rather than hiding it."""
    return f"{duration(seconds)} ago" if seconds >= 0 else f"{duration(seconds)} in the future"


def percent(value: int | None) -> str:
    return "unknown" if value is None else f"{value}%"


# -- text and columns --------------------------------------------------------------------

# C0, DEL, C1, and the bidirectional overrides that can make text read backwards.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(text: object) -> str:
    """`text` with control characters written as escapes (`\\x1b`, `\\n`, `\\u202e`)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def cells(text: str) -> int:
    """How many terminal cells `text` (already cleaned) takes."""
    return int(wcwidth.width(text))


def fit(text: str, limit: int) -> str:
    """`text` cut to at most `limit` cells, ending in an ellipsis when cut."""
    text = clean(text)
    if cells(text) <= limit:
        return text
    return str(wcwidth.clip(text, 0, limit - 1)).rstrip() + ELLIPSIS


def pad(text: str, width: int, *, right: bool = False) -> str:
    """`text` padded to `width` cells (on the left when `right`)."""
    justify = wcwidth.rjust if right else wcwidth.ljust
    return str(justify(text, width))


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: its title, and whether its values (numbers) align right."""

    title: str
    right: bool = False


def table(columns: Sequence[Column], rows: Iterable[Sequence[object]]) -> list[str]:
    """Lines of a table whose columns are as wide as their widest cell."""
    body = [[clean(value) for value in row] for row in rows]
    for row in body:
        if len(row) != len(columns):
            raise ValueError(f"a row of {len(row)} cells for {len(columns)} columns")
    widths = [max([cells(c.title)] + [cells(r[i]) for r in body]) for i, c in enumerate(columns)]
    lines = []
    for row in [[c.title for c in columns], *body]:
        parts = [pad(v, w, right=c.right) for v, w, c in zip(row, widths, columns, strict=True)]
        lines.append(GAP.join(parts).rstrip())
    return lines


# -- what a device and an alert are, as operators see them -------------------------------


def device_state(  # noqa: PLR0911 - one return per state, in order of precedence
    device: DeviceRecord, *, silent_alert: Alert | None, now: float, silent_after: float
) -> str:
    """`ok`, `silent (alert N)`, `silent (past its deadline)`, `offline`, `revoked`, ..."""
    if device.revoked:
        return "revoked"
    if device.compromised:  # never "ok": a captor may be the one talking
        return f"compromised ({device.compromised_reason}; later messages {alerts.CAPTOR})"
    if silent_alert is not None:
        return f"silent (alert {silent_alert.id})"
    if device.last_seen is None:
        return "never heard"
    if device.offline_at is not None:
        return "offline (connection lost)"
    alive = device.alive_at if device.alive_at is not None else device.last_seen
    if now - alive > silent_after:  # proof of life, not arrival: docs/protocol.md §8
        return "silent (past its deadline)"
    at_risk = device.risk_until is not None and now <= device.risk_until
    return "ok, at risk" if at_risk else "ok"


def silent_alerts(active: Iterable[Alert]) -> dict[str, Alert]:
    """The active device-silent alert of each device, by device id (hex)."""
    silent = (AlertKind.SILENT, AlertKind.DARK)
    return {a.device_id.hex: a for a in active if a.kind in silent and a.active}


_COMMAND = {
    "ack": "vigil-hub ack {id} --by NAME",
    "verify": "vigil-hub verify {id}",
    "broadcast": "vigil-hub broadcast {id}",
    "resolve": "vigil-hub resolve {id} --note TEXT",
    "false-alarm": "vigil-hub false-alarm {id} --note TEXT",
}


def valid_actions(alert: Alert) -> list[str]:
    """The operator actions the alert lifecycle (`vigil.hub.alerts`) allows now."""
    tries: dict[str, Callable[[], Alert]] = {
        "ack": lambda: alerts.acknowledge(alert, by="", now=0.0),
        "verify": lambda: alerts.verify(alert, by="", now=0.0),
        "resolve": lambda: alerts.close(alert, false_alarm=False, now=0.0),
        "false-alarm": lambda: alerts.close(alert, false_alarm=True, now=0.0),
    }
    allowed = []
    for action, attempt in tries.items():
        try:
            attempt()
        except BadTransition:
            continue
        if action != "verify" or alert.verified_at is None:  # verifying twice adds nothing
            allowed.append(action)
    if alerts.may_broadcast(alert):
        allowed.insert(1, "broadcast")
    return allowed


def suggestions(alert: Alert) -> list[str]:
    """The commands an operator can run on this alert now, one a line."""
    allowed = valid_actions(alert)
    if not allowed:
        return [f"no actions: the alert is {alerts.operator_view(alert)}"]
    return ["next: " + _COMMAND[a].format(id=alert.id) for a in allowed]


# -- one alert in full -------------------------------------------------------------------

_KEY_CELLS = len("acknowledged:")  # the widest fact's name, so every alert lines up alike
# Audit actions that close an alert (operator commands, and the hub's own).
CLOSING_ACTIONS = ("resolve", "false-alarm", "silent alert closed")


@dataclass(frozen=True, slots=True)
class AlertFile:
    """What `vigil-hub alerts --id N` shows: the alert and everything stored about it."""

    alert: Alert
    device: DeviceRecord | None
    history: Sequence[AuditEntry]  # the audit entries about this alert, oldest first
    positions: Sequence[LastFix]
    deliveries: Sequence[tuple[Delivery, float | None]]  # with the last attempt's time


def alert_detail(file: AlertFile, *, now: float, clock: Clock, map_url: str) -> list[str]:
    """The alert's facts, who did what and when, positions, deliveries, and what to do next."""
    lines = [*_facts(file, now=now, clock=clock, map_url=map_url), ""]
    lines += ["history:", *_indent(_history(file.history, clock))]
    if file.positions:
        rows = [(clock.at(f.taken_at), f"{f.lat:.6f}, {f.lon:.6f}") for f in file.positions]
        lines += ["positions:", *_indent(table([Column("TAKEN"), Column("POSITION")], rows))]
    if file.deliveries:
        lines += ["deliveries:", *_indent(_deliveries(file.deliveries, clock))]
    return [*lines, "", *suggestions(file.alert)]


def _facts(file: AlertFile, *, now: float, clock: Clock, map_url: str) -> list[str]:
    a = file.alert
    label = file.device.label if file.device else "(not enrolled)"
    rows = [
        ("alert", f"{a.id}: {alerts.operator_view(a)} ({a.kind.value})"),
        ("device", f"{a.device_id.hex}  {label}"),
        *_captor(a, file.device, clock),
        ("trigger", a.trigger or "unknown"),
        ("opened", clock.at_ago(a.opened_at, now=now)),
    ]
    if a.acknowledged_at is not None:
        rows.append(("acknowledged", f"{clock.at(a.acknowledged_at)} by {a.acknowledged_by}"))
    if a.verified_at is not None:
        rows.append(("verified", f"{clock.at(a.verified_at)} by {_actor(file, 'verify')}"))
    if a.closed_at is not None:
        closer = (
            "the wearer" if a.state is AlertState.CANCELLED else _actor(file, *CLOSING_ACTIONS)
        )
        rows.append(("closed", f"{clock.at(a.closed_at)}: {a.state.value} by {closer}"))
    if a.note:
        rows.append(("note", a.note))
    rows += _where(a, now=now, clock=clock, map_url=map_url)
    battery = a.battery if a.battery is not None or file.device is None else file.device.battery
    rows.append(("battery", percent(battery)))
    return [pad(f"{k}:", _KEY_CELLS) + " " + clean(v) for k, v in rows]


def alert_state(alert: Alert, device: DeviceRecord | None) -> str:
    """The state column of an alert list: the operator's view, and a captor warning."""
    state = alerts.operator_view(alert)
    return f"{state}, {alerts.CAPTOR}" if alerts.from_captor(alert, device) else state


def _captor(a: Alert, device: DeviceRecord | None, clock: Clock) -> list[tuple[str, str]]:
    if device is None or not alerts.from_captor(a, device):
        return []
    return [("WARNING", f"{alerts.CAPTOR}: the device was compromised at "
             f"{clock.at(device.compromised_at)} ({device.compromised_reason})")]  # fmt: skip


def _where(a: Alert, *, now: float, clock: Clock, map_url: str) -> list[tuple[str, str]]:
    fix = a.last_fix
    if fix is None:
        return [("position", "unknown (no GPS fix yet)")]
    link = map_url.format(lat=f"{fix.lat:.6f}", lon=f"{fix.lon:.6f}")
    taken = f"taken {clock.at(fix.taken_at)} ({duration(fix.age(now))} old)"
    return [("position", f"{fix.lat:.6f}, {fix.lon:.6f}, {taken}"), ("map", link)]


def _actor(file: AlertFile, *actions: str) -> str:
    """Who did the newest of `actions` to the alert, from its audit history."""
    done = [e.actor for e in file.history if e.action in actions]
    return done[-1] if done else "the hub"


def _history(entries: Sequence[AuditEntry], clock: Clock) -> list[str]:
    if not entries:
        return ["(nothing recorded)"]
    columns = [Column("TIME"), Column("BY"), Column("ACTION"), Column("NOTE")]
    return table(columns, [(clock.at(e.at), e.actor, e.action, e.detail) for e in entries])


def _deliveries(deliveries: Sequence[tuple[Delivery, float | None]], clock: Clock) -> list[str]:
    columns = [Column("STEP"), Column("TO"), Column("CHANNEL"), Column("STATUS"),
               Column("ATTEMPTS", right=True), Column("LAST TRY"),
               Column("LAST ERROR")]  # fmt: skip
    rows = [(d.step, d.label, d.channel, d.status, d.attempts, clock.at(last) if last else "-",
             d.last_error or "-") for d, last in deliveries]  # fmt: skip
    return table(columns, rows)


def _indent(lines: list[str]) -> list[str]:
    return ["  " + line for line in lines]
