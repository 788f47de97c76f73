"""Ingest in batches with one commit: the v2 rules hold inside a batch, a poisoned uplink
loses none of its neighbours, a batch's statements find rows by index and write each device
row once; receipts are pruned after their retention. Real SQLite and PostgreSQL. (Alarms
first: test_hub_alarms_first; across hubs: test_hub_several.)"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.support.hubrig import FakeClock
from tests.support.offline_hub import (
    RecordingTransport,
    enroll_both,
    offline_config,
    offline_service,
    up,
)
from tests.support.offline_hub import published_receipts as receipts
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek, write
from vigil.errors import DecryptionFailed, TransportError
from vigil.hub import pipeline
from vigil.hub.daemon import HubService
from vigil.hub.store import AlertKind, open_store
from vigil.wire import AgedFix, Alarm, Cancel, Fix, Heartbeat, Message, Trigger, open_downlink
from vigil.wire.keys import Suite
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import Checkin, Kind, encode_payload
from vigil.wire.rekey import chunk

pytestmark = pytest.mark.integration


def test_a_batch_keeps_every_v2_rule_and_answers_the_alarm_first(hub: HubService) -> None:
    p = parties()
    beat = Message(seq=1, body=Heartbeat(battery=80), epoch=EPOCH)
    alarm = Message(seq=2, body=Alarm(Trigger.BUTTON, battery=79), epoch=EPOCH)
    clone = Message(seq=1, body=Checkin(), epoch=EPOCH)  # another message signed as seq 1
    batch = [up(beat), up(Message(seq=1, body=Heartbeat(battery=60), epoch=EPOCH), other=True),
             up(beat), up(alarm), up(clone)]  # fmt: skip
    hub.handle_batch(batch)
    store = hub.store
    assert peek(store, lambda tx: tx.uplinks.count()) == 3  # the duplicate is stored once
    alarm_alert, conflict = peek(store, lambda tx: tx.alerts.all())
    assert (alarm_alert.kind, alarm_alert.alarm_seq) == (AlertKind.ALARM, 2)
    assert conflict.kind is AlertKind.CONFLICT  # found inside the batch, never receipted
    # The alarm is answered first; each stored uplink once (the duplicate came too soon).
    assert receipts(hub) == [
        (p.device_id.hex, 2),
        (p.device_id.hex, 1),
        (p.other_id.hex, 1),
    ]
    assert hub.accepted == 3
    # Written as sent with the batch (one write a receipt): nothing waits for the timer.
    assert peek(store, lambda tx: tx.downlinks.pending()) == []
    hub.handle_batch([up(Message(seq=3, body=Checkin(), epoch=EPOCH), other=True)])
    assert len(receipts(hub)) == 4
    assert peek(store, lambda tx: tx.downlinks.pending()) == []
    record = peek(store, lambda tx: tx.devices.get(p.device_id))
    assert record is not None
    assert record.battery == 80  # the heartbeat, handled after the alarm, has the last word


def test_a_poisoned_uplink_in_a_batch_loses_none_of_its_neighbours(
    hub: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    normal = pipeline.HANDLERS[Heartbeat]

    def poisoned(ctx: pipeline.Context, body: object) -> str:
        calls.append(ctx.message.seq)
        if ctx.message.seq == 3:
            raise RuntimeError("poisoned heartbeat")
        return normal(ctx, body)

    monkeypatch.setitem(pipeline.HANDLERS, Heartbeat, poisoned)
    beats = [up(Message(seq=s, body=Heartbeat(battery=50 + s), epoch=EPOCH)) for s in range(6)]
    alarm = up(Message(seq=0, body=Alarm(Trigger.BUTTON), epoch=EPOCH), other=True)
    hub.handle_batch([*beats[:3], alarm, *beats[3:]])
    store = hub.store
    assert peek(store, lambda tx: tx.uplinks.count()) == 7
    (failed,) = peek(store, lambda tx: tx.uplinks.failed())
    assert (failed.seq, failed.error) == (3, "RuntimeError: poisoned heartbeat")
    assert len(peek(store, lambda tx: tx.alerts.all())) == 1  # the alarm's alert is there
    assert sorted(seq for _, seq in receipts(hub)) == [
        0,
        0,
        1,
        2,
        3,
        4,
        5,
    ]  # all receipted
    assert hub.failed == 1
    record = peek(store, lambda tx: tx.devices.get(parties().device_id))
    assert record is not None
    assert record.battery == 55  # the neighbours' handlers ran and stayed
    hub.handle_batch([beats[3]])  # a resend of the poisoned one: never run again
    assert calls.count(3) == 2  # the batch's attempt (rolled back) and the contained one


# -- receipts are pruned after the retention ----------------------------------------------------


def test_sent_receipts_are_pruned_after_the_retention_in_bounded_chunks(hub: HubService) -> None:
    clock = hub.clock
    assert isinstance(clock, FakeClock)
    hub.handle_batch([up(Message(seq=s, body=Heartbeat(), epoch=EPOCH)) for s in range(5)])
    hub.transport = None  # the next one waits, unsent
    hub.handle(*up(Message(seq=5, body=Heartbeat(), epoch=EPOCH)))

    def rows() -> tuple[int, int]:
        def count(tx: object) -> tuple[int, int]:
            cur = tx.downlinks._cur  # type: ignore[attr-defined]
            cur.execute("SELECT COUNT(*) AS n FROM downlinks WHERE sent_at IS NOT NULL")
            sent = int(cur.fetchone()["n"])
            cur.execute("SELECT COUNT(*) AS n FROM downlinks WHERE sent_at IS NULL")
            return sent, int(cur.fetchone()["n"])

        return peek(hub.store, count)

    assert rows() == (5, 1)
    assert hub.prune(clock.now + hub.config.receipt_retention - 1) == 0  # not old enough
    prune: Callable[[float], int] = lambda before: write(  # noqa: E731
        hub.store, lambda tx: tx.downlinks.prune_sent(before=before, limit=2)
    )
    later = clock.now + 1
    assert [prune(later), prune(later), prune(later), prune(later)] == [2, 2, 1, 0]
    assert rows() == (0, 1)  # the unsent receipt stays, whatever its age
    assert peek(hub.store, lambda tx: tx.uplinks.count()) == 6  # uplinks are not touched
    digest = uplink_digest(encode_payload(Message(seq=5, body=Heartbeat(), epoch=EPOCH)))
    assert [d.digest for d in peek(hub.store, lambda tx: tx.downlinks.pending())] == [digest]


def test_a_heartbeats_fix_follows_the_alarm_raised_earlier_in_its_batch(hub: HubService) -> None:
    fix = AgedFix(Fix(lat=17.0, lon=-96.7), age=1.0)
    beat = Message(seq=2, body=Heartbeat(battery=70, fix=fix), epoch=EPOCH)
    other = Message(seq=1, body=Heartbeat(battery=70, fix=fix), epoch=EPOCH)
    alarm = Message(seq=1, body=Alarm(Trigger.BUTTON), epoch=EPOCH)
    hub.handle_batch([up(beat), up(other, other=True), up(alarm)])  # the alarm arrived last
    (alert,) = peek(hub.store, lambda tx: tx.alerts.all())
    assert [(f.lat, f.lon) for f in peek(hub.store, lambda tx: tx.alerts.positions(alert.id))] == [
        (17.0, -96.7)
    ]
    assert alert.device_id == parties().device_id


def test_a_cancel_after_a_tamper_alarm_in_its_batch_sees_the_device_compromised(
    hub: HubService,
) -> None:
    tamper = Message(seq=1, body=Alarm(Trigger.TAMPER), epoch=EPOCH)
    cancel = Message(seq=2, body=Cancel(alarm_seq=1), epoch=EPOCH)
    hub.registry.active(parties().device_id)  # cached before the batch: not compromised
    hub.handle_batch([up(cancel), up(tamper)])
    (alert,) = peek(hub.store, lambda tx: tx.alerts.all())
    assert alert.active  # the cancel came from a device whose keys a captor may hold
    actions = [e.action for e in peek(hub.store, lambda tx: tx.audit.entries())]
    assert "device compromised" in actions
    assert "cancel ignored" in actions


def test_no_statement_of_a_batch_scans_a_table(tmp_path: Path) -> None:
    """Every statement an ingest batch runs finds its rows by index: a scan costs every
    batch time in proportion to the fleet or to history (caught: the replay windows and
    newest downlink keys were looked up with `(a, b) IN (VALUES ...)`, which SQLite
    answers by scanning the table)."""
    clock = FakeClock()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    store = open_store(url, create=True)
    enroll_both(store, clock.now)
    service = offline_service(offline_config(tmp_path, url), store, clock)
    service.transport = RecordingTransport()
    beats = [up(Message(seq=s, body=Heartbeat(battery=90), epoch=EPOCH)) for s in range(3)]
    service.handle_batch([*beats, up(Message(seq=0, body=Checkin(), epoch=EPOCH), other=True)])
    statements: list[str] = []
    conn = store._conn  # type: ignore[attr-defined]
    conn.set_trace_callback(statements.append)
    beats = [up(Message(seq=s, body=Heartbeat(battery=90), epoch=EPOCH)) for s in range(3, 6)]
    alarm = up(Message(seq=1, body=Alarm(Trigger.BUTTON), epoch=EPOCH), other=True)
    service.handle_batch([*beats, alarm])
    conn.set_trace_callback(None)
    queries = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE"))]
    assert len(queries) > 5
    scans = []
    for sql in queries:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        scans += [(sql, p) for p in plan if p.startswith("SCAN") and "CONSTANT ROW" not in p]
    store.close()
    assert scans == []


def test_a_batch_writes_each_device_row_once(tmp_path: Path) -> None:
    """Whatever a batch holds from a device (heartbeats with battery and fix, receipts, proof
    of life), its row is written by ONE statement: three heartbeats cost what one does."""
    clock, p = FakeClock(), parties()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    store = open_store(url, create=True)
    enroll_both(store, clock.now)
    service = offline_service(offline_config(tmp_path, url), store, clock)
    service.transport = RecordingTransport()
    fixes = [AgedFix(Fix(lat=lat, lon=13.4), age=age) for lat, age in ((52.1, 5), (52.2, 1),
                                                                      (52.3, 9))]  # fmt: skip
    first = [up(Message(seq=0, body=Checkin(), epoch=EPOCH), other=is_other)
             for is_other in (False, True)]  # fmt: skip
    service.handle_batch(first)  # each life begins (a write of its own, once a life)
    beats = [up(Message(seq=s, body=Heartbeat(battery=90 - s, fix=f), epoch=EPOCH))
             for s, f in enumerate(fixes, start=1)]  # fmt: skip
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    service.handle_batch([*beats, up(Message(seq=1, body=Checkin(), epoch=EPOCH), other=True)])
    store._conn.set_trace_callback(None)  # type: ignore[attr-defined]
    assert len([s for s in statements if s.lstrip().startswith("UPDATE devices")]) == 2
    record = peek(store, lambda tx: tx.devices.get(p.device_id))
    assert record is not None
    assert record.battery == 87  # the last heartbeat's word
    assert record.last_fix is not None
    assert record.last_fix.lat == 52.2  # the fix taken last, not the one heard last
    assert record.down_seq == 3  # its four receipts
    assert record.last_seen == clock.now
    store.close()


def test_receipts_the_broker_did_not_take_are_sent_by_the_timer(hub: HubService) -> None:
    """Receipts are written as sent with their batch; those whose publish fails are given
    back, and the timer's flush sends them once the broker takes them again."""
    transport = hub.transport
    assert isinstance(transport, RecordingTransport)
    publish = transport.publish

    def refusing(topic: str, payload: bytes, *, qos: int = 1) -> None:
        if transport.published:
            raise TransportError("broker away")
        publish(topic, payload, qos=qos)

    transport.publish = refusing  # type: ignore[method-assign]
    hub.handle_batch([up(Message(seq=s, body=Heartbeat(battery=90), epoch=EPOCH))
                      for s in range(3)])  # fmt: skip
    assert len(receipts(hub)) == 1
    transport.publish = publish  # type: ignore[method-assign]
    hub.tick()  # gives the two back, then sends them
    assert sorted(seq for _, seq in receipts(hub)) == [0, 1, 2]
    assert peek(hub.store, lambda tx: tx.downlinks.pending()) == []


def test_receipts_of_a_batch_that_rotates_a_key_are_sealed_to_the_new_key(
    hub: HubService,
) -> None:
    """A batch whose heartbeats complete a new downlink key answers with that key (§11.2),
    also where receipts were sealed while the batch's writes ran (PostgreSQL)."""
    p = parties()
    new = X25519PrivateKey.generate()
    text = base64.b64encode(new.public_key().public_bytes_raw()).decode()
    parts = [chunk(text, offset=o, room=16) for o in range(0, len(text), 16)]
    beats = [Heartbeat(battery=90, rekey=part) for part in parts] + [Heartbeat(battery=89)]
    hub.handle_batch([up(Message(seq=s, body=b, epoch=EPOCH)) for s, b in enumerate(beats)])
    transport = hub.transport
    assert isinstance(transport, RecordingTransport)
    assert len(transport.published) == len(beats)
    for _, envelope in transport.published:
        rotated = {Suite.X25519_CHACHA20: new}
        opened = open_downlink(envelope, device_id=p.device_id, device_keys=rotated,
                               hub=p.hub.public())  # fmt: skip
        assert opened.kind is Kind.STORED
        with pytest.raises(DecryptionFailed):
            open_downlink(envelope, device_id=p.device_id, device_keys=p.device,
                          hub=p.hub.public())  # fmt: skip
