"""`tx.audit`: the append-only, hash-chained log of what people and the hub did."""

from __future__ import annotations

from vigil.hub import audit
from vigil.hub.store.records import AuditEntry
from vigil.hub.store.repo import Repository


class AuditLog(Repository):
    """Append entries chained by hash; read the chain and its stored head."""

    def append(
        self, *, at: float, actor: str, action: str, subject: str, detail: str = ""
    ) -> AuditEntry:
        """Append one entry chained to the previous one (serialised on the head row)."""
        self._cur.execute(
            "INSERT INTO audit_head (one, last_id, last_hash) VALUES (1, 0, ?) "
            "ON CONFLICT DO NOTHING",
            (audit.GENESIS,),
        )
        head = self._one(
            f"SELECT last_id, last_hash FROM audit_head WHERE one = 1{self._for_update}"  # noqa: S608
        )
        assert head is not None  # noqa: S101 - inserted just above
        prev = head["last_hash"]
        entry_id = int(head["last_id"]) + 1
        digest = audit.entry_hash(prev, id=entry_id, at=at, actor=actor, action=action,
                                  subject=subject, detail=detail)  # fmt: skip
        self._cur.execute(
            "INSERT INTO audit (id, at, actor, action, subject, detail, prev_hash, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (entry_id, at, actor, action, subject, detail, prev, digest),
        )
        self._cur.execute(
            "UPDATE audit_head SET last_id = ?, last_hash = ? WHERE one = 1", (entry_id, digest)
        )
        return AuditEntry(entry_id, at, actor, action, subject, detail, prev, digest)

    def entries(self, *, after: int = 0) -> list[AuditEntry]:
        """Entries with an id above `after`, in order (all of them by default)."""
        rows = self._all(
            "SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit "
            "WHERE id > ? ORDER BY id",
            (after,),
        )
        return [
            AuditEntry(
                int(r["id"]),
                r["at"],
                r["actor"],
                r["action"],
                r["subject"],
                r["detail"],
                r["prev_hash"],
                r["hash"],
            )
            for r in rows
        ]

    def head(self) -> tuple[int, str] | None:
        row = self._one("SELECT last_id, last_hash FROM audit_head WHERE one = 1")
        return None if row is None else (int(row["last_id"]), row["last_hash"])
