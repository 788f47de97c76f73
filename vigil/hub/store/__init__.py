"""The hub's durable store: SQLite (default) or PostgreSQL, used as units of work.

    store = open_store("sqlite:////var/lib/vigil-hub/hub.db")
    with store.transaction() as tx:          # commits at the end, or rolls back as one
        tx.devices.enroll(device_id, label="A. (Oaxaca)", public_keys=keys.public(), now=now)
        tx.audit.append(at=now, actor="rosa", action="enroll", subject=f"device {device_id}")
    with store.read() as tx:
        tx.devices.get(device_id)
    store.close()

`tx` hands out one repository per concern: `devices`, `kems`, `uplinks`, `downlinks`,
`rejections`, `alerts`, `deliveries`, `audit`, `hubs`. Both backends share the SQL
(`devices.py`, `traffic.py`, `alerts.py`, `deliveries.py`, `auditlog.py`),
the transaction machinery (`sql.py`), the versioned migrations
(`schema.py`) and one test suite.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from vigil.errors import BadConfigValue
from vigil.hub.store.records import (
    Alert,
    AlertKind,
    AlertState,
    AuditEntry,
    Delivery,
    DeviceNote,
    DeviceRecord,
    LastFix,
    PendingDownlink,
    StoredUplink,
)
from vigil.hub.store.repositories import Transaction
from vigil.hub.store.traffic import Acceptance, Accepted

__all__ = [
    "Acceptance",
    "Accepted",
    "Alert",
    "AlertKind",
    "AlertState",
    "AuditEntry",
    "Delivery",
    "DeviceNote",
    "DeviceRecord",
    "LastFix",
    "PendingDownlink",
    "Store",
    "StoredUplink",
    "Transaction",
    "open_store",
]


class Store(Protocol):
    """Durable storage as units of work. Times are hub Unix seconds, given by callers."""

    @property
    def runs_on_server(self) -> bool:
        """Whether statements run beside this process (PostgreSQL), not in it (SQLite)."""
        ...

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[Transaction]:
        """Read and write; commit when the block ends, roll everything back if it raises.

        `durable=False`: the commit may be lost in a crash (bookkeeping only).
        """
        ...

    def batch(self) -> AbstractContextManager[Transaction]:
        """Like `transaction`, with writes pipelined; any error fails the whole block."""
        ...

    def read(self) -> AbstractContextManager[Transaction]:
        """Read only (a consistent view)."""
        ...

    def checkpoint_log(self) -> None:
        """Move the write-ahead log into the database off the ingest path (every timer round)."""
        ...

    def schema_version(self) -> int: ...
    def close(self) -> None: ...


def open_store(url: str, *, create: bool = False) -> Store:
    """Open the store at `url`, applying pending migrations.

    `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, `sqlite:///:memory:`
    or a `postgresql://` URL. A store that does not exist yet is refused
    (`StoreMissing`, "run vigil-hub init") unless `create` is given.
    """
    if url.startswith("sqlite:///"):
        from vigil.hub.store.sqlite import SqliteStore  # noqa: PLC0415 - only the backend in use

        return SqliteStore(url.removeprefix("sqlite:///"), create=create)
    if url.startswith(("postgresql://", "postgres://")):
        from vigil.hub.store.postgres import PostgresStore  # noqa: PLC0415 - psycopg only if used

        return PostgresStore(url, create=create)
    raise BadConfigValue(f"store.url must start with sqlite:/// or postgresql://, got {url!r}")
