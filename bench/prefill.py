"""Grow a hub's store to a long history with bulk SQL, not through the pipeline.

The rows are copies of what the hub itself wrote during a run (so every column,
including any a later migration adds, holds a value the hub writes), moved into
other lives of the same devices and back in time: uplinks get an old epoch,
sent receipts a negative seq (the hub's downlink seqs only grow from 0). Nothing
the hub will meet again collides with them; every per-message and periodic query
has them in its tables and indexes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import psycopg

# Column -> SQL for the copy number `k.n` (1, 2, ...) on (SQLite, PostgreSQL).
_UPLINKS = {
    "epoch": ("printf('%016x', k.n)", "lpad(to_hex(k.n), 16, '0')"),
    "received_at": ("received_at - k.n * 60", "received_at - k.n * 60"),
}
_DOWNLINKS = {
    "seq": ("-(k.n * 1000000 + seq)", "-(k.n::bigint * 1000000 + seq)"),
    "created_at": ("created_at - k.n * 60", "created_at - k.n * 60"),
    "sent_at": (
        "COALESCE(sent_at, created_at) - k.n * 60",
        "COALESCE(sent_at, created_at) - k.n * 60",
    ),
}
_SKIP = {"id"}  # numbered by the database


def _copy_sql(
    table: str, columns: list[str], exprs: dict[str, tuple[str, str]], pg: bool, rows: int
) -> str:
    cols = [c for c in columns if c not in _SKIP]
    select = ", ".join(exprs[c][pg] if c in exprs else c for c in cols)
    numbers = "generate_series(1, %(copies)s) AS k(n)" if pg else "k"
    with_ = (
        ""
        if pg
        else ("WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < :copies) ")
    )
    where = "WHERE sent_at IS NOT NULL " if table == "downlinks" else ""
    return (
        f"{with_}INSERT INTO {table} ({', '.join(cols)}) "  # noqa: S608 - our own names
        f"SELECT {select} FROM {table}, {numbers} {where}LIMIT {rows}"
    )


def prefill(url: str, rows: int, *, progress: Callable[[str], None] = print) -> dict[str, int]:
    """Add `rows` uplinks and `rows` sent receipts to the store at `url`; return the counts."""
    if url.startswith("sqlite:///"):
        return _sqlite(url.removeprefix("sqlite:///"), rows, progress)
    return _postgres(url, rows, progress)


def _sqlite(path: str, rows: int, progress: Callable[[str], None]) -> dict[str, int]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        counts = {}
        for table, exprs in (("uplinks", _UPLINKS), ("downlinks", _DOWNLINKS)):
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            have = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            copies = rows // max(1, have) + 1
            progress(f"prefill {table}: {rows:,} rows from {have:,} ({copies} copies)")
            conn.execute("BEGIN")
            conn.execute(_copy_sql(table, cols, exprs, False, rows), {"copies": copies})
            conn.execute("COMMIT")
            counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return counts
    finally:
        conn.close()


def _postgres(url: str, rows: int, progress: Callable[[str], None]) -> dict[str, int]:
    counts = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table, exprs in (("uplinks", _UPLINKS), ("downlinks", _DOWNLINKS)):
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "AND table_schema = current_schema() ORDER BY ordinal_position",
                    (table,),
                )
            ]
            have = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            copies = rows // max(1, have) + 1
            progress(f"prefill {table}: {rows:,} rows from {have:,} ({copies} copies)")
            conn.execute(_copy_sql(table, cols, exprs, True, rows), {"copies": copies})
            counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        conn.execute("VACUUM ANALYZE")
    return counts
