"""The audit log's hash chain and its signed checkpoints (pure).

    hash_n = SHA-256("vigil audit v1" 0x00 || prev_hash || canonical JSON of entry n)

Editing an entry changes its hash and breaks the link to the next one;
deleting one leaves a gap in the ids or a broken link; deleting the tail is
caught by the stored head (last id and hash). `verify` reports every problem.

A database writer can do all of that and then re-hash the chain and the head.
What they cannot do without the hub's private key is sign: a *checkpoint* is an
entry (action "checkpoint", detail = a `SignedHead` line, see `anchors.py`)
that signs the hash of an earlier entry, and the same line appended to a file
the operator keeps outside the database is an *anchor*. `report` checks the
chain, every checkpoint's signature, and every anchor against the entries the
database holds now.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vigil.errors import BadSignature, MalformedAnchor
from vigil.hub import anchors
from vigil.hub.store.records import AuditEntry

GENESIS = "0" * 64
CHECKPOINT = "checkpoint"  # the action of a checkpoint entry
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


# -- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """When the hub signs the head: after `every` new entries, or `interval` s after the first."""

    every: int = 100
    interval: float = 300.0

    def __post_init__(self) -> None:
        if not 1 <= self.every <= 1_000_000:
            raise ValueError(f"every must be in 1..1000000 entries, got {self.every}")
        if not (math.isfinite(self.interval) and 1 <= self.interval <= 86400):
            raise ValueError(f"must be in 1..86400 seconds, got {self.interval!r}")

    def due(self, *, new_entries: int, waiting: float) -> bool:
        """Whether `new_entries` unsigned entries, the oldest `waiting` s old, need signing."""
        return new_entries >= self.every or (new_entries > 0 and waiting >= self.interval)


def to_sign(entries: Sequence[AuditEntry]) -> AuditEntry | None:
    """The entry a new checkpoint should cover: the last one, unless it is a checkpoint."""
    if not entries or entries[-1].action == CHECKPOINT:
        return None
    return entries[-1]


def checkpoint_problems(
    entries: Sequence[AuditEntry], key: Ed25519PublicKey | None
) -> list[Problem]:
    """Check every checkpoint entry: readable, signed by `key`, and its entry unchanged."""
    by_id = {e.id: e for e in entries}
    problems: list[Problem] = []
    for e in entries:
        if e.action != CHECKPOINT:
            continue
        if key is None:
            problems.append(Problem(e.id, "is a checkpoint, not checked: no hub public key"))
            continue
        try:
            signed = anchors.parse(e.detail)
            signed.check(key)
        except (MalformedAnchor, BadSignature) as exc:
            problems.append(Problem(e.id, f"is a checkpoint that fails: {exc}"))
            continue
        covered = by_id.get(signed.entry_id)
        if signed.entry_id >= e.id:
            problems.append(Problem(e.id, f"is a checkpoint of later entry {signed.entry_id}"))
        elif covered is None:
            problems.append(Problem(e.id, f"signs entry {signed.entry_id}, which was deleted"))
        elif covered.hash != signed.hash:
            problems.append(Problem(e.id, f"signs entry {signed.entry_id} with hash "
                                          f"{signed.hash[:12]}.., the log now has "
                                          f"{covered.hash[:12]}..: entries up to "
                                          f"{signed.entry_id} were rewritten"))  # fmt: skip
    return problems


# -- the verification report ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anchor:
    """A signed head read from outside the database, or why it could not be read."""

    source: str  # "<file>:<line>", for the report
    head: anchors.SignedHead | None
    error: str = ""

    def __post_init__(self) -> None:
        if (self.head is None) == (not self.error):
            raise ValueError("an Anchor has either a signed head or an error")


def read_anchors(text: str, source: str) -> list[Anchor]:
    """The anchors in an anchor file's text; blank lines and `#` comments are skipped."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        try:
            found.append(Anchor(where, anchors.parse(line)))
        except MalformedAnchor as exc:
            found.append(Anchor(where, None, f"not an anchor: {exc}"))
    return found


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of `vigil-hub audit verify`: a check and whether it held."""

    ok: bool
    label: str
    text: str

    def __str__(self) -> str:
        return f"{self.label} {self.text}"


def report(
    entries: Sequence[AuditEntry],
    head: tuple[int, str] | None,
    *,
    key: Ed25519PublicKey | None,
    anchored: Sequence[Anchor] = (),
) -> list[Finding]:
    """Check chain, checkpoints and anchors: one finding per line of `audit verify`."""
    chain = verify(entries, head)
    signed = checkpoint_problems(entries, key)
    findings = [Finding(False, "TAMPERED", str(p)) for p in chain + signed]
    failed_ids = {p.entry_id for p in signed}
    good = [e for e in entries if e.action == CHECKPOINT and e.id not in failed_ids]
    if good:
        last = anchors.parse(good[-1].detail)
        text = f"{len(good)} signed by the hub; the last covers {_covers(last)}"
        findings.append(Finding(True, "CHECKPOINTS", text))
    first_break = min((p.entry_id for p in chain), default=None)
    by_id = {e.id: e for e in entries}
    covered = 0
    for a in anchored:
        finding = _anchor_finding(a, by_id, key, first_break)
        findings.append(finding)
        if finding.ok and a.head is not None:
            covered = max(covered, a.head.entry_id)
    findings.append(_unanchored(entries, covered))
    return findings


def _anchor_finding(
    anchor: Anchor,
    by_id: Mapping[int, AuditEntry],
    key: Ed25519PublicKey | None,
    first_break: int | None,
) -> Finding:
    head, why = anchor.head, _unreadable(anchor, key)
    if why is None and head is not None:
        why = _mismatch(head, by_id, first_break)
    if why is not None or head is None:
        return Finding(False, "ANCHOR FAILED", f"{anchor.source}: {why or anchor.error}")
    return Finding(True, "ANCHOR OK", f"{anchor.source}: {_covers(head)} are present, unchanged")


def _covers(head: anchors.SignedHead) -> str:
    return f"entries 1..{head.entry_id} (signed {head.when()})"


def _unreadable(anchor: Anchor, key: Ed25519PublicKey | None) -> str | None:
    """Why this anchor cannot be trusted as the hub's statement, or None."""
    if anchor.head is None:
        return anchor.error
    if key is None:
        return "not checked: no hub public key"
    try:
        anchor.head.check(key)
    except BadSignature as exc:
        return str(exc)
    return None


def _mismatch(
    head: anchors.SignedHead, by_id: Mapping[int, AuditEntry], first_break: int | None
) -> str | None:
    """How the log differs from what a genuine anchor says it held, or None."""
    n, last, what = head.entry_id, max(by_id, default=0), _covers(head)
    stored = by_id.get(n)
    if not by_id:
        return f"{what} are anchored, but the log is empty: it was wiped"
    if n > last:
        return (f"{what} are anchored, but the log ends at entry {last}: "
                f"entries {last + 1}..{n} were deleted")  # fmt: skip
    if stored is None:
        return f"{what} are anchored, but entry {n} was deleted"
    if stored.hash != head.hash:
        return (f"{what} are anchored, but entry {n} differs from the anchored one: "
                f"entries up to {n} were rewritten")  # fmt: skip
    if first_break is not None and first_break <= n:
        return f"{what}: entry {n} matches, but the chain below it is broken (see TAMPERED)"
    return None


def _unanchored(entries: Sequence[AuditEntry], covered: int) -> Finding:
    pending = [e for e in entries if e.id > covered and e.action != CHECKPOINT]
    if not entries:
        return Finding(True, "ANCHORED", "nothing: the log has no entries")
    if not pending:
        return Finding(True, "ANCHORED", f"every entry up to {covered} (any later entries "
                       "are checkpoints)")  # fmt: skip
    return Finding(True, "NOT YET ANCHORED", f"entries {pending[0].id}..{entries[-1].id}: "
                   "a database writer could still rewrite or delete them unnoticed")  # fmt: skip
