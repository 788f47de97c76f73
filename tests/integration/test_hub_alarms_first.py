"""Alarms first, at every stage: within a batch, ahead of the heartbeats beside it, and
across rounds (one that arrives while a round is opened, stored or answered goes before
the rest of it).
Real SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tests.support.offline_hub import RecordingTransport, published_receipts, up
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek
from vigil.hub.daemon import OPEN_CHUNK, HubService
from vigil.hub.ingest import MAX_BATCH
from vigil.wire import Alarm, Heartbeat, Message, Trigger

pytestmark = pytest.mark.integration


def test_an_alarm_behind_200_heartbeats_is_handled_and_answered_first(hub: HubService) -> None:
    p = parties()
    flood = [up(Message(seq=s, body=Heartbeat(battery=90), epoch=EPOCH)) for s in range(200)]
    alarm = up(Message(seq=0, body=Alarm(Trigger.BUTTON), epoch=EPOCH), other=True)
    hub.handle_batch([*flood, alarm])
    answered = published_receipts(hub)
    assert answered[0] == (p.other_id.hex, 0)
    assert len(answered) == 201
    (opened,) = [e for e in peek(hub.store, lambda tx: tx.audit.entries())
                 if e.action == "alert opened"]  # fmt: skip
    assert opened.id == min(e.id for e in peek(hub.store, lambda tx: tx.audit.entries()))


def test_an_alarm_is_answered_before_the_heartbeats_beside_it_are_stored(
    hub: HubService,
) -> None:
    """Urgent uplinks get a commit of their own, ahead of the batch: the alarm's receipt
    leaves before any heartbeat of its batch is handled, stored or answered."""
    p = parties()
    stored_when = _stored_at_each_publish(hub)
    flood = [up(Message(seq=s, body=Heartbeat(battery=90), epoch=EPOCH)) for s in range(30)]
    alarm = up(Message(seq=0, body=Alarm(Trigger.BUTTON), epoch=EPOCH), other=True)
    hub.handle_batch([*flood[:20], alarm, *flood[20:]])
    assert published_receipts(hub)[0] == (p.other_id.hex, 0)
    assert stored_when[0] == 1  # only the alarm was stored when its receipt left
    assert stored_when[1:] == [31] * 30


def _stored_at_each_publish(hub: HubService) -> list[int]:
    """How many uplinks were stored when each downlink left (filled as they leave)."""
    stored_when: list[int] = []
    transport = hub.transport
    assert isinstance(transport, RecordingTransport)
    publish = transport.publish

    def counting(topic: str, payload: bytes, *, qos: int = 1) -> None:
        stored_when.append(peek(hub.store, lambda tx: tx.uplinks.count()))
        publish(topic, payload, qos=qos)

    transport.publish = counting  # type: ignore[method-assign]
    return stored_when


def beat(seq: int) -> tuple[str, bytes]:
    return up(Message(seq=seq, body=Heartbeat(battery=80), epoch=EPOCH))


def test_an_alarm_arriving_during_a_floods_receipts_is_answered_before_them(
    hub: HubService,
) -> None:
    p = parties()
    flood = [beat(s) for s in range(3 * OPEN_CHUNK)]
    later = [up(Message(seq=0, body=Alarm(Trigger.BUTTON), epoch=EPOCH), other=True), beat(100)]
    arrivals = [later]
    hub.arrivals = lambda most: arrivals.pop()[:most] if arrivals else []
    hub.handle_batch(flood)
    answered = published_receipts(hub)
    assert answered[0] == (p.other_id.hex, 0)  # before every receipt of the round it met
    assert sorted(seq for _, seq in answered[1:]) == list(range(3 * OPEN_CHUNK))
    assert hub.carried  # the heartbeat beside it waits for the next round, opened
    assert hub.accepted == 3 * OPEN_CHUNK + 1
    hub.handle_batch([])
    assert not hub.carried
    assert published_receipts(hub)[-1] == (p.device_id.hex, 100)
    assert hub.accepted == 3 * OPEN_CHUNK + 2


def test_what_arrives_during_a_round_is_taken_only_up_to_a_bound(hub: HubService) -> None:
    asked: list[int] = []

    def arrivals(most: int) -> list[tuple[str, bytes]]:
        asked.append(most)
        return [beat(1000 + len(asked) * 10 + i) for i in range(most)]

    hub.arrivals = arrivals
    hub.handle_batch([beat(s) for s in range(4 * OPEN_CHUNK)])
    assert asked
    assert all(0 < n <= OPEN_CHUNK for n in asked)
    hub.arrivals = None
    before = hub.accepted
    hub.handle_batch([])
    assert 0 < hub.accepted - before <= MAX_BATCH  # never more than a batch kept in memory


def test_an_alarm_arriving_while_a_round_is_opened_is_stored_before_its_commit(
    hub: HubService,
) -> None:
    p = parties()
    arrivals = [[up(Message(seq=0, body=Alarm(Trigger.BUTTON), epoch=EPOCH), other=True)]]
    hub.arrivals = lambda most: arrivals.pop()[:most] if arrivals else []
    stored_when = _stored_at_each_publish(hub)
    hub.handle_batch([beat(s) for s in range(2 * OPEN_CHUNK)])  # it comes after the first chunk
    assert published_receipts(hub)[0] == (p.other_id.hex, 0)
    assert stored_when[0] == 1  # the round's heartbeats were opened, not yet stored


def test_an_alarm_arriving_between_two_receipts_goes_out_next(hub: HubService) -> None:
    """It waits for one receipt of the round it met, not for a chunk of them."""
    p = parties()
    transport = hub.transport
    assert isinstance(transport, RecordingTransport)
    alarm = up(Message(seq=0, body=Alarm(Trigger.BUTTON), epoch=EPOCH), other=True)
    sent_alarm: list[bool] = []

    def arrivals(most: int) -> list[tuple[str, bytes]]:
        if len(transport.published) < 2 or sent_alarm:
            return []
        sent_alarm.append(True)
        return [alarm]

    hub.arrivals = arrivals
    hub.handle_batch([beat(s) for s in range(2 * OPEN_CHUNK)])
    answered = published_receipts(hub)
    assert answered[2] == (p.other_id.hex, 0)
    assert len(answered) == 2 * OPEN_CHUNK + 1
