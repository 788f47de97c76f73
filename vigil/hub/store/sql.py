"""The store's unit of work, written once for SQLite and PostgreSQL.

A backend supplies a connection (rows readable by column name, `?`
placeholders) and its error types; `SqlStore` turns it into transactions:

    with store.transaction() as tx:       # BEGIN ... COMMIT, or ROLLBACK on any exception
        alert = tx.alerts.get(12)
        tx.alerts.save(acknowledged)
        tx.downlinks.queue(alert.device_id, "acknowledged", 7, now=now)
        tx.audit.append(at=now, actor="rosa", action="ack", subject="alert 12")

A `transaction()` opened inside another on the same thread is a savepoint:
it never commits by itself; if its block raises, only its own writes are
undone and the exception goes on to the outer block, which decides. Other
threads wait for the open transaction to end (one connection, one lock).

Two variants serve the ingest pipeline: `batch()` may send its statements to
the server without waiting for each (PostgreSQL pipeline mode: a batch of
uplinks costs a few round trips, not one per statement), and
`transaction(durable=False)` commits without waiting for the disk, for
bookkeeping whose loss only repeats harmless work (a receipt marked sent).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import ClassVar

from vigil.errors import StorageError, StoreMissing
from vigil.hub.store import schema
from vigil.hub.store.repo import Cursor
from vigil.hub.store.repositories import Transaction

_LOG = logging.getLogger(__name__)


def first_line(exc: BaseException) -> str:
    """A driver's message on one line (PostgreSQL adds CONTEXT and HINT lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class SqlStore(ABC):
    """Transactions, savepoints and migrations over one backend connection."""

    dialect: ClassVar[schema.Dialect]
    errors: ClassVar[tuple[type[Exception], ...]]  # the driver's errors, reported as StorageError
    where: str  # names the store in error messages
    # Whether statements run on a database server beside this process: work done between
    # a batch's writes and the wait for its commit then overlaps the server's.
    runs_on_server: ClassVar[bool] = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._depth = 0

    @abstractmethod
    def _cursor(self) -> Cursor:
        """A fresh cursor on the connection."""

    @abstractmethod
    def _begin_sql(self, *, write: bool) -> str:
        """The statement that opens a top-level transaction."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def checkpoint_log(self) -> None:  # noqa: B027 - a hook: only SQLite checkpoints itself
        """Move what the write-ahead log holds into the database, off the ingest path (the
        timer calls it every round); a server database does it on its own."""

    def _pipelined(self) -> AbstractContextManager[object]:
        """Send statements without waiting for each until the block ends (default: no)."""
        return nullcontext()

    def _flush(self) -> None:  # noqa: B027 - a hook: only pipelining backends wait
        """Wait for every statement sent so far; raise the first error (pipelined blocks)."""

    def _durability(self, cur: Cursor, *, durable: bool) -> AbstractContextManager[object]:
        """Around a top-level transaction: commit without waiting for the disk if not durable."""
        return nullcontext()

    def _relaxed_sql(self) -> str | None:
        """Run right after BEGIN of a transaction that need not wait for the disk."""
        return None

    def transaction(self, *, durable: bool = True) -> AbstractContextManager[Transaction]:
        """A read-write unit of work: commits when the block ends, rolls back if it raises.

        `durable=False`: the commit may be lost in a crash (never reordered with later
        commits); only for writes whose loss repeats harmless work.
        """
        return self._transaction(write=True, durable=durable)

    def batch(self) -> AbstractContextManager[Transaction]:
        """A read-write unit of work whose writes are pipelined; any error fails all of it.

        Reads still return at once (they wait for the writes before them). A failing
        write may surface at a later statement or at the end: nest no savepoints in it.
        """
        return self._transaction(write=True, pipelined=True)

    def read(self) -> AbstractContextManager[Transaction]:
        """A unit of work for reading (a consistent view; takes no write lock on SQLite)."""
        return self._transaction(write=False)

    @contextmanager
    def _transaction(
        self, *, write: bool, durable: bool = True, pipelined: bool = False
    ) -> Iterator[Transaction]:
        with self._lock:
            cur = self._cursor()
            self._depth += 1
            level = self._depth
            top = level == 1
            begin, commit, undo = (
                (self._begin_sql(write=write), "COMMIT", "ROLLBACK")
                if top
                else (f"SAVEPOINT sp{level}", f"RELEASE SAVEPOINT sp{level}",
                      f"ROLLBACK TO SAVEPOINT sp{level}")
            )  # fmt: skip
            pipeline = self._pipelined() if top and pipelined else nullcontext()
            mode = self._durability(cur, durable=durable) if top else nullcontext()
            try:
                with mode, pipeline:
                    self._run(cur, begin)
                    relax = None if durable or not top else self._relaxed_sql()
                    if relax is not None:
                        self._run(cur, relax)
                    try:
                        yield Transaction(cur, self.dialect)
                        if top and pipelined:
                            self._flush()
                    except self.errors as exc:
                        self._undo(cur, undo, level)
                        raise StorageError(f"{self.where}: {first_line(exc)}") from exc
                    except BaseException:
                        self._undo(cur, undo, level)
                        raise
                    self._run(cur, commit)
                    if top and pipelined:
                        self._flush_commit(cur)
            finally:
                self._depth -= 1
                cur.close()

    def _flush_commit(self, cur: Cursor) -> None:
        """Wait for a pipelined COMMIT; report its failure as `StorageError`."""
        try:
            self._flush()
        except self.errors as exc:
            self._undo(cur, "ROLLBACK", 1)
            raise StorageError(f"{self.where}: {first_line(exc)}") from exc

    def _run(self, cur: Cursor, statement: str) -> None:
        try:
            cur.execute(statement)
        except self.errors as exc:
            if statement == "COMMIT":
                self._undo(cur, "ROLLBACK", 1)
            raise StorageError(f"{self.where}: {first_line(exc)}") from exc

    def _undo(self, cur: Cursor, statement: str, level: int) -> None:
        try:
            cur.execute(statement)
            if level > 1:  # a savepoint rolled back to stays open: let it go
                cur.execute(f"RELEASE SAVEPOINT sp{level}")
            self._flush()
        except self.errors as exc:  # the connection is gone; the server rolls back itself
            _LOG.warning("%s: rollback failed: %s", self.where, exc)

    # -- schema ---------------------------------------------------------------------------

    def _exists(self) -> bool:
        """Whether the store was created (it has a schema_version table)."""
        with self.read() as tx:
            return tx.meta.has_table("schema_version")

    def _open(self, *, create: bool) -> None:
        """Check the store exists (or create it) and apply pending migrations."""
        if not create and not self._exists():
            raise StoreMissing(
                f"{self.where} has no Vigil store yet; create it with 'vigil-hub init' "
                "(or fix store.url in the hub config)"
            )
        with self.transaction() as tx:
            tx.meta.migrate()

    def schema_version(self) -> int:
        with self.read() as tx:
            return tx.meta.version()
