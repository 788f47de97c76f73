"""The wearable's GPIO parts on gpiozero: panic button and tamper loop in, vibration and LED out.

Wiring (BCM numbers from vigil/device/pinout.toml): the button is momentary,
normally open, between its GPIO and GND, with the internal pull-up; the tamper
loop runs through the strap from its GPIO to GND, so it reads "pressed" while
worn and "released" when cut or torn off. The vibration motor hangs on a
transistor driven by a (PWM) GPIO, the LED on a GPIO through 330 ohm.

Pin backends come from gpiozero: `GPIOZERO_PIN_FACTORY=lgpio` on the Pi,
`MockFactory` in tests and in `vigil-device simulate`:

    inputs = Inputs(cfg.pins, on_event=queue.put, clock=time.monotonic)
    feedback = Feedback(cfg.pins)
    feedback.play(Pattern.RAISED)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from gpiozero import LED, DigitalInputDevice, OutputDevice, PWMOutputDevice

from vigil.device.config import PinConfig
from vigil.device.core import (
    ButtonPressed,
    ButtonReleased,
    Event,
    Pattern,
    TamperClosed,
    TamperOpened,
)

_LOG = logging.getLogger(__name__)

BUTTON_BOUNCE = 0.02  # short: a long bounce time would delay the press (see STYLE traps)
TAMPER_BOUNCE = 0.05

# (on, off) seconds for each pattern; pattern A (stored) and B (acknowledged) must feel
# different from each other and from the "raised" buzz.
PATTERNS: dict[Pattern, tuple[tuple[float, float], ...]] = {
    Pattern.RAISED: ((0.8, 0.0),),
    Pattern.CANCELLED: ((0.15, 0.15), (0.15, 0.0)),
    Pattern.STORED: ((0.1, 0.1), (0.1, 0.1), (0.1, 0.0)),
    Pattern.ACKNOWLEDGED: ((0.5, 0.2), (0.1, 0.2), (0.5, 0.0)),
    Pattern.REMINDER: ((0.1, 0.4), (0.1, 0.0)),
    # Four long pulses: unlike anything help sends back. Not yet delivered: try to move.
    Pattern.UNDELIVERED: ((0.4, 0.3), (0.4, 0.3), (0.4, 0.3), (0.4, 0.0)),
}


class Inputs:
    """Button and tamper loop; every edge becomes a core event passed to `on_event`.

    `on_event` runs on gpiozero's callback thread: hand the event to a queue.
    """

    def __init__(
        self,
        pins: PinConfig,
        *,
        on_event: Callable[[Event], None],
        clock: Callable[[], float] = time.monotonic,
        pin_factory: Any = None,
    ) -> None:
        self._emit, self._clock = on_event, clock
        # Not gpiozero's Button: its hold thread polls every 0.1 s for `when_held`, which
        # we never use (the core times the hold), and would wake the wearable 20 times a
        # second for two inputs. A plain input device reports the same edges, and nothing
        # runs between them.
        self.button = DigitalInputDevice(
            pins.button, pull_up=True, bounce_time=BUTTON_BOUNCE, pin_factory=pin_factory
        )
        self.tamper = DigitalInputDevice(
            pins.tamper, pull_up=True, bounce_time=TAMPER_BOUNCE, pin_factory=pin_factory
        )
        self.button.when_activated = lambda: self._emit(ButtonPressed(self._clock()))
        self.button.when_deactivated = lambda: self._emit(ButtonReleased(self._clock()))
        self.tamper.when_activated = lambda: self._emit(TamperClosed(self._clock()))
        self.tamper.when_deactivated = lambda: self._emit(TamperOpened(self._clock()))

    def initial_events(self) -> list[Event]:
        """Events describing the state at start (the loop may already be closed or open)."""
        now = self._clock()
        events: list[Event] = [TamperClosed(now) if self.tamper.is_active else TamperOpened(now)]
        if self.button.is_active:
            events.append(ButtonPressed(now))
        return events

    def close(self) -> None:
        self.button.close()
        self.tamper.close()


class Feedback:
    """Play vibration patterns (the LED blinks along) on a worker thread, one at a time."""

    def __init__(self, pins: PinConfig, *, pin_factory: Any = None) -> None:
        motor_cls = PWMOutputDevice if pins.vibration_pwm else OutputDevice
        self.motor = motor_cls(pins.vibration, pin_factory=pin_factory)
        self.led = LED(pins.led, pin_factory=pin_factory)
        self._queue: queue.Queue[Pattern | None] = queue.Queue()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
        self._thread.start()
        self.played: list[Pattern] = []

    def play(self, pattern: Pattern) -> None:
        self._queue.put(pattern)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)
        self.motor.close()
        self.led.close()

    def _run(self) -> None:
        while (pattern := self._queue.get()) is not None:
            for on, off in PATTERNS[pattern]:
                self.motor.on()
                self.led.on()
                self._done.wait(on)  # a timed pulse on our own thread, never the main loop
                self.motor.off()
                self.led.off()
                self._done.wait(off)
            self.played.append(pattern)
