"""`tx.deliveries`: escalation steps fired per alert, one delivery per recipient, attempts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from vigil.hub.store.records import Delivery
from vigil.hub.store.repo import Repository, Row
from vigil.wire.ids import DeviceId

_COLUMNS = "id, alert_id, step, channel, label, url, status, attempts, next_at, last_error"


def _delivery(r: Row) -> Delivery:
    return Delivery(
        id=int(r["id"]),
        alert_id=int(r["alert_id"]),
        step=r["step"],
        channel=r["channel"],
        label=r["label"],
        url=r["url"],
        status=r["status"],
        attempts=int(r["attempts"]),
        next_at=r["next_at"],
        last_error=r["last_error"],
    )


class Deliveries(Repository):
    """Plan, claim and record notices to responders; never one URL twice per step."""

    def fired_steps(self, alert_id: int) -> set[str]:
        rows = self._all("SELECT step FROM escalation_steps WHERE alert_id = ?", (alert_id,))
        return {r["step"] for r in rows}

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
        fired = self._one(
            "INSERT INTO escalation_steps (alert_id, step, at) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING step",
            (alert_id, step, now),
        )
        if fired is None:
            return False
        for channel, label, url in recipients:
            self._cur.execute(
                "INSERT INTO deliveries (alert_id, step, channel, label, url, status, "
                "next_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT DO NOTHING",
                (alert_id, step, channel, label, url, now),
            )
        return True

    def due(self, now: float, *, limit: int = 1000) -> list[Delivery]:
        """Pending deliveries that are due, in the order they should go out.

        First notices go ahead of retries; among them devices take turns (each device's
        first, then each one's second, ...), so one device's flood never holds up another
        device's first notice; then oldest first.
        """
        rows = self._all(
            f"SELECT {_COLUMNS}, device_id FROM (SELECT d.*, a.device_id, "  # noqa: S608
            "ROW_NUMBER() OVER (PARTITION BY a.device_id ORDER BY d.attempts, d.id) AS turn "
            "FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.status = 'pending' AND d.next_at <= ?) due "
            "ORDER BY attempts > 0, turn, id LIMIT ?",
            (now, limit),
        )
        return [replace(_delivery(r), device_id=DeviceId.parse(r["device_id"])) for r in rows]

    def claim(self, delivery_id: int, *, now: float, lease: float) -> bool:
        """Take a due delivery for `lease` seconds, so that no other hub sends it too."""
        row = self._one(
            "UPDATE deliveries SET next_at = ? WHERE id = ? AND status = 'pending' "
            "AND next_at <= ? RETURNING id",
            (now + lease, delivery_id, now),
        )
        return row is not None

    def for_alert(self, alert_id: int) -> list[Delivery]:
        rows = self._all(
            f"SELECT {_COLUMNS} FROM deliveries WHERE alert_id = ? ORDER BY id",  # noqa: S608
            (alert_id,),
        )
        return [_delivery(r) for r in rows]

    def record_attempt(
        self, delivery_id: int, *, at: float, ok: bool, detail: str, next_at: float | None
    ) -> None:
        """Store one delivery attempt; `next_at` None on failure means give up."""
        now = self._one(
            f"SELECT status FROM deliveries WHERE id = ?{self._for_update}",  # noqa: S608
            (delivery_id,),
        )
        if now is None:
            raise LookupError(f"there is no delivery {delivery_id}")
        status = "sent" if ok else ("pending" if next_at is not None else "failed")
        if now["status"] == "stopped" and not ok:  # its alert closed meanwhile: no retry
            status, next_at = "stopped", None
        row = self._one(
            "UPDATE deliveries SET attempts = attempts + 1, status = ?, next_at = ?, "
            "last_error = ? WHERE id = ? RETURNING attempts",
            (status, None if ok else next_at, None if ok else detail, delivery_id),
        )
        assert row is not None  # noqa: S101 - selected just above, in this transaction
        self._cur.execute(
            "INSERT INTO delivery_attempts (delivery_id, attempt, at, ok, detail) "
            "VALUES (?, ?, ?, ?, ?)",
            (delivery_id, int(row["attempts"]), at, int(ok), detail),
        )

    def attempts(self, delivery_id: int) -> list[tuple[int, float, bool, str]]:
        rows = self._all(
            "SELECT attempt, at, ok, detail FROM delivery_attempts WHERE delivery_id = ? "
            "ORDER BY attempt",
            (delivery_id,),
        )
        return [(int(r["attempt"]), r["at"], bool(r["ok"]), r["detail"]) for r in rows]
