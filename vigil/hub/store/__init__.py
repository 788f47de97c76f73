"""The hub's durable store: one `Store` interface, SQLite (default) or PostgreSQL.

    store = open_store("sqlite:////var/lib/vigil-hub/hub.db")
    store.enroll_device(device_id, label="A. (Oaxaca)", public_keys=keys.public())
    store.get_device(device_id)
    store.close()

Both backends share the SQL in `hub/store/sql.py` and `sql_alerts.py`, the
versioned migrations in `schema.py`, and one test suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from vigil.errors import BadConfigValue
from vigil.hub.store.records import (
    Alert,
    AlertKind,
    AlertState,
    AuditEntry,
    Delivery,
    DeviceRecord,
    LastFix,
    PendingDownlink,
    StoredUplink,
)
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DevicePublicKeys
from vigil.wire.messages import Message

__all__ = [
    "Alert",
    "AlertKind",
    "AlertState",
    "AuditEntry",
    "Delivery",
    "DeviceRecord",
    "LastFix",
    "PendingDownlink",
    "Store",
    "StoredUplink",
    "open_store",
]


class Store(Protocol):
    """What the hub needs from durable storage. Times are hub Unix seconds, given by callers."""

    def atomic(self) -> AbstractContextManager[object]: ...
    # registry
    def enroll_device(
        self,
        device_id: DeviceId,
        *,
        label: str,
        public_keys: DevicePublicKeys,
        contacts: Sequence[str] = (),
        now: float = 0.0,
    ) -> None: ...
    def revoke_device(self, device_id: DeviceId, *, now: float = 0.0) -> None: ...
    def get_device(self, device_id: DeviceId) -> DeviceRecord | None: ...
    def list_devices(self) -> list[DeviceRecord]: ...
    def active_device(self, device_id: DeviceId) -> DeviceRecord: ...
    def note_device_state(
        self,
        device_id: DeviceId,
        *,
        battery: int | None = None,
        fix: LastFix | None = None,
        gps_fix_at: float | None = None,
    ) -> None: ...
    def note_offline(self, device_id: DeviceId, *, at: float) -> None: ...
    # uplinks and downlinks
    def accept_uplink(
        self, device_id: DeviceId, message: Message, *, received_at: float
    ) -> bool: ...
    def get_uplink(self, device_id: DeviceId, seq: int) -> StoredUplink | None: ...
    def unprocessed_uplinks(self) -> list[StoredUplink]: ...
    def recent_uplinks(self, *, after: float, limit: int = 500) -> list[StoredUplink]: ...
    def mark_processed(self, device_id: DeviceId, seq: int) -> None: ...
    def count_uplinks(self) -> int: ...
    def queue_downlink(self, device_id: DeviceId, kind: str, arg: int, *, now: float) -> int: ...
    def pending_downlinks(
        self, limit: int = 100, *, now: float | None = None
    ) -> list[PendingDownlink]: ...
    def claim_downlink(self, downlink_id: int, *, now: float, lease: float) -> bool: ...
    def release_downlink(self, downlink_id: int) -> None: ...
    def mark_downlink_sent(self, downlink_id: int, *, at: float) -> None: ...
    def count_rejection(self, reason: str, *, at: float) -> None: ...
    def rejections(self) -> dict[str, int]: ...
    # alerts
    def open_alert(self, alert: Alert) -> Alert: ...
    def save_alert(self, alert: Alert) -> None: ...
    def get_alert(self, alert_id: int) -> Alert: ...
    def find_alert(self, device_id: DeviceId, alarm_seq: int) -> Alert | None: ...
    def list_alerts(self, *, active_only: bool = False) -> list[Alert]: ...
    def add_position(self, alert_id: int, device_id: DeviceId, seq: int, fix: LastFix) -> None: ...
    def positions(self, alert_id: int) -> list[LastFix]: ...
    # escalation and deliveries
    def fired_steps(self, alert_id: int) -> set[str]: ...
    def fire_step(
        self, alert_id: int, step: str, recipients: Sequence[tuple[str, str, str]], *, now: float
    ) -> bool: ...
    def due_deliveries(self, now: float) -> list[Delivery]: ...
    def claim_delivery(self, delivery_id: int, *, now: float, lease: float) -> bool: ...
    def deliveries(self, alert_id: int) -> list[Delivery]: ...
    def record_attempt(
        self, delivery_id: int, *, at: float, ok: bool, detail: str, next_at: float | None
    ) -> None: ...
    def attempts(self, delivery_id: int) -> list[tuple[int, float, bool, str]]: ...
    # audit
    def append_audit(
        self, *, at: float, actor: str, action: str, subject: str, detail: str = ""
    ) -> AuditEntry: ...
    def audit_entries(self) -> list[AuditEntry]: ...
    def audit_head(self) -> tuple[int, str] | None: ...
    def schema_version(self) -> int: ...
    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """Open (creating and migrating as needed) the store at `url`.

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`
    or a `postgresql://` URL.
    """
    if url.startswith("sqlite:///"):
        from vigil.hub.store.sqlite import SqliteStore  # noqa: PLC0415 - only the backend in use

        return SqliteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from vigil.hub.store.postgres import PostgresStore  # noqa: PLC0415 - psycopg only if used

        return PostgresStore(url)
    raise BadConfigValue(f"store.url must start with sqlite:/// or postgresql://, got {url!r}")
