"""The alarm core under coercion: a duress gesture raises a silent alarm, a duress cancel looks
like a cancel, and afterwards the device behaves as after a real one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.alarm_timeline import BASE, FIX, HOLD, P, R, Scenario, T, down, taps, wire_fix
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
from vigil.wire.messages import Acknowledged, Alarm, Cancel, Stored, Trigger

SCENARIOS = [
    Scenario(
        "duress cancel looks like a cancel and sends nothing more",
        [
            (FIX, []),
            *HOLD[:2],
            (T(3.0), [Send(0, Alarm(Trigger.BUTTON, wire_fix(0.0))), Feedback(Pattern.RAISED)]),
            (R(3.5), []),
            *taps(10, "..-"),
            (T(13), [Send(1, Cancel(0, duress=True)), Feedback(Pattern.CANCELLED)]),
            (T(33.0), []),
            (down(34, Stored(0, DIGEST)), [Delivered(0)]),
            (down(35, Acknowledged(0, DIGEST)), []),
            (T(100), []),
        ],
        mode=Mode.SILENT,
    ),
    Scenario(
        "after a duress cancel a hold raises a normal-looking alarm, receipts felt",
        [
            *HOLD,
            *taps(10, "..-"),
            (T(13), [Send(1, Cancel(0, duress=True)), Feedback(Pattern.CANCELLED)]),
            (P(20), []),
            (T(22), [Send(2, Alarm(Trigger.BUTTON)), Feedback(Pattern.RAISED)]),
            (R(22.5), []),
            (down(23, Stored(2, DIGEST)), [Delivered(2), Feedback(Pattern.STORED)]),
            (down(24, Acknowledged(2, DIGEST)), [Feedback(Pattern.ACKNOWLEDGED)]),
            # the wearer is coerced: a "real" cancel of it is sent as duress too
            *taps(30, "..."),
            (T(32), [Send(3, Cancel(2, duress=True)), Feedback(Pattern.CANCELLED)]),
        ],
        mode=Mode.SILENT,
    ),
    Scenario(
        "after a duress cancel a tamper vibrates as after a real cancel",
        [
            (TamperClosed(0), []),
            *HOLD,
            *taps(10, "..-"),
            (T(13), [Send(1, Cancel(0, duress=True)), Feedback(Pattern.CANCELLED)]),
            (TamperOpened(20), []),
            (T(20.5), [Send(2, Alarm(Trigger.TAMPER)), Feedback(Pattern.RAISED)]),
            (T(80.5), [Feedback(Pattern.UNDELIVERED)]),
        ],
        mode=Mode.SILENT,
    ),
    Scenario(
        "after a duress cancel check-ins resume as after a real cancel",
        [
            (T(100), [Send(0, Alarm(Trigger.MISSED_CHECKIN)), Feedback(Pattern.RAISED)]),
            *taps(105, "..-"),
            (T(108), [Send(1, Cancel(0, duress=True)), Feedback(Pattern.CANCELLED)]),
            (T(197), []),
            (T(198), [Feedback(Pattern.REMINDER)]),
            (T(208), [Send(2, Alarm(Trigger.MISSED_CHECKIN)), Feedback(Pattern.RAISED)]),
        ],
        settings=replace(BASE, checkin_interval=100, checkin_reminder=10),
        mode=Mode.SILENT,
    ),
    Scenario(
        "duress gesture raises a silent alarm",
        [*taps(1, "...."), (T(3), [Send(0, Alarm(Trigger.DURESS))])],
        mode=Mode.SILENT,
    ),
    Scenario(
        "no receipts while silent",
        [
            *taps(1, "...."),
            (T(3), [Send(0, Alarm(Trigger.DURESS))]),
            (down(4, Stored(0, DIGEST)), [Delivered(0)]),
            (down(5, Acknowledged(0, DIGEST)), []),
        ],
    ),
    Scenario(
        "zeroise_after_duress erases after every cancel, real or coerced alike",
        [
            *HOLD,
            *taps(10, "..."),
            (T(12), [Send(1, Cancel(0)), Feedback(Pattern.CANCELLED)]),
            (down(13, Stored(1, DIGEST)), [Delivered(1), Zeroise()]),
        ],
        settings=replace(BASE, zeroise_after_duress=True),
        mode=Mode.IDLE,
    ),
    Scenario(
        "after a silent alarm a hold raises a normal-looking alarm",
        [
            *taps(1, "...."),
            (T(3), [Send(0, Alarm(Trigger.DURESS))]),
            (P(5), []),
            (T(7), [Send(1, Alarm(Trigger.BUTTON)), Feedback(Pattern.RAISED)]),
        ],
        mode=Mode.SILENT,
    ),
    Scenario(
        "a silent alarm with no stored never nudges",
        [*taps(1, "...."), (T(3), [Send(0, Alarm(Trigger.DURESS))]), (T(63), []), (T(500), [])],
        mode=Mode.SILENT,
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    sc.play()


def test_cancel_and_duress_cancel_bodies_differ_only_in_the_flag() -> None:
    a, b = Cancel(3), Cancel(3, duress=True)
    assert (a.alarm_seq, type(a)) == (b.alarm_seq, type(b))
    assert a.duress is False
    assert b.duress is True
