"""Ingest against a real SQLite store: hostile input is counted and dropped, never stored;
a crash between storing and handling is repaired; failed deliveries retry with backoff."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.broker import Broker
from tests.support.hubrig import FakeClock, write_config
from tests.support.hubstore import store_url
from tests.support.parties import EPOCH, OTHER_EPOCH, parties
from tests.support.peek import peek, write
from tests.support.sinks import WebhookSink, smtp_sink, webhook_sink
from vigil.hub.channels import AppriseNotifier
from vigil.hub.config import load_config
from vigil.hub.daemon import HubService
from vigil.hub.store import AlertKind, Transaction, open_store
from vigil.hub.store.traffic import RECEIPT_EVERY
from vigil.wire import (
    AgedFix,
    Alarm,
    Cancel,
    DeviceId,
    DeviceKeys,
    Fix,
    Heartbeat,
    Message,
    Position,
    Trigger,
    seal_uplink,
)
from vigil.wire.liveness import NonceMinter, uplink_digest
from vigil.wire.messages import Checkin, Mode, encode_payload
from vigil.wire.topics import down_topic, up_topic

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[HubService, FakeClock, WebhookSink]]:
    with smtp_sink() as smtp, webhook_sink() as hook, store_url(request, tmp_path) as url:
        broker = Broker("127.0.0.1", 1, tmp_path / "unused.conf")  # no broker: no downlinks
        config = load_config(write_config(tmp_path, broker=broker, smtp=smtp, hook=hook))
        config = replace(config, store_url=url)
        store = open_store(config.store_url, create=True)
        p, clock = parties(), FakeClock()
        # Enrolled now: a device never heard from is watched from its enrolment (v2).
        for device_id, label, keys in (
            (p.device_id, "Ana", p.device),
            (p.other_id, "Bea", p.other),
        ):
            write(store, functools.partial(_enroll, device_id, label, keys, now=clock.now))
        # rand=1.0: retries at the top of their jitter range, so the times below are exact
        yield HubService(config, store=store, hub_keys=p.hub, notifier=AppriseNotifier(),
                         clock=clock, rand=lambda: 1.0), clock, hook  # fmt: skip
        store.close()


def _enroll(
    device_id: DeviceId, label: str, keys: DeviceKeys, tx: Transaction, *, now: float
) -> None:
    tx.devices.enroll(device_id, label=label, public_keys=keys.public(), now=now)


def seal(message: Message, *, signer: DeviceKeys | None = None) -> bytes:
    p = parties()
    return seal_uplink(message, device_id=p.device_id, device_keys=signer or p.device,
                       hub=p.hub.public())  # fmt: skip


def test_hostile_input_is_counted_and_never_stored(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = hub
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
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = hub
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
    hub: tuple[HubService, FakeClock, WebhookSink], payload: bytes
) -> None:
    service, _, _ = hub
    service.handle(up_topic(parties().device_id), payload)
    assert peek(service.store, lambda tx: tx.uplinks.count()) == 0


def test_stored_but_unhandled_uplink_is_repaired(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = hub
    p = parties()
    alarm = Message(seq=20, body=Alarm(Trigger.TAMPER, battery=9), epoch=EPOCH)
    # As if the hub died right after the store committed, before the handler ran.
    assert write(
        service.store, lambda tx: tx.uplinks.accept(p.device_id, alarm, received_at=clock.now)
    )
    assert peek(service.store, lambda tx: tx.alerts.all()) == []
    assert service.recover() == 1
    (alert,) = peek(service.store, lambda tx: tx.alerts.all())
    assert (alert.alarm_seq, alert.trigger, alert.battery) == (20, "tamper", 9)
    assert peek(service.store, lambda tx: tx.uplinks.unprocessed()) == []
    assert service.recover() == 0


def test_resend_of_a_stored_but_unhandled_uplink_finishes_it(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = hub
    alarm = Message(seq=21, body=Alarm(Trigger.BUTTON), epoch=EPOCH)
    assert write(
        service.store,
        lambda tx: tx.uplinks.accept(parties().device_id, alarm, received_at=clock.now),
    )
    service.handle(up_topic(parties().device_id), seal(alarm))  # the wearer's resend
    (alert,) = peek(service.store, lambda tx: tx.alerts.all())
    assert (alert.alarm_seq, alert.alarm_epoch) == (21, EPOCH.hex)

    def receipts() -> list[tuple[str, int, str | None, str | None]]:
        pending = peek(service.store, lambda tx: tx.downlinks.pending())
        return [(d.kind, d.arg, d.epoch, d.digest) for d in pending]

    # The crash came before its receipt was sent: the resend is answered at once...
    receipt = ("stored", 21, EPOCH.hex, uplink_digest(encode_payload(alarm)))
    assert receipts() == [receipt]
    # ...and a further resend within RECEIPT_EVERY is not (a replaying broker mints no more).
    service.handle(up_topic(parties().device_id), seal(alarm))
    assert receipts() == [receipt]
    clock.advance(RECEIPT_EVERY)
    service.handle(up_topic(parties().device_id), seal(alarm))
    assert receipts() == [receipt, receipt]
    assert len(peek(service.store, lambda tx: tx.alerts.all())) == 1


def test_positions_attach_and_later_tiers_get_the_newest(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, hook = hub
    topic = up_topic(parties().device_id)
    first = AgedFix(
        Fix(lat=17.0, lon=-96.7, fix_time=None, quality=1, satellites=5, hdop=1.0), age=10.0
    )
    later = AgedFix(
        Fix(lat=17.1, lon=-96.8, fix_time=None, quality=1, satellites=6, hdop=1.0), age=1.0
    )
    service.handle(topic, seal(Message(seq=1, body=Alarm(Trigger.BUTTON, fix=first), epoch=EPOCH)))
    clock.advance(60)
    service.handle(topic, seal(Message(seq=2, body=Position(alarm_seq=1, fix=later), epoch=EPOCH)))
    assert [(f.lat, f.lon) for f in peek(service.store, lambda tx: tx.alerts.positions(1))] == [
        (17.1, -96.8)
    ]
    assert peek(service.store, lambda tx: tx.alerts.get(1)).last_fix.lat == 17.1  # type: ignore[union-attr]
    device = peek(service.store, lambda tx: tx.devices.get(parties().device_id))
    assert device is not None
    assert device.last_fix is not None
    assert device.last_fix.lat == 17.1
    clock.advance(61)
    service.tick()
    service.deliver()
    (partners,) = [p.json() for p in hook.posts if p.path == "/partners"]
    assert "17.100000, -96.800000 (62 s old)" in partners["message"]


def test_duress_cancel_that_overtook_its_alarm_still_raises_one(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = hub
    topic = up_topic(parties().device_id)
    service.handle(
        topic, seal(Message(seq=31, body=Cancel(alarm_seq=30, duress=True), epoch=EPOCH))
    )
    (alert,) = peek(service.store, lambda tx: tx.alerts.all())
    assert alert.duress
    assert alert.active
    service.handle(topic, seal(Message(seq=30, body=Alarm(Trigger.BUTTON), epoch=EPOCH)))
    assert len(peek(service.store, lambda tx: tx.alerts.all())) == 1  # the late alarm joins it
    # Version 2: a plain cancel of an alarm never seen says that alarm is being withheld.
    service.handle(topic, seal(Message(seq=33, body=Cancel(alarm_seq=32), epoch=EPOCH)))
    first, withheld = peek(service.store, lambda tx: tx.alerts.all())
    assert first.id == alert.id
    assert (withheld.kind, withheld.alarm_seq) == (AlertKind.WITHHELD, None)
    assert "seq 32" in (withheld.note or "")


def test_failed_deliveries_retry_with_backoff_and_are_all_stored(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, hook = hub
    hook.fail_next = 2
    service.handle(
        up_topic(parties().device_id),
        seal(Message(seq=1, body=Alarm(Trigger.BUTTON), epoch=EPOCH)),
    )
    service.tick()
    start = clock.now
    service.deliver()  # email to the SMTP sink's port may fail or not; look at the webhook
    hook_delivery = next(
        d for d in peek(service.store, lambda tx: tx.deliveries.for_alert(1)) if "json" in d.label
    )
    assert peek(service.store, lambda tx: tx.deliveries.attempts(hook_delivery.id))[0][2] is False
    clock.now = start + 4.9  # backoff 5 s: not yet
    service.deliver()
    assert len(peek(service.store, lambda tx: tx.deliveries.attempts(hook_delivery.id))) == 1
    clock.now = start + 5
    service.deliver()  # second failure, next in 10 s
    clock.now = start + 15
    service.deliver()
    attempts = peek(service.store, lambda tx: tx.deliveries.attempts(hook_delivery.id))
    assert [(a[1] - start, a[2]) for a in attempts] == [(0, False), (5, False), (15, True)]
    assert "500" in attempts[0][3]
    assert len([p for p in hook.posts if p.path == "/operators"]) == 1
    clock.now = start + 1000
    service.deliver()
    assert len([p for p in hook.posts if p.path == "/operators"]) == 1  # never twice


def test_delivery_gives_up_after_the_configured_attempts(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, hook = hub
    hook.fail_next = 100
    service.handle(
        up_topic(parties().device_id),
        seal(Message(seq=1, body=Alarm(Trigger.BUTTON), epoch=EPOCH)),
    )
    service.tick()
    for _ in range(5):
        service.deliver()
        clock.advance(100)
    hook_delivery = next(
        d for d in peek(service.store, lambda tx: tx.deliveries.for_alert(1)) if "json" in d.label
    )
    assert hook_delivery.status == "failed"
    assert hook_delivery.attempts == 3
    assert len(peek(service.store, lambda tx: tx.deliveries.attempts(hook_delivery.id))) == 3


def test_heartbeat_records_when_the_devices_gps_last_had_a_fix(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = hub
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


# -- protocol version 2 (docs/protocol.md §7, §8) ---------------------------------------------


def receipts_for(service: HubService) -> list[tuple[int, str | None, str | None]]:
    pending = peek(service.store, lambda tx: tx.downlinks.pending())
    return [(d.arg, d.epoch, d.digest) for d in pending if d.kind == "stored"]


def test_a_seq_signed_twice_opens_a_conflict_alert_and_gets_no_receipt(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = hub
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
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = hub
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


def test_a_heartbeat_naming_a_seq_never_stored_opens_a_withheld_alert(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = hub
    topic = up_topic(parties().device_id)
    service.handle(topic, seal(Message(seq=1, body=Alarm(Trigger.BUTTON), epoch=EPOCH)))
    honest = Heartbeat(mode=Mode.ACTIVE, pending=1, oldest_pending=1)  # the alarm did arrive
    service.handle(topic, seal(Message(seq=2, body=honest, epoch=EPOCH)))
    assert [a.kind for a in peek(service.store, lambda tx: tx.alerts.all())] == [AlertKind.ALARM]
    held = Heartbeat(mode=Mode.ACTIVE, pending=2, oldest_pending=3)  # seq 3 never came
    service.handle(topic, seal(Message(seq=4, body=held, epoch=EPOCH)))
    service.handle(topic, seal(Message(seq=5, body=held, epoch=EPOCH)))  # still one alert
    _, withheld = peek(service.store, lambda tx: tx.alerts.all())
    assert withheld.kind is AlertKind.WITHHELD
    assert "seq 3" in (withheld.note or "")
    service.tick()
    steps = peek(service.store, lambda tx: tx.deliveries.fired_steps(withheld.id))
    assert steps  # alarm-grade: it escalates, not only a line in a log


def test_a_position_for_an_unseen_alarm_opens_a_withheld_alert(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = hub
    fix = AgedFix(Fix(lat=17.0, lon=-96.7), age=1.0)
    position = Message(seq=9, body=Position(alarm_seq=8, fix=fix), epoch=EPOCH)
    service.handle(up_topic(parties().device_id), seal(position))
    (withheld,) = peek(service.store, lambda tx: tx.alerts.all())
    assert withheld.kind is AlertKind.WITHHELD
    record = peek(service.store, lambda tx: tx.devices.get(parties().device_id))
    assert record is not None
    assert record.last_fix is not None  # the position is kept as the last fix all the same


def test_a_new_epoch_is_a_reset_device_whose_alarms_are_new(
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    """Seqs restarting after a state reset are not replays nor duplicates (§7, §10)."""
    service, _, _ = hub
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
    hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = hub
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
