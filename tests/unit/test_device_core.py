"""The alarm state machine as a table of scenarios: timed events in, the exact actions out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.parties import DIGEST, EPOCH, NONCE
from vigil.device.core import (
    Action,
    AlarmCore,
    AlarmSettings,
    BatteryLevel,
    ButtonPressed,
    ButtonReleased,
    Delivered,
    DownlinkReceived,
    Event,
    Feedback,
    GpsFix,
    LinkChanged,
    Memory,
    Mode,
    Pattern,
    Send,
    SignalLevel,
    TamperClosed,
    TamperOpened,
    Tick,
    Zeroise,
)
from vigil.wire.fix import AgedFix, Fix
from vigil.wire.messages import (
    Acknowledged,
    Alarm,
    Cancel,
    Checkin,
    Config,
    Heartbeat,
    Message,
    Resolved,
    Stored,
    Trigger,
)

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


aged = wire_fix


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
        "heartbeats carry battery, the latest fix with its age, signal and mode",
        [
            (BatteryLevel(0, 55), []),
            (LinkChanged(1, up=True, signal=70), []),
            (FIX, []),
            (T(59), []),
            (T(60), [Send(0, Heartbeat(55, aged(55.0), 70))]),
            (SignalLevel(61, 40), []),
            (T(120), [Send(1, Heartbeat(55, aged(115.0), 40))]),
            (LinkChanged(121, up=False), []),
            (T(180), [Send(2, Heartbeat(55, aged(175.0), None))]),
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
    Scenario(
        "a resolved alarm stops nudging even without its stored",
        [*HOLD, (down(10, Resolved(0, DIGEST)), []), (T(63), []), (T(500), [])],
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
    Scenario(
        "config downlinks change nothing yet",
        [(down(1, Config({"x": 1})), [])],
        mode=Mode.IDLE,
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
    core = AlarmCore(sc.settings, first_seq=0, started_at=0.0, rand=MIDDLE)
    for number, (event, expected) in enumerate(sc.steps):
        assert core.handle(event) == expected, f"step {number}: {event}"
    if sc.mode is not None:
        assert core.mode is sc.mode


def test_seqs_start_at_the_persisted_counter_and_never_repeat() -> None:
    core = AlarmCore(
        replace(BASE, heartbeat_interval=1), first_seq=41, started_at=0.0, rand=MIDDLE
    )
    seqs = [a.seq for t in range(1, 20) for a in core.handle(T(float(t))) if isinstance(a, Send)]
    assert seqs == list(range(41, 60))
    assert core.next_seq == 60


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


def test_an_alarm_still_undelivered_at_restart_nudges_again() -> None:
    """The outbox says which alarms never got their `stored`: the nudges resume."""
    memory, cfg = Memory(raised=(4,)), BASE
    # Seq 9 waits in the outbox but is no alarm of the memory: it never nudges.
    core = AlarmCore(cfg, first_seq=10, started_at=1000.0, rand=MIDDLE, memory=memory,
                     pending=[4, 9])  # fmt: skip
    assert core.next_deadline() == pytest.approx(1000.0 + cfg.undelivered_after)
    assert core.handle(T(1060)) == [Feedback(Pattern.UNDELIVERED)]
    assert core.handle(down(1061, Stored(4, DIGEST))) == [Delivered(4), Feedback(Pattern.STORED)]
    assert core.handle(T(1200)) == []
    delivered = AlarmCore(cfg, first_seq=10, started_at=1000.0, rand=MIDDLE, memory=memory)
    assert delivered.handle(T(1060)) == []


def test_memory_restores_an_active_alarm_after_a_restart() -> None:
    core = AlarmCore(BASE, first_seq=0, started_at=0.0, rand=MIDDLE)
    for event in (TamperClosed(0), *[e for e, _ in taps(1, "....")], T(3)):
        core.handle(event)
    core.handle(TamperOpened(4))
    core.handle(T(5))
    memory = core.memory()
    assert memory == Memory(raised=(1,), covert=(0,), tamper_fired=True, zeroise_after=1)
    assert memory.mode is Mode.SILENT
    again = AlarmCore(BASE, first_seq=core.next_seq, started_at=1000.0, rand=MIDDLE,
                      memory=memory, pending=[1])  # fmt: skip
    again.handle(FIX_AT_1000)
    assert again.handle(T(1030)) == []  # no positions: they ride in heartbeats
    assert again.handle(down(1031, Acknowledged(1, DIGEST))) == [Feedback(Pattern.ACKNOWLEDGED)]
    for event in [e for e, _ in taps(1032, "...")]:
        assert again.handle(event) == []
    assert again.handle(T(1040)) == []  # no cancel after a restart (nor of a tamper alarm)
    again.handle(down(1041, Resolved(0, DIGEST)))
    again.handle(down(1042, Resolved(1, DIGEST)))
    assert again.memory() == Memory(zeroise_after=1)
    # The zeroise armed by the tamper survives the restart: stored, then erased.
    assert again.handle(down(1043, Stored(1, DIGEST))) == [Delivered(1), Zeroise()]
    assert again.memory() == Memory()


def test_a_restart_after_the_tamper_alarm_was_stored_erases_at_once() -> None:
    memory = Memory(raised=(3,), tamper_fired=True, zeroise_after=3)
    core = AlarmCore(BASE, first_seq=4, started_at=50.0, rand=MIDDLE, memory=memory, pending=[])
    assert core.next_deadline() == 50.0
    assert core.handle(T(50.0)) == [Zeroise()]
    core.renumber(0)
    assert core.handle(T(BASE.heartbeat_interval + 50.0)) == [Send(0, Heartbeat())]


UNDATED = Fix(lat=52.5, lon=13.4, fix_time=None, quality=1, satellites=7)
FIX_AT_1000 = GpsFix(at=1000.0, fix=UNDATED)


def wire_fix_at(age: float) -> AgedFix:
    return AgedFix(UNDATED, age=age)


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


def test_cancel_and_duress_cancel_bodies_differ_only_in_the_flag() -> None:
    a, b = Cancel(3), Cancel(3, duress=True)
    assert (a.alarm_seq, type(a)) == (b.alarm_seq, type(b))
    assert a.duress is False
    assert b.duress is True


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
