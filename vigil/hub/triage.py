"""Alarms ahead of heartbeats between opening an uplink and storing it.

Every envelope has the same size and is sealed, so the hub knows an alarm only
once it has opened it. The opener worker opens each message as it arrives and
puts it here in one of two lanes; the ingest worker takes its next batch from
here: everything urgent that is waiting (alarms, duress cancels, and the
cancels and positions that follow an alarm) before anything routine, and a
batch with urgent uplinks in it holds nothing routine. An alarm that arrives
during a heartbeat flood so waits for the batch being stored when it was
opened, then goes in a small batch of its own, not behind the flood.

Each lane is bounded: a message that finds its lane full is refused (the sender
resends it), as one that finds the raw inbox full is.
"""

from __future__ import annotations

import enum
import threading
from collections import deque

from vigil.hub import pipeline
from vigil.wire.messages import Alarm, Cancel, Message, Position

LANE_LIMIT = 10_000  # opened messages waiting per lane


class Priority(enum.IntEnum):
    ALARM = 0  # an alarm, or a duress cancel (which is one)
    FOLLOW_UP = 1  # a cancel or position that refers to an alarm
    ROUTINE = 2  # heartbeats and check-ins


def priority(message: Message) -> Priority:
    """How soon an uplink is stored and answered (the order within a batch too)."""
    body = message.body
    if isinstance(body, Alarm) or (isinstance(body, Cancel) and body.duress):
        return Priority.ALARM
    if isinstance(body, Cancel | Position):
        return Priority.FOLLOW_UP
    return Priority.ROUTINE


def urgent(decoded: pipeline.Decoded) -> bool:
    """Whether an opened message goes ahead of routine traffic."""
    return isinstance(decoded, pipeline.Uplink) and priority(decoded.message) < Priority.ROUTINE


class Triage:
    """Two first-in-first-out lanes of opened messages: urgent and routine."""

    def __init__(self, limit: int = LANE_LIMIT) -> None:
        self._urgent: deque[pipeline.Decoded] = deque()
        self._routine: deque[pipeline.Decoded] = deque()
        self._limit = limit
        self._ready = threading.Condition()

    def put(self, decoded: pipeline.Decoded) -> bool:
        """Queue an opened message; False if its lane is full."""
        lane = self._urgent if urgent(decoded) else self._routine
        with self._ready:
            if len(lane) >= self._limit:
                return False
            lane.append(decoded)
            self._ready.notify()
        return True

    def take(self, most: int, timeout: float) -> list[pipeline.Decoded]:
        """The next batch (at most `most`): the urgent lane's if it has any, else the routine
        lane's; empty if nothing came within `timeout` seconds."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._urgent or self._routine, timeout):
                return []
            lane = self._urgent if self._urgent else self._routine
            return [lane.popleft() for _ in range(min(most, len(lane)))]

    def __len__(self) -> int:
        with self._ready:
            return len(self._urgent) + len(self._routine)
