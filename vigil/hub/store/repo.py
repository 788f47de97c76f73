"""What every repository stands on: a cursor of the open transaction and the SQL dialect.

Repositories hold no state of their own and never commit: they run inside
the transaction that made them (`store.transaction()`), take plain values,
and may be called any number of times within it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from vigil.hub.store import schema

T = TypeVar("T")
_V_NAME = re.compile(r"\bv\.(\w+)")
# An array parameter sent in binary: in text, psycopg quotes every element (a regular
# expression each) and hex-encodes every payload, which cost more than the insert.
_BINARY = "%b"
Column = tuple[str, str]  # a name and its PostgreSQL type, for `Repository._bulk`


@functools.cache
def _one_row(sql: str) -> str:
    """A `_bulk` statement for one row of named parameters (SQLite's form)."""
    return _V_NAME.sub(r":\1", sql.replace(" FROM {rows}", ""))


class Row(Protocol):
    """A result row read by column name (`sqlite3.Row`, psycopg's `dict_row`)."""

    def __getitem__(self, column: str) -> Any: ...


class Cursor(Protocol):
    """The DB-API subset the repositories use, with `?` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def executemany(
        self, sql: str, params: Sequence[Sequence[Any]] | Sequence[Mapping[str, Any]]
    ) -> Any: ...
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

    def _in(
        self, column: str, values: Sequence[Any], sql_type: str = "text"
    ) -> tuple[str, list[Any]]:
        """A condition that `column` is one of `values`, and its parameters. On PostgreSQL one
        array parameter, so the query text is the same for any count (prepared once)."""
        if self._dialect is schema.POSTGRES:
            return f"{column} = ANY(CAST({_BINARY} AS text[]))", [list(values)]
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def _bulk(self, sql: str, columns: Sequence[Column], rows: Sequence[Sequence[Any]]) -> None:
        """Run `sql` for all `rows` at once: in it, `FROM {rows}` brings a relation `v` with
        `columns` (name, PostgreSQL type), read as `v.name`.

        On PostgreSQL that is ONE statement over arrays (`unnest`), not one per row. SQLite
        steps one prepared statement per row, as cheap there, with `v.name` as the named
        parameter `:name` (a one-row subquery for `v` cost it three times as much).
        """
        if not rows:
            return
        names = [name for name, _ in columns]
        if self._dialect is schema.POSTGRES:
            arrays = ", ".join(f"CAST({_BINARY} AS {sql_type}[])" for _, sql_type in columns)
            source = f"unnest({arrays}) AS v({', '.join(names)})"
            self._cur.execute(sql.format(rows=source), [list(c) for c in zip(*rows, strict=True)])
        else:
            rows_named = [dict(zip(names, r, strict=True)) for r in rows]
            self._cur.executemany(_one_row(sql), rows_named)

    def _later(self, sql: str, params: Sequence[Any], parse: Callable[[list[Row]], T],
               ) -> Callable[[], T]:  # fmt: skip
        """A read whose rows are taken later: on PostgreSQL it is sent now, so that several
        sent in a row cost one round trip in a pipelined batch; SQLite runs it when taken.
        Take it before the transaction's next write."""
        if self._dialect is schema.POSTGRES:
            cur = self._cur.execute(sql, params)
            return lambda: parse(list(cur.fetchall()))
        return lambda: parse(self._all(sql, params))

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._cur.execute(sql, params)
        return self._cur.fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cur.execute(sql, params)
        return self._cur.fetchall()
