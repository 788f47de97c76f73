"""The alarm core after a restart: the memory and the outbox bring back active alarms, their
nudges and an armed zeroise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.alarm_timeline import BASE, MIDDLE, T, down, taps
from tests.support.parties import DIGEST
from vigil.device.core import (
    AlarmCore,
    Delivered,
    Feedback,
    GpsFix,
    Memory,
    Mode,
    Pattern,
    Send,
    TamperClosed,
    TamperOpened,
    Zeroise,
)
from vigil.wire.fix import Fix
from vigil.wire.messages import Acknowledged, Heartbeat, Resolved, Stored


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


UNDATED = Fix(lat=52.5, lon=13.4, fix_time=None, quality=1, satellites=7)
FIX_AT_1000 = GpsFix(at=1000.0, fix=UNDATED)


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


@given(
    raised=st.lists(st.integers(0, 2**40), max_size=5).map(tuple),
    covert=st.lists(st.integers(0, 2**40), max_size=5).map(tuple),
    tamper=st.booleans(),
    after=st.none() | st.integers(0, 2**40),
)
def test_the_saved_memory_reads_back_as_written(
    raised: tuple[int, ...], covert: tuple[int, ...], tamper: bool, after: int | None
) -> None:
    memory = Memory(raised, covert, tamper, after)
    assert Memory.from_json(memory.to_json()) == memory


@pytest.mark.parametrize(
    "text",
    ["", "{", "[]", "null", '{"raised": "x", "covert": [], "tamper": 1, "zeroise_after": null}',
     '{"raised": [], "covert": [], "tamper": false}', '{"raised": [{}], "covert": [], '
     '"tamper": false, "zeroise_after": null}', '{"raised": [], "covert": [], "tamper": false, '
     '"zeroise_after": "soon"}'],
)  # fmt: skip
def test_a_saved_memory_that_is_not_one_is_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="not a saved memory"):
        Memory.from_json(text)
