"""The hub's lanes between opening and storing: urgent uplinks go first, each lane keeps
its order, a full lane refuses rather than grows."""

from __future__ import annotations

import threading

from tests.support.parties import EPOCH, parties
from vigil.hub import pipeline
from vigil.hub.triage import Triage, urgent
from vigil.wire import Alarm, Cancel, Heartbeat, Message, Trigger
from vigil.wire.messages import Checkin


def _up(seq: int, body: object) -> pipeline.Uplink:
    return pipeline.Uplink(parties().device_id, Message(seq=seq, body=body, epoch=EPOCH))  # type: ignore[arg-type]


def test_alarms_and_what_follows_them_are_urgent_heartbeats_and_edges_are_not() -> None:
    assert urgent(_up(1, Alarm(Trigger.BUTTON)))
    assert urgent(_up(2, Cancel(1, duress=True)))
    assert urgent(_up(3, Cancel(1)))
    assert not urgent(_up(4, Heartbeat(battery=80)))
    assert not urgent(_up(5, Checkin()))
    assert not urgent(pipeline.Rejected("MalformedEnvelope", "junk"))


def test_a_batch_with_urgent_uplinks_holds_nothing_routine() -> None:
    triage = Triage()
    beats = [_up(s, Heartbeat(battery=80)) for s in range(5)]
    for b in beats[:3]:
        triage.put(b)
    alarm, cancel = _up(10, Alarm(Trigger.BUTTON)), _up(11, Cancel(10))
    triage.put(alarm)
    for b in beats[3:]:
        triage.put(b)
    triage.put(cancel)
    assert triage.take(64, 0) == [alarm, cancel]  # first, alone, in their order
    assert triage.take(2, 0) == beats[:2]  # then the routine lane, in arrival order
    assert triage.take(64, 0) == beats[2:]
    assert triage.take(64, 0) == []
    assert len(triage) == 0


def test_a_full_lane_refuses_and_the_other_still_takes() -> None:
    triage = Triage(limit=2)
    assert triage.put(_up(1, Heartbeat(battery=80)))
    assert triage.put(_up(2, Heartbeat(battery=80)))
    assert not triage.put(_up(3, Heartbeat(battery=80)))
    assert triage.put(_up(4, Alarm(Trigger.BUTTON)))  # an alarm is never behind a full lane
    assert len(triage) == 3


def test_take_waits_for_what_comes_and_returns_empty_when_nothing_does() -> None:
    triage = Triage()
    assert triage.take(64, 0.01) == []
    alarm = _up(1, Alarm(Trigger.BUTTON))
    taker: list[list[pipeline.Decoded]] = []
    t = threading.Thread(target=lambda: taker.append(triage.take(64, 30)))
    t.start()
    triage.put(alarm)
    t.join(30)
    assert taker == [[alarm]]
