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
with a new random epoch (§7) that every uplink carries. Nothing in it is
plaintext (vigil.device.atrest): every row is sealed under `state.key` before
SQLite sees it, so the card shows only row numbers and same-sized noise; the
kinds live in memory. Without that key the state is gone: `open` starts a new
life, and `erase` is the crypto-erase (the key file deleted, then a new life).

    outbox = Outbox.open(state_dir / "outbox.sqlite3", capacity=512)
    outbox.put(seq, Kind.ALARM, payload)
    for entry in outbox.due(now): publish(seal(entry.payload)); outbox.mark_sent(entry.seq, now)
    outbox.ack(seq)   # on a verified `stored` whose digest is outbox.digest(seq)
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from vigil.device.atrest import StateKey, erase_key_file
from vigil.errors import StateDirError, StateUnreadable, StorageError
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

# 1 kept sealed version-1 envelopes, 2 plaintext payloads: both start a new life.
SCHEMA_VERSION: Final = 3
STATE_KEY_FILE: Final = "state.key"
EPOCH_KEY: Final = "epoch"
_SEQ, _DIGESTS, _WINDOW = "seq", "digests", "window"  # state rows the outbox owns
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, sealed BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, sealed BLOB NOT NULL);
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
    """The durable queue of signed uplinks; thread-safe (one lock around one connection).

    Build it with `open()`; `conn` must hold the schema and `key` must open its rows.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        key: StateKey,
        path: Path,
        capacity: int,
        retry_initial: float,
        retry_max: float,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not 1 <= capacity <= HARD_LIMIT:
            raise ValueError(f"capacity must be in 1..{HARD_LIMIT}")
        self._conn, self._key, self._path = conn, key, path
        self._lock = threading.Lock()
        self.capacity = capacity
        self._retry = (retry_initial, retry_max)
        self._rand = rand
        # Backoff state lives in memory: after a restart everything is due at once.
        self._next_try: dict[int, float] = {}
        self._attempts: dict[int, int] = {}
        # What the sealed rows say, read once: kinds and digests never touch the card in clear.
        self._kinds: dict[int, Kind] = {}
        self._digests: dict[int, str] = {}
        self._alarms: dict[int, str] = {}  # digests of this epoch's alarms (ack / resolve)
        self._next_seq = 0
        self._load()

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
        """Open (or create) the outbox at `path`, sealed under `state.key` beside it.

        A missing key, an older schema or rows the key cannot open mean the state
        is gone: the files are removed and a new life (new key, new epoch) starts.
        """
        options = {"capacity": capacity, "retry_initial": retry_initial,
                   "retry_max": retry_max, "rand": rand}  # fmt: skip
        try:
            conn, key = _connect(path)
            try:
                with _closed_on_error(conn):
                    return cls(conn, key=key, path=path, **options)  # type: ignore[arg-type]
            except StateUnreadable as exc:
                _LOG.warning("device state at %s is unreadable (%s): starting a new life",
                             path, exc)  # fmt: skip
                conn, key = _new_life(path)
                with _closed_on_error(conn):
                    return cls(conn, key=key, path=path, **options)  # type: ignore[arg-type]
        except (sqlite3.Error, OSError) as exc:  # OSError: the folder cannot be made
            raise StorageError(f"cannot open the outbox {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def erase(self) -> None:
        """Crypto-erase the whole state (key file first), then start a new life in place."""
        with self._lock:
            self._conn.close()
            try:
                self._conn, self._key = _new_life(self._path)
            except (sqlite3.Error, OSError) as exc:
                raise StorageError(f"cannot renew the outbox {self._path}: {exc}") from exc
            self._next_try.clear()
            self._attempts.clear()
            self._load()

    # -- sealed rows ------------------------------------------------------------------

    def _load(self) -> None:
        """Read every sealed row once (raise `StateUnreadable` if the key cannot open one)."""
        self._kinds.clear()
        self._digests.clear()
        for seq, sealed in self._conn.execute("SELECT seq, sealed FROM outbox"):
            entry = self._open_entry(int(seq), bytes(sealed))
            self._kinds[entry.seq], self._digests[entry.seq] = entry.kind, entry.digest
        if self._read(EPOCH_KEY) is None:
            raise StateUnreadable(f"{self._path} has no epoch")
        self._next_seq = int(self._read(_SEQ) or "0")
        self._alarms = {
            int(s): str(d) for s, d in json.loads(self._read(_DIGESTS) or "{}").items()
        }

    def _open_entry(self, seq: int, sealed: bytes) -> Entry:
        kind, _, payload = self._key.open(f"outbox/{seq}", sealed).partition(b"\n")
        try:
            return Entry(seq, Kind(kind.decode()), payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateUnreadable(f"outbox row {seq} holds no known kind") from exc

    def _read(self, name: str) -> str | None:
        row = self._conn.execute("SELECT sealed FROM state WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._key.open(f"state/{name}", bytes(row[0])).decode()

    def _write(self, name: str, value: str) -> None:
        sealed = self._key.seal(f"state/{name}", value.encode())
        self._conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (name, sealed))

    # -- the queue --------------------------------------------------------------------

    @property
    def epoch(self) -> Epoch:
        """This life of the device's state, made with the database (docs/protocol.md §7)."""
        text = self.load_state(EPOCH_KEY)
        if text is None:  # pragma: no cover - _load() refuses a state without one
            raise StorageError("the outbox has no epoch")
        return Epoch.parse(text)

    @property
    def next_seq(self) -> int:
        """The first seq never handed out: persisted, so it survives power cuts."""
        with self._lock:
            return self._next_seq_locked()

    def _next_seq_locked(self) -> int:
        return max(self._next_seq, max(self._kinds, default=-1) + 1)

    def __len__(self) -> int:
        with self._lock:
            return len(self._kinds)

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

        Replacing one row with a record of the same size needs no new page, so it
        often succeeds when an insert cannot; the seq, sent from memory, must never
        be reused.
        """
        self._next_seq = max(self._next_seq, seq + 1)
        try:
            self._write(_SEQ, str(self._next_seq))
        except sqlite3.Error as exc:
            _LOG.error("outbox: cannot persist the seq counter past %s either: %s", seq, exc)

    def reserve(self, seq: int) -> None:
        """Spend `seq` durably without queuing anything (a heartbeat, sent once)."""
        with self._lock:
            if seq < self._next_seq_locked():
                raise StorageError(f"seq {seq} was already used; refusing to repeat it")
            try:
                self._write(_SEQ, str(seq + 1))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot persist the seq counter past {seq}: {exc}") from exc
            self._next_seq = seq + 1

    def _put_locked(
        self, seq: int, kind: Kind, payload: bytes, state: tuple[str, str] | None
    ) -> list[int]:
        if seq < self._next_seq_locked():
            raise StorageError(f"seq {seq} was already used; refusing to repeat it")
        dropped = self._room_for(kind)
        sealed = self._key.seal(f"outbox/{seq}", kind.value.encode() + b"\n" + payload)
        alarms = {**self._alarms, seq: uplink_digest(payload)} if kind is Kind.ALARM else None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for old in dropped:
                self._conn.execute("DELETE FROM outbox WHERE seq = ?", (old,))
            self._conn.execute("INSERT INTO outbox VALUES (?, ?)", (seq, sealed))
            if alarms is not None:
                self._write(_DIGESTS, json.dumps(alarms))
            self._write(_SEQ, str(seq + 1))
            if state is not None:
                self._write(*state)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # SQLite already rolled back after SQLITE_FULL
                self._conn.execute("ROLLBACK")
            raise
        self._next_seq, self._kinds[seq], self._digests[seq] = (
            seq + 1,
            kind,
            uplink_digest(payload),
        )
        self._alarms = self._alarms if alarms is None else alarms
        for old in dropped:
            self._forget(old)
        return dropped

    def _room_for(self, kind: Kind) -> list[int]:
        """The entry to drop for a new `kind`, or none; raise if it may not be queued.

        The oldest droppable entry goes; alarms may go over capacity up to HARD_LIMIT.
        """
        if len(self._kinds) < self.capacity:
            return []
        for victim_kind in DROPPABLE:
            if PRIORITY[victim_kind] > PRIORITY[kind]:
                break
            victims = [s for s, k in self._kinds.items() if k is victim_kind]
            if victims:
                _LOG.warning("outbox full: dropped seq=%s", min(victims))
                return [min(victims)]
        if kind is Kind.ALARM and len(self._kinds) < HARD_LIMIT:
            return []
        raise StorageError(f"outbox full ({len(self._kinds)} entries): cannot queue this entry")

    def _order(self) -> list[int]:
        return sorted(self._kinds, key=lambda s: (-PRIORITY[self._kinds[s]], s))

    def due(self, now: float, *, limit: int = 32) -> list[Entry]:
        """Entries whose retry time has come, alarms first, oldest first."""
        with self._lock:
            seqs = [s for s in self._order() if self._next_try.get(s, 0.0) <= now][:limit]
            out = []
            for seq in seqs:  # payloads are decrypted only for what goes out now
                (sealed,) = self._conn.execute(
                    "SELECT sealed FROM outbox WHERE seq = ?", (seq,)
                ).fetchone()
                out.append(self._open_entry(seq, bytes(sealed)))
            return out

    def digest(self, seq: int) -> str | None:
        """The digest a `stored` for `seq` must carry (None: not waiting for one)."""
        with self._lock:
            return self._digests.get(seq)

    def alarm_digest(self, seq: int) -> str | None:
        """The digest of alarm `seq` of this epoch, for its `acknowledged` and `resolved`."""
        with self._lock:
            return self._alarms.get(seq)

    def forget_alarms(self, *, keep: set[int]) -> None:
        """Drop the digests of alarms that are over; the row is rewritten even if unchanged,
        so the card's writes do not say whether an alarm ended."""
        with self._lock:
            alarms = {s: d for s, d in self._alarms.items() if s in keep}
            try:
                self._write(_DIGESTS, json.dumps(alarms))
            except sqlite3.Error as exc:
                raise StorageError(f"cannot save the alarm digests: {exc}") from exc
            self._alarms = alarms

    def waiting(self) -> tuple[int, int | None]:
        """How many entries wait for a `stored`, and the oldest seq among them (heartbeats)."""
        with self._lock:
            return len(self._kinds), min(self._kinds, default=None)

    def pending_alarms(self) -> list[int]:
        """Alarm seqs still waiting for their `stored`."""
        with self._lock:
            return sorted(s for s, k in self._kinds.items() if k is Kind.ALARM)

    def pending(self) -> list[int]:
        """Seqs still waiting for the hub, in sending order."""
        with self._lock:
            return self._order()

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
        text = self.load_state(_WINDOW)
        if text is None:
            return ReplayWindow()
        highest, mask = text.split(":")
        return ReplayWindow(int(highest), int(mask, 16))

    def save_downlink_window(self, window: ReplayWindow) -> None:
        """Persist the window durably before the downlink that moved it is acted on."""
        mask = window.mask.to_bytes(WINDOW_SIZE // 8, "big").hex()
        self.save_state(_WINDOW, f"{window.highest}:{mask}")

    def load_state(self, key: str) -> str | None:
        """Read a small piece of daemon state saved with `save_state` (None if never saved)."""
        with self._lock:
            return self._read(key)

    def save_state(self, key: str, value: str) -> None:
        """Durably save a small piece of daemon state (e.g. the active alarms), sealed."""
        with self._lock:
            try:
                self._write(key, value)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot save state {key}: {exc}") from exc

    def _forget(self, seq: int) -> None:
        self._kinds.pop(seq, None)
        self._digests.pop(seq, None)
        self._next_try.pop(seq, None)
        self._attempts.pop(seq, None)


def _connect(path: Path) -> tuple[sqlite3.Connection, StateKey]:
    """Open the state at `path` with its key, or start a new life if it cannot be read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = StateKey.load(path.with_name(STATE_KEY_FILE))
    if key is None:
        if any(p.exists() for p in _files(path)):
            _LOG.warning("state key %s is missing: the saved state cannot be read; starting "
                         "a new life", path.with_name(STATE_KEY_FILE))  # fmt: skip
        return _new_life(path)
    conn = _sqlite(path)
    with _closed_on_error(conn):
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            conn.executescript(_SCHEMA)
            return conn, key
    conn.close()
    _LOG.warning("outbox %s is from an older version (%s): its entries are dropped and the "
                 "device starts a new life", path, version)  # fmt: skip
    return _new_life(path)


def _new_life(path: Path) -> tuple[sqlite3.Connection, StateKey]:
    """Erase the key, remove the database files, then make a new key and an empty state."""
    key_path = path.with_name(STATE_KEY_FILE)
    erase_key_file(key_path)  # first: from here on, whatever is left on the card is noise
    for file in _files(path):
        file.unlink(missing_ok=True)
    key = StateKey.create(key_path)
    conn = _sqlite(path)
    with _closed_on_error(conn):
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.executescript(_SCHEMA)
        for name, value in ((EPOCH_KEY, Epoch.generate().hex), (_SEQ, "0"), (_DIGESTS, "{}")):
            sealed = key.seal(f"state/{name}", value.encode())
            conn.execute("INSERT INTO state VALUES (?, ?)", (name, sealed))
    return conn, key


def _sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    with _closed_on_error(conn):
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    return conn


@contextmanager
def _closed_on_error(conn: sqlite3.Connection) -> Iterator[None]:
    """Close `conn` if the block raises: an outbox that failed to open keeps no file open
    (a broken database, a refused capacity), rather than leaving the connection to the GC."""
    try:
        yield
    except BaseException:
        conn.close()
        raise


def _files(path: Path) -> list[Path]:
    """The database and SQLite's companions (write-ahead log, shared-memory index)."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


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
