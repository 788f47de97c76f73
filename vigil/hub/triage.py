"""What is urgent: alarms ahead of heartbeats once an uplink is opened.

Every envelope has the same size and is sealed, so the hub knows an alarm only
once it has opened it. The ingest worker opens what arrived, then stores,
answers and escalates the urgent uplinks (alarms, duress cancels, and the
cancels and positions that follow an alarm) first, with a commit of their own,
and the routine ones after them; within a batch, `priority` orders the handling.
"""

from __future__ import annotations

import enum

from vigil.hub import pipeline
from vigil.wire.messages import Alarm, Cancel, Message, Position


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
