"""The durable outbox: survives abrupt closes, never repeats a seq, alarms first and kept."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.device.atrest import StateKey
from vigil.device.outbox import HARD_LIMIT, PRIORITY, Outbox
from vigil.errors import StorageError
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import Kind
from vigil.wire.replay import ReplayWindow, Verdict

OpenBox = Callable[..., Outbox]


@pytest.fixture
def open_box() -> Iterator[OpenBox]:
    """`Outbox.open`, and every outbox it opened closed after the test: from Python 3.13 an
    unclosed SQLite connection is a ResourceWarning wherever the GC finds it (another test)."""
    opened: list[Outbox] = []

    def open_box(path: Path, **options: Any) -> Outbox:
        box = Outbox.open(path, **options)
        opened.append(box)
        return box

    yield open_box
    for box in opened:
        box.close()


def open_files(path: Path) -> list[str]:
    """This process's descriptors open on `path` (a refused outbox must keep none)."""
    fds = Path("/proc/self/fd")
    return [fd.name for fd in fds.iterdir() if os.path.realpath(fd) == str(path.resolve())]


def env(seq: int) -> bytes:
    """A stand-in for a signed payload: the outbox stores it and hashes it, never reads it."""
    return seq.to_bytes(4, "big") * 16


def test_put_then_reopen_keeps_entries_counter_and_epoch(
    tmp_path: Path, open_box: OpenBox
) -> None:
    path = tmp_path / "o.sqlite3"
    box = open_box(path)
    epoch = box.epoch
    box.put(0, Kind.POSITION, env(0))
    box.put(1, Kind.ALARM, env(1))
    box.close()
    box = open_box(path)
    assert box.next_seq == 2
    assert box.epoch == epoch
    assert [(e.seq, e.kind, e.payload) for e in box.due(0.0)] == [
        (1, Kind.ALARM, env(1)),
        (0, Kind.POSITION, env(0)),
    ]


def test_a_new_outbox_is_a_new_life_with_its_own_epoch(tmp_path: Path, open_box: OpenBox) -> None:
    """Seqs restart with a new database: the epoch keeps the hub from taking it as a replay."""
    first = open_box(tmp_path / "a.sqlite3")
    second = open_box(tmp_path / "b.sqlite3")
    assert first.epoch != second.epoch
    assert first.next_seq == second.next_seq == 0


def test_heartbeats_are_never_queued_but_spend_their_seq(
    tmp_path: Path, open_box: OpenBox
) -> None:
    path = tmp_path / "o.sqlite3"
    box = open_box(path)
    with pytest.raises(ValueError, match="heartbeat"):
        box.put(0, Kind.HEARTBEAT, env(0))
    assert box.next_seq == 0  # a refused put spends nothing
    box.reserve(0)
    box.reserve(5)
    assert (box.next_seq, len(box), box.pending()) == (6, 0, [])
    with pytest.raises(StorageError, match="already used"):
        box.reserve(5)
    with pytest.raises(StorageError, match="already used"):
        box.put(3, Kind.ALARM, env(3))
    box.close()
    assert open_box(path).next_seq == 6


def test_digests_name_what_a_receipt_must_answer(tmp_path: Path, open_box: OpenBox) -> None:
    box = open_box(tmp_path / "o.sqlite3")
    box.put(0, Kind.ALARM, env(0))
    box.put(1, Kind.CANCEL, env(1))
    box.put(2, Kind.ALARM, env(2))
    assert box.digest(0) == uplink_digest(env(0)) == box.due(0.0)[0].digest
    assert box.digest(1) == uplink_digest(env(1))
    assert box.digest(7) is None
    assert box.waiting() == (3, 0)
    assert box.pending_alarms() == [0, 2]
    assert box.ack(0)
    assert box.digest(0) is None  # no longer waiting for a `stored`
    assert box.alarm_digest(0) == uplink_digest(env(0))  # still answerable by ack/resolve
    assert box.alarm_digest(1) is None  # a cancel is no alarm
    assert box.waiting() == (2, 1)
    assert box.pending_alarms() == [2]
    box.forget_alarms(keep={2})
    assert box.alarm_digest(0) is None
    assert box.alarm_digest(2) == uplink_digest(env(2))
    box.ack(1)
    box.ack(2)
    assert box.waiting() == (0, None)


@pytest.mark.parametrize("with_key", [True, False])
def test_a_version_1_outbox_starts_a_new_life(
    tmp_path: Path, with_key: bool, open_box: OpenBox
) -> None:
    """Its sealed version-1 envelopes are unanswerable now: dropped, with a fresh epoch."""
    path = tmp_path / "o.sqlite3"
    if with_key:
        StateKey.create(tmp_path / "state.key")
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('next_seq', 9);"
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
        "priority INTEGER NOT NULL, envelope BLOB NOT NULL);"
        "INSERT INTO outbox VALUES (8, 'alarm', 3, x'00');"
    )
    old.close()
    box = open_box(path)
    assert (box.pending(), box.next_seq) == ([], 0)
    box.put(0, Kind.ALARM, env(0))
    epoch = box.epoch
    box.close()
    again = open_box(path)  # upgraded once, not again
    assert (again.pending(), again.epoch) == ([0], epoch)


def test_killed_process_loses_nothing_and_seq_never_repeats(
    tmp_path: Path, open_box: OpenBox
) -> None:
    """A child commits an alarm and is SIGKILLed without closing: the entry and counter stay."""
    path = tmp_path / "o.sqlite3"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from vigil.device.outbox import Outbox\n"
        "from vigil.wire.messages import Kind\n"
        "box = Outbox.open(Path(sys.argv[1]))\n"
        "for seq in range(box.next_seq, box.next_seq + 3):\n"
        "    box.put(seq, Kind.ALARM, b'x' * 40)\n"
        "box.ack(box.next_seq - 1)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", code, str(path)], check=False)
        assert proc.returncode == -9
    box = open_box(path)
    assert box.next_seq == 6  # the acked seqs 2 and 5 are never handed out again
    assert box.pending() == [0, 1, 3, 4]
    with pytest.raises(StorageError, match="already used"):
        box.put(5, Kind.ALARM, b"y")
    with pytest.raises(StorageError, match="already used"):
        box.put(2, Kind.ALARM, b"y")


def test_counter_survives_an_empty_outbox(tmp_path: Path, open_box: OpenBox) -> None:
    path = tmp_path / "o.sqlite3"
    box = open_box(path)
    box.put(10, Kind.CHECKIN, env(10))
    assert box.ack(10)
    assert not box.ack(10)
    box.close()
    assert open_box(path).next_seq == 11


def test_durability_pragmas(tmp_path: Path, open_box: OpenBox) -> None:
    box = open_box(tmp_path / "o.sqlite3")
    box.put(0, Kind.ALARM, b"e")
    conn = sqlite3.connect(tmp_path / "o.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert box._conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    conn.close()


def test_priority_alarms_then_cancels_then_positions(tmp_path: Path, open_box: OpenBox) -> None:
    box = open_box(tmp_path / "o.sqlite3")
    kinds = [
        Kind.POSITION,
        Kind.POSITION,
        Kind.ALARM,
        Kind.POSITION,
        Kind.CANCEL,
        Kind.ALARM,
        Kind.CHECKIN,
    ]
    for seq, kind in enumerate(kinds):
        box.put(seq, kind, env(seq))
    assert box.pending() == [2, 5, 4, 6, 0, 1, 3]


def test_full_outbox_drops_oldest_positions_never_alarms(
    tmp_path: Path, open_box: OpenBox
) -> None:
    box = open_box(tmp_path / "o.sqlite3", capacity=16)
    for seq in range(8):
        box.put(seq, Kind.POSITION, env(seq))
    for seq in range(8, 16):
        box.put(seq, Kind.ALARM, env(seq))
    assert box.put(16, Kind.POSITION, env(16)) == [0]
    assert box.put(17, Kind.ALARM, env(17)) == [1]
    assert len(box) == 16
    for seq in range(18, 24):  # the remaining positions make room, oldest first
        assert box.put(seq, Kind.ALARM, env(seq)) == [seq - 16]
    assert box.put(24, Kind.ALARM, env(24)) == [16]
    assert box.put(25, Kind.ALARM, env(25)) == []  # then alarms go over capacity
    with pytest.raises(StorageError, match="cannot queue"):
        box.put(26, Kind.POSITION, env(26))
    with pytest.raises(StorageError, match="cannot queue"):
        box.put(27, Kind.CANCEL, env(27))
    assert all(e.kind is Kind.ALARM for e in box.due(0.0, limit=100))
    assert len(box) == 17


def test_alarms_have_a_hard_limit_inside_the_replay_window(tmp_path: Path) -> None:
    assert HARD_LIMIT < 4096
    path = tmp_path / "o.sqlite3"
    with pytest.raises(ValueError, match="capacity") as refused:
        Outbox.open(path, capacity=4096, retry_initial=1, retry_max=2)
    assert refused.traceback  # its frames, which hold the connection, are still alive
    assert open_files(path) == []


def test_retry_backoff_and_link_up(tmp_path: Path, open_box: OpenBox) -> None:
    box = open_box(tmp_path / "o.sqlite3", retry_initial=10, retry_max=40, rand=lambda: 1.0)
    box.put(0, Kind.ALARM, env(0))
    box.put(1, Kind.POSITION, env(1))
    box.mark_sent(0, now=100.0)
    assert [e.seq for e in box.due(100.0)] == [1]
    assert box.next_retry() == 110.0
    assert [e.seq for e in box.due(110.0)] == [0, 1]
    delays = []
    for now in (110.0, 200.0, 300.0, 400.0):
        box.mark_sent(0, now)
        delays.append((box.next_retry() or 0.0) - now)
    assert delays == [20.0, 40.0, 40.0, 40.0]
    box.retry_all_now()
    assert [e.seq for e in box.due(0.0)] == [0, 1]
    assert box.ack(0)
    assert box.next_retry() is None


def test_retries_are_jittered(tmp_path: Path, open_box: OpenBox) -> None:
    draws = iter([0.25, 0.0, 0.5])
    box = open_box(
        tmp_path / "o.sqlite3", retry_initial=10, retry_max=40, rand=lambda: next(draws)
    )
    box.put(0, Kind.ALARM, env(0))
    delays = []
    for now in (100.0, 200.0, 300.0):
        box.mark_sent(0, now)
        delays.append((box.next_retry() or 0.0) - now)
    assert delays == [2.5, 0.0, 20.0]  # a quarter of 10, nothing of 20, half of 40


def test_downlink_window_persists(tmp_path: Path, open_box: OpenBox) -> None:
    path = tmp_path / "o.sqlite3"
    box = open_box(path)
    assert box.downlink_window() == ReplayWindow()
    window = ReplayWindow().accept(7).accept(4090).accept(3)
    box.save_downlink_window(window)
    box.close()
    again = open_box(path).downlink_window()
    assert again == window
    assert again.check(7) is Verdict.DUPLICATE


def test_unknown_kind_and_broken_file(tmp_path: Path, open_box: OpenBox) -> None:
    box = open_box(tmp_path / "o.sqlite3")
    with pytest.raises(ValueError, match="selfie"):
        box.put(0, "selfie", b"")  # type: ignore[arg-type]
    bad = tmp_path / "bad" / "bad.sqlite3"
    bad.parent.mkdir()
    StateKey.create(bad.parent / "state.key")
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="cannot open") as refused:
        Outbox.open(bad)
    assert refused.traceback
    assert open_files(bad) == []
    tmp_path.chmod(0o500)
    try:
        if os.geteuid() != 0:
            with pytest.raises(StorageError):
                open_box(tmp_path / "new" / "o.sqlite3")
    finally:
        tmp_path.chmod(0o700)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([k for k in PRIORITY if k is not Kind.HEARTBEAT]), max_size=60))
def test_alarms_are_never_dropped(
    tmp_path_factory: pytest.TempPathFactory, kinds: list[Kind]
) -> None:
    with Outbox.open(tmp_path_factory.mktemp("o") / "o.sqlite3", capacity=16) as box:
        stored_alarms = []
        for seq, kind in enumerate(kinds):
            try:
                box.put(seq, kind, env(seq))
            except StorageError:
                assert kind is not Kind.ALARM
                continue
            if kind is Kind.ALARM:
                stored_alarms.append(seq)
        pending = box.pending()
    assert [s for s in pending if s in stored_alarms] == stored_alarms
    assert pending[: len(stored_alarms)] == stored_alarms


def test_state_given_with_an_entry_is_committed_with_it_or_not_at_all(
    tmp_path: Path, open_box: OpenBox
) -> None:
    path = tmp_path / "o.sqlite3"
    box = open_box(path)
    box.put(0, Kind.ALARM, env(0), state=("memory", "active"))
    with pytest.raises(StorageError, match="already used"):
        box.put(0, Kind.ALARM, env(0), state=("memory", "idle"))
    box.close()
    again = open_box(path)
    assert again.pending() == [0]
    assert again.load_state("memory") == "active"
