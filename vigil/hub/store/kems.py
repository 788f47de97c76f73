"""`tx.kems`: the downlink keys devices rotate to (docs/protocol.md §11.2).

A key arrives in chunks inside heartbeats; the chunks of one (device, epoch,
key) wait in `device_kem_parts` until they make the whole key, which is then
verified against its digest (by the caller, vigil.wire.rekey.assemble) and kept
in `device_kems`. Downlinks answering a life of a device are sealed to the
newest key verified in that life, else to the key it was enrolled with.
"""

from __future__ import annotations

from vigil.hub.store.repo import Repository
from vigil.wire.ids import DeviceId
from vigil.wire.rekey import KeyChunk


class DownlinkKeys(Repository):
    """Chunks of announced keys, and the keys verified from them."""

    def known(self, device_id: DeviceId, epoch: str, key_id: str) -> bool:
        row = self._one(
            "SELECT 1 AS one FROM device_kems WHERE device_id = ? AND epoch = ? AND key_id = ?",
            (device_id.hex, epoch, key_id),
        )
        return row is not None

    def add_part(self, device_id: DeviceId, epoch: str, chunk: KeyChunk) -> dict[int, str]:
        """Keep one chunk; return every chunk of its key held so far (offset -> data).

        A device announces one key at a time: chunks of any other key of this life
        that was never completed are dropped, so no device can fill the store.
        """
        self._cur.execute(
            "DELETE FROM device_kem_parts WHERE device_id = ? AND epoch = ? "
            "AND (key_id <> ? OR size <> ?)",
            (device_id.hex, epoch, chunk.key, chunk.size),
        )
        self._cur.execute(
            "INSERT INTO device_kem_parts (device_id, epoch, key_id, at_offset, size, data) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device_id.hex, epoch, chunk.key, chunk.offset, chunk.size, chunk.data),
        )
        rows = self._all(
            "SELECT at_offset, data FROM device_kem_parts "
            "WHERE device_id = ? AND epoch = ? AND key_id = ?",
            (device_id.hex, epoch, chunk.key),
        )
        return {int(r["at_offset"]): str(r["data"]) for r in rows}

    def verified(
        self, device_id: DeviceId, epoch: str, key_id: str, public_key: str, *, at: float
    ) -> None:
        """Keep a whole, checked key (its base64 text); its chunks are no longer needed."""
        self._cur.execute(
            "INSERT INTO device_kems (device_id, epoch, key_id, public_key, verified_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (device_id.hex, epoch, key_id, public_key, at),
        )
        self.drop_parts(device_id, epoch)

    def drop_parts(self, device_id: DeviceId, epoch: str) -> None:
        self._cur.execute(
            "DELETE FROM device_kem_parts WHERE device_id = ? AND epoch = ?",
            (device_id.hex, epoch),
        )

    def newest(self, device_id: DeviceId, epoch: str) -> str | None:
        """The base64 text of the newest key verified in this life of the device, if any."""
        row = self._one(
            "SELECT public_key FROM device_kems WHERE device_id = ? AND epoch = ? "
            "ORDER BY verified_at DESC, key_id LIMIT 1",
            (device_id.hex, epoch),
        )
        return None if row is None else str(row["public_key"])
