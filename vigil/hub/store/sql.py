"""The store's SQL, written once for SQLite and PostgreSQL (both DB-API, `?` placeholders).

A backend supplies a write transaction (`_tx`) and a read cursor (`_read`);
this class holds every query. All times are parameters (hub clock, Unix s).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from vigil.errors import (
    AlreadyEnrolled,
    BadConfigValue,
    RevokedDevice,
    StorageError,
    UnknownDevice,
)
from vigil.hub.store import schema
from vigil.hub.store.records import DeviceRecord, LastFix, PendingDownlink, StoredUplink
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DevicePublicKeys
from vigil.wire.messages import Message, encode_payload
from vigil.wire.replay import WINDOW_SIZE, ReplayWindow

_MASK_BYTES = WINDOW_SIZE // 8


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


_DEVICE_COLUMNS = (
    "device_id, label, signing_key, kem_key, contacts, enrolled_at, revoked_at, last_seen, "
    "battery, fix_lat, fix_lon, fix_taken_at, fix_received_at, down_seq, offline_at, gps_fix_at"
)


def _device(row: Sequence[Any]) -> DeviceRecord:
    fix = None if row[9] is None else LastFix(row[9], row[10], row[11], row[12])
    return DeviceRecord(
        device_id=DeviceId.parse(row[0]),
        label=row[1],
        public_keys=DevicePublicKeys.from_text({"signing": row[2], "kem": row[3]}),
        contacts=tuple(json.loads(row[4])),
        enrolled_at=row[5],
        revoked_at=row[6],
        last_seen=row[7],
        battery=row[8],
        last_fix=fix,
        down_seq=row[13],
        offline_at=row[14],
        gps_fix_at=row[15],
    )


class SqlStoreBase(ABC):
    """Registry, uplinks (with the replay window), downlinks and rejection counters."""

    dialect: schema.Dialect

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Cursor]:
        """A write transaction; commits on success, rolls back on error."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def _read(self) -> AbstractContextManager[Cursor]:
        return self._tx()

    def atomic(self) -> AbstractContextManager[object]:
        """Group several store calls into one transaction (one commit, all or nothing)."""
        return self._tx()

    # -- migrations -------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._tx() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT MAX(version) FROM schema_version")
            current = cur.fetchone()[0] or 0
            if current > schema.LATEST:
                raise StorageError(
                    f"the store has schema {current}, newer than this hub ({schema.LATEST})"
                )
            for version, _ in schema.MIGRATIONS:
                if version > current:
                    for stmt in schema.statements(version, self.dialect):
                        cur.execute(stmt)
                    cur.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    def schema_version(self) -> int:
        with self._read() as cur:
            cur.execute("SELECT MAX(version) FROM schema_version")
            return int(cur.fetchone()[0])

    # -- device registry ---------------------------------------------------------------

    def enroll_device(
        self,
        device_id: DeviceId,
        *,
        label: str,
        public_keys: DevicePublicKeys,
        contacts: Sequence[str] = (),
        now: float = 0.0,
    ) -> None:
        """Add a device; re-enrolling the same keys updates label and contacts."""
        if not label.strip():
            raise BadConfigValue("a device needs an owner label (--label)")
        keys = public_keys.to_text()
        contacts_json = json.dumps(list(contacts))
        with self._tx() as cur:
            cur.execute(
                "SELECT signing_key, kem_key, revoked_at FROM devices WHERE device_id = ?",
                (device_id.hex,),
            )
            row = cur.fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO devices (device_id, label, signing_key, kem_key, contacts, "
                    "enrolled_at, window_mask) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (device_id.hex, label, keys["signing"], keys["kem"], contacts_json, now,
                     bytes(_MASK_BYTES)),
                )  # fmt: skip
                return
            same = (row[0], row[1]) == (keys["signing"], keys["kem"])
            if not same and row[2] is None:
                raise AlreadyEnrolled(f"device {device_id} is enrolled with other keys")
            # Same keys: update. Revoked and new keys: a re-provisioned device starts afresh.
            reset = "" if same else ", window_highest = -1, window_mask = ?"
            params: list[Any] = [label, keys["signing"], keys["kem"], contacts_json]
            params += [] if same else [bytes(_MASK_BYTES)]
            cur.execute(
                "UPDATE devices SET label = ?, signing_key = ?, kem_key = ?, contacts = ?, "  # noqa: S608 - fixed fragments, values are parameters
                f"revoked_at = NULL{reset} WHERE device_id = ?",
                (*params, device_id.hex),
            )

    def revoke_device(self, device_id: DeviceId, *, now: float = 0.0) -> None:
        """Refuse the device's messages from now on (its key may be in other hands)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE devices SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
                (now, device_id.hex),
            )
            cur.execute("SELECT 1 FROM devices WHERE device_id = ?", (device_id.hex,))
            if cur.fetchone() is None:
                raise UnknownDevice(f"device {device_id} is not enrolled")

    def get_device(self, device_id: DeviceId) -> DeviceRecord | None:
        with self._read() as cur:
            cur.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE device_id = ?",  # noqa: S608
                (device_id.hex,),
            )
            row = cur.fetchone()
        return None if row is None else _device(row)

    def list_devices(self) -> list[DeviceRecord]:
        with self._read() as cur:
            cur.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY label")  # noqa: S608
            return [_device(r) for r in cur.fetchall()]

    def active_device(self, device_id: DeviceId) -> DeviceRecord:
        """The enrolled, unrevoked device, or `UnknownDevice` / `RevokedDevice`."""
        record = self.get_device(device_id)
        if record is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        if record.revoked:
            raise RevokedDevice(f"device {device_id} was revoked")
        return record

    # -- uplinks ------------------------------------------------------------------------

    def accept_uplink(self, device_id: DeviceId, message: Message, *, received_at: float) -> bool:
        """Store an uplink unless (device, seq) was seen: True if new, False if a duplicate.

        Raises `ReplayedMessage` for a seq older than the replay window.
        """
        with self._tx() as cur:
            cur.execute(
                "SELECT window_highest, window_mask FROM devices "  # noqa: S608
                f"WHERE device_id = ?{self._for_update}",
                (device_id.hex,),
            )
            row = cur.fetchone()
            if row is None:
                raise UnknownDevice(f"device {device_id} is not enrolled")
            window = ReplayWindow(row[0], int.from_bytes(bytes(row[1]), "big"))
            cur.execute(
                "SELECT 1 FROM uplinks WHERE device_id = ? AND seq = ?",
                (device_id.hex, message.seq),
            )
            if cur.fetchone() is not None:
                return False
            window = window.admit(message.seq)  # ReplayedMessage if too old
            cur.execute(
                "INSERT INTO uplinks (device_id, seq, kind, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (device_id.hex, message.seq, message.kind, encode_payload(message), received_at),
            )
            cur.execute(
                "UPDATE devices SET window_highest = ?, window_mask = ?, last_seen = ?, "
                "offline_at = NULL WHERE device_id = ?",
                (window.highest, window.mask.to_bytes(_MASK_BYTES, "big"), received_at,
                 device_id.hex),
            )  # fmt: skip
            return True

    @property
    def _for_update(self) -> str:
        """Row lock for read-modify-write (SQLite's BEGIN IMMEDIATE already serialises)."""
        return " FOR UPDATE" if self.dialect is schema.POSTGRES else ""

    def get_uplink(self, device_id: DeviceId, seq: int) -> StoredUplink | None:
        with self._read() as cur:
            cur.execute(
                "SELECT device_id, seq, kind, payload, received_at, processed FROM uplinks "
                "WHERE device_id = ? AND seq = ?",
                (device_id.hex, seq),
            )
            row = cur.fetchone()
        return None if row is None else _uplink(row)

    def unprocessed_uplinks(self) -> list[StoredUplink]:
        """Uplinks stored but whose handlers have not finished (a crash in between)."""
        with self._read() as cur:
            cur.execute(
                "SELECT device_id, seq, kind, payload, received_at, processed FROM uplinks "
                "WHERE processed = 0 ORDER BY received_at"
            )
            return [_uplink(r) for r in cur.fetchall()]

    def recent_uplinks(self, *, after: float, limit: int = 500) -> list[StoredUplink]:
        """Uplinks received at or after `after`, oldest first (for `vigil-hub tail`)."""
        with self._read() as cur:
            cur.execute(
                "SELECT device_id, seq, kind, payload, received_at, processed FROM uplinks "
                "WHERE received_at >= ? ORDER BY received_at, seq LIMIT ?",
                (after, limit),
            )
            return [_uplink(r) for r in cur.fetchall()]

    def mark_processed(self, device_id: DeviceId, seq: int) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE uplinks SET processed = 1 WHERE device_id = ? AND seq = ?",
                (device_id.hex, seq),
            )

    def count_uplinks(self) -> int:
        with self._read() as cur:
            cur.execute("SELECT COUNT(*) FROM uplinks")
            return int(cur.fetchone()[0])

    def note_device_state(
        self,
        device_id: DeviceId,
        *,
        battery: int | None = None,
        fix: LastFix | None = None,
        gps_fix_at: float | None = None,
    ) -> None:
        """Remember the latest battery level, position and GPS fix time a device reported."""
        with self._tx() as cur:
            if gps_fix_at is not None:
                cur.execute(
                    "UPDATE devices SET gps_fix_at = ? WHERE device_id = ?",
                    (gps_fix_at, device_id.hex),
                )
            if battery is not None:
                cur.execute(
                    "UPDATE devices SET battery = ? WHERE device_id = ?", (battery, device_id.hex)
                )
            if fix is not None:
                cur.execute(
                    "UPDATE devices SET fix_lat = ?, fix_lon = ?, fix_taken_at = ?, "
                    "fix_received_at = ? WHERE device_id = ? "
                    "AND (fix_taken_at IS NULL OR fix_taken_at <= ?)",
                    (fix.lat, fix.lon, fix.taken_at, fix.received_at, device_id.hex,
                     fix.taken_at),
                )  # fmt: skip

    def note_offline(self, device_id: DeviceId, *, at: float) -> None:
        """Record that the broker published the device's Will (connection lost)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE devices SET offline_at = ? WHERE device_id = ?", (at, device_id.hex)
            )

    # -- downlinks ----------------------------------------------------------------------

    def queue_downlink(self, device_id: DeviceId, kind: str, arg: int, *, now: float) -> int:
        """Allocate and persist the device's next downlink seq; return it."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE devices SET down_seq = down_seq + 1 WHERE device_id = ?", (device_id.hex,)
            )
            cur.execute("SELECT down_seq FROM devices WHERE device_id = ?", (device_id.hex,))
            row = cur.fetchone()
            if row is None:
                raise UnknownDevice(f"device {device_id} is not enrolled")
            seq = int(row[0])
            cur.execute(
                "INSERT INTO downlinks (device_id, seq, kind, arg, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (device_id.hex, seq, kind, arg, now),
            )
            return seq

    def pending_downlinks(
        self, limit: int = 100, *, now: float | None = None
    ) -> list[PendingDownlink]:
        """Downlinks not yet sent; with `now`, only those no hub has claimed."""
        unclaimed = "" if now is None else " AND (claimed_until IS NULL OR claimed_until < ?)"
        params = (limit,) if now is None else (now, limit)
        with self._read() as cur:
            cur.execute(
                "SELECT id, device_id, seq, kind, arg, created_at FROM downlinks "  # noqa: S608
                f"WHERE sent_at IS NULL{unclaimed} ORDER BY id LIMIT ?",
                params,
            )
            return [
                PendingDownlink(r[0], DeviceId.parse(r[1]), r[2], r[3], r[4], r[5])
                for r in cur.fetchall()
            ]

    def claim_downlink(self, downlink_id: int, *, now: float, lease: float) -> bool:
        """Take a pending downlink for `lease` seconds, so that no other hub sends it too."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE downlinks SET claimed_until = ? WHERE id = ? AND sent_at IS NULL "
                "AND (claimed_until IS NULL OR claimed_until < ?) RETURNING id",
                (now + lease, downlink_id, now),
            )
            return cur.fetchone() is not None

    def release_downlink(self, downlink_id: int) -> None:
        """Give a claimed downlink back (the broker was away), to be sent on the next tick."""
        with self._tx() as cur:
            cur.execute("UPDATE downlinks SET claimed_until = NULL WHERE id = ?", (downlink_id,))

    def mark_downlink_sent(self, downlink_id: int, *, at: float) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE downlinks SET sent_at = ? WHERE id = ?", (at, downlink_id))

    # -- rejected input -----------------------------------------------------------------

    def count_rejection(self, reason: str, *, at: float) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO rejections (reason, count, last_at) VALUES (?, 1, ?) "
                "ON CONFLICT (reason) DO UPDATE SET count = rejections.count + 1, last_at = ?",
                (reason, at, at),
            )

    def rejections(self) -> dict[str, int]:
        with self._read() as cur:
            cur.execute("SELECT reason, count FROM rejections ORDER BY reason")
            return {r[0]: int(r[1]) for r in cur.fetchall()}


def _uplink(row: Sequence[Any]) -> StoredUplink:
    return StoredUplink(
        DeviceId.parse(row[0]), row[1], row[2], bytes(row[3]), row[4], bool(row[5])
    )


def rows(cur: Cursor) -> Iterator[Any]:
    """Iterate the rows of the last query."""
    yield from cur.fetchall()
