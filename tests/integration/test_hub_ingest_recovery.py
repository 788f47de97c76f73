"""Ingest against a real store, SQLite and PostgreSQL: a crash between storing an uplink and
handling it is repaired, at start or by the wearer's resend."""

from __future__ import annotations

import pytest

from tests.support.hubrig import FakeClock
from tests.support.offline_hub import seal
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek, write
from tests.support.sinks import WebhookSink
from vigil.hub.daemon import HubService
from vigil.hub.store.traffic import RECEIPT_EVERY
from vigil.wire import Alarm, Message, Trigger
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import encode_payload
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration


def test_stored_but_unhandled_uplink_is_repaired(
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = ingest_hub
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
    ingest_hub: tuple[HubService, FakeClock, WebhookSink],
) -> None:
    service, clock, _ = ingest_hub
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
