"""The alarm core keeps the hub informed: jittered heartbeats carrying battery, fix, signal and
mode (no position messages), and check-ins with their reminder and missed alarm."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.alarm_timeline import BASE, FIX, P, R, Scenario, T, down, taps, wire_fix
from tests.support.parties import DIGEST
from vigil.device.core import (
    AlarmCore,
    BatteryLevel,
    Delivered,
    Feedback,
    LinkChanged,
    Mode,
    Pattern,
    Send,
    SignalLevel,
)
from vigil.wire.messages import Alarm, Cancel, Checkin, Heartbeat, Resolved, Stored, Trigger

SCENARIOS = [
    Scenario(
        "no position messages in any mode: heartbeats carry the fix at their own times",
        [
            (FIX, []),
            (P(1), []),
            (T(3), [Send(0, Alarm(Trigger.BUTTON, wire_fix(0.0))), Feedback(Pattern.RAISED)]),
            (R(3.1), []),
            (down(4, Stored(0, DIGEST)), [Delivered(0), Feedback(Pattern.STORED)]),
            (T(33), []),
            (T(59), []),
            (T(60), [Send(1, Heartbeat(fix=wire_fix(55.0), mode=Mode.ACTIVE))]),
            (down(64, Resolved(0, DIGEST)), []),
            (T(120), [Send(2, Heartbeat(fix=wire_fix(115.0)))]),
        ],
        settings=replace(BASE, heartbeat_interval=60),
        mode=Mode.IDLE,
    ),
    Scenario(
        "heartbeats carry battery, the latest fix with its age, signal and mode",
        [
            (BatteryLevel(0, 55), []),
            (LinkChanged(1, up=True, signal=70), []),
            (FIX, []),
            (T(59), []),
            (T(60), [Send(0, Heartbeat(55, wire_fix(55.0), 70))]),
            (SignalLevel(61, 40), []),
            (T(120), [Send(1, Heartbeat(55, wire_fix(115.0), 40))]),
            (LinkChanged(121, up=False), []),
            (T(180), [Send(2, Heartbeat(55, wire_fix(175.0), None))]),
        ],
        settings=replace(BASE, heartbeat_interval=60),
    ),
    Scenario(
        "check-in: press in time, reminder, then missed",
        [
            (T(10), []),
            (P(20), []),
            (R(20.1), []),
            (T(21), [Send(0, Checkin())]),
            (T(109), []),
            (T(111), [Feedback(Pattern.REMINDER)]),
            (T(121), [Send(1, Alarm(Trigger.MISSED_CHECKIN)), Feedback(Pattern.RAISED)]),
            (down(122, Stored(1, DIGEST)), [Delivered(1), Feedback(Pattern.STORED)]),
            (T(400), []),
        ],
        settings=replace(BASE, checkin_interval=100, checkin_reminder=10),
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "missed check-in alarm can be cancelled in grace",
        [
            (T(100), [Send(0, Alarm(Trigger.MISSED_CHECKIN)), Feedback(Pattern.RAISED)]),
            *taps(105, "..."),
            (T(107), [Send(1, Cancel(0)), Feedback(Pattern.CANCELLED)]),
        ],
        settings=replace(BASE, checkin_interval=100, checkin_reminder=10),
        mode=Mode.IDLE,
    ),
    Scenario(
        "heartbeats report the alarm mode",
        [
            (T(60), [Send(0, Heartbeat(mode=Mode.IDLE))]),
            (P(61), []),
            (T(63), [Send(1, Alarm(Trigger.BUTTON)), Feedback(Pattern.RAISED)]),
            (down(64, Stored(1, DIGEST)), [Delivered(1), Feedback(Pattern.STORED)]),
            (T(120), [Send(2, Heartbeat(mode=Mode.ACTIVE))]),
        ],
        settings=replace(BASE, heartbeat_interval=60),
        mode=Mode.ACTIVE,
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    sc.play()


@pytest.mark.parametrize(("draw", "first"), [(0.0, 75.0), (0.5, 100.0), (0.999, 124.95)])
def test_heartbeats_are_jittered_within_a_quarter_of_the_interval(
    draw: float, first: float
) -> None:
    """No fixed grid for a broker to filter by (docs/protocol.md §8)."""
    core = AlarmCore(replace(BASE, heartbeat_interval=100), first_seq=0, started_at=0.0,
                     rand=lambda: draw)  # fmt: skip
    assert core.next_deadline() == pytest.approx(first)
    assert core.handle(T(first - 0.01)) == []
    assert core.handle(T(first)) == [Send(0, Heartbeat())]
    assert core.next_deadline() == pytest.approx(2 * first)


def test_heartbeat_gaps_vary_with_the_draw() -> None:
    draws = iter([0.0, 1.0, 0.25, 0.75])
    core = AlarmCore(replace(BASE, heartbeat_interval=100), first_seq=0, started_at=0.0,
                     rand=lambda: next(draws))  # fmt: skip
    times = []
    for _ in range(3):
        at = core.next_deadline()
        assert core.handle(T(at)) == [Send(len(times), Heartbeat())]
        times.append(at)
    assert times == pytest.approx([75.0, 75.0 + 125.0, 75.0 + 125.0 + 87.5])
