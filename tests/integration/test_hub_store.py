"""The hub store, one suite run against SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.hubstore import postgres_url, store_url
from tests.support.parties import EPOCH, OTHER_EPOCH, parties
from tests.support.postgres import PostgresServer
from vigil.errors import (
    AlreadyEnrolled,
    NoSuchAlert,
    ReplayedMessage,
    StorageError,
    StoreMissing,
    UnknownDevice,
)
from vigil.hub.store import (
    Acceptance,
    Accepted,
    Alert,
    AlertKind,
    AlertState,
    LastFix,
    Store,
    open_store,
    schema,
    traffic,
)
from vigil.wire import Alarm, Checkin, DeviceId, DeviceKeys, Heartbeat, Message, Trigger
from vigil.wire.liveness import Epoch, uplink_digest
from vigil.wire.messages import encode_payload

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
    digest = uplink_digest(encode_payload(hb))
    with store.transaction() as tx:  # many uses of one repository in one transaction
        first = tx.uplinks.accept(enrolled, hb, received_at=1.0)
        assert first == Accepted(Acceptance.NEW, digest, None, new_epoch=True)
        assert tx.uplinks.accept(enrolled, hb, received_at=2.0) == Accepted(
            Acceptance.DUPLICATE, digest
        )
        assert tx.uplinks.accept(enrolled, older, received_at=3.0).status is Acceptance.NEW
    with pytest.raises(ReplayedMessage), store.transaction() as tx:
        tx.uplinks.accept(enrolled, Message(seq=1, body=Heartbeat(), epoch=EPOCH), received_at=4.0)
    with store.transaction() as tx:
        assert tx.uplinks.count() == 2
        assert [u.seq for u in tx.uplinks.unprocessed()] == [5000, 4999]
        tx.uplinks.mark_processed(enrolled, EPOCH.hex, 5000)
        assert [u.seq for u in tx.uplinks.unprocessed()] == [4999]
        stored = tx.uplinks.get(enrolled, EPOCH.hex, 4999)
        assert tx.uplinks.get(enrolled, OTHER_EPOCH.hex, 4999) is None
        assert tx.uplinks.has(enrolled, EPOCH.hex, 4999)
        assert not tx.uplinks.has(enrolled, EPOCH.hex, 4998)
        assert [u.seq for u in tx.uplinks.recent(after=2.5)] == [4999]
        record = tx.devices.get(enrolled)
    assert stored is not None
    assert (stored.kind, stored.epoch) == ("alarm", EPOCH.hex)
    assert stored.digest == uplink_digest(encode_payload(older))
    assert record is not None
    assert (record.last_seen, record.epoch, record.alive_at) == (3.0, EPOCH.hex, 1.0)


def test_a_seq_signed_twice_is_a_conflict_not_a_duplicate(
    store: Store, enrolled: DeviceId
) -> None:
    alarm = Message(seq=3, body=Alarm(Trigger.BUTTON), epoch=EPOCH)
    clone = Message(seq=3, body=Alarm(Trigger.TAMPER), epoch=EPOCH)
    with store.transaction() as tx:
        tx.uplinks.accept(enrolled, alarm, received_at=1.0)
        conflict = tx.uplinks.accept(enrolled, clone, received_at=2.0)
        kept = tx.uplinks.get(enrolled, EPOCH.hex, 3)
    assert conflict == Accepted(Acceptance.CONFLICT, uplink_digest(encode_payload(clone)))
    assert kept is not None
    assert kept.digest == uplink_digest(encode_payload(alarm))  # the first one stays


def test_a_new_epoch_is_a_new_life_with_its_own_window(store: Store, enrolled: DeviceId) -> None:
    """Seqs restarting under a new epoch are new, not replays (docs/protocol.md §7)."""
    with store.transaction() as tx:
        tx.uplinks.accept(
            enrolled, Message(seq=5000, body=Checkin(), epoch=EPOCH), received_at=1.0
        )
        again = tx.uplinks.accept(enrolled, Message(seq=0, body=Checkin(), epoch=OTHER_EPOCH),
                                  received_at=2.0)  # fmt: skip
        back = tx.uplinks.accept(enrolled, Message(seq=4999, body=Checkin(), epoch=EPOCH),
                                 received_at=3.0)  # fmt: skip
        record = tx.devices.get(enrolled)
    assert (again.status, again.previous_epoch, again.new_epoch) == (
        Acceptance.NEW, EPOCH.hex, True)  # fmt: skip
    assert (back.status, back.new_epoch) == (Acceptance.NEW, False)  # the old life's window
    assert record is not None
    assert (record.epoch, record.alive_at) == (OTHER_EPOCH.hex, 2.0)


def test_duplicate_receipts_are_rate_limited(store: Store, enrolled: DeviceId) -> None:
    every = traffic.RECEIPT_EVERY
    with store.transaction() as tx:
        for seq in range(30):
            message = Message(seq=seq, body=Checkin(), epoch=EPOCH)
            tx.uplinks.accept(enrolled, message, received_at=100.0)
        may = functools.partial(tx.uplinks.may_receipt, enrolled, EPOCH.hex)
        assert may(0, now=100.0 + every - 0.1) is False  # the first receipt went just now
        assert may(0, now=100.0 + every) is True
        assert may(0, now=100.0 + 2 * every - 0.1) is False
        assert may(99, now=200.0) is False  # never stored: nothing to answer
        answered = [may(seq, now=100.0 + every) for seq in range(1, 30)]
    cap = traffic.DUPLICATE_RECEIPTS_PER_MINUTE
    assert answered == [True] * (cap - 1) + [False] * (30 - cap)  # seq 0 used one already
    with store.transaction() as tx:
        assert tx.uplinks.may_receipt(enrolled, EPOCH.hex, 29, now=100.0 + every + 60.0)


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
                  alarm_epoch=EPOCH.hex, trigger="button", battery=55, last_fix=fix)  # fmt: skip
    with store.transaction() as tx:
        alert = tx.alerts.open(draft)
        assert tx.alerts.open(draft).id == alert.id
        tx.alerts.save(
            Alert(**{**_fields(alert), "state": AlertState.ACKNOWLEDGED, "acknowledged_by": "op"})
        )
        tx.alerts.add_position(alert.id, enrolled, EPOCH.hex, 8, fix)
        tx.alerts.add_position(alert.id, enrolled, EPOCH.hex, 8, fix)
        # The same alarm seq in a new life of the device is another alarm.
        reborn = tx.alerts.open(replace(draft, alarm_epoch=OTHER_EPOCH.hex))
        tx.alerts.add_position(reborn.id, enrolled, OTHER_EPOCH.hex, 8, fix)
    assert alert.last_fix == fix
    with store.read() as tx:
        again = tx.alerts.get(alert.id)
        assert tx.alerts.find(enrolled, EPOCH.hex, 7) == again
        assert tx.alerts.find(enrolled, EPOCH.hex, 8) is None
        assert tx.alerts.find(enrolled, OTHER_EPOCH.hex, 7) == tx.alerts.get(reborn.id)
        assert tx.alerts.positions(alert.id) == [fix]
        assert tx.alerts.positions(reborn.id) == [fix]
        assert [a.id for a in tx.alerts.all(active_only=True)] == [alert.id, reborn.id]
        with pytest.raises(NoSuchAlert):
            tx.alerts.get(reborn.id + 1)
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
        device = parties().device_id.hex
        conn.execute(
            "INSERT INTO devices (device_id, label, signing_key, kem_key, enrolled_at, "
            "window_highest, window_mask) VALUES (?, 'Old', ?, ?, 0, 5000, ?)",
            (device, keys["signing"], keys["kem"], bytes(511) + b"\x01"),
        )
        conn.execute("INSERT INTO uplinks VALUES (?, 3, 'alarm', x'7b7d', 5.0, 1)", (device,))
        conn.execute(
            "INSERT INTO alerts (device_id, kind, state, opened_at, updated_at, alarm_seq, "
            "trigger) VALUES (?, 'alarm', 'open', 5.0, 5.0, 3, 'button')",
            (device,),
        )
        conn.execute("INSERT INTO positions VALUES (?, 4, 1, 1.0, 2.0, 6.0, 6.0)", (device,))
    conn.close()
    store = open_store(f"sqlite:///{db}")  # an existing store is migrated without --create
    try:
        assert store.schema_version() == schema.LATEST == 7
        legacy, device_id = schema.LEGACY_EPOCH, parties().device_id
        with store.transaction() as tx:  # version-1 rows live on under the legacy epoch
            old = tx.uplinks.get(device_id, legacy, 3)
            alert = tx.alerts.find(device_id, legacy, 3)
            assert alert is not None
            assert tx.alerts.positions(alert.id) == [LastFix(1.0, 2.0, 6.0, 6.0)]
            with pytest.raises(ReplayedMessage):  # its replay window came along
                tx.uplinks.accept(device_id, Message(5, Checkin(), epoch=Epoch.parse(legacy)),
                                  received_at=7.0)  # fmt: skip
        with store.transaction() as tx:
            fresh = tx.uplinks.accept(
                device_id, Message(3, Checkin(), epoch=EPOCH), received_at=8.0
            )
            record = tx.devices.get(parties().device_id)
            seq = tx.downlinks.queue(parties().device_id, "stored", 1, now=1.0)
            (pending,) = tx.downlinks.pending(now=1.0)
            assert tx.downlinks.claim(pending.id, now=1.0, lease=10) is True
            assert tx.downlinks.pending(now=2.0) == []
            tx.downlinks.release(pending.id)
            assert [d.seq for d in tx.downlinks.pending(now=2.0)] == [seq]
        assert record is not None
        assert (record.label, record.epoch) == ("Old", EPOCH.hex)
        assert old is not None
        assert (old.kind, old.processed, old.digest) == ("alarm", True, None)
        assert fresh.status is Acceptance.NEW
    finally:
        store.close()
