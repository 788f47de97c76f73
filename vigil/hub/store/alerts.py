"""`tx.alerts`: alerts and the positions that follow an alarm."""

from __future__ import annotations

from typing import Any

from vigil.errors import NoSuchAlert
from vigil.hub.store import schema
from vigil.hub.store.records import Alert, AlertKind, AlertState, LastFix
from vigil.hub.store.repo import Repository, Row
from vigil.wire.ids import DeviceId

_COLUMNS = (
    "id, device_id, kind, state, opened_at, updated_at, alarm_epoch, alarm_seq, trigger, "
    "duress, battery, "
    "fix_lat, fix_lon, fix_taken_at, fix_received_at, acknowledged_by, acknowledged_at, "
    "verified_at, closed_at, note, joined"
)
_ACTIVE = "state IN ('open', 'acknowledged')"


def _alert(r: Row) -> Alert:
    fix = None
    if r["fix_lat"] is not None:
        fix = LastFix(r["fix_lat"], r["fix_lon"], r["fix_taken_at"], r["fix_received_at"])
    return Alert(
        id=int(r["id"]),
        device_id=DeviceId.parse(r["device_id"]),
        kind=AlertKind(r["kind"]),
        state=AlertState(r["state"]),
        opened_at=r["opened_at"],
        updated_at=r["updated_at"],
        alarm_seq=r["alarm_seq"],
        alarm_epoch=r["alarm_epoch"],
        trigger=r["trigger"],
        duress=bool(r["duress"]),
        battery=r["battery"],
        last_fix=fix,
        acknowledged_by=r["acknowledged_by"],
        acknowledged_at=r["acknowledged_at"],
        verified_at=r["verified_at"],
        closed_at=r["closed_at"],
        note=r["note"],
        joined=int(r["joined"]),
    )


def _fix_params(fix: LastFix | None) -> tuple[Any, ...]:
    return (None,) * 4 if fix is None else (fix.lat, fix.lon, fix.taken_at, fix.received_at)


class Alerts(Repository):
    """Open, change, find and list alerts; keep an alarm's follow-up positions."""

    def open(self, alert: Alert) -> Alert:
        """Insert `alert` (its id is ignored) unless one exists for (device, epoch, alarm_seq).

        Idempotent: a handler re-run after a crash returns the existing alert.
        Silent-device alerts have no seq; at most one is active per device.
        """
        existing = self._existing(alert)
        if existing is not None:
            return existing
        self._cur.execute(
            "INSERT INTO alerts (device_id, kind, state, opened_at, updated_at, alarm_epoch, "
            "alarm_seq, trigger, duress, battery, fix_lat, fix_lon, fix_taken_at, "
            "fix_received_at, note, next_escalation_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (alert.device_id.hex, alert.kind.value, alert.state.value, alert.opened_at,
             alert.updated_at, alert.alarm_epoch, alert.alarm_seq, alert.trigger,
             int(alert.duress), alert.battery, *_fix_params(alert.last_fix), alert.note,
             alert.opened_at),
        )  # fmt: skip
        found = self._existing(alert)
        assert found is not None  # noqa: S101 - inserted or already there
        return found

    def _existing(self, alert: Alert) -> Alert | None:
        params: tuple[str | int | None, ...]
        if alert.alarm_seq is not None:
            where = "device_id = ? AND alarm_epoch = ? AND alarm_seq = ?"
            params = (alert.device_id.hex, alert.alarm_epoch, alert.alarm_seq)
        else:
            where = f"device_id = ? AND kind = ? AND {_ACTIVE}"
            params = (alert.device_id.hex, alert.kind.value)
        row = self._one(f"SELECT {_COLUMNS} FROM alerts WHERE {where}", params)  # noqa: S608
        return None if row is None else _alert(row)

    def save(self, alert: Alert) -> None:
        """Write the mutable fields of an alert (state, duress, people, fix, note, joined).

        An open alert is looked at again by the escalation timer (its due steps may have
        changed, e.g. under duress); any other has no escalation left. A closed alert's
        notices not yet sent are stopped: nobody is called about an alarm that is over.
        """
        recheck = alert.updated_at if alert.state is AlertState.OPEN else None
        self._cur.execute(
            "UPDATE alerts SET state = ?, updated_at = ?, duress = ?, battery = ?, "
            "fix_lat = ?, fix_lon = ?, fix_taken_at = ?, fix_received_at = ?, "
            "acknowledged_by = ?, acknowledged_at = ?, verified_at = ?, closed_at = ?, "
            "note = ?, joined = ?, next_escalation_at = ? WHERE id = ?",
            (alert.state.value, alert.updated_at, int(alert.duress), alert.battery,
             *_fix_params(alert.last_fix), alert.acknowledged_by, alert.acknowledged_at,
             alert.verified_at, alert.closed_at, alert.note, alert.joined, recheck, alert.id),
        )  # fmt: skip
        if alert.state.closed:
            self._cur.execute(
                "UPDATE deliveries SET status = 'stopped', next_at = NULL "
                "WHERE alert_id = ? AND status = 'pending'",
                (alert.id,),
            )

    def active_for(self, device_id: DeviceId, kind: AlertKind | None = None) -> list[Alert]:
        """A device's active alerts (of `kind`), newest first (indexed by device)."""
        where, params = "device_id = ?", [device_id.hex]
        if kind is not None:
            where, params = f"{where} AND kind = ?", [*params, kind.value]
        rows = self._all(
            f"SELECT {_COLUMNS} FROM alerts WHERE {where} AND {_ACTIVE} ORDER BY id DESC",  # noqa: S608
            params,
        )
        return [_alert(r) for r in rows]

    def due_escalation(self, now: float, *, limit: int = 100) -> list[Alert]:
        """Alerts whose escalation timer has come (indexed); locked for this hub on PostgreSQL."""
        skip = " FOR UPDATE SKIP LOCKED" if self._dialect is schema.POSTGRES else ""
        rows = self._all(
            f"SELECT {_COLUMNS} FROM alerts WHERE next_escalation_at <= ? "  # noqa: S608
            f"ORDER BY next_escalation_at LIMIT ?{skip}",
            (now, limit),
        )
        return [_alert(r) for r in rows]

    def escalation_due(self, now: float) -> bool:
        """Whether any alert's escalation timer has come (one indexed probe)."""
        return (
            self._one("SELECT 1 AS due FROM alerts WHERE next_escalation_at <= ? LIMIT 1", (now,))
            is not None
        )

    def schedule_escalation(self, alert_id: int, at: float | None) -> None:
        """When the escalation timer looks at the alert next (None: never)."""
        self._cur.execute("UPDATE alerts SET next_escalation_at = ? WHERE id = ?", (at, alert_id))

    def get(self, alert_id: int) -> Alert:
        row = self._one(f"SELECT {_COLUMNS} FROM alerts WHERE id = ?", (alert_id,))  # noqa: S608
        if row is None:
            raise NoSuchAlert(f"there is no alert {alert_id}")
        return _alert(row)

    def find(self, device_id: DeviceId, epoch: str, alarm_seq: int) -> Alert | None:
        """The alert of alarm `alarm_seq` in this life (`epoch`) of the device, if any."""
        row = self._one(
            f"SELECT {_COLUMNS} FROM alerts "  # noqa: S608
            "WHERE device_id = ? AND alarm_epoch = ? AND alarm_seq = ?",
            (device_id.hex, epoch, alarm_seq),
        )
        return None if row is None else _alert(row)

    def all(self, *, active_only: bool = False) -> list[Alert]:
        where = f"WHERE {_ACTIVE}" if active_only else ""
        return [_alert(r) for r in self._all(f"SELECT {_COLUMNS} FROM alerts {where} ORDER BY id")]  # noqa: S608

    def add_position(
        self, alert_id: int, device_id: DeviceId, epoch: str, seq: int, fix: LastFix
    ) -> None:
        self._cur.execute(
            "INSERT INTO positions (device_id, epoch, seq, alert_id, lat, lon, taken_at, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device_id.hex, epoch, seq, alert_id, fix.lat, fix.lon, fix.taken_at,
             fix.received_at),
        )  # fmt: skip

    def positions(self, alert_id: int) -> list[LastFix]:
        rows = self._all(
            "SELECT lat, lon, taken_at, received_at FROM positions WHERE alert_id = ? "
            "ORDER BY taken_at",
            (alert_id,),
        )
        return [LastFix(r["lat"], r["lon"], r["taken_at"], r["received_at"]) for r in rows]
