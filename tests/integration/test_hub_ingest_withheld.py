"""Ingest against a real store, SQLite and PostgreSQL: an alarm the hub never got but the device
speaks of (a cancel, a heartbeat, a position) still raises an alert (docs/protocol.md §8)."""

from __future__ import annotations

import pytest

from tests.support.hubrig import FakeClock
from tests.support.offline_hub import seal
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek
from tests.support.sinks import WebhookSink
from vigil.hub.daemon import HubService
from vigil.hub.store import AlertKind
from vigil.wire import AgedFix, Alarm, Cancel, Fix, Heartbeat, Message, Position, Trigger
from vigil.wire.messages import Mode
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration


def test_duress_cancel_that_overtook_its_alarm_still_raises_one(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = ingest_hub
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


def test_a_heartbeat_naming_a_seq_never_stored_opens_a_withheld_alert(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = ingest_hub
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
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, _, _ = ingest_hub
    fix = AgedFix(Fix(lat=17.0, lon=-96.7), age=1.0)
    position = Message(seq=9, body=Position(alarm_seq=8, fix=fix), epoch=EPOCH)
    service.handle(up_topic(parties().device_id), seal(position))
    (withheld,) = peek(service.store, lambda tx: tx.alerts.all())
    assert withheld.kind is AlertKind.WITHHELD
    record = peek(service.store, lambda tx: tx.devices.get(parties().device_id))
    assert record is not None
    assert record.last_fix is not None  # the position is kept as the last fix all the same
