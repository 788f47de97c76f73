"""`tx.uplinks`, `tx.downlinks`, `tx.rejections`: messages in and out, and refused input."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vigil.errors import ReplayedMessage, UnknownDevice
from vigil.hub.store.devices import MASK_BYTES, Devices
from vigil.hub.store.records import PendingDownlink, StoredUplink
from vigil.hub.store.repo import Repository, Row
from vigil.wire.ids import DeviceId
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import Message, encode_payload
from vigil.wire.replay import ReplayWindow, Verdict

_UPLINK_COLUMNS = "device_id, epoch, seq, kind, payload, digest, received_at, processed, error"
RECEIPT_EVERY = 10.0  # s: at most one receipt per stored uplink in this time
DUPLICATE_RECEIPTS_PER_MINUTE = 20  # per device: a replaying broker mints no more


class Acceptance(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # the same signed message again: answer it (rate-limited)
    CONFLICT = "conflict"  # another message under a stored (epoch, seq): the key is cloned


@dataclass(frozen=True, slots=True)
class Accepted:
    status: Acceptance
    digest: str
    previous_epoch: str | None = None  # set when this uplink opened a new life of the device
    new_epoch: bool = False


def _uplink(row: Row) -> StoredUplink:
    return StoredUplink(
        device_id=DeviceId.parse(row["device_id"]),
        seq=row["seq"],
        kind=row["kind"],
        payload=bytes(row["payload"]),
        received_at=row["received_at"],
        processed=bool(row["processed"]),
        epoch=row["epoch"],
        digest=row["digest"],
        error=row["error"],
    )


class Uplinks(Repository):
    """Accepted uplinks, deduplicated by (device, epoch, seq) behind each life's replay window."""

    def accept(self, device_id: DeviceId, message: Message, *, received_at: float) -> Accepted:
        """Store an uplink unless (device, epoch, seq) was seen; say which case it was.

        Raises `ReplayedMessage` for a seq older than the window (no receipt for it).
        """
        epoch = message.epoch.hex
        digest = uplink_digest(encode_payload(message))
        window, previous, new_epoch = self._window(device_id, epoch, now=received_at)
        if window.check(message.seq) is Verdict.TOO_OLD:
            raise ReplayedMessage(f"seq {message.seq} of epoch {epoch} is below the window")
        stored = self.get(device_id, epoch, message.seq)
        if stored is not None:
            same = stored.digest == digest
            return Accepted(Acceptance.DUPLICATE if same else Acceptance.CONFLICT, digest)
        window = window.admit(message.seq)
        self._cur.execute(
            "INSERT INTO uplinks (device_id, epoch, seq, kind, payload, digest, received_at, "
            "receipted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (device_id.hex, epoch, message.seq, message.kind.value, encode_payload(message),
             digest, received_at, received_at),
        )  # fmt: skip
        self._cur.execute(
            "UPDATE device_epochs SET window_highest = ?, window_mask = ? "
            "WHERE device_id = ? AND epoch = ?",
            (window.highest, window.mask.to_bytes(MASK_BYTES, "big"), device_id.hex, epoch),
        )
        self._cur.execute(
            "UPDATE devices SET last_seen = ? WHERE device_id = ?", (received_at, device_id.hex)
        )
        return Accepted(Acceptance.NEW, digest, previous, new_epoch)

    def _window(
        self, device_id: DeviceId, epoch: str, *, now: float
    ) -> tuple[ReplayWindow, str | None, bool]:
        """The replay window of this life, made (and the device's epoch moved) if it is new.

        The first message of a life may reach two hubs at once: the device's row is
        locked before the window is looked for again, so only one of them makes it.
        """
        row = self._epoch_row(device_id, epoch)
        if row is None:
            self._one(
                f"SELECT 1 AS one FROM devices WHERE device_id = ?{self._for_update}",  # noqa: S608
                (device_id.hex,),
            )
            row = self._epoch_row(device_id, epoch)
        if row is not None:
            mask = int.from_bytes(bytes(row["window_mask"]), "big")
            return ReplayWindow(row["window_highest"], mask), None, False
        previous = Devices(self._cur, self._dialect).start_epoch(device_id, epoch, now=now)
        self._cur.execute(
            "INSERT INTO device_epochs (device_id, epoch, first_seen, window_mask) "
            "VALUES (?, ?, ?, ?)",
            (device_id.hex, epoch, now, bytes(MASK_BYTES)),
        )
        return ReplayWindow(), previous, True

    def _epoch_row(self, device_id: DeviceId, epoch: str) -> Row | None:
        return self._one(
            "SELECT window_highest, window_mask FROM device_epochs "  # noqa: S608
            f"WHERE device_id = ? AND epoch = ?{self._for_update}",
            (device_id.hex, epoch),
        )

    def may_receipt(self, device_id: DeviceId, epoch: str, seq: int, *, now: float) -> bool:
        """Whether a duplicate may be answered now; if so, count the receipt (docs §7)."""
        row = self._one(
            "SELECT receipted_at FROM uplinks WHERE device_id = ? AND epoch = ? AND seq = ?",
            (device_id.hex, epoch, seq),
        )
        if row is None or (row["receipted_at"] is not None
                           and now - row["receipted_at"] < RECEIPT_EVERY):  # fmt: skip
            return False
        lock = self._for_update
        dev = self._one(
            f"SELECT dup_window_at, dup_receipts FROM devices WHERE device_id = ?{lock}",  # noqa: S608
            (device_id.hex,),
        )
        if dev is None:
            return False
        start, count = dev["dup_window_at"], int(dev["dup_receipts"])
        if start is None or now - start >= 60.0:
            start, count = now, 0
        if count >= DUPLICATE_RECEIPTS_PER_MINUTE:
            return False
        self._cur.execute(
            "UPDATE devices SET dup_window_at = ?, dup_receipts = ? WHERE device_id = ?",
            (start, count + 1, device_id.hex),
        )
        self._cur.execute(
            "UPDATE uplinks SET receipted_at = ? WHERE device_id = ? AND epoch = ? AND seq = ?",
            (now, device_id.hex, epoch, seq),
        )
        return True

    def get(self, device_id: DeviceId, epoch: str, seq: int) -> StoredUplink | None:
        row = self._one(
            f"SELECT {_UPLINK_COLUMNS} FROM uplinks "  # noqa: S608
            "WHERE device_id = ? AND epoch = ? AND seq = ?",
            (device_id.hex, epoch, seq),
        )
        return None if row is None else _uplink(row)

    def has(self, device_id: DeviceId, epoch: str, seq: int) -> bool:
        row = self._one(
            "SELECT 1 AS one FROM uplinks WHERE device_id = ? AND epoch = ? AND seq = ?",
            (device_id.hex, epoch, seq),
        )
        return row is not None

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

    def mark_processed(self, device_id: DeviceId, epoch: str, seq: int) -> None:
        self._cur.execute(
            "UPDATE uplinks SET processed = 1 WHERE device_id = ? AND epoch = ? AND seq = ?",
            (device_id.hex, epoch, seq),
        )

    def mark_failed(self, device_id: DeviceId, epoch: str, seq: int, *, error: str) -> bool:
        """Record that the handlers of a stored uplink raised: processed, with the reason.

        It is not run again (at start-up or on a resend): one poisoned message must not
        stop the hub over and over. False if the uplink is not stored.
        """
        row = self._one(
            "UPDATE uplinks SET processed = 1, error = ? "
            "WHERE device_id = ? AND epoch = ? AND seq = ? RETURNING seq",
            (error[:500], device_id.hex, epoch, seq),
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

    def queue(
        self,
        device_id: DeviceId,
        kind: str,
        arg: int,
        *,
        now: float,
        epoch: str | None = None,
        digest: str | None = None,
    ) -> int:
        """Allocate and persist the device's next downlink seq; return it.

        A receipt names the life (`epoch`) and the uplink (`digest`) it answers.
        """
        self._cur.execute(
            "UPDATE devices SET down_seq = down_seq + 1 WHERE device_id = ?", (device_id.hex,)
        )
        row = self._one("SELECT down_seq FROM devices WHERE device_id = ?", (device_id.hex,))
        if row is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        seq = int(row["down_seq"])
        self._cur.execute(
            "INSERT INTO downlinks (device_id, seq, kind, arg, created_at, epoch, digest) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (device_id.hex, seq, kind, arg, now, epoch, digest),
        )
        return seq

    def pending(self, limit: int = 100, *, now: float | None = None) -> list[PendingDownlink]:
        """Downlinks not yet sent; with `now`, only those no hub has claimed."""
        unclaimed = "" if now is None else " AND (claimed_until IS NULL OR claimed_until < ?)"
        params = (limit,) if now is None else (now, limit)
        rows = self._all(
            "SELECT id, device_id, seq, kind, arg, created_at, epoch, digest FROM downlinks "  # noqa: S608
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
                epoch=r["epoch"],
                digest=r["digest"],
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

    def prune_sent(self, *, before: float, limit: int = 1000) -> int:
        """Delete up to `limit` downlinks sent before `before` (indexed); return how many."""
        cur = self._cur.execute(
            "DELETE FROM downlinks WHERE id IN (SELECT id FROM downlinks "
            "WHERE sent_at IS NOT NULL AND sent_at < ? ORDER BY sent_at LIMIT ?)",
            (before, limit),
        )
        return max(0, int(cur.rowcount))


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
