"""The alarm core and the tamper loop: debounced, never an alarm before the device is worn,
never cancelled, and the state zeroised once its alarm is stored or the wait runs out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.alarm_timeline import BASE, HOLD, Scenario, T, down, taps
from tests.support.parties import DIGEST
from vigil.device.core import (
    Delivered,
    Feedback,
    Mode,
    Pattern,
    Send,
    TamperClosed,
    TamperOpened,
    Zeroise,
)
from vigil.wire.messages import Acknowledged, Alarm, Stored, Trigger

SCENARIOS = [
    Scenario(
        "tamper is debounced",
        [(TamperClosed(0), []), (TamperOpened(1), []), (TamperClosed(1.2), []), (T(5), [])],
        mode=Mode.IDLE,
    ),
    Scenario(
        "tamper raises an alarm",
        [
            (TamperClosed(0), []),
            (TamperOpened(1), []),
            (T(1.5), [Send(0, Alarm(Trigger.TAMPER)), Feedback(Pattern.RAISED)]),
        ],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "tamper open at boot (not worn yet) is not an alarm",
        [(TamperOpened(0), []), (T(5), [])],
        mode=Mode.IDLE,
    ),
    Scenario(
        "tamper alarm cannot be cancelled",
        [
            (TamperClosed(0), []),
            (TamperOpened(1), []),
            (T(1.5), [Send(0, Alarm(Trigger.TAMPER)), Feedback(Pattern.RAISED)]),
            *taps(3, "..."),
            *taps(6, "..-"),
            (T(9), []),
        ],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "tamper after a button alarm adds an alarm and removes the cancel",
        [
            (TamperClosed(0), []),
            *HOLD,
            (TamperOpened(5), []),
            (T(5.5), [Send(1, Alarm(Trigger.TAMPER)), Feedback(Pattern.RAISED)]),
            *taps(7, "..."),
            (T(9), []),
        ],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "tamper after a silent alarm vibrates as when idle",
        [
            (TamperClosed(0), []),
            *taps(1, "...."),
            (T(3), [Send(0, Alarm(Trigger.DURESS))]),
            (TamperOpened(4), []),
            (T(4.5), [Send(1, Alarm(Trigger.TAMPER)), Feedback(Pattern.RAISED)]),
        ],
        mode=Mode.SILENT,
    ),
    Scenario(
        "a tamper alarm, once stored, zeroises the state",
        [
            (TamperClosed(0), []),
            (TamperOpened(1), []),
            (T(1.5), [Send(0, Alarm(Trigger.TAMPER)), Feedback(Pattern.RAISED)]),
            (down(2, Stored(0, DIGEST)), [Delivered(0), Feedback(Pattern.STORED), Zeroise()]),
            (down(3, Acknowledged(0, DIGEST)), []),  # the alarm is forgotten
            (T(1000), []),
        ],
        mode=Mode.IDLE,
    ),
    Scenario(
        "a tamper alarm never stored zeroises after the timeout",
        [
            (TamperClosed(0), []),
            (TamperOpened(1), []),
            (T(1.5), [Send(0, Alarm(Trigger.TAMPER)), Feedback(Pattern.RAISED)]),
            (T(61.5), [Feedback(Pattern.UNDELIVERED)]),
            (T(100), [Zeroise()]),
            (T(1000), []),
        ],
        settings=replace(BASE, zeroise_timeout=98.5, undelivered_after=60),
        mode=Mode.IDLE,
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    sc.play()
