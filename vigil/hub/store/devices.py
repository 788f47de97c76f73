"""`tx.devices`: the registry of enrolled wearables and what they last reported."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from vigil.errors import AlreadyEnrolled, BadConfigValue, RevokedDevice, UnknownDevice
from vigil.hub.store import schema
from vigil.hub.store.records import DeviceNote, DeviceRecord, LastFix
from vigil.hub.store.repo import Repository, Row
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DevicePublicKeys
from vigil.wire.replay import WINDOW_SIZE

MASK_BYTES = WINDOW_SIZE // 8

_COLUMNS = (
    "device_id, label, signing_key, kem_key, hybrid_kem_key, contacts, enrolled_at, revoked_at, "
    "last_seen, "
    "battery, fix_lat, fix_lon, fix_taken_at, fix_received_at, down_seq, offline_at, gps_fix_at, "
    "epoch, alive_at, risk_until, compromised_at, compromised_reason"
)


def _device(row: Row) -> DeviceRecord:
    fix = None
    if row["fix_lat"] is not None:
        fix = LastFix(row["fix_lat"], row["fix_lon"], row["fix_taken_at"], row["fix_received_at"])
    return DeviceRecord(
        device_id=DeviceId.parse(row["device_id"]),
        label=row["label"],
        public_keys=DevicePublicKeys.from_text(
            {
                "signing": row["signing_key"],
                "kem": row["kem_key"],
                "hybrid_kem": row["hybrid_kem_key"],
            }
        ),
        contacts=tuple(json.loads(row["contacts"])),
        enrolled_at=row["enrolled_at"],
        revoked_at=row["revoked_at"],
        last_seen=row["last_seen"],
        battery=row["battery"],
        last_fix=fix,
        down_seq=row["down_seq"],
        offline_at=row["offline_at"],
        gps_fix_at=row["gps_fix_at"],
        epoch=row["epoch"],
        alive_at=row["alive_at"],
        risk_until=row["risk_until"],
        compromised_at=row["compromised_at"],
        compromised_reason=row["compromised_reason"],
    )


_NEWER_FIX = (
    "(v.fix_taken_at IS NOT NULL AND (devices.fix_taken_at IS NULL "
    "OR devices.fix_taken_at <= v.fix_taken_at))"
)
_ALIVE = (
    "(v.alive_at IS NOT NULL AND devices.revoked_at IS NULL AND devices.compromised_at IS NULL "
    "AND (devices.alive_at IS NULL OR devices.alive_at < v.alive_at))"
)
_FIX_COLUMNS = ("fix_lat", "fix_lon", "fix_taken_at", "fix_received_at")
_NOTE_SETS = ", ".join(
    [
        *(f"{c} = COALESCE(v.{c}, devices.{c})" for c in ("down_seq", "last_seen", "battery",
                                                          "gps_fix_at")),
        *(f"{c} = CASE WHEN {_NEWER_FIX} THEN v.{c} ELSE devices.{c} END" for c in _FIX_COLUMNS),
        f"alive_at = CASE WHEN {_ALIVE} THEN v.alive_at ELSE devices.alive_at END",
        f"watch_from = CASE WHEN {_ALIVE} THEN v.alive_at ELSE devices.watch_from END",
        f"offline_at = CASE WHEN {_ALIVE} THEN NULL ELSE devices.offline_at END",
    ]
)  # fmt: skip
_NOTE_SQL = f"UPDATE devices SET {_NOTE_SETS} FROM {{rows}} WHERE devices.device_id = v.device_id"  # noqa: S608
_REAL = "double precision"
_NOTE_COLUMNS = (("device_id", "text"), ("down_seq", "bigint"), ("last_seen", _REAL),
                 ("battery", "integer"), ("gps_fix_at", _REAL),
                 *((c, _REAL) for c in _FIX_COLUMNS), ("alive_at", _REAL))  # fmt: skip


def _note_row(device_id: str, note: DeviceNote) -> tuple[Any, ...]:
    fix = note.fix
    where = (None,) * 4 if fix is None else (fix.lat, fix.lon, fix.taken_at, fix.received_at)
    return (device_id, note.down_seq, note.last_seen, note.battery, note.gps_fix_at, *where,
            note.alive_at)  # fmt: skip


class Devices(Repository):
    """Enrol, revoke, look up devices; remember their battery, position and liveness."""

    def enroll(
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
        values = (keys["signing"], keys["kem"], keys.get("hybrid_kem"))
        contacts_json = json.dumps(list(contacts))
        row = self._one(
            "SELECT signing_key, kem_key, hybrid_kem_key, revoked_at FROM devices "
            "WHERE device_id = ?",
            (device_id.hex,),
        )
        if row is None:
            self._cur.execute(
                "INSERT INTO devices (device_id, label, signing_key, kem_key, hybrid_kem_key, "
                "contacts, enrolled_at, window_mask, watch_from) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (device_id.hex, label, *values, contacts_json, now, bytes(MASK_BYTES), now),
            )
            self._registry_changed(device_id)
            return
        same = (row["signing_key"], row["kem_key"], row["hybrid_kem_key"]) == values
        if not same and row["revoked_at"] is None:
            raise AlreadyEnrolled(f"device {device_id} is enrolled with other keys")
        self._cur.execute(
            "UPDATE devices SET label = ?, signing_key = ?, kem_key = ?, hybrid_kem_key = ?, "
            "contacts = ?, revoked_at = NULL WHERE device_id = ?",
            (label, *values, contacts_json, device_id.hex),
        )
        if not same:  # revoked, and new keys: a re-provisioned device starts afresh
            self._start_afresh(device_id)
        self._registry_changed(device_id)

    def _start_afresh(self, device_id: DeviceId) -> None:
        """New keys: a new replay window, not compromised, none of the old keys' rotations."""
        self._cur.execute(
            "UPDATE devices SET window_highest = -1, window_mask = ?, compromised_at = NULL, "
            "compromised_reason = NULL WHERE device_id = ?",
            (bytes(MASK_BYTES), device_id.hex),
        )
        for table in ("device_kems", "device_kem_parts"):
            self._cur.execute(f"DELETE FROM {table} WHERE device_id = ?", (device_id.hex,))  # noqa: S608 - fixed names

    def revoke(self, device_id: DeviceId, *, now: float) -> None:
        """Refuse the device's messages from now on (its key may be in other hands)."""
        self._cur.execute(
            "UPDATE devices SET revoked_at = ?, watch_from = NULL "
            "WHERE device_id = ? AND revoked_at IS NULL",
            (now, device_id.hex),
        )
        if self._one("SELECT 1 AS one FROM devices WHERE device_id = ?", (device_id.hex,)) is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        self._registry_changed(device_id)

    def _registry_changed(self, device_id: DeviceId) -> None:
        """Tell every hub's registry cache, in this very transaction, that the device's
        record is stale: the registry version moves, and the row keeps the version it
        moved to (the row lock on the version orders hubs and CLIs that change devices)."""
        row = self._one(
            "UPDATE registry_version SET version = version + 1 WHERE one = 1 RETURNING version"
        )
        version = 0 if row is None else int(row["version"])
        self._cur.execute(
            "UPDATE devices SET registry_version = ? WHERE device_id = ?", (version, device_id.hex)
        )

    def registry_version(self) -> int:
        """Moves whenever a device is enrolled, revoked or its risk window set (cache key)."""
        row = self._one("SELECT version FROM registry_version WHERE one = 1")
        return 0 if row is None else int(row["version"])

    def changed_since(self, version: int) -> list[DeviceId]:
        """The devices whose record changed after registry version `version` (indexed)."""
        rows = self._all("SELECT device_id FROM devices WHERE registry_version > ?", (version,))
        return [DeviceId.parse(r["device_id"]) for r in rows]

    def get(self, device_id: DeviceId) -> DeviceRecord | None:
        row = self._one(
            f"SELECT {_COLUMNS} FROM devices WHERE device_id = ?",  # noqa: S608
            (device_id.hex,),
        )
        return None if row is None else _device(row)

    def all(self) -> list[DeviceRecord]:
        return [_device(r) for r in self._all(f"SELECT {_COLUMNS} FROM devices ORDER BY label")]  # noqa: S608

    def active(self, device_id: DeviceId) -> DeviceRecord:
        """The enrolled, unrevoked device, or `UnknownDevice` / `RevokedDevice`."""
        record = self.get(device_id)
        if record is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        if record.revoked:
            raise RevokedDevice(f"device {device_id} was revoked")
        return record

    def note_state(
        self,
        device_id: DeviceId,
        *,
        battery: int | None = None,
        fix: LastFix | None = None,
        gps_fix_at: float | None = None,
    ) -> None:
        """Remember the latest battery level, position and GPS fix time a device reported
        (a fix older than the stored one is ignored)."""
        note = DeviceNote()
        note.report(battery=battery, fix=fix, gps_fix_at=gps_fix_at)
        self.write_notes({device_id.hex: note})

    def write_notes(self, notes: Mapping[str, DeviceNote]) -> None:
        """One UPDATE a device (id hex -> note) for all a batch learned of it.

        A fix older than the stored one is ignored, against the row as it was. Liveness
        never moves back, and proves nothing for a revoked or compromised device (a captor
        may hold its key); a proof newer than every earlier one re-arms the silence watch,
        even after a silent alert, so a stashed heartbeat cannot.
        """
        rows = [_note_row(device, note) for device, note in sorted(notes.items())]
        self._bulk(_NOTE_SQL, _NOTE_COLUMNS, rows)

    def mark_compromised(self, device_id: DeviceId, *, at: float, reason: str) -> bool:
        """Its keys may be in a captor's hands from hub time `at` on; False if already so."""
        row = self._one(
            f"SELECT compromised_at FROM devices WHERE device_id = ?{self._for_update}",  # noqa: S608
            (device_id.hex,),
        )
        if row is None or row["compromised_at"] is not None:
            return False
        self._cur.execute(
            "UPDATE devices SET compromised_at = ?, compromised_reason = ? WHERE device_id = ?",
            (at, reason, device_id.hex),
        )
        self._registry_changed(
            device_id
        )  # every hub's cached record must say so from its next batch
        return True

    def start_epoch(self, device_id: DeviceId, epoch: str, *, now: float) -> str | None:
        """Make `epoch` the device's current life; return the one it replaces (None: first).

        The first message of a life starts its liveness clock: until a nonce echo
        proves more, the device is taken as alive when it was first heard.
        """
        row = self._one(
            f"SELECT epoch FROM devices WHERE device_id = ?{self._for_update}",  # noqa: S608
            (device_id.hex,),
        )
        if row is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        self._cur.execute(
            "UPDATE devices SET epoch = ?, alive_at = ?, watch_from = ? WHERE device_id = ?",
            (epoch, now, now, device_id.hex),
        )
        previous: str | None = row["epoch"]
        return previous

    def set_risk(self, device_id: DeviceId, *, until: float | None) -> None:
        """Arm (or, with None, clear) the wearer's risk window (docs/protocol.md §8)."""
        self._cur.execute(
            "UPDATE devices SET risk_until = ? WHERE device_id = ?", (until, device_id.hex)
        )
        if self._one("SELECT 1 AS one FROM devices WHERE device_id = ?", (device_id.hex,)) is None:
            raise UnknownDevice(f"device {device_id} is not enrolled")
        self._registry_changed(device_id)

    def note_offline(self, device_id: DeviceId, *, at: float) -> None:
        """Record that the broker published the device's Will (connection lost)."""
        self._cur.execute(
            "UPDATE devices SET offline_at = ? WHERE device_id = ?", (at, device_id.hex)
        )
        self._cur.execute(  # watched again (the Will is news even after a silent alert)
            "UPDATE devices SET watch_from = COALESCE(watch_from, ?) "
            "WHERE device_id = ? AND last_seen IS NOT NULL AND revoked_at IS NULL",
            (at, device_id.hex),
        )

    def due_silent(
        self, *, now: float, silent_after: float, risk_silent_after: float, limit: int = 100
    ) -> list[DeviceRecord]:
        """Watched devices past their deadline, or whose Will arrived (both indexed).

        A device is watched from its last message until a silent alert is raised for it
        (`mark_silent`); the cost does not grow with the devices that are fine.
        """
        skip = " FOR UPDATE SKIP LOCKED" if self._dialect is schema.POSTGRES else ""
        rows = self._all(
            f"SELECT {_COLUMNS} FROM devices WHERE watch_from IS NOT NULL "  # noqa: S608
            f"AND watch_from < ? ORDER BY watch_from LIMIT ?{skip}",
            (now - silent_after, limit),
        )
        rows += self._all(
            f"SELECT {_COLUMNS} FROM devices WHERE offline_at IS NOT NULL "  # noqa: S608
            f"AND watch_from IS NOT NULL AND watch_from >= ? ORDER BY offline_at LIMIT ?{skip}",
            (now - silent_after, limit),
        )
        rows += self._all(  # inside a risk window the deadline is shorter
            f"SELECT {_COLUMNS} FROM devices WHERE risk_until IS NOT NULL "  # noqa: S608
            f"AND risk_until >= ? AND watch_from < ? ORDER BY watch_from LIMIT ?{skip}",
            (now, now - min(silent_after, risk_silent_after), limit),
        )
        unique = {r["device_id"]: r for r in rows if r["revoked_at"] is None}
        return [_device(r) for r in unique.values()]

    def mark_silent(self, device_id: DeviceId) -> None:
        """Stop watching a device a silent alert was raised for, until it speaks again."""
        self._cur.execute(
            "UPDATE devices SET watch_from = NULL WHERE device_id = ?", (device_id.hex,)
        )
