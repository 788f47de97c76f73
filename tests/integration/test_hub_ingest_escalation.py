"""Ingest against a real store, SQLite and PostgreSQL: alerts escalate with the newest position,
and failed deliveries retry with backoff until the configured attempts run out."""

from __future__ import annotations

import pytest

from tests.support.hubrig import FakeClock
from tests.support.offline_hub import seal
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek
from tests.support.sinks import WebhookSink
from vigil.hub.daemon import HubService
from vigil.wire import AgedFix, Alarm, Fix, Message, Position, Trigger
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration


def test_positions_attach_and_later_tiers_get_the_newest(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, hook = ingest_hub
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


def test_failed_deliveries_retry_with_backoff_and_are_all_stored(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, hook = ingest_hub
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
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, hook = ingest_hub
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
