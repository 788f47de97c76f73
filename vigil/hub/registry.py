"""The device registry, cached in memory for the ingest pipeline.

Opening an uplink needs the sender's keys; reading and parsing them from the
store for every message costs more than the message's own crypto. The cache
keeps each enrolled device's record (keys, label, revoked). Every enrol, revoke,
risk-window change and compromised mark moves the store's `registry_version` in
its own transaction, whichever hub or CLI made it, and the device's row keeps the
version it moved to. The ingest worker checks the version once per batch and,
when it moved, drops only the records of the devices changed since (one indexed
read): enrolling one device does not make the whole fleet's next messages read
their devices again. A revoked device is thus refused by every hub from its next
batch on; the batch itself re-reads the device rows it locks and refuses a device
revoked in between.

Devices that are not enrolled are not cached: a stream of unknown ids costs one
indexed lookup each and cannot grow the cache past the enrolled fleet.
"""

from __future__ import annotations

import threading

from vigil.errors import RevokedDevice, UnknownDevice
from vigil.hub.store import DeviceRecord, Store
from vigil.wire.ids import DeviceId


class Registry:
    """Device id -> record, valid while the store's registry version stays the same."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._records: dict[DeviceId, DeviceRecord] = {}
        self._version: int | None = None
        self._lock = threading.Lock()
        self.loads = 0  # records read from the store (misses), for tests and benchmarks

    def refresh(self) -> None:
        """Drop the records of the devices any hub enrolled, revoked or changed since the
        last refresh (all of them on the first)."""
        with self._lock:
            known = self._version
        with self._store.read() as tx:  # one snapshot: the version and what it covers
            version = tx.devices.registry_version()
            changed = (
                tx.devices.changed_since(known) if known is not None and version != known else None
            )
        with self._lock:
            if version == self._version:
                return
            if changed is None or self._version != known:
                self._records.clear()
            else:
                for device_id in changed:
                    self._records.pop(device_id, None)
            self._version = version

    def active(self, device_id: DeviceId) -> DeviceRecord:
        """The enrolled, unrevoked device, or `UnknownDevice` / `RevokedDevice`."""
        with self._lock:
            record, version = self._records.get(device_id), self._version
        if record is None:
            with self._store.read() as tx:
                record = tx.devices.get(device_id)
            if record is None:
                raise UnknownDevice(f"device {device_id} is not enrolled")
            with self._lock:
                if self._version == version:  # else a refresh since may have dropped it
                    self._records[device_id] = record
                self.loads += 1
        if record.revoked:
            raise RevokedDevice(f"device {device_id} was revoked")
        return record

    def forget(self, device_id: DeviceId | None = None) -> None:
        """Drop one device's record (or all): the next look reads it again, e.g. after this
        hub's own batch marked it compromised, or rolled back what it had read."""
        with self._lock:
            if device_id is None:
                self._records.clear()
            else:
                self._records.pop(device_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)
