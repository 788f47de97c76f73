"""`tx.uplinks`, `tx.downlinks`, `tx.rejections`: messages in and out, and refused input."""

from __future__ import annotations

from vigil.errors import UnknownDevice
from vigil.hub.store.devices import MASK_BYTES
from vigil.hub.store.records import PendingDownlink, StoredUplink
from vigil.hub.store.repo import Repository, Row
from vigil.wire.ids import DeviceId
from vigil.wire.messages import Message, encode_payload
from vigil.wire.replay import ReplayWindow

_UPLINK_COLUMNS = "device_id, seq, kind, payload, received_at, processed, error"


def _uplink(row: Row) -> StoredUplink:
    return StoredUplink(
        device_id=DeviceId.parse(row["device_id"]),
        seq=row["seq"],
        kind=row["kind"],
        payload=bytes(row["payload"]),
        received_at=row["received_at"],
        processed=bool(row["processed"]),
        error=row["error"],
    )


class Uplinks(Repository):
    """Accepted uplinks, deduplicated by (device, seq) behind each device's replay window."""

    def accept(self, device_id: DeviceId, message: Message, *, received_at: float) -> bool:
        """Store an uplink unless (device, seq) was seen: True if new, False if a duplicate.

        Raises `ReplayedMessage` for a seq older than the replay window.
        """
        row = self._one(
            "SELECT window_highest, window_mask FROM devices "  # noqa: S608
            f"WHERE device_id = ?{self._for_update}",
            (device_id.hex,),
        )
        if row is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        window = ReplayWindow(
            row["window_highest"], int.from_bytes(bytes(row["window_mask"]), "big")
        )
        if self.get(device_id, message.seq) is not None:
            return False
        window = window.admit(message.seq)  # ReplayedMessage if too old
        self._cur.execute(
            "INSERT INTO uplinks (device_id, seq, kind, payload, received_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (device_id.hex, message.seq, message.kind, encode_payload(message), received_at),
        )
        self._cur.execute(
            "UPDATE devices SET window_highest = ?, window_mask = ?, last_seen = ?, "
            "watch_from = ?, offline_at = NULL WHERE device_id = ?",
            (window.highest, window.mask.to_bytes(MASK_BYTES, "big"), received_at,
             received_at, device_id.hex),
        )  # fmt: skip
        return True

    def get(self, device_id: DeviceId, seq: int) -> StoredUplink | None:
        row = self._one(
            f"SELECT {_UPLINK_COLUMNS} FROM uplinks WHERE device_id = ? AND seq = ?",  # noqa: S608
            (device_id.hex, seq),
        )
        return None if row is None else _uplink(row)

    def unprocessed(self) -> list[StoredUplink]:
        """Uplinks stored but whose handlers have not finished (a crash in between)."""
        rows = self._all(
            f"SELECT {_UPLINK_COLUMNS} FROM uplinks WHERE processed = 0 ORDER BY received_at"  # noqa: S608
        )
        return [_uplink(r) for r in rows]

    def recent(self, *, after: float, limit: int = 500) -> list[StoredUplink]:
        """Uplinks received at or after `after`, oldest first (for `vigil-hub tail`)."""
        rows = self._all(
            f"SELECT {_UPLINK_COLUMNS} FROM uplinks "  # noqa: S608
            "WHERE received_at >= ? ORDER BY received_at, seq LIMIT ?",
            (after, limit),
        )
        return [_uplink(r) for r in rows]

    def mark_processed(self, device_id: DeviceId, seq: int) -> None:
        self._cur.execute(
            "UPDATE uplinks SET processed = 1 WHERE device_id = ? AND seq = ?",
            (device_id.hex, seq),
        )

    def mark_failed(self, device_id: DeviceId, seq: int, *, error: str) -> bool:
        """Record that the handlers of a stored uplink raised: processed, with the reason.

        It is not run again (at start-up or on a resend): one poisoned message must not
        stop the hub over and over. False if the uplink is not stored.
        """
        row = self._one(
            "UPDATE uplinks SET processed = 1, error = ? WHERE device_id = ? AND seq = ? "
            "RETURNING seq",
            (error[:500], device_id.hex, seq),
        )
        return row is not None

    def failed(self, *, limit: int = 20) -> list[StoredUplink]:
        """The newest uplinks whose handlers failed, newest first."""
        rows = self._all(
            f"SELECT {_UPLINK_COLUMNS} FROM uplinks WHERE error IS NOT NULL "  # noqa: S608
            "ORDER BY received_at DESC LIMIT ?",
            (limit,),
        )
        return [_uplink(r) for r in rows]

    def count(self, *, failed: bool = False) -> int:
        """How many uplinks are stored (with `failed`: how many of them failed their handler)."""
        where = " WHERE error IS NOT NULL" if failed else ""
        row = self._one(f"SELECT COUNT(*) AS n FROM uplinks{where}")  # noqa: S608
        return 0 if row is None else int(row["n"])


class Downlinks(Repository):
    """Receipts and operator news for wearers, each with its persisted per-device seq."""

    def queue(self, device_id: DeviceId, kind: str, arg: int, *, now: float) -> int:
        """Allocate and persist the device's next downlink seq; return it."""
        self._cur.execute(
            "UPDATE devices SET down_seq = down_seq + 1 WHERE device_id = ?", (device_id.hex,)
        )
        row = self._one("SELECT down_seq FROM devices WHERE device_id = ?", (device_id.hex,))
        if row is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        seq = int(row["down_seq"])
        self._cur.execute(
            "INSERT INTO downlinks (device_id, seq, kind, arg, created_at) VALUES (?, ?, ?, ?, ?)",
            (device_id.hex, seq, kind, arg, now),
        )
        return seq

    def pending(self, limit: int = 100, *, now: float | None = None) -> list[PendingDownlink]:
        """Downlinks not yet sent; with `now`, only those no hub has claimed."""
        unclaimed = "" if now is None else " AND (claimed_until IS NULL OR claimed_until < ?)"
        params = (limit,) if now is None else (now, limit)
        rows = self._all(
            "SELECT id, device_id, seq, kind, arg, created_at FROM downlinks "  # noqa: S608
            f"WHERE sent_at IS NULL{unclaimed} ORDER BY id LIMIT ?",
            params,
        )
        return [
            PendingDownlink(
                id=int(r["id"]),
                device_id=DeviceId.parse(r["device_id"]),
                seq=r["seq"],
                kind=r["kind"],
                arg=r["arg"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    def claim(self, downlink_id: int, *, now: float, lease: float) -> bool:
        """Take a pending downlink for `lease` seconds, so that no other hub sends it too."""
        row = self._one(
            "UPDATE downlinks SET claimed_until = ? WHERE id = ? AND sent_at IS NULL "
            "AND (claimed_until IS NULL OR claimed_until < ?) RETURNING id",
            (now + lease, downlink_id, now),
        )
        return row is not None

    def release(self, downlink_id: int) -> None:
        """Give a claimed downlink back (the broker was away), to be sent on the next tick."""
        self._cur.execute("UPDATE downlinks SET claimed_until = NULL WHERE id = ?", (downlink_id,))

    def mark_sent(self, downlink_id: int, *, at: float) -> None:
        self._cur.execute("UPDATE downlinks SET sent_at = ? WHERE id = ?", (at, downlink_id))


class Rejections(Repository):
    """Counters of refused input, by reason (the `VigilError` class name)."""

    def count(self, reason: str, *, at: float) -> None:
        self._cur.execute(
            "INSERT INTO rejections (reason, count, last_at) VALUES (?, 1, ?) "
            "ON CONFLICT (reason) DO UPDATE SET count = rejections.count + 1, last_at = ?",
            (reason, at, at),
        )

    def totals(self) -> dict[str, int]:
        rows = self._all("SELECT reason, count FROM rejections ORDER BY reason")
        return {r["reason"]: int(r["count"]) for r in rows}


class HubStatus(Repository):
    """What each running hub last said about itself (broker link, workers), by instance."""

    def report(self, instance: str, status: str, *, at: float) -> None:
        self._cur.execute(
            "INSERT INTO hub_status (instance, status, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (instance) DO UPDATE SET status = ?, updated_at = ?",
            (instance, status, at, status, at),
        )

    def all(self) -> list[tuple[str, str, float]]:
        """(instance, status, updated_at) of every hub that reported, by instance."""
        rows = self._all("SELECT instance, status, updated_at FROM hub_status ORDER BY instance")
        return [(r["instance"], r["status"], r["updated_at"]) for r in rows]
