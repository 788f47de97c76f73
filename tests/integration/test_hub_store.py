"""The hub store, one suite run against SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubstore import postgres_url, store_url
from tests.support.parties import EPOCH, parties
from tests.support.postgres import PostgresServer
from vigil.errors import (
    AlreadyEnrolled,
    NoSuchAlert,
    ReplayedMessage,
    StorageError,
    StoreMissing,
    UnknownDevice,
)
from vigil.hub.store import Alert, AlertKind, AlertState, LastFix, Store, open_store, schema
from vigil.wire import Alarm, DeviceId, DeviceKeys, Heartbeat, Message, Trigger

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_url(request, tmp_path) as url:
        s = open_store(url, create=True)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def enrolled(store: Store) -> DeviceId:
    p = parties()
    with store.transaction() as tx:
        tx.devices.enroll(p.device_id, label="Ana", public_keys=p.device.public(),
                          contacts=["mailto://x@y"], now=5.0)  # fmt: skip
    return p.device_id


def test_enroll_and_get(store: Store, enrolled: DeviceId) -> None:
    with store.read() as tx:
        record = tx.devices.get(enrolled)
        assert tx.devices.get(DeviceId.generate()) is None
    assert record is not None
    assert record.label == "Ana"
    assert record.contacts == ("mailto://x@y",)
    assert record.enrolled_at == 5.0
    assert not record.revoked
    assert record.public_keys.to_text() == parties().device.public().to_text()
    assert store.schema_version() == schema.LATEST


def test_reenrol_same_keys_updates_other_keys_refused(store: Store, enrolled: DeviceId) -> None:
    keys = parties().device.public()
    with store.transaction() as tx:
        tx.devices.enroll(enrolled, label="Ana M.", public_keys=keys)
        record = tx.devices.get(enrolled)
    assert record is not None
    assert record.label == "Ana M."
    with pytest.raises(AlreadyEnrolled), store.transaction() as tx:
        tx.devices.enroll(enrolled, label="Eve", public_keys=DeviceKeys.generate().public())


def test_revoke_then_reenrol_with_new_keys(store: Store, enrolled: DeviceId) -> None:
    new = DeviceKeys.generate().public()
    with store.transaction() as tx:
        tx.devices.revoke(enrolled, now=9.0)
        revoked = tx.devices.get(enrolled)
        tx.devices.enroll(enrolled, label="Ana", public_keys=new)
        again = tx.devices.get(enrolled)
    assert revoked is not None
    assert revoked.revoked_at == 9.0
    assert again is not None
    assert not again.revoked
    assert again.public_keys.to_text() == new.to_text()
    with pytest.raises(UnknownDevice), store.transaction() as tx:
        tx.devices.revoke(DeviceId.generate(), now=1.0)


def test_uplinks_dedup_and_window(store: Store, enrolled: DeviceId) -> None:
    hb = Message(seq=5000, body=Heartbeat(battery=80), epoch=EPOCH)
    older = Message(seq=4999, body=Alarm(Trigger.BUTTON), epoch=EPOCH)
    with store.transaction() as tx:  # many uses of one repository in one transaction
        assert tx.uplinks.accept(enrolled, hb, received_at=1.0) is True
        assert tx.uplinks.accept(enrolled, hb, received_at=2.0) is False
        assert tx.uplinks.accept(enrolled, older, received_at=3.0) is True
    with pytest.raises(ReplayedMessage), store.transaction() as tx:
        tx.uplinks.accept(enrolled, Message(seq=1, body=Heartbeat(), epoch=EPOCH), received_at=4.0)
    with store.transaction() as tx:
        assert tx.uplinks.count() == 2
        assert [u.seq for u in tx.uplinks.unprocessed()] == [5000, 4999]
        tx.uplinks.mark_processed(enrolled, 5000)
        assert [u.seq for u in tx.uplinks.unprocessed()] == [4999]
        stored = tx.uplinks.get(enrolled, 4999)
        assert [u.seq for u in tx.uplinks.recent(after=2.5)] == [4999]
        record = tx.devices.get(enrolled)
    assert stored is not None
    assert stored.kind == "alarm"
    assert record is not None
    assert record.last_seen == 3.0


def test_device_state_keeps_the_newest_fix(store: Store, enrolled: DeviceId) -> None:
    newer = LastFix(17.0, -96.0, taken_at=50.0, received_at=60.0)
    older = LastFix(18.0, -97.0, taken_at=40.0, received_at=70.0)
    with store.transaction() as tx:
        tx.devices.note_state(enrolled, battery=40, fix=newer, gps_fix_at=55.0)
        tx.devices.note_state(enrolled, fix=older)  # arrived later, taken earlier
        tx.devices.note_offline(enrolled, at=80.0)
        record = tx.devices.get(enrolled)
    assert record is not None
    assert (record.battery, record.last_fix, record.gps_fix_at) == (40, newer, 55.0)
    assert record.offline_at == 80.0


def test_downlink_seq_is_per_device_and_persisted(store: Store, enrolled: DeviceId) -> None:
    with store.transaction() as tx:
        assert tx.downlinks.queue(enrolled, "stored", 7, now=1.0) == 0
        assert tx.downlinks.queue(enrolled, "acknowledged", 7, now=2.0) == 1
        pending = tx.downlinks.pending()
        assert [(d.seq, d.kind, d.arg) for d in pending] == [
            (0, "stored", 7),
            (1, "acknowledged", 7),
        ]
        tx.downlinks.mark_sent(pending[0].id, at=3.0)
    with store.read() as tx:
        assert [d.seq for d in tx.downlinks.pending()] == [1]


def test_alerts_positions_and_idempotent_open(store: Store, enrolled: DeviceId) -> None:
    fix = LastFix(17.06, -96.72, taken_at=90.0, received_at=100.0)
    draft = Alert(0, enrolled, AlertKind.ALARM, AlertState.OPEN, 100.0, 100.0, alarm_seq=7,
                  trigger="button", battery=55, last_fix=fix)  # fmt: skip
    with store.transaction() as tx:
        alert = tx.alerts.open(draft)
        assert tx.alerts.open(draft).id == alert.id
        tx.alerts.save(
            Alert(**{**_fields(alert), "state": AlertState.ACKNOWLEDGED, "acknowledged_by": "op"})
        )
        tx.alerts.add_position(alert.id, enrolled, 8, fix)
        tx.alerts.add_position(alert.id, enrolled, 8, fix)
    assert alert.last_fix == fix
    with store.read() as tx:
        again = tx.alerts.get(alert.id)
        assert tx.alerts.find(enrolled, 7) == again
        assert tx.alerts.find(enrolled, 8) is None
        assert tx.alerts.positions(alert.id) == [fix]
        assert [a.id for a in tx.alerts.all(active_only=True)] == [alert.id]
        with pytest.raises(NoSuchAlert):
            tx.alerts.get(alert.id + 1)
    assert again.state is AlertState.ACKNOWLEDGED
    assert again.acknowledged_by == "op"


def test_steps_and_deliveries_never_twice(store: Store, enrolled: DeviceId) -> None:
    recipients = [("ops", "Op 1", "mailto://a@b"), ("ops", "Op 1 again", "mailto://a@b")]
    with store.transaction() as tx:
        alert = tx.alerts.open(Alert(0, enrolled, AlertKind.SILENT, AlertState.OPEN, 1.0, 1.0))
        assert tx.deliveries.fire_step(alert.id, "tier-1", recipients, now=2.0) is True
        assert tx.deliveries.fire_step(alert.id, "tier-1", recipients, now=3.0) is False
        assert tx.deliveries.fired_steps(alert.id) == {"tier-1"}
        (delivery,) = tx.deliveries.due(2.0)
        assert tx.deliveries.claim(delivery.id, now=2.0, lease=60) is True
        assert tx.deliveries.claim(delivery.id, now=2.0, lease=60) is False  # a second hub
        tx.deliveries.record_attempt(delivery.id, at=2.0, ok=False, detail="refused", next_at=4.0)
        assert tx.deliveries.due(3.0) == []
        tx.deliveries.record_attempt(delivery.id, at=4.0, ok=True, detail="sent", next_at=None)
    with store.read() as tx:
        (done,) = tx.deliveries.for_alert(alert.id)
        assert (done.status, done.attempts, done.last_error) == ("sent", 2, None)
        assert [a[2] for a in tx.deliveries.attempts(delivery.id)] == [False, True]


def test_audit_chain_and_rejections(store: Store) -> None:
    with store.transaction() as tx:
        first = tx.audit.append(at=1.0, actor="op", action="ack", subject="alert 1")
        second = tx.audit.append(at=2.0, actor="op", action="resolve", subject="alert 1")
        tx.rejections.count("BadSignature", at=1.0)
        tx.rejections.count("BadSignature", at=2.0)
    assert second.prev_hash == first.hash
    with store.read() as tx:
        assert tx.audit.entries() == [first, second]
        assert tx.audit.entries(after=1) == [second]
        assert tx.audit.head() == (2, second.hash)
        assert tx.rejections.totals() == {"BadSignature": 2}


def _fields(alert: Alert) -> dict[str, object]:
    return {f: getattr(alert, f) for f in alert.__dataclass_fields__}


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


def test_a_missing_store_is_created_only_on_request(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with pytest.raises(StoreMissing, match="vigil-hub init"):
        open_store(url)
    assert not (tmp_path / "hub.db").exists()
    open_store(url, create=True).close()
    open_store(url, create=True).close()  # idempotent
    store = open_store(url)
    try:
        assert store.schema_version() == schema.LATEST
    finally:
        store.close()


def test_an_empty_postgresql_schema_is_not_a_store(postgres: PostgresServer) -> None:
    with postgres_url(postgres) as url:
        with pytest.raises(StoreMissing, match="vigil-hub init"):
            open_store(url)
        open_store(url, create=True).close()
        open_store(url).close()


def test_migrates_a_version_1_store_keeping_its_data(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    with conn:
        for stmt in schema.statements(1, schema.SQLITE):
            conn.execute(stmt)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        keys = parties().device.public().to_text()
        conn.execute(
            "INSERT INTO devices (device_id, label, signing_key, kem_key, enrolled_at, "
            "window_mask) VALUES (?, 'Old', ?, ?, 0, ?)",
            (parties().device_id.hex, keys["signing"], keys["kem"], bytes(512)),
        )
    conn.close()
    store = open_store(f"sqlite:///{db}")  # an existing store is migrated without --create
    try:
        assert store.schema_version() == schema.LATEST == 4
        with store.transaction() as tx:
            record = tx.devices.get(parties().device_id)
            seq = tx.downlinks.queue(parties().device_id, "stored", 1, now=1.0)
            (pending,) = tx.downlinks.pending(now=1.0)
            assert tx.downlinks.claim(pending.id, now=1.0, lease=10) is True
            assert tx.downlinks.pending(now=2.0) == []
            tx.downlinks.release(pending.id)
            assert [d.seq for d in tx.downlinks.pending(now=2.0)] == [seq]
        assert record is not None
        assert record.label == "Old"
    finally:
        store.close()
