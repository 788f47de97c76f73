"""The store's SQL for alerts, positions, escalation steps, deliveries and the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vigil.errors import NoSuchAlert
from vigil.hub import audit
from vigil.hub.store.records import Alert, AlertKind, AlertState, AuditEntry, Delivery, LastFix
from vigil.hub.store.sql import SqlStoreBase
from vigil.wire.ids import DeviceId

_ALERT_COLUMNS = (
    "id, device_id, kind, state, opened_at, updated_at, alarm_seq, trigger, duress, battery, "
    "fix_lat, fix_lon, fix_taken_at, fix_received_at, acknowledged_by, acknowledged_at, "
    "verified_at, closed_at, note"
)
_DELIVERY_COLUMNS = (
    "id, alert_id, step, channel, label, url, status, attempts, next_at, last_error"
)


def _alert(r: Sequence[Any]) -> Alert:
    fix = None if r[10] is None else LastFix(r[10], r[11], r[12], r[13])
    return Alert(
        id=int(r[0]),
        device_id=DeviceId.parse(r[1]),
        kind=AlertKind(r[2]),
        state=AlertState(r[3]),
        opened_at=r[4],
        updated_at=r[5],
        alarm_seq=r[6],
        trigger=r[7],
        duress=bool(r[8]),
        battery=r[9],
        last_fix=fix,
        acknowledged_by=r[14],
        acknowledged_at=r[15],
        verified_at=r[16],
        closed_at=r[17],
        note=r[18],
    )


def _fix_params(fix: LastFix | None) -> tuple[Any, ...]:
    return (None,) * 4 if fix is None else (fix.lat, fix.lon, fix.taken_at, fix.received_at)


class AlertQueries(SqlStoreBase):
    """Alerts and everything hanging off them."""

    def open_alert(self, alert: Alert) -> Alert:
        """Insert `alert` (its id is ignored) unless one exists for (device, alarm_seq).

        Idempotent: a handler re-run after a crash returns the existing alert.
        Silent-device alerts have no seq; at most one is active per device.
        """
        existing = self._existing(alert)
        if existing is not None:
            return existing
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO alerts (device_id, kind, state, opened_at, updated_at, alarm_seq, "
                "trigger, duress, battery, fix_lat, fix_lon, fix_taken_at, fix_received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (alert.device_id.hex, alert.kind.value, alert.state.value, alert.opened_at,
                 alert.updated_at, alert.alarm_seq, alert.trigger, int(alert.duress),
                 alert.battery, *_fix_params(alert.last_fix)),
            )  # fmt: skip
        found = self._existing(alert)
        assert found is not None  # noqa: S101 - inserted or already there
        return found

    def _existing(self, alert: Alert) -> Alert | None:
        params: tuple[str, int | str]
        if alert.alarm_seq is not None:
            where, params = (
                "device_id = ? AND alarm_seq = ?",
                (alert.device_id.hex, alert.alarm_seq),
            )
        else:
            where = "device_id = ? AND kind = ? AND state IN ('open', 'acknowledged')"
            params = (alert.device_id.hex, alert.kind.value)
        with self._read() as cur:
            cur.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE {where}", params)  # noqa: S608
            row = cur.fetchone()
        return None if row is None else _alert(row)

    def save_alert(self, alert: Alert) -> None:
        """Write the mutable fields of an alert (state, duress, people, fix, note)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE alerts SET state = ?, updated_at = ?, duress = ?, battery = ?, "
                "fix_lat = ?, fix_lon = ?, fix_taken_at = ?, fix_received_at = ?, "
                "acknowledged_by = ?, acknowledged_at = ?, verified_at = ?, closed_at = ?, "
                "note = ? WHERE id = ?",
                (alert.state.value, alert.updated_at, int(alert.duress), alert.battery,
                 *_fix_params(alert.last_fix), alert.acknowledged_by, alert.acknowledged_at,
                 alert.verified_at, alert.closed_at, alert.note, alert.id),
            )  # fmt: skip

    def get_alert(self, alert_id: int) -> Alert:
        with self._read() as cur:
            cur.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?",  # noqa: S608
                (alert_id,),
            )
            row = cur.fetchone()
        if row is None:
            raise NoSuchAlert(f"there is no alert {alert_id}")
        return _alert(row)

    def find_alert(self, device_id: DeviceId, alarm_seq: int) -> Alert | None:
        with self._read() as cur:
            cur.execute(
                f"SELECT {_ALERT_COLUMNS} FROM alerts "  # noqa: S608
                "WHERE device_id = ? AND alarm_seq = ?",
                (device_id.hex, alarm_seq),
            )
            row = cur.fetchone()
        return None if row is None else _alert(row)

    def list_alerts(self, *, active_only: bool = False) -> list[Alert]:
        where = "WHERE state IN ('open', 'acknowledged')" if active_only else ""
        with self._read() as cur:
            cur.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts {where} ORDER BY id")  # noqa: S608
            return [_alert(r) for r in cur.fetchall()]

    def add_position(self, alert_id: int, device_id: DeviceId, seq: int, fix: LastFix) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO positions (device_id, seq, alert_id, lat, lon, taken_at, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (device_id.hex, seq, alert_id, fix.lat, fix.lon, fix.taken_at, fix.received_at),
            )

    def positions(self, alert_id: int) -> list[LastFix]:
        with self._read() as cur:
            cur.execute(
                "SELECT lat, lon, taken_at, received_at FROM positions WHERE alert_id = ? "
                "ORDER BY taken_at",
                (alert_id,),
            )
            return [LastFix(*r) for r in cur.fetchall()]

    # -- escalation and deliveries -------------------------------------------------------

    def fired_steps(self, alert_id: int) -> set[str]:
        with self._read() as cur:
            cur.execute("SELECT step FROM escalation_steps WHERE alert_id = ?", (alert_id,))
            return {r[0] for r in cur.fetchall()}

    def fire_step(
        self,
        alert_id: int,
        step: str,
        recipients: Sequence[tuple[str, str, str]],
        *,
        now: float,
    ) -> bool:
        """Record that `step` fired and plan one delivery per (channel, label, url).

        Returns False (and plans nothing) if the step had fired already; a URL
        already planned for this step is not planned twice.
        """
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO escalation_steps (alert_id, step, at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING RETURNING step",
                (alert_id, step, now),
            )
            if cur.fetchone() is None:
                return False
            for channel, label, url in recipients:
                cur.execute(
                    "INSERT INTO deliveries (alert_id, step, channel, label, url, status, "
                    "next_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING",
                    (alert_id, step, channel, label, url, now),
                )
            return True

    def due_deliveries(self, now: float) -> list[Delivery]:
        with self._read() as cur:
            cur.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "  # noqa: S608
                "WHERE status = 'pending' AND next_at <= ? ORDER BY id",
                (now,),
            )
            return [Delivery(*r) for r in cur.fetchall()]

    def claim_delivery(self, delivery_id: int, *, now: float, lease: float) -> bool:
        """Take a due delivery for `lease` seconds, so that no other hub sends it too."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE deliveries SET next_at = ? WHERE id = ? AND status = 'pending' "
                "AND next_at <= ? RETURNING id",
                (now + lease, delivery_id, now),
            )
            return cur.fetchone() is not None

    def deliveries(self, alert_id: int) -> list[Delivery]:
        with self._read() as cur:
            cur.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries "  # noqa: S608
                "WHERE alert_id = ? ORDER BY id",
                (alert_id,),
            )
            return [Delivery(*r) for r in cur.fetchall()]

    def record_attempt(
        self, delivery_id: int, *, at: float, ok: bool, detail: str, next_at: float | None
    ) -> None:
        """Store one delivery attempt; `next_at` None on failure means give up."""
        status = "sent" if ok else ("pending" if next_at is not None else "failed")
        with self._tx() as cur:
            cur.execute(
                "UPDATE deliveries SET attempts = attempts + 1, status = ?, next_at = ?, "
                "last_error = ? WHERE id = ?",
                (status, None if ok else next_at, None if ok else detail, delivery_id),
            )
            cur.execute("SELECT attempts FROM deliveries WHERE id = ?", (delivery_id,))
            attempt = int(cur.fetchone()[0])
            cur.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at, ok, detail) "
                "VALUES (?, ?, ?, ?, ?)",
                (delivery_id, attempt, at, int(ok), detail),
            )

    def attempts(self, delivery_id: int) -> list[tuple[int, float, bool, str]]:
        with self._read() as cur:
            cur.execute(
                "SELECT attempt, at, ok, detail FROM delivery_attempts WHERE delivery_id = ? "
                "ORDER BY attempt",
                (delivery_id,),
            )
            return [(int(r[0]), r[1], bool(r[2]), r[3]) for r in cur.fetchall()]

    # -- audit log ----------------------------------------------------------------------------

    def append_audit(
        self, *, at: float, actor: str, action: str, subject: str, detail: str = ""
    ) -> AuditEntry:
        """Append one entry chained to the previous one (serialised on the head row)."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO audit_head (one, last_id, last_hash) VALUES (1, 0, ?) "
                "ON CONFLICT DO NOTHING",
                (audit.GENESIS,),
            )
            cur.execute(
                f"SELECT last_id, last_hash FROM audit_head WHERE one = 1{self._for_update}"  # noqa: S608
            )
            last_id, prev = cur.fetchone()
            fields = {"id": int(last_id) + 1, "at": at, "actor": actor, "action": action,
                      "subject": subject, "detail": detail}  # fmt: skip
            digest = audit.entry_hash(prev, **fields)  # type: ignore[arg-type]
            entry = AuditEntry(prev_hash=prev, hash=digest, **fields)  # type: ignore[arg-type]
            cur.execute(
                "INSERT INTO audit (id, at, actor, action, subject, detail, prev_hash, hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.id, at, actor, action, subject, detail, prev, digest),
            )
            cur.execute(
                "UPDATE audit_head SET last_id = ?, last_hash = ? WHERE one = 1",
                (entry.id, digest),
            )
            return entry

    def audit_entries(self) -> list[AuditEntry]:
        with self._read() as cur:
            cur.execute(
                "SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit "
                "ORDER BY id"
            )
            return [AuditEntry(int(r[0]), *r[1:]) for r in cur.fetchall()]

    def audit_head(self) -> tuple[int, str] | None:
        with self._read() as cur:
            cur.execute("SELECT last_id, last_hash FROM audit_head WHERE one = 1")
            row = cur.fetchone()
        return None if row is None else (int(row[0]), row[1])
