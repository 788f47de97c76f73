"""The alarm core reads the button: a hold raises, a bump does not, a cancel gesture within
grace cancels; timed events in, the exact actions out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.support.alarm_timeline import (
    BASE,
    FIX,
    HOLD,
    MIDDLE,
    SEND_ALARM,
    P,
    R,
    Scenario,
    T,
    taps,
    wire_fix,
)
from vigil.device.core import (
    AlarmCore,
    BatteryLevel,
    Feedback,
    Mode,
    Pattern,
    Send,
    TamperClosed,
    TamperOpened,
)
from vigil.wire.messages import Alarm, Cancel, Trigger

SCENARIOS = [
    Scenario("short bump does nothing", [(P(1), []), (R(1.2), []), (T(5), [])], mode=Mode.IDLE),
    Scenario("hold raises one alarm with one vibration", HOLD, mode=Mode.ACTIVE),
    Scenario(
        "hold detected at release when no tick came",
        [(P(1), []), (R(3.2), [SEND_ALARM, Feedback(Pattern.RAISED)])],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "alarm carries last fix with its age and the battery",
        [
            (FIX, []),
            (BatteryLevel(6, 80), []),
            (P(10), []),
            (T(12), [Send(0, Alarm(Trigger.BUTTON, wire_fix(7.0), 80)), Feedback(Pattern.RAISED)]),
        ],
    ),
    Scenario(
        "cancel gesture within grace cancels",
        [*HOLD, *taps(10, "..."), (T(12), [Send(1, Cancel(0)), Feedback(Pattern.CANCELLED)])],
        mode=Mode.IDLE,
    ),
    Scenario(
        "cancel finished just inside grace counts though read after it",
        [
            *HOLD,
            *taps(32.0, "..."),
            (T(33.0), []),
            (T(33.7), [Send(1, Cancel(0)), Feedback(Pattern.CANCELLED)]),
        ],
        mode=Mode.IDLE,
    ),
    Scenario(
        "cancel after grace is ignored",
        [*HOLD, *taps(40, "..."), (T(42), [])],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "wrong gesture does not cancel",
        [*HOLD, *taps(10, ".."), (T(12), [])],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "custom gestures are honoured",
        [
            (P(1), []),
            (R(3.5), [SEND_ALARM, Feedback(Pattern.RAISED)]),
            *taps(5, "-."),
            (T(8), [Send(1, Cancel(0)), Feedback(Pattern.CANCELLED)]),
        ],
        settings=replace(BASE, cancel="-.", duress_cancel="--", duress="...-"),
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    sc.play()


def test_a_dash_longer_than_the_gap_is_not_cut_short_by_a_tick() -> None:
    """`..-` pressed with the dash outlasting `gap_seconds`: read at the end, not as `..`."""
    core = AlarmCore(BASE, first_seq=0, started_at=0.0, rand=MIDDLE)
    assert core.handle(P(1.0)) == []
    assert core.handle(T(3.0)) == [SEND_ALARM, Feedback(Pattern.RAISED)]
    core.handle(R(3.5))
    for event in [P(10.0), R(10.1), P(10.3), R(10.4), P(10.6)]:
        assert core.handle(event) == []
    assert core.handle(T(11.5)) == []  # 1.1 s after the last release, the dash still held
    assert core.handle(R(11.6)) == []
    assert core.handle(T(12.4)) == [Send(1, Cancel(0, duress=True)), Feedback(Pattern.CANCELLED)]


def test_deadline_covers_hold_gap_and_tamper() -> None:
    core = AlarmCore(BASE, first_seq=0, started_at=0.0, rand=MIDDLE)
    core.handle(P(1.0))
    assert core.next_deadline() == pytest.approx(3.0)
    core.handle(R(1.1))
    assert core.next_deadline() == pytest.approx(1.1 + BASE.gap_seconds)
    core.handle(T(2.0))
    core.handle(TamperClosed(2.0))
    core.handle(TamperOpened(2.5))
    assert core.next_deadline() == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"hold_seconds": 0}, "hold_seconds"),
        ({"hold_seconds": -1}, "hold_seconds"),
        ({"grace_seconds": float("inf")}, "grace_seconds"),
        ({"long_press_seconds": 3.0}, "long_press_seconds"),
        ({"cancel": "."}, "bump"),
        ({"cancel": "abc"}, "cancel"),
        ({"duress": "..."}, "different"),
        ({"checkin_interval": 10, "checkin_reminder": 20}, "checkin_reminder"),
        ({"heartbeat_interval": True}, "heartbeat_interval"),
    ],
)
def test_bad_settings_are_refused(change: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        replace(BASE, **change)
