"""The alarm core after an alarm leaves: stored then acknowledged, felt once and only for the
wearer's own alarms, nudges until stored, resolution; seqs that never repeat."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.alarm_timeline import BASE, HOLD, MIDDLE, P, R, Scenario, T, down
from tests.support.parties import DIGEST
from vigil.device.core import (
    AlarmCore,
    Delivered,
    Event,
    Feedback,
    GpsFix,
    Mode,
    Pattern,
    Send,
    TamperClosed,
    TamperOpened,
)
from vigil.wire.fix import Fix
from vigil.wire.messages import Acknowledged, Alarm, Cancel, Config, Resolved, Stored, Trigger

SCENARIOS = [
    Scenario(
        "two-stage receipt: stored then acknowledged",
        [
            *HOLD,
            (down(4, Stored(0, DIGEST)), [Delivered(0), Feedback(Pattern.STORED)]),
            (down(9, Acknowledged(0, DIGEST)), [Feedback(Pattern.ACKNOWLEDGED)]),
        ],
    ),
    Scenario(
        "receipt for another seq gives no stored feedback",
        [
            *HOLD,
            (down(4, Stored(7, DIGEST)), [Delivered(7)]),
            (down(5, Acknowledged(7, DIGEST)), []),
        ],
    ),
    Scenario(
        "resolving one of two alarms keeps the device active",
        [
            (TamperClosed(0), []),
            *HOLD,
            (TamperOpened(5), []),
            (T(5.5), [Send(1, Alarm(Trigger.TAMPER)), Feedback(Pattern.RAISED)]),
            (down(6, Resolved(0, DIGEST)), []),
        ],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "an alarm with no stored nudges the wearer every undelivered_after until it is stored",
        [
            *HOLD,
            (T(62.9), []),
            (T(63), [Feedback(Pattern.UNDELIVERED)]),
            (T(122.9), []),
            (T(123), [Feedback(Pattern.UNDELIVERED)]),
            (down(124, Stored(0, DIGEST)), [Delivered(0), Feedback(Pattern.STORED)]),
            (T(183), []),
            (T(300), []),
        ],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "a repeated stored vibrates only the first time",
        [
            *HOLD,
            (down(4, Stored(0, DIGEST)), [Delivered(0), Feedback(Pattern.STORED)]),
            (down(5, Stored(0, DIGEST)), [Delivered(0)]),
            (down(40, Stored(0, DIGEST)), [Delivered(0)]),
            (T(200), []),
        ],
        mode=Mode.ACTIVE,
    ),
    Scenario(
        "a resolved alarm stops nudging even without its stored",
        [*HOLD, (down(10, Resolved(0, DIGEST)), []), (T(63), []), (T(500), [])],
        mode=Mode.IDLE,
    ),
    Scenario(
        "config downlinks change nothing yet",
        [(down(1, Config({"x": 1})), [])],
        mode=Mode.IDLE,
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(sc: Scenario) -> None:
    sc.play()


def test_seqs_start_at_the_persisted_counter_and_never_repeat() -> None:
    core = AlarmCore(
        replace(BASE, heartbeat_interval=1), first_seq=41, started_at=0.0, rand=MIDDLE
    )
    seqs = [a.seq for t in range(1, 20) for a in core.handle(T(float(t))) if isinstance(a, Send)]
    assert seqs == list(range(41, 60))
    assert core.next_seq == 60


EVENT_MAKERS: list[Callable[[float], Event]] = [
    P,
    R,
    T,
    TamperOpened,
    TamperClosed,
    lambda t: GpsFix(at=t, fix=Fix(lat=1.0, lon=2.0)),
    lambda t: down(t, Stored(0, DIGEST)),
    lambda t: down(t, Acknowledged(0, DIGEST)),
    lambda t: down(t, Resolved(0, DIGEST)),
    lambda t: down(t, Resolved(1, DIGEST)),
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 5, allow_nan=False), st.integers(0, len(EVENT_MAKERS) - 1)),
        max_size=80,
    )
)
def test_invariants_hold_for_any_event_sequence(steps: list[tuple[float, int]]) -> None:
    """Seqs only grow; receipts are felt only for raised alarms; a tamper alarm is never cancelled;
    the wearer feels `stored` at most once for an alarm (here seq 0, the only one receipted)."""
    core = AlarmCore(replace(BASE, heartbeat_interval=7, checkin_interval=20, checkin_reminder=5),
                     first_seq=0, started_at=0.0, rand=MIDDLE)  # fmt: skip
    now, last_seq, tamper_alarms, stored_felt = 0.0, -1, set(), 0
    for delta, which in steps:
        now += delta
        raised_before = 0 in core.memory().raised
        for action in core.handle(EVENT_MAKERS[which](now)):
            if isinstance(action, Send):
                assert action.seq > last_seq
                last_seq = action.seq
                if isinstance(action.body, Alarm) and action.body.trigger is Trigger.TAMPER:
                    tamper_alarms.add(action.seq)
                if isinstance(action.body, Cancel):
                    assert action.body.alarm_seq not in tamper_alarms
            receipt = action in (Feedback(Pattern.STORED), Feedback(Pattern.ACKNOWLEDGED))
            if receipt and not raised_before:  # seq 0 silent, cancelled or never raised
                raise AssertionError(f"{action} felt for an alarm the wearer has not raised")
            if action == Feedback(Pattern.STORED):
                stored_felt += 1
                assert stored_felt == 1, "stored felt twice"
        deadline = core.next_deadline()
        assert deadline is None or deadline >= now - 5
