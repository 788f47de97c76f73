"""The audit log's hash chain (pure): each entry's hash covers its fields and the previous hash.

    hash_n = SHA-256("vigil audit v1" 0x00 || prev_hash || canonical JSON of entry n)

Editing an entry changes its hash and breaks the link to the next one;
deleting one leaves a gap in the ids or a broken link; deleting the tail is
caught by the stored head (last id and hash). `verify` reports every problem.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from vigil.hub.store.records import AuditEntry

GENESIS = "0" * 64
_LABEL = b"vigil audit v1\x00"


def entry_hash(
    prev_hash: str, *, id: int, at: float, actor: str, action: str, subject: str, detail: str
) -> str:
    """Hash one entry chained to `prev_hash`."""
    doc = {
        "id": id,
        "at": repr(float(at)),
        "actor": actor,
        "action": action,
        "subject": subject,
        "detail": detail,
    }
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(_LABEL + prev_hash.encode() + body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Problem:
    """One defect found in the chain: where, and what it means."""

    entry_id: int
    what: str

    def __str__(self) -> str:
        return f"entry {self.entry_id}: {self.what}"


def verify(entries: Iterable[AuditEntry], head: tuple[int, str] | None) -> list[Problem]:
    """Check the chain end to end against the stored head; return the problems (none = intact)."""
    problems: list[Problem] = []
    prev_hash, expected_id = GENESIS, 1
    last_id = 0
    for e in entries:
        if e.id != expected_id:
            problems.append(Problem(e.id, f"entries {expected_id}..{e.id - 1} are missing"))
        if e.prev_hash != prev_hash:
            problems.append(Problem(e.id, "does not link to the entry before it"))
        recomputed = entry_hash(
            e.prev_hash,
            id=e.id,
            at=e.at,
            actor=e.actor,
            action=e.action,
            subject=e.subject,
            detail=e.detail,
        )
        if recomputed != e.hash:
            problems.append(Problem(e.id, "was edited (its hash does not match its content)"))
        prev_hash, expected_id, last_id = e.hash, e.id + 1, e.id
    head_id, head_hash = head if head is not None else (0, GENESIS)
    if head_id != last_id or head_hash != prev_hash:
        problems.append(
            Problem(head_id, f"the log ends at entry {last_id} but the head records {head_id}")
        )
    return problems
