"""Keep every uplink on disk until the hub says `stored`: the wearable's durable outbox.

SQLite with `synchronous=FULL` (WAL): `put()` returns only once the signed
payload and the sequence counter are on the SD card, so a power cut after it
loses nothing and never reuses a seq. The payload, not an envelope, is kept:
every resend is sealed afresh, so the broker never sees the same bytes twice
(docs/protocol.md §8). Entries go out alarms first (then cancels and
check-ins, then positions), oldest first within a class, and are retried with
jittered exponential backoff (vigil.runtime.backoff) until the hub's signed
`stored` for that seq and digest arrives. When the outbox is full the oldest
position goes; an alarm, cancel or check-in is never dropped. Heartbeats are
never queued: the next one supersedes the last (`reserve` only spends the seq).

The outbox is the device's state: a new database is a new life of the device,
with a new random epoch (§7) that every uplink carries.

    outbox = Outbox.open(state_dir / "outbox.sqlite3", capacity=512)
    outbox.put(seq, Kind.ALARM, payload)
    for entry in outbox.due(now): publish(seal(entry.payload)); outbox.mark_sent(entry.seq, now)
    outbox.ack(seq)   # on a verified `stored` whose digest is outbox.digest(seq)
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vigil.errors import StateDirError, StorageError
from vigil.runtime.backoff import backoff_delay
from vigil.wire.liveness import Epoch, uplink_digest
from vigil.wire.messages import Kind
from vigil.wire.replay import WINDOW_SIZE, ReplayWindow

_LOG = logging.getLogger(__name__)

PRIORITY: Final = {
    Kind.ALARM: 3,
    Kind.CANCEL: 2,
    Kind.CHECKIN: 2,
    Kind.POSITION: 1,
    Kind.HEARTBEAT: 0,
}
# Kinds that may be dropped when the outbox is full, in the order they are dropped.
DROPPABLE: Final = (Kind.HEARTBEAT, Kind.POSITION)
# The hub's replay window is 4096 seqs; an outbox this size never falls outside it.
HARD_LIMIT: Final = 3072

SCHEMA_VERSION: Final = 2  # 1 kept sealed version-1 envelopes, which no hub accepts now
EPOCH_KEY: Final = "epoch"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL
);
-- Digests of the alarms sent in this epoch: `acknowledged`/`resolved` must name one.
CREATE TABLE IF NOT EXISTS sent_alarms (seq INTEGER PRIMARY KEY, digest TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (priority DESC, seq);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS downlink_window (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    highest INTEGER NOT NULL,
    mask BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    kind: Kind
    payload: bytes  # the signed message's canonical encoding; sealed afresh for each send

    @property
    def digest(self) -> str:
        return uplink_digest(self.payload)


class Outbox:
    """The durable queue of sealed uplinks; thread-safe (one lock around one connection)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        capacity: int,
        retry_initial: float,
        retry_max: float,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not 1 <= capacity <= HARD_LIMIT:
            raise ValueError(f"capacity must be in 1..{HARD_LIMIT}")
        self._conn = conn
        self._lock = threading.Lock()
        self.capacity = capacity
        self._retry = (retry_initial, retry_max)
        self._rand = rand
        # Backoff state lives in memory: after a restart everything is due at once.
        self._next_try: dict[int, float] = {}
        self._attempts: dict[int, int] = {}

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        capacity: int = 512,
        retry_initial: float = 10.0,
        retry_max: float = 300.0,
        rand: Callable[[], float] = random.random,
    ) -> Outbox:
        """Open (or create) the outbox database at `path`; `rand` jitters the retries."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            _upgrade(conn, path)
            conn.executescript(_SCHEMA)
            conn.execute("INSERT OR IGNORE INTO meta VALUES ('next_seq', 0)")
            conn.execute(
                "INSERT OR IGNORE INTO state VALUES (?, ?)", (EPOCH_KEY, Epoch.generate().hex)
            )
        except (sqlite3.Error, OSError) as exc:  # OSError: the folder cannot be made
            raise StorageError(f"cannot open the outbox {path}: {exc}") from exc
        return cls(
            conn, capacity=capacity, retry_initial=retry_initial, retry_max=retry_max, rand=rand
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @property
    def epoch(self) -> Epoch:
        """This life of the device's state, made with the database (docs/protocol.md §7)."""
        text = self.load_state(EPOCH_KEY)
        if text is None:  # pragma: no cover - open() always writes it
            raise StorageError("the outbox has no epoch")
        return Epoch.parse(text)

    @property
    def next_seq(self) -> int:
        """The first seq never handed out: persisted, so it survives power cuts."""
        with self._lock:
            return self._next_seq_locked()

    def _next_seq_locked(self) -> int:
        (value,) = self._conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        (highest,) = self._conn.execute("SELECT coalesce(max(seq) + 1, 0) FROM outbox").fetchone()
        return max(int(value), int(highest))

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
            return int(count)

    def put(
        self, seq: int, kind: Kind, payload: bytes, *, state: tuple[str, str] | None = None
    ) -> list[int]:
        """Commit one signed uplink payload durably; return the seqs dropped to make room.

        `state` (key, value) is saved in the same transaction, as `save_state` would:
        the alarm and the daemon's "an alarm is active" reach the disk together.

        Raise `StorageError` if `seq` was already handed out, or if a message
        that may not be dropped finds no room (never for an alarm).
        """
        if kind not in PRIORITY or kind is Kind.HEARTBEAT:
            raise ValueError(f"{kind!r} is not queued (heartbeats are sent once: use reserve)")
        with self._lock:
            try:
                return self._put_locked(seq, kind, payload, state)
            except sqlite3.Error as exc:
                self._burn_seq(seq)
                raise StorageError(f"outbox write failed for seq {seq}: {exc}") from exc

    def _burn_seq(self, seq: int) -> None:
        """After a failed write (disk full), still try to persist the counter past `seq`.

        Updating one existing row needs no new page, so it often succeeds when
        an insert cannot; the seq, sent from memory, must never be reused.
        """
        try:
            self._conn.execute(
                "UPDATE meta SET value = max(value, ?) WHERE key = 'next_seq'", (seq + 1,)
            )
        except sqlite3.Error as exc:
            _LOG.error("outbox: cannot persist the seq counter past %s either: %s", seq, exc)

    def reserve(self, seq: int) -> None:
        """Spend `seq` durably without queuing anything (a heartbeat, sent once)."""
        with self._lock:
            if seq < self._next_seq_locked():
                raise StorageError(f"seq {seq} was already used; refusing to repeat it")
            try:
                self._conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot persist the seq counter past {seq}: {exc}") from exc

    def _put_locked(
        self, seq: int, kind: Kind, payload: bytes, state: tuple[str, str] | None
    ) -> list[int]:
        if seq < self._next_seq_locked():
            raise StorageError(f"seq {seq} was already used; refusing to repeat it")
        dropped: list[int] = []
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            (count,) = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
            if count >= self.capacity:
                dropped = self._make_room(kind, limit=HARD_LIMIT if kind is Kind.ALARM else None)
            self._conn.execute(
                "INSERT INTO outbox VALUES (?, ?, ?, ?)",
                (seq, kind.value, PRIORITY[kind], payload),
            )
            if kind is Kind.ALARM:
                self._conn.execute(
                    "INSERT INTO sent_alarms VALUES (?, ?)", (seq, uplink_digest(payload))
                )
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
            if state is not None:
                self._conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", state)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # SQLite already rolled back after SQLITE_FULL
                self._conn.execute("ROLLBACK")
            raise
        for old in dropped:
            self._forget(old)
        return dropped

    def _make_room(self, kind: Kind, *, limit: int | None) -> list[int]:
        """Drop the oldest droppable entry, or fail; alarms may go over capacity up to `limit`."""
        for victim_kind in DROPPABLE:
            if PRIORITY[victim_kind] > PRIORITY[kind]:
                break
            row = self._conn.execute(
                "SELECT seq FROM outbox WHERE kind = ? ORDER BY seq LIMIT 1", (victim_kind.value,)
            ).fetchone()
            if row is not None:
                self._conn.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
                _LOG.warning("outbox full: dropped %s seq=%s for a %s", victim_kind, row[0], kind)
                return [int(row[0])]
        (count,) = self._conn.execute("SELECT count(*) FROM outbox").fetchone()
        if limit is not None and count < limit:
            return []
        raise StorageError(f"outbox full ({count} entries): cannot queue a {kind}")

    def due(self, now: float, *, limit: int = 32) -> list[Entry]:
        """Entries whose retry time has come, alarms first, oldest first."""
        with self._lock:
            order = self._conn.execute("SELECT seq FROM outbox ORDER BY priority DESC, seq")
            seqs = [int(s) for (s,) in order if self._next_try.get(int(s), 0.0) <= now][:limit]
            out = []
            for seq in seqs:  # payloads only for what goes out now
                kind, payload = self._conn.execute(
                    "SELECT kind, payload FROM outbox WHERE seq = ?", (seq,)
                ).fetchone()
                out.append(Entry(seq, Kind(kind), bytes(payload)))
            return out

    def digest(self, seq: int) -> str | None:
        """The digest a `stored` for `seq` must carry (None: not waiting for one)."""
        with self._lock:
            row = self._conn.execute("SELECT payload FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else uplink_digest(bytes(row[0]))

    def alarm_digest(self, seq: int) -> str | None:
        """The digest of alarm `seq` of this epoch, for its `acknowledged` and `resolved`."""
        with self._lock:
            row = self._conn.execute(
                "SELECT digest FROM sent_alarms WHERE seq = ?", (seq,)
            ).fetchone()
        return None if row is None else str(row[0])

    def forget_alarms(self, *, keep: set[int]) -> None:
        """Drop the digests of alarms that are over (resolved or cancelled)."""
        with self._lock:
            rows = self._conn.execute("SELECT seq FROM sent_alarms").fetchall()
            for (seq,) in rows:
                if int(seq) not in keep:
                    self._conn.execute("DELETE FROM sent_alarms WHERE seq = ?", (seq,))

    def waiting(self) -> tuple[int, int | None]:
        """How many entries wait for a `stored`, and the oldest seq among them (heartbeats)."""
        with self._lock:
            count, oldest = self._conn.execute("SELECT count(*), min(seq) FROM outbox").fetchone()
        return int(count), None if oldest is None else int(oldest)

    def pending_alarms(self) -> list[int]:
        """Alarm seqs still waiting for their `stored`."""
        with self._lock:
            rows = self._conn.execute("SELECT seq FROM outbox WHERE kind = 'alarm' ORDER BY seq")
            return [int(seq) for (seq,) in rows]

    def pending(self) -> list[int]:
        """Seqs still waiting for the hub, in sending order."""
        with self._lock:
            rows = self._conn.execute("SELECT seq FROM outbox ORDER BY priority DESC, seq")
            return [int(seq) for (seq,) in rows]

    def next_retry(self) -> float | None:
        """The earliest time an entry becomes due again, or None if nothing waits."""
        with self._lock:
            return min(self._next_try.values(), default=None)

    def mark_sent(self, seq: int, now: float) -> None:
        """Record a publish attempt; the entry is due again after a growing, jittered delay."""
        with self._lock:
            attempt = self._attempts.get(seq, 0) + 1
            first, cap = self._retry
            self._attempts[seq] = attempt
            delay = backoff_delay(attempt, base=first, cap=cap, rand=self._rand)
            self._next_try[seq] = now + delay

    def retry_all_now(self) -> None:
        """Make every entry due (the link just came back)."""
        with self._lock:
            self._next_try.clear()

    def ack(self, seq: int) -> bool:
        """Delete `seq` for good (the hub stored it); return whether it was pending."""
        with self._lock:
            try:
                cur = self._conn.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            except sqlite3.Error as exc:
                raise StorageError(f"outbox delete failed for seq {seq}: {exc}") from exc
            self._forget(seq)
            return cur.rowcount > 0

    def downlink_window(self) -> ReplayWindow:
        """The persisted window of downlink seqs already accepted from the hub."""
        with self._lock:
            row = self._conn.execute("SELECT highest, mask FROM downlink_window").fetchone()
        if row is None:
            return ReplayWindow()
        return ReplayWindow(int(row[0]), int.from_bytes(row[1], "big"))

    def save_downlink_window(self, window: ReplayWindow) -> None:
        """Persist the window durably before the downlink that moved it is acted on."""
        mask = window.mask.to_bytes(WINDOW_SIZE // 8, "big")
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO downlink_window VALUES (0, ?, ?)",
                    (window.highest, mask),
                )
            except sqlite3.Error as exc:
                raise StorageError(f"cannot save the downlink window: {exc}") from exc

    def load_state(self, key: str) -> str | None:
        """Read a small piece of daemon state saved with `save_state` (None if never saved)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def save_state(self, key: str, value: str) -> None:
        """Durably save a small piece of daemon state (e.g. the active alarms)."""
        with self._lock:
            try:
                self._conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot save state {key}: {exc}") from exc

    def _forget(self, seq: int) -> None:
        self._next_try.pop(seq, None)
        self._attempts.pop(seq, None)


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """A version-1 outbox holds envelopes no hub accepts any more: start a new life."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version >= SCHEMA_VERSION:
        return
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if tables:
        _LOG.warning("outbox %s is from protocol version 1: its entries are dropped and the "
                     "device starts a new epoch", path)  # fmt: skip
    for table in tables:
        conn.execute(f'DROP TABLE "{table}"')
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def check_state_dir(path: Path, *, create: bool) -> None:
    """Make sure the outbox can live in `path`: create it (or, if not `create`, check it could be).

    Raise `StateDirError` naming the folder in the way: `check` catches what `run` would hit.
    """
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"cannot create {path}: {exc.strerror or exc}") from exc
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StateDirError(f"cannot create {path}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        user = os.getuid()
        raise StateDirError(
            f"{path} cannot be written: {existing} is not writable by uid {user}; "
            "create it for the service user or choose another path"
        )
