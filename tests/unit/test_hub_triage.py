"""What the hub takes as urgent once it has opened an uplink."""

from __future__ import annotations

from tests.support.parties import EPOCH, parties
from vigil.hub import pipeline
from vigil.hub.triage import urgent
from vigil.wire import Alarm, Cancel, Heartbeat, Message, Trigger
from vigil.wire.messages import Checkin, encode_payload


def _up(seq: int, body: object) -> pipeline.Uplink:
    message = Message(seq=seq, body=body, epoch=EPOCH)  # type: ignore[arg-type]
    return pipeline.Uplink(parties().device_id, message, encode_payload(message))


def test_alarms_and_what_follows_them_are_urgent_heartbeats_and_edges_are_not() -> None:
    assert urgent(_up(1, Alarm(Trigger.BUTTON)))
    assert urgent(_up(2, Cancel(1, duress=True)))
    assert urgent(_up(3, Cancel(1)))
    assert not urgent(_up(4, Heartbeat(battery=80)))
    assert not urgent(_up(5, Checkin()))
    assert not urgent(pipeline.Rejected("MalformedEnvelope", "junk"))
