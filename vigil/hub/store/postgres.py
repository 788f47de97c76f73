"""PostgreSQL backend (psycopg 3): for several hub instances sharing the work."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from vigil.errors import StorageError
from vigil.hub.store import schema
from vigil.hub.store.sql import Cursor
from vigil.hub.store.sql_alerts import AlertQueries


class _Cursor:
    """A psycopg cursor that takes the store's `?` placeholders."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cur.execute(sql.replace("?", "%s"), params)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()


class PostgresStore(AlertQueries):
    """A store in a PostgreSQL database; the URL may set `options=-csearch_path=...`."""

    dialect = schema.POSTGRES

    def __init__(self, url: str) -> None:
        try:
            self._conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to PostgreSQL store: {exc}") from exc
        self._lock = threading.RLock()
        self._depth = 0
        self._migrate()

    @contextmanager
    def _begin(self, *, write: bool) -> Iterator[Cursor]:
        with self._lock:
            try:
                if self._depth or not write:
                    # Inside `atomic()` the outer transaction commits; a lone read is
                    # one autocommitted statement (no BEGIN/COMMIT round trips).
                    with self._conn.cursor() as cur:
                        yield _Cursor(cur)
                    return
                self._depth = 1
                try:
                    with self._conn.transaction(), self._conn.cursor() as cur:
                        yield _Cursor(cur)
                finally:
                    self._depth = 0
            except psycopg.Error as exc:
                raise StorageError(f"PostgreSQL store: {exc}") from exc

    def _tx(self) -> AbstractContextManager[Cursor]:
        return self._begin(write=True)

    def _read(self) -> AbstractContextManager[Cursor]:
        return self._begin(write=False)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
