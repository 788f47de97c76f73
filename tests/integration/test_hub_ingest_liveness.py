"""Ingest against a real store, SQLite and PostgreSQL: what heartbeats tell of a device, a new
epoch as a reset device, and liveness proven by the nonce echo (docs/protocol.md §7, §8)."""

from __future__ import annotations

import pytest

from tests.support.hubrig import FakeClock
from tests.support.offline_hub import receipts_for, seal
from tests.support.parties import EPOCH, OTHER_EPOCH, parties
from tests.support.peek import peek
from tests.support.sinks import WebhookSink
from vigil.hub.daemon import HubService
from vigil.hub.store import AlertKind
from vigil.wire import AgedFix, Alarm, Fix, Heartbeat, Message, Trigger
from vigil.wire.liveness import NonceMinter, uplink_digest
from vigil.wire.messages import encode_payload
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration


def test_heartbeat_records_when_the_devices_gps_last_had_a_fix(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = ingest_hub
    p = parties()
    service.handle(
        up_topic(p.device_id), seal(Message(seq=1, body=Heartbeat(battery=80), epoch=EPOCH))
    )
    record = peek(service.store, lambda tx: tx.devices.get(p.device_id))
    assert record is not None
    assert (record.battery, record.gps_fix_at) == (80, None)
    heartbeat = Heartbeat(battery=79, fix=AgedFix(Fix(lat=1.0, lon=2.0), age=30.0), signal=60)
    service.handle(up_topic(p.device_id), seal(Message(seq=2, body=heartbeat, epoch=EPOCH)))
    record = peek(service.store, lambda tx: tx.devices.get(p.device_id))
    assert record is not None
    assert (record.battery, record.gps_fix_at) == (79, clock() - 30.0)


def test_a_new_epoch_is_a_reset_device_whose_alarms_are_new(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    """Seqs restarting after a state reset are not replays nor duplicates (§7, §10)."""
    service, _, _ = ingest_hub
    topic = up_topic(parties().device_id)
    service.handle(topic, seal(Message(seq=0, body=Alarm(Trigger.BUTTON), epoch=EPOCH)))
    reborn = Message(seq=0, body=Alarm(Trigger.TAMPER), epoch=OTHER_EPOCH)
    service.handle(topic, seal(reborn))
    old, new = peek(service.store, lambda tx: tx.alerts.all())
    assert (old.alarm_epoch, new.alarm_epoch) == (EPOCH.hex, OTHER_EPOCH.hex)
    assert (old.trigger, new.trigger) == ("button", "tamper")
    assert receipts_for(service)[-1] == (0, OTHER_EPOCH.hex, uplink_digest(encode_payload(reborn)))
    resets = [e for e in peek(service.store, lambda tx: tx.audit.entries())
              if e.action == "device state was reset"]  # fmt: skip
    assert len(resets) == 1
    assert f"{EPOCH.hex} -> {OTHER_EPOCH.hex}" in resets[0].detail


def test_liveness_is_proven_by_the_nonce_echo_not_by_arrival(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = ingest_hub
    p = parties()
    topic = up_topic(p.device_id)
    minter = NonceMinter(p.hub.nonce_secret())
    start = clock.now
    service.handle(topic, seal(Message(seq=0, body=Heartbeat(), epoch=EPOCH)))
    echo = minter.mint(p.device_id, at=start + 50)
    clock.now = start + 400  # a heartbeat made after +50, held by the broker, released now
    service.handle(topic, seal(Message(seq=1, body=Heartbeat(), epoch=EPOCH, nonce=echo)))
    record = peek(service.store, lambda tx: tx.devices.get(p.device_id))
    assert record is not None
    assert (record.alive_at, record.last_seen) == (start + 50, start + 400)
    service.tick()  # silent_after = 300: proven alive at +50, not at +400
    (silent,) = [a for a in peek(service.store, lambda tx: tx.alerts.all(active_only=True))
                 if a.device_id == p.device_id]  # fmt: skip
    assert silent.kind is AlertKind.SILENT
    stale = minter.mint(p.device_id, at=start + 60)  # another stashed heartbeat
    service.handle(topic, seal(Message(seq=2, body=Heartbeat(), epoch=EPOCH, nonce=stale)))
    assert peek(service.store, lambda tx: tx.alerts.get(silent.id)).active  # not closed by it
    forged = "0e" * 16  # not made by this hub: proves nothing
    service.handle(topic, seal(Message(seq=3, body=Heartbeat(), epoch=EPOCH, nonce=forged)))
    assert peek(service.store, lambda tx: tx.alerts.get(silent.id)).active
    fresh = minter.mint(p.device_id, at=clock.now)
    service.handle(topic, seal(Message(seq=4, body=Heartbeat(), epoch=EPOCH, nonce=fresh)))
    assert not peek(service.store, lambda tx: tx.alerts.get(silent.id)).active
