"""Ingest in batches with one commit: the v2 rules hold inside a batch, a poisoned uplink
loses none of its neighbours, a batch's statements find rows by index and write each device
row once; the registry cache, receipt pruning and the watchdog lease across hubs. Real SQLite
and PostgreSQL. (Alarms first: test_hub_alarms_first.)"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.support.hubrig import FakeClock
from tests.support.hubstore import postgres_url
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
from tests.support.postgres import PostgresServer
from tests.support.sinks import smtp_sink, webhook_sink
from vigil.errors import DecryptionFailed, StorageError, TransportError
from vigil.hub import pipeline
from vigil.hub.config import HubConfig
from vigil.hub.daemon import HubService
from vigil.hub.store import AlertKind, DeviceRecord, Transaction, open_store
from vigil.wire import AgedFix, Alarm, Cancel, Fix, Heartbeat, Message, Trigger, open_downlink
from vigil.wire.keys import Suite
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import Checkin, Kind, encode_payload
from vigil.wire.rekey import chunk

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, url: str) -> HubConfig:
    with smtp_sink() as smtp, webhook_sink() as hook:
        return offline_config(tmp_path, url, smtp=smtp, hook=hook)


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


# -- several hubs on one PostgreSQL -----------------------------------------------------------


@pytest.fixture
def two_hubs(tmp_path: Path, postgres: PostgresServer) -> Iterator[tuple[HubService, HubService]]:
    with postgres_url(postgres) as url:
        clock = FakeClock()
        first, second = open_store(url, create=True), open_store(url)
        enroll_both(first, clock.now)
        config = _config(tmp_path, url)
        try:
            yield offline_service(config, first, clock), offline_service(config, second, clock)
        finally:
            first.close()
            second.close()


def test_a_device_revoked_on_one_hub_is_refused_by_the_other_within_a_batch(
    two_hubs: tuple[HubService, HubService],
) -> None:
    a, b = two_hubs
    p = parties()
    b.handle(*up(Message(seq=1, body=Heartbeat(), epoch=EPOCH)))  # b caches the device
    assert b.registry.active(p.device_id).label == "Ana"
    write(a.store, lambda tx: tx.devices.revoke(p.device_id, now=0.0))
    b.handle_batch([up(Message(seq=2, body=Alarm(Trigger.BUTTON), epoch=EPOCH)),
                    up(Message(seq=1, body=Heartbeat(), epoch=EPOCH), other=True)])  # fmt: skip
    assert b.rejected["RevokedDevice"] == 1
    assert b.accepted == 2  # the first heartbeat and the other device's
    assert peek(b.store, lambda tx: tx.alerts.all()) == []


def test_a_change_to_one_device_makes_other_hubs_read_only_that_device_again(
    two_hubs: tuple[HubService, HubService],
) -> None:
    """Enrolling, revoking or arming a risk window for one device must not cost the whole
    fleet a read of its record at its next message, on any hub."""
    a, b = two_hubs
    p = parties()
    b.handle_batch([up(Message(seq=1, body=Heartbeat(), epoch=EPOCH)),
                    up(Message(seq=1, body=Heartbeat(), epoch=EPOCH), other=True)])  # fmt: skip
    loads = b.registry.loads
    write(a.store, lambda tx: tx.devices.set_risk(p.other_id, until=3600.0))
    b.handle_batch([up(Message(seq=2, body=Heartbeat(), epoch=EPOCH)),
                    up(Message(seq=2, body=Heartbeat(), epoch=EPOCH), other=True)])  # fmt: skip
    assert b.registry.loads - loads == 1  # the other device's, changed by hub a
    assert b.registry.active(p.other_id).risk_until == 3600.0
    assert b.accepted == 4


def test_a_record_read_while_its_device_changes_is_not_kept(
    hub: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker reads a device's record; before it is cached, another hub changes the device
    and this hub's refresh drops the device: the stale record must not be cached after it."""
    p = parties()
    hub.registry.refresh()
    hub.registry.forget(p.device_id)
    read, armed = hub.store.read, [True]

    @contextmanager
    def read_then_change() -> Iterator[Transaction]:
        with read() as tx:
            yield tx
        if armed:
            armed.clear()
            write(hub.store, lambda tx: tx.devices.set_risk(p.device_id, until=3600.0))
            hub.registry.refresh()

    monkeypatch.setattr(hub.store, "read", read_then_change)
    assert hub.registry.active(p.device_id).risk_until is None  # read before the change
    monkeypatch.undo()
    assert hub.registry.active(p.device_id).risk_until == 3600.0


def test_a_batch_refuses_a_device_revoked_after_its_envelope_was_opened(
    hub: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache said enrolled; the row the batch locks says revoked: the row wins."""
    p = parties()
    stale = hub.registry.active(p.device_id)
    write(hub.store, lambda tx: tx.devices.revoke(p.device_id, now=0.0))
    monkeypatch.setattr(hub.registry, "refresh", lambda: None)  # as if it moved in between
    monkeypatch.setattr(hub.registry, "active", lambda _: stale)
    hub.handle_batch([up(Message(seq=1, body=Alarm(Trigger.BUTTON), epoch=EPOCH)),
                      up(Message(seq=1, body=Heartbeat(), epoch=EPOCH))])  # fmt: skip
    assert hub.rejected["RevokedDevice"] == 2
    assert peek(hub.store, lambda tx: tx.uplinks.count()) == 0


def test_the_watchdog_runs_on_one_hub_and_another_takes_over_when_it_dies(
    two_hubs: tuple[HubService, HubService],
) -> None:
    a, b = two_hubs
    clock = a.clock
    assert isinstance(clock, FakeClock)
    clock.advance(a.config.silent_after + 1)  # both devices never spoke: due
    assert a.watch(clock.now)
    assert not b.watch(clock.now)
    assert len(peek(b.store, lambda tx: tx.alerts.all(active_only=True))) == 2
    a.store.close()  # the lease holder dies: its session, and the lease, go with it
    p = parties()
    minter = a._nonces
    nonce = minter.mint(p.device_id, at=clock.now)
    b.handle(*up(Message(seq=1, body=Heartbeat(), epoch=EPOCH, nonce=nonce)))
    assert len(peek(b.store, lambda tx: tx.alerts.all(active_only=True))) == 1  # closed
    clock.advance(a.config.silent_after + 1)
    assert b.watch(clock.now)  # took the lease over
    silent = [x for x in peek(b.store, lambda tx: tx.alerts.all(active_only=True))
              if x.device_id == p.device_id]  # fmt: skip
    assert [x.kind for x in silent] == [AlertKind.SILENT]


def test_two_active_silent_alerts_for_one_device_cannot_exist(hub: HubService) -> None:
    p = parties()
    record = peek(hub.store, lambda tx: tx.devices.get(p.device_id))
    assert isinstance(record, DeviceRecord)
    from vigil.hub import alerts  # noqa: PLC0415 - only this test builds one by hand

    draft = alerts.device_silent(record, now=1.0, reason="silent")
    first = write(hub.store, lambda tx: tx.alerts.open(draft))
    assert write(hub.store, lambda tx: tx.alerts.open(draft)).id == first.id

    def raw_second(tx: object) -> None:  # what a racing hub's insert would do
        tx.alerts._cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO alerts (device_id, kind, state, opened_at, updated_at) "
            "VALUES (?, 'silent', 'open', 2.0, 2.0)",
            (p.device_id.hex,),
        )

    with pytest.raises(StorageError):
        write(hub.store, raw_second)


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
    service = offline_service(_config(tmp_path, url), store, clock)
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
    service = offline_service(_config(tmp_path, url), store, clock)
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
