"""PostgreSQL backend (psycopg 3): for several hub instances sharing the work.

Queries are prepared on the server after their first use (`prepare_threshold`);
`batch()` runs in pipeline mode, and `executemany` sends its rows pipelined too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row

from vigil.errors import StorageError
from vigil.hub.store import schema
from vigil.hub.store.repo import Cursor, Row
from vigil.hub.store.sql import SqlStore, first_line

PREPARE_AFTER = 1  # executions of one query before the server keeps it prepared
_LOG = logging.getLogger(__name__)


class _Cursor:
    """Psycopg cursors that take the store's `?` placeholders and read rows by name.

    Each statement runs on a cursor of its own: in pipeline mode the results of
    earlier statements may still be arriving when a query is read, and psycopg
    hands a cursor the results of whatever it executed, so a query sharing a
    cursor with a queued INSERT can be given the INSERT's status instead of its rows.
    """

    def __init__(self, conn: psycopg.Connection[DictRow]) -> None:
        self._conn = conn
        self._cur: psycopg.Cursor[DictRow] | None = None

    def _fresh(self) -> psycopg.Cursor[DictRow]:
        self._cur = self._conn.cursor()
        return self._cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._fresh().execute(sql.replace("?", "%s"), params)

    def executemany(
        self, sql: str, params: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]
    ) -> Any:
        return self._fresh().executemany(sql.replace("?", "%s"), params)

    def fetchone(self) -> Row | None:
        return None if self._cur is None else self._cur.fetchone()

    def fetchall(self) -> list[Row]:
        return [] if self._cur is None else list(self._cur.fetchall())

    def close(self) -> None:
        if self._cur is not None:
            self._cur.close()


class PostgresStore(SqlStore):
    """A store in a PostgreSQL database; the URL may set `options=-csearch_path=...`.

    Only `create=True` (`vigil-hub init`) makes the tables in an empty schema.
    """

    dialect = schema.POSTGRES
    runs_on_server = True
    errors = (psycopg.Error,)

    def __init__(self, url: str, *, create: bool = False) -> None:
        super().__init__()
        self.where = "PostgreSQL store"
        self._pipe: psycopg.Pipeline | None = None
        self._url = url
        self._conn = self._connect()
        try:
            self._open(create=create)
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> psycopg.Connection[DictRow]:
        try:
            # Autocommit: transactions are the explicit BEGIN ... COMMIT of `SqlStore`.
            # The ingest path runs the same few statements all day: prepare them on the
            # server from their second use (one parse and plan per connection).
            return psycopg.connect(self._url, autocommit=True, row_factory=dict_row,
                                   prepare_threshold=PREPARE_AFTER)  # fmt: skip
        except psycopg.Error as exc:
            raise StorageError(
                f"cannot connect to the PostgreSQL store: {first_line(exc)}"
            ) from exc

    def _cursor(self) -> Cursor:
        if self._conn.broken and self._depth == 0:
            # The server restarted or the link broke: the transaction that met it failed
            # (StorageError, nothing receipted); the next one starts on a new connection.
            _LOG.warning("%s: the connection was lost; connecting again", self.where)
            self._conn.close()
            self._conn = self._connect()
        return _Cursor(self._conn)

    def _begin_sql(self, *, write: bool) -> str:
        # A read is one consistent view (PostgreSQL's default gives each statement its own
        # snapshot): the audit head and its entries, read together, must agree.
        return "BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    @contextmanager
    def _pipelined(self) -> Iterator[object]:
        with self._conn.pipeline() as pipe:
            self._pipe = pipe
            try:
                yield pipe
            finally:
                self._pipe = None

    def _flush(self) -> None:
        if self._pipe is not None:
            self._pipe.sync()

    def _relaxed_sql(self) -> str:
        return "SET LOCAL synchronous_commit TO OFF"

    def close(self) -> None:
        with self._lock:
            self._conn.close()
