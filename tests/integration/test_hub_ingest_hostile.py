"""Ingest against a real store, SQLite and PostgreSQL: hostile input is counted and dropped,
never stored; a seq signed twice and a replaying broker get no more receipts than due
(docs/protocol.md §7)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hubrig import FakeClock
from tests.support.offline_hub import receipts_for, seal
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek, write
from tests.support.sinks import WebhookSink
from vigil.hub.daemon import HubService
from vigil.hub.store import AlertKind
from vigil.hub.store.traffic import RECEIPT_EVERY
from vigil.wire import Alarm, DeviceId, DeviceKeys, Heartbeat, Message, Trigger, seal_uplink
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import Checkin, encode_payload
from vigil.wire.topics import down_topic, up_topic

pytestmark = pytest.mark.integration


def test_hostile_input_is_counted_and_never_stored(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = ingest_hub
    p = parties()
    topic = up_topic(p.device_id)
    good = seal(Message(seq=10, body=Heartbeat(battery=5), epoch=EPOCH))
    flipped = bytearray(good)
    flipped[300] ^= 1
    unknown = DeviceKeys.generate()
    cases = [
        (topic, b"\x00garbage", "TruncatedEnvelope"),
        (topic, good[:-1], "TruncatedEnvelope"),
        (topic, good + b"\x00", "MalformedEnvelope"),
        (topic, bytes(flipped), "DecryptionFailed"),
        (topic, good + bytes(5000), "OversizedEnvelope"),
        (
            topic,
            seal(Message(seq=11, body=Alarm(Trigger.BUTTON), epoch=EPOCH), signer=unknown),
            "BadSignature",
        ),
        (up_topic(p.other_id), good, "TopicMismatch"),
        (down_topic(p.device_id), good, "WrongDirection"),
        ("vigil/v1/not-a-device/up", good, "TopicMismatch"),
    ]
    for topic_, payload, _ in cases:
        service.handle(topic_, payload)
    expected: dict[str, int] = {}
    for *_, reason in cases:
        expected[reason] = expected.get(reason, 0) + 1
    assert peek(service.store, lambda tx: tx.rejections.totals()) == expected
    assert peek(service.store, lambda tx: tx.uplinks.count()) == 0
    assert peek(service.store, lambda tx: tx.alerts.all()) == []
    # The loop lives on: the genuine message is taken afterwards.
    service.handle(topic, good)
    assert peek(service.store, lambda tx: tx.uplinks.count()) == 1


def test_unknown_revoked_and_replayed_devices(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = ingest_hub
    p = parties()
    stranger = DeviceKeys.generate()
    stranger_id = DeviceId.generate()
    env = seal_uplink(Message(seq=1, body=Heartbeat(), epoch=EPOCH), device_id=stranger_id,
                      device_keys=stranger, hub=p.hub.public())  # fmt: skip
    service.handle(up_topic(stranger_id), env)
    service.handle(up_topic(p.device_id), seal(Message(seq=5000, body=Heartbeat(), epoch=EPOCH)))
    service.handle(
        up_topic(p.device_id), seal(Message(seq=1, body=Heartbeat(), epoch=EPOCH))
    )  # too old
    write(service.store, lambda tx: tx.devices.revoke(p.device_id, now=0.0))
    service.handle(
        up_topic(p.device_id), seal(Message(seq=5001, body=Alarm(Trigger.BUTTON), epoch=EPOCH))
    )
    assert peek(service.store, lambda tx: tx.rejections.totals()) == {
        "UnknownDevice": 1, "ReplayedMessage": 1, "RevokedDevice": 1}  # fmt: skip
    assert peek(service.store, lambda tx: tx.uplinks.count()) == 1
    assert service.rejected["RevokedDevice"] == 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.binary(max_size=700))
def test_random_bytes_never_raise_or_store(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink], payload: bytes
) -> None:
    service, _, _ = ingest_hub
    service.handle(up_topic(parties().device_id), payload)
    assert peek(service.store, lambda tx: tx.uplinks.count()) == 0


def test_a_seq_signed_twice_opens_a_conflict_alert_and_gets_no_receipt(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = ingest_hub
    topic = up_topic(parties().device_id)
    real = Message(seq=5, body=Alarm(Trigger.BUTTON), epoch=EPOCH)
    service.handle(topic, seal(real))
    clock.advance(RECEIPT_EVERY + 1)
    service.handle(topic, seal(Message(seq=5, body=Checkin(), epoch=EPOCH)))  # a cloned key
    alarm, conflict = peek(service.store, lambda tx: tx.alerts.all())
    assert (alarm.kind, conflict.kind) == (AlertKind.ALARM, AlertKind.CONFLICT)
    assert "cloned" in (conflict.note or "")
    assert receipts_for(service) == [(5, EPOCH.hex, uplink_digest(encode_payload(real)))]
    actions = [e.action for e in peek(service.store, lambda tx: tx.audit.entries())]
    assert "conflicting message" in actions


def test_a_replayed_uplink_mints_few_receipts(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = ingest_hub
    topic = up_topic(parties().device_id)
    envelope = seal(Message(seq=7, body=Checkin(), epoch=EPOCH))
    for _ in range(50):  # a broker replaying one genuine envelope, fast
        service.handle(topic, envelope)
        clock.advance(0.1)
    assert len(receipts_for(service)) == 1
    clock.advance(RECEIPT_EVERY)
    for _ in range(5):
        service.handle(topic, envelope)
    assert len(receipts_for(service)) == 2
    assert peek(service.store, lambda tx: tx.uplinks.count()) == 1
