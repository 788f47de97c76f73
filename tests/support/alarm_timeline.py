"""Timed events for the alarm core, written like a timing diagram, and the scenario table
that feeds them to a fresh core and expects the exact actions back.

`tests/conftest.py` has pytest rewrite this module's asserts: a failing step shows both lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.parties import EPOCH, NONCE
from vigil.device.core import (
    Action,
    AlarmCore,
    AlarmSettings,
    ButtonPressed,
    ButtonReleased,
    DownlinkReceived,
    Event,
    Feedback,
    GpsFix,
    Mode,
    Pattern,
    Send,
    Tick,
)
from vigil.wire.fix import AgedFix, Fix
from vigil.wire.messages import Alarm, Message, Trigger

BASE = AlarmSettings(heartbeat_interval=10_000)


def P(at: float) -> ButtonPressed:  # noqa: N802 - reads like a timing diagram
    return ButtonPressed(at)


def R(at: float) -> ButtonReleased:  # noqa: N802
    return ButtonReleased(at)


def T(at: float) -> Tick:  # noqa: N802
    return Tick(at)


def down(at: float, body: Any) -> DownlinkReceived:
    return DownlinkReceived(at, Message(seq=900, body=body, epoch=EPOCH, nonce=NONCE))


def taps(start: float, gesture: str) -> list[tuple[Event, list[Action]]]:
    """Press out `gesture` ('.' = 0.1 s press, '-' = 1 s press) with 0.3 s gaps, no actions."""
    steps: list[tuple[Event, list[Action]]] = []
    t = start
    for mark in gesture:
        steps += [(P(t), []), (R(t + (0.1 if mark == "." else 1.0)), [])]
        t += (0.1 if mark == "." else 1.0) + 0.3
    return steps


BERLIN = Fix(lat=52.5, lon=13.4, fix_time=1_700_000_000.0, quality=1, satellites=7)
FIX = GpsFix(at=5.0, fix=BERLIN)


def wire_fix(age: float) -> AgedFix:
    return AgedFix(BERLIN, age=age)


def MIDDLE() -> float:  # noqa: N802 - a constant "random" draw: heartbeats exactly on the interval
    return 0.5


SEND_ALARM = Send(0, Alarm(Trigger.BUTTON))
HOLD = [(P(1.0), []), (T(2.9), []), (T(3.0), [SEND_ALARM, Feedback(Pattern.RAISED)]), (R(3.5), [])]


@dataclass
class Scenario:
    id: str
    steps: list[tuple[Event, list[Action]]]
    settings: AlarmSettings = BASE
    mode: Mode | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def play(self) -> None:
        """Feed the steps to a fresh core: each must return exactly its actions, and the
        core must end in `mode` when one is given."""
        core = AlarmCore(self.settings, first_seq=0, started_at=0.0, rand=MIDDLE)
        for number, (event, expected) in enumerate(self.steps):
            assert core.handle(event) == expected, f"step {number}: {event}"
        if self.mode is not None:
            assert core.mode is self.mode
