"""The hub store, one suite run against SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hubstore import store_url
from tests.support.parties import parties
from vigil.errors import AlreadyEnrolled, ReplayedMessage, UnknownDevice
from vigil.hub.store import Alert, AlertKind, AlertState, LastFix, Store, open_store, schema
from vigil.wire import Alarm, DeviceId, DeviceKeys, Heartbeat, Message, Trigger

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with store_url(request, tmp_path) as url:
        s = open_store(url)
        try:
            yield s
        finally:
            s.close()


@pytest.fixture
def enrolled(store: Store) -> DeviceId:
    p = parties()
    store.enroll_device(
        p.device_id, label="Ana", public_keys=p.device.public(), contacts=["mailto://x@y"], now=5.0
    )
    return p.device_id


def test_enroll_and_get(store: Store, enrolled: DeviceId) -> None:
    record = store.get_device(enrolled)
    assert record is not None
    assert record.label == "Ana"
    assert record.contacts == ("mailto://x@y",)
    assert record.enrolled_at == 5.0
    assert not record.revoked
    assert record.public_keys.to_text() == parties().device.public().to_text()
    assert store.get_device(DeviceId.generate()) is None
    assert store.schema_version() == schema.LATEST


def test_reenrol_same_keys_updates_other_keys_refused(store: Store, enrolled: DeviceId) -> None:
    keys = parties().device.public()
    store.enroll_device(enrolled, label="Ana M.", public_keys=keys)
    record = store.get_device(enrolled)
    assert record is not None
    assert record.label == "Ana M."
    with pytest.raises(AlreadyEnrolled):
        store.enroll_device(enrolled, label="Eve", public_keys=DeviceKeys.generate().public())


def test_revoke_then_reenrol_with_new_keys(store: Store, enrolled: DeviceId) -> None:
    store.revoke_device(enrolled, now=9.0)
    record = store.get_device(enrolled)
    assert record is not None
    assert record.revoked_at == 9.0
    new = DeviceKeys.generate().public()
    store.enroll_device(enrolled, label="Ana", public_keys=new)
    record = store.get_device(enrolled)
    assert record is not None
    assert not record.revoked
    assert record.public_keys.to_text() == new.to_text()
    with pytest.raises(UnknownDevice):
        store.revoke_device(DeviceId.generate())


def test_uplinks_dedup_and_window(store: Store, enrolled: DeviceId) -> None:
    hb = Message(seq=5000, body=Heartbeat(battery=80))
    assert store.accept_uplink(enrolled, hb, received_at=1.0) is True
    assert store.accept_uplink(enrolled, hb, received_at=2.0) is False
    older = Message(seq=4999, body=Alarm(Trigger.BUTTON))
    assert store.accept_uplink(enrolled, older, received_at=3.0) is True
    with pytest.raises(ReplayedMessage):
        store.accept_uplink(enrolled, Message(seq=1, body=Heartbeat()), received_at=4.0)
    assert store.count_uplinks() == 2
    assert [u.seq for u in store.unprocessed_uplinks()] == [5000, 4999]
    store.mark_processed(enrolled, 5000)
    assert [u.seq for u in store.unprocessed_uplinks()] == [4999]
    stored = store.get_uplink(enrolled, 4999)
    assert stored is not None
    assert stored.kind == "alarm"
    record = store.get_device(enrolled)
    assert record is not None
    assert record.last_seen == 3.0


def test_downlink_seq_is_per_device_and_persisted(store: Store, enrolled: DeviceId) -> None:
    assert store.queue_downlink(enrolled, "stored", 7, now=1.0) == 0
    assert store.queue_downlink(enrolled, "acknowledged", 7, now=2.0) == 1
    pending = store.pending_downlinks()
    assert [(d.seq, d.kind, d.arg) for d in pending] == [(0, "stored", 7), (1, "acknowledged", 7)]
    store.mark_downlink_sent(pending[0].id, at=3.0)
    assert [d.seq for d in store.pending_downlinks()] == [1]


def test_alerts_positions_and_idempotent_open(store: Store, enrolled: DeviceId) -> None:
    fix = LastFix(17.06, -96.72, taken_at=90.0, received_at=100.0)
    draft = Alert(0, enrolled, AlertKind.ALARM, AlertState.OPEN, 100.0, 100.0, alarm_seq=7,
                  trigger="button", battery=55, last_fix=fix)  # fmt: skip
    alert = store.open_alert(draft)
    assert store.open_alert(draft).id == alert.id
    assert alert.last_fix == fix
    store.save_alert(
        Alert(**{**_fields(alert), "state": AlertState.ACKNOWLEDGED, "acknowledged_by": "op"})
    )
    again = store.get_alert(alert.id)
    assert again.state is AlertState.ACKNOWLEDGED
    assert again.acknowledged_by == "op"
    assert store.find_alert(enrolled, 7) == again
    store.add_position(alert.id, enrolled, 8, fix)
    store.add_position(alert.id, enrolled, 8, fix)
    assert store.positions(alert.id) == [fix]
    assert [a.id for a in store.list_alerts(active_only=True)] == [alert.id]


def test_steps_and_deliveries_never_twice(store: Store, enrolled: DeviceId) -> None:
    alert = store.open_alert(Alert(0, enrolled, AlertKind.SILENT, AlertState.OPEN, 1.0, 1.0))
    recipients = [("ops", "Op 1", "mailto://a@b"), ("ops", "Op 1 again", "mailto://a@b")]
    assert store.fire_step(alert.id, "tier-1", recipients, now=2.0) is True
    assert store.fire_step(alert.id, "tier-1", recipients, now=3.0) is False
    assert store.fired_steps(alert.id) == {"tier-1"}
    (delivery,) = store.due_deliveries(2.0)
    assert store.claim_delivery(delivery.id, now=2.0, lease=60) is True
    assert store.claim_delivery(delivery.id, now=2.0, lease=60) is False  # a second hub
    store.record_attempt(delivery.id, at=2.0, ok=False, detail="refused", next_at=4.0)
    assert store.due_deliveries(3.0) == []
    store.record_attempt(delivery.id, at=4.0, ok=True, detail="sent", next_at=None)
    assert store.deliveries(alert.id)[0].status == "sent"
    assert [a[2] for a in store.attempts(delivery.id)] == [False, True]


def test_audit_chain_and_rejections(store: Store) -> None:
    first = store.append_audit(at=1.0, actor="op", action="ack", subject="alert 1")
    second = store.append_audit(at=2.0, actor="op", action="resolve", subject="alert 1")
    assert second.prev_hash == first.hash
    assert store.audit_entries() == [first, second]
    assert store.audit_head() == (2, second.hash)
    store.count_rejection("BadSignature", at=1.0)
    store.count_rejection("BadSignature", at=2.0)
    assert store.rejections() == {"BadSignature": 2}


def _fields(alert: Alert) -> dict[str, object]:
    return {f: getattr(alert, f) for f in alert.__dataclass_fields__}


def test_atomic_commits_all_or_nothing(store: Store, enrolled: DeviceId) -> None:
    with store.atomic():
        store.queue_downlink(enrolled, "stored", 1, now=1.0)
        store.queue_downlink(enrolled, "stored", 2, now=1.0)
    assert len(store.pending_downlinks()) == 2

    def failing_handler() -> None:
        with store.atomic():
            store.queue_downlink(enrolled, "stored", 3, now=2.0)
            raise RuntimeError("handler bug")

    with pytest.raises(RuntimeError):
        failing_handler()
    assert [d.arg for d in store.pending_downlinks()] == [1, 2]
    assert store.queue_downlink(enrolled, "stored", 4, now=3.0) == 2  # seq 2 was rolled back


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
    store = open_store(f"sqlite:///{db}")
    try:
        assert store.schema_version() == schema.LATEST == 3
        record = store.get_device(parties().device_id)
        assert record is not None
        assert record.label == "Old"
        seq = store.queue_downlink(parties().device_id, "stored", 1, now=1.0)
        (pending,) = store.pending_downlinks(now=1.0)
        assert store.claim_downlink(pending.id, now=1.0, lease=10) is True
        assert store.pending_downlinks(now=2.0) == []
        store.release_downlink(pending.id)
        assert [d.seq for d in store.pending_downlinks(now=2.0)] == [seq]
    finally:
        store.close()
