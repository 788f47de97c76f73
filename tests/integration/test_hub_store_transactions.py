"""The hub store's transactions: all or nothing, nested without committing early, database
errors typed, other threads kept waiting; SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tests.support.parties import parties
from vigil.errors import StorageError
from vigil.hub.store import Store
from vigil.hub.store.sqlite import SqliteStore
from vigil.wire import DeviceId

pytestmark = pytest.mark.integration


def _queued(store: Store) -> list[int]:
    with store.read() as tx:
        return [d.arg for d in tx.downlinks.pending()]


def test_a_transaction_commits_all_or_nothing(store: Store, enrolled: DeviceId) -> None:
    with store.transaction() as tx:
        tx.downlinks.queue(enrolled, "stored", 1, now=1.0)
        tx.downlinks.queue(enrolled, "stored", 2, now=1.0)
    assert _queued(store) == [1, 2]

    def failing_handler() -> None:
        with store.transaction() as tx:
            tx.downlinks.queue(enrolled, "stored", 3, now=2.0)
            tx.audit.append(at=2.0, actor="hub", action="x", subject="y")
            raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError, match="handler bug"):
        failing_handler()
    assert _queued(store) == [1, 2]
    with store.transaction() as tx:
        assert tx.audit.head() is None
        assert tx.downlinks.queue(enrolled, "stored", 4, now=3.0) == 2  # seq 2 was rolled back


def test_a_nested_transaction_never_commits_early(store: Store, enrolled: DeviceId) -> None:
    def outer_fails_after_inner_ended() -> None:
        with store.transaction() as outer:
            outer.downlinks.queue(enrolled, "stored", 1, now=1.0)
            with store.transaction() as inner:
                inner.downlinks.queue(enrolled, "stored", 2, now=1.0)
            raise RuntimeError("outer")  # the inner block ended, but nothing was committed

    with pytest.raises(RuntimeError, match="outer"):
        outer_fails_after_inner_ended()
    assert _queued(store) == []


def test_a_failed_nested_transaction_undoes_only_its_own_writes(
    store: Store, enrolled: DeviceId
) -> None:
    def inner_fails() -> None:
        with store.transaction() as inner:
            inner.downlinks.queue(enrolled, "stored", 2, now=1.0)
            raise RuntimeError("inner")

    with store.transaction() as outer:
        outer.downlinks.queue(enrolled, "stored", 1, now=1.0)
        with pytest.raises(RuntimeError, match="inner"):
            inner_fails()
        outer.downlinks.queue(enrolled, "stored", 3, now=1.0)
    assert _queued(store) == [1, 3]


def test_a_database_error_is_a_storage_error_and_rolls_back(
    store: Store, enrolled: DeviceId
) -> None:
    def broken_insert() -> None:
        with store.transaction() as tx:
            tx.downlinks.queue(enrolled, "stored", 1, now=1.0)
            tx.audit.append(at=1.0, actor="a", action="b", subject="c")
            tx.audit._cur.execute("INSERT INTO audit (id) VALUES (2)")  # breaks NOT NULL

    with pytest.raises(StorageError, match=r"NOT NULL|not-null"):
        broken_insert()
    assert _queued(store) == []
    with store.transaction() as tx:  # the connection is usable again
        tx.downlinks.queue(enrolled, "stored", 2, now=2.0)
    assert _queued(store) == [2]


def test_other_threads_wait_for_an_open_transaction(store: Store, enrolled: DeviceId) -> None:
    seen: list[list[int]] = []
    with store.transaction() as tx:
        tx.downlinks.queue(enrolled, "stored", 1, now=1.0)
        reader = threading.Thread(target=lambda: seen.append(_queued(store)))
        reader.start()
        reader.join(timeout=0.2)
        assert reader.is_alive()  # blocked on the store until this block commits
        tx.downlinks.queue(enrolled, "stored", 2, now=1.0)
    reader.join(timeout=10)
    assert seen == [[1, 2]]


def test_sqlite_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    """Once the hub's timer checkpoints the write-ahead log, a commit never does (it would
    hold the ingest batch behind it); what the commits wrote reaches the database file."""
    store = SqliteStore(tmp_path / "hub.db", create=True)
    try:
        store.checkpoint_log()
        p = parties()
        with store.transaction() as tx:
            tx.devices.enroll(p.device_id, label="Ana", public_keys=p.device.public(), now=1.0)
        for seq in range(3000):  # well past SQLite's own checkpoint, every 1000 pages
            with store.transaction() as tx:
                tx.downlinks.queue(p.device_id, "stored", seq, now=2.0)
        wal = tmp_path / "hub.db-wal"
        before = wal.stat().st_size
        assert before > 2 * 1000 * 4096, (
            before
        )  # no commit checkpointed (SQLite reuses 1000 pages)
        database = (tmp_path / "hub.db").stat().st_size
        store.checkpoint_log()
        assert (tmp_path / "hub.db").stat().st_size > database
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "hub.db") as conn:
        (count,) = conn.execute("SELECT count(*) FROM downlinks").fetchone()
    assert count == 3000
