"""One unit of work's repositories, handed out by `store.transaction()` as `tx`."""

from __future__ import annotations

import hashlib

from vigil.errors import StorageError
from vigil.hub.store import schema
from vigil.hub.store.alerts import Alerts
from vigil.hub.store.auditlog import AuditLog
from vigil.hub.store.deliveries import Deliveries
from vigil.hub.store.devices import Devices
from vigil.hub.store.intake import Intake
from vigil.hub.store.kems import DownlinkKeys
from vigil.hub.store.repo import Cursor, Repository
from vigil.hub.store.traffic import Downlinks, HubStatus, Rejections, Uplinks


class Meta(Repository):
    """The store's own bookkeeping: which migrations ran."""

    def has_table(self, name: str) -> bool:
        if self._dialect is schema.POSTGRES:  # honours the URL's search_path
            row = self._one("SELECT to_regclass(?) IS NOT NULL AS found", (name,))
        else:
            row = self._one(
                "SELECT COUNT(*) > 0 AS found FROM sqlite_master WHERE type = 'table' "
                "AND name = ?",
                (name,),
            )
        return row is not None and bool(row["found"])

    def version(self) -> int:
        row = self._one("SELECT MAX(version) AS version FROM schema_version")
        return 0 if row is None or row["version"] is None else int(row["version"])

    def migrate(self) -> None:
        """Apply every migration newer than the store's version, in order."""
        self._cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = self.version()
        if current > schema.LATEST:
            raise StorageError(
                f"the store has schema {current}, newer than this hub ({schema.LATEST})"
            )
        for version, _ in schema.MIGRATIONS:
            if version > current:
                for stmt in schema.statements(version, self._dialect):
                    self._cur.execute(stmt)
                self._cur.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


class Leases(Repository):
    """Work that one hub at a time does (the silence watchdog), whichever hubs run.

    On PostgreSQL a lease is a session-level advisory lock: it stays with this hub's
    connection until the hub stops, and vanishes with the session when the hub
    dies, so another hub takes it on its next try. On SQLite one file has one
    writer at a time anyway: every hub holds every lease.
    """

    def hold(self, name: str) -> bool:
        """Whether this hub holds lease `name` now (taking it if it is free)."""
        if self._dialect is not schema.POSTGRES:
            return True
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        high, low = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
        row = self._one(  # already ours? (taking it again would stack a second hold)
            "SELECT COUNT(*) > 0 AS mine FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid() AND granted AND classid::bigint = ? "
            "AND objid::bigint = ? AND objsubid = 1",
            (high, low),
        )
        if row is not None and row["mine"]:
            return True
        row = self._one("SELECT pg_try_advisory_lock(?) AS taken", (key,))
        return row is not None and bool(row["taken"])


class Transaction:
    """The repositories of one open transaction; valid only inside its `with` block."""

    def __init__(self, cur: Cursor, dialect: schema.Dialect) -> None:
        self.devices = Devices(cur, dialect)
        self.kems = DownlinkKeys(cur, dialect)
        self.uplinks = Uplinks(cur, dialect)
        self.downlinks = Downlinks(cur, dialect)
        self.rejections = Rejections(cur, dialect)
        self.alerts = Alerts(cur, dialect)
        self.deliveries = Deliveries(cur, dialect)
        self.audit = AuditLog(cur, dialect)
        self.hubs = HubStatus(cur, dialect)
        self.intake = Intake(cur, dialect)
        self.leases = Leases(cur, dialect)
        self.meta = Meta(cur, dialect)
