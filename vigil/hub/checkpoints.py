"""Checkpoints of the audit chain, the shell around `audit` and `anchors`: sign, store, anchor.

`checkpoint()` verifies the log, signs its last entry with the hub's Ed25519
key, appends the signed head to the log (an ordinary entry, action
"checkpoint") and to the anchor file the operator keeps. The CLI calls it after
every operator action and for `vigil-hub audit anchor`; the daemon calls it
through `Checkpointer`, on `audit.CheckpointPolicy`.

Why this schedule: operator actions (ack, resolve, broadcast, enrol, revoke)
are the entries that matter in a dispute and are rare, so each is signed at
once; the hub's own entries (alerts opened, escalations, silent devices) are
signed within `checkpoint_interval` s, or after `checkpoint_every` entries in a
flood, so a database writer's unsigned window is bounded in time and size, and
an idle hub adds nothing to the log.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vigil.errors import AuditTampered, BadConfigValue, ConfigError, StorageError
from vigil.hub import anchors, audit
from vigil.hub.store import Store
from vigil.hub.store.records import AuditEntry
from vigil.wire.keys import ed25519_from_text

_LOG = logging.getLogger(__name__)


class AuditLog(Protocol):
    """The three calls checkpoints need from a transaction's audit repository (`tx.audit`)."""

    def append(
        self, *, at: float, actor: str, action: str, subject: str, detail: str = ""
    ) -> AuditEntry: ...

    def entries(self, *, after: int = 0) -> list[AuditEntry]: ...

    def head(self) -> tuple[int, str] | None: ...


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The latest signed head and the id of the log entry that holds it."""

    signed: anchors.SignedHead
    entry_id: int


def checkpoint(
    store: Store, key: Ed25519PrivateKey, *, now: float, anchor_file: Path | None
) -> Checkpoint | None:
    """Sign the log's head unless it is signed already; None for an empty log.

    The anchor line is written only once the checkpoint entry is committed, so
    an anchor never covers an entry the database does not hold.
    """
    with store.transaction() as tx:
        done, fresh = sign_head(tx.audit, key, now=now)
    if fresh and done is not None and anchor_file is not None:
        append_anchor(anchor_file, done.signed)
    return done


def sign_head(
    log: AuditLog, key: Ed25519PrivateKey, *, now: float
) -> tuple[Checkpoint | None, bool]:
    """Append a signed checkpoint for the head if it needs one; return it and whether it is new.

    Refuses (`AuditTampered`) to sign a log that fails verification: a
    signature must never vouch for a tampered chain.
    """
    entries = log.entries()
    problems = audit.verify(entries, log.head())
    problems += audit.checkpoint_problems(entries, key.public_key())
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise AuditTampered(f"the audit log fails verification ({problems[0]}{more}); "
                            "not signing it: run 'vigil-hub audit verify'")  # fmt: skip
    target = audit.to_sign(entries)
    if target is None:
        if not entries:
            return None, False
        return Checkpoint(anchors.parse(entries[-1].detail), entries[-1].id), False
    signed = anchors.sign_head(key, entry_id=target.id, hash=target.hash, at=now)
    entry = log.append(
        at=now, actor="hub", action=audit.CHECKPOINT, subject=f"entries 1..{target.id}",
        detail=signed.to_line(),
    )  # fmt: skip
    _LOG.info("audit checkpoint: entries 1..%s signed (entry %s)", target.id, entry.id)
    return Checkpoint(signed, entry.id), True


def append_anchor(path: Path, signed: anchors.SignedHead) -> None:
    """Append one anchor line to `path` and sync it; `StorageError` if that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (signed.to_line() + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot append to the audit anchor file {path}: {exc.strerror}; "
                           "the checkpoint is in the log, 'vigil-hub audit anchor --out FILE' "
                           "exports it") from exc  # fmt: skip


class Checkpointer:
    """The daemon's schedule of checkpoints; logs its failures, never raises them."""

    def __init__(
        self,
        store: Store,
        key: Ed25519PrivateKey,
        *,
        policy: audit.CheckpointPolicy,
        anchor_file: Path | None,
    ) -> None:
        self._store, self._key, self._policy, self._anchor_file = store, key, policy, anchor_file
        self._signed_up_to = 0  # the id of the latest checkpoint entry this hub knows of
        self._waiting_since: float | None = None

    def tick(self, now: float) -> Checkpoint | None:
        """Sign the head if the policy says so."""
        with self._store.read() as tx:
            head = tx.audit.head()
        new = (0 if head is None else head[0]) - self._signed_up_to
        if new <= 0:
            self._waiting_since = None
            return None
        if self._waiting_since is None:
            self._waiting_since = now
        if not self._policy.due(new_entries=new, waiting=now - self._waiting_since):
            return None
        return self.flush(now)

    def flush(self, now: float) -> Checkpoint | None:
        """Sign the head now if anything is unsigned (on stop, and when due)."""
        try:
            done = checkpoint(self._store, self._key, now=now, anchor_file=self._anchor_file)
        except AuditTampered as exc:
            _LOG.error("%s", exc)
            self._waiting_since = now  # try again after another interval
            return None
        except StorageError as exc:  # the checkpoint may be stored; the next one anchors it
            _LOG.warning("%s", exc)
            self._waiting_since = now
            return None
        self._signed_up_to = 0 if done is None else done.entry_id
        self._waiting_since = None
        return done


# -- reading keys and anchors for `audit verify` ------------------------------------------------


def read_public_key(path: Path) -> Ed25519PublicKey:
    """The hub's signing key from what `vigil-hub pubkey` prints, or one `ed25519:` line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the public key file {path}: {exc}") from exc
    value: object
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        value = text.strip()  # not TOML: a bare "ed25519:<base64>" line
    else:
        section = doc.get("hub", doc)
        value = section.get("signing") if isinstance(section, dict) else None
    try:
        return ed25519_from_text(value)
    except BadConfigValue as exc:
        raise BadConfigValue(f"{path}: {exc}; give the [hub] section 'vigil-hub pubkey' "
                             "prints, or one line ed25519:<base64>") from exc  # fmt: skip


def read_anchor_files(paths: list[Path]) -> tuple[list[audit.Anchor], list[audit.Finding]]:
    """Anchors from the given files; a file that cannot be read is a failed finding."""
    found: list[audit.Anchor] = []
    unreadable: list[audit.Finding] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            unreadable.append(audit.Finding(False, "ANCHOR FAILED", f"{path}: cannot read: {why}"))
            continue
        found += audit.read_anchors(text, str(path))
    return found, unreadable
