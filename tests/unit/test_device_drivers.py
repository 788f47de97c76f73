"""GPIO drivers on gpiozero's own MockFactory: pins driven, events and patterns observed."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from tests.support.wait import wait_until
from vigil.device.config import PinConfig, default_pins
from vigil.device.core import (
    ButtonPressed,
    ButtonReleased,
    Event,
    Pattern,
    TamperClosed,
    TamperOpened,
)
from vigil.device.drivers.battery import read_battery
from vigil.device.drivers.inputs import PATTERNS, Feedback, Inputs
from vigil.device.drivers.link import read_link_quality

PINS = PinConfig(**default_pins()[0])


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.close()
        Device.pin_factory = previous


def drain(q: queue.Queue[Event], n: int) -> list[Event]:
    return [q.get(timeout=5) for _ in range(n)]


def test_button_edges_become_events(factory: MockFactory) -> None:
    q: queue.Queue[Event] = queue.Queue()
    ticks = iter(range(100))
    inputs = Inputs(PINS, on_event=q.put, clock=lambda: float(next(ticks)))
    try:
        pin = factory.pin(PINS.button)
        pin.drive_low()
        wait_until(lambda: q.qsize() >= 1, what="press")
        pin.drive_high()
        events = drain(q, 2)
        assert [type(e) for e in events] == [ButtonPressed, ButtonReleased]
        assert events[0].at < events[1].at
    finally:
        inputs.close()


def test_tamper_loop_closed_while_worn_and_open_when_cut(factory: MockFactory) -> None:
    q: queue.Queue[Event] = queue.Queue()
    inputs = Inputs(PINS, on_event=q.put)
    loop = factory.pin(PINS.tamper)
    try:
        assert [type(e) for e in inputs.initial_events()] == [TamperOpened]  # not worn yet
        loop.drive_low()  # worn: the strap closes the loop to GND
        assert isinstance(q.get(timeout=5), TamperClosed)
        assert [type(e) for e in inputs.initial_events()] == [TamperClosed]
        loop.drive_high()  # cut: the pull-up wins
        assert isinstance(q.get(timeout=5), TamperOpened)
        assert [type(e) for e in inputs.initial_events()] == [TamperOpened]
    finally:
        inputs.close()


def test_button_uses_pull_up(factory: MockFactory) -> None:
    inputs = Inputs(PINS, on_event=lambda e: None)
    try:
        assert factory.pin(PINS.button).pull == "up"
        assert factory.pin(PINS.tamper).pull == "up"
        assert not inputs.button.is_active
    finally:
        inputs.close()


def test_inputs_run_no_thread_between_edges(factory: MockFactory) -> None:
    """Idle costs battery: no poller may wake the wearable while nobody touches it."""
    q: queue.Queue[Event] = queue.Queue()
    before = set(threading.enumerate())
    inputs = Inputs(PINS, on_event=q.put)
    try:
        assert set(threading.enumerate()) == before
        factory.pin(PINS.button).drive_low()  # and the edges still arrive at once
        assert isinstance(q.get(timeout=5), ButtonPressed)
    finally:
        inputs.close()


@pytest.mark.parametrize("pattern", list(Pattern))
def test_feedback_patterns_drive_motor_and_led(factory: MockFactory, pattern: Pattern) -> None:
    fb = Feedback(PINS)
    try:
        motor, led = factory.pin(PINS.vibration), factory.pin(PINS.led)
        fb.play(pattern)
        wait_until(lambda: fb.played == [pattern], 10, what="pattern played")
        pulses = len(PATTERNS[pattern])
        on_edges = [s for s in motor.states if s.state]
        assert len(on_edges) == pulses
        assert len([s for s in led.states if s.state]) == pulses
        assert not motor.state
        assert not led.state
    finally:
        fb.close()


def test_stored_and_acknowledged_feel_different() -> None:
    assert PATTERNS[Pattern.STORED] != PATTERNS[Pattern.ACKNOWLEDGED]
    assert len(set(PATTERNS.values())) == len(PATTERNS)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"87\n", 87), (b"100", 100), (b"250", 100), (b"", None), (b"-5", None), (b"\xff", None)],
)
def test_battery_capacity_file(tmp_path: Path, content: bytes, expected: int | None) -> None:
    path = tmp_path / "BAT0" / "capacity"
    path.parent.mkdir()
    path.write_bytes(content)
    assert read_battery(path) == expected


def test_battery_absent_is_unknown(tmp_path: Path) -> None:
    assert read_battery(None) is None
    assert read_battery(tmp_path / "nope") is None


WIRELESS = """Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
 face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
 wlan0: 0000   54.  -56.  -256        0      0      0      0     26        0
"""


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (WIRELESS, 77),
        (WIRELESS.replace("54.", "90."), 100),
        (WIRELESS.replace("54.", "nan"), None),
        (WIRELESS.replace("54.", "xx"), None),
        (WIRELESS.splitlines()[0] + "\n" + WIRELESS.splitlines()[1] + "\n", None),
        ("garbage", None),
        ("\x00\xff" * 40, None),
    ],
)
def test_link_quality(tmp_path: Path, content: str, expected: int | None) -> None:
    path = tmp_path / "wireless"
    path.write_text(content, encoding="latin-1")
    assert read_link_quality(path) == expected


def test_link_quality_without_wireless(tmp_path: Path) -> None:
    assert read_link_quality(tmp_path / "absent") is None
