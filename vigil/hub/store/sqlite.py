"""SQLite backend: one file in WAL mode, fsync on every commit (synchronous=FULL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from vigil.errors import StorageError
from vigil.hub.store import schema
from vigil.hub.store.sql import Cursor
from vigil.hub.store.sql_alerts import AlertQueries


class SqliteStore(AlertQueries):
    """The default store. Several processes (daemon and CLI) may share the file."""

    dialect = schema.SQLITE

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in (
                "journal_mode = WAL",
                "synchronous = FULL",  # an ACK promises the alarm is on disk
                "foreign_keys = ON",
                "busy_timeout = 10000",
            ):
                self._conn.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite store {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        self._depth = 0
        self._migrate()

    @contextmanager
    def _begin(self, mode: str) -> Iterator[Cursor]:
        with self._lock:
            if self._depth:  # inside `atomic()`: the outer transaction commits
                yield from self._nested()
                return
            cur = self._conn.cursor()
            self._depth = 1
            try:
                cur.execute(f"BEGIN {mode}")
                yield cur
                cur.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StorageError(f"SQLite store {self.path}: {exc}") from exc
            except BaseException:
                self._rollback()
                raise
            finally:
                self._depth = 0
                cur.close()

    def _nested(self) -> Iterator[Cursor]:
        cur = self._conn.cursor()
        self._depth += 1
        try:
            yield cur
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite store {self.path}: {exc}") from exc
        finally:
            self._depth -= 1
            cur.close()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _tx(self) -> AbstractContextManager[Cursor]:
        return self._begin("IMMEDIATE")

    def _read(self) -> AbstractContextManager[Cursor]:
        return self._begin("DEFERRED")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
