"""What every repository stands on: a cursor of the open transaction and the SQL dialect.

Repositories hold no state of their own and never commit: they run inside
the transaction that made them (`store.transaction()`), take plain values,
and may be called any number of times within it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from vigil.hub.store import schema


class Row(Protocol):
    """A result row read by column name (`sqlite3.Row`, psycopg's `dict_row`)."""

    def __getitem__(self, column: str) -> Any: ...


class Cursor(Protocol):
    """The DB-API subset the repositories use, with `?` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...
    def fetchone(self) -> Row | None: ...
    def fetchall(self) -> list[Row]: ...
    def close(self) -> None: ...


class Repository:
    """One table family, queried through the open transaction's cursor."""

    def __init__(self, cur: Cursor, dialect: schema.Dialect) -> None:
        self._cur = cur
        self._dialect = dialect

    @property
    def _for_update(self) -> str:
        """Row lock for read-modify-write (SQLite's BEGIN IMMEDIATE already serialises)."""
        return " FOR UPDATE" if self._dialect is schema.POSTGRES else ""

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._cur.execute(sql, params)
        return self._cur.fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cur.execute(sql, params)
        return self._cur.fetchall()
