"""The alarm core's vocabulary: its settings, the events it takes and the actions it returns.

Pure data, no I/O; see device/core.py for the machine and the gestures.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass

from vigil.wire.fix import Fix
from vigil.wire.messages import Message, Mode, UplinkBody

_GESTURE_RE = re.compile(r"[.-]{1,8}")


# -- settings --------------------------------------------------------------------------


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not zero_ok) or value > 86400 * 7:
        raise ValueError(f"{name} must be {'>= 0' if zero_ok else '> 0'} s and <= 7 days")


@dataclass(frozen=True, slots=True)
class AlarmSettings:
    """Timings and gestures of the alarm logic (the `[alarm]` config section)."""

    hold_seconds: float = 2.0
    long_press_seconds: float = 0.6
    gap_seconds: float = 0.7
    grace_seconds: float = 30.0
    tamper_debounce: float = 0.5
    heartbeat_interval: float = 60.0
    checkin_interval: float = 0.0
    checkin_reminder: float = 60.0
    undelivered_after: float = 60.0
    cancel: str = "..."
    duress_cancel: str = "..-"
    duress: str = "...."
    zeroise_after_duress: bool = False
    zeroise_timeout: float = 900.0

    def __post_init__(self) -> None:
        for name in ("hold_seconds", "long_press_seconds", "gap_seconds", "tamper_debounce"):
            _positive(name, getattr(self, name))
        for name in ("grace_seconds", "heartbeat_interval", "undelivered_after",
                     "zeroise_timeout"):  # fmt: skip
            _positive(name, getattr(self, name))
        if not isinstance(self.zeroise_after_duress, bool):
            raise TypeError("zeroise_after_duress must be true or false")
        _positive("checkin_interval", self.checkin_interval, zero_ok=True)
        _positive("checkin_reminder", self.checkin_reminder, zero_ok=True)
        if self.long_press_seconds >= self.hold_seconds:
            raise ValueError("long_press_seconds must be shorter than hold_seconds")
        if self.checkin_interval and self.checkin_reminder >= self.checkin_interval:
            raise ValueError("checkin_reminder must be shorter than checkin_interval")
        gestures = (self.cancel, self.duress_cancel, self.duress)
        for name, gesture in zip(("cancel", "duress_cancel", "duress"), gestures, strict=True):
            if not isinstance(gesture, str) or not _GESTURE_RE.fullmatch(gesture):
                raise ValueError(f"{name} must be 1..8 of '.' (short) and '-' (long)")
            if gesture == ".":
                raise ValueError(f"{name} must not be a single short press (that is a bump)")
        if len(set(gestures)) != 3:
            raise ValueError("cancel, duress_cancel and duress must be different gestures")


# -- memory ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Memory:
    """What must survive a power cut: the raised and the covert alarms, and the tamper.

    After a restart the grace period is over (no cancel), a covert alarm stays
    covert, a tamper alarm stays uncancellable and a pending zeroise is armed
    again (at once if its message was stored meanwhile).
    """

    raised: tuple[int, ...] = ()
    covert: tuple[int, ...] = ()
    tamper_fired: bool = False
    zeroise_after: int | None = None

    @property
    def mode(self) -> Mode:
        if self.covert:
            return Mode.SILENT
        return Mode.ACTIVE if self.raised else Mode.IDLE

    def to_json(self) -> str:
        """As the outbox's (sealed) state row holds it."""
        doc = {
            "raised": list(self.raised),
            "covert": list(self.covert),
            "tamper": self.tamper_fired,
            "zeroise_after": self.zeroise_after,
        }
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> Memory:
        """The memory `to_json` wrote; `ValueError` if `text` is not that."""
        try:
            doc = json.loads(text)
            raised = tuple(int(a) for a in doc["raised"])
            covert = tuple(int(a) for a in doc["covert"])
            after = doc["zeroise_after"]
            tamper = bool(doc["tamper"])
            return cls(raised, covert, tamper, None if after is None else int(after))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a saved memory: {type(exc).__name__}: {exc}") from exc


# -- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ButtonPressed:
    at: float


@dataclass(frozen=True, slots=True)
class ButtonReleased:
    at: float


@dataclass(frozen=True, slots=True)
class TamperOpened:
    at: float


@dataclass(frozen=True, slots=True)
class TamperClosed:
    at: float


@dataclass(frozen=True, slots=True)
class Tick:
    at: float


@dataclass(frozen=True, slots=True)
class GpsFix:
    """A good fix from the receiver, observed at monotonic time `at`."""

    at: float
    fix: Fix

    def age(self, now: float) -> float:
        """Seconds since the fix was observed (never negative)."""
        return max(0.0, now - self.at)


@dataclass(frozen=True, slots=True)
class BatteryLevel:
    at: float
    percent: int | None


@dataclass(frozen=True, slots=True)
class SignalLevel:
    """Link quality in percent (None = unknown), reported in heartbeats."""

    at: float
    percent: int | None


@dataclass(frozen=True, slots=True)
class LinkChanged:
    at: float
    up: bool
    signal: int | None = None


@dataclass(frozen=True, slots=True)
class DownlinkReceived:
    """A downlink that verified (the shell drops everything else before the core)."""

    at: float
    message: Message


Event = (
    ButtonPressed
    | ButtonReleased
    | TamperOpened
    | TamperClosed
    | Tick
    | GpsFix
    | BatteryLevel
    | SignalLevel
    | LinkChanged
    | DownlinkReceived
)


# -- actions -----------------------------------------------------------------------------


class Pattern(enum.Enum):
    """Feedback the wearer can feel (vibration, with the LED blinking along)."""

    RAISED = "raised"
    CANCELLED = "cancelled"
    STORED = "stored"
    ACKNOWLEDGED = "acknowledged"
    REMINDER = "reminder"
    UNDELIVERED = "undelivered"  # an alarm has had no `stored` for `undelivered_after`


@dataclass(frozen=True, slots=True)
class Send:
    """Commit `body` as uplink `seq` to the outbox, then publish it."""

    seq: int
    body: UplinkBody


@dataclass(frozen=True, slots=True)
class Feedback:
    pattern: Pattern


@dataclass(frozen=True, slots=True)
class Delivered:
    """The hub has uplink `seq` on disk: drop it from the outbox."""

    seq: int


@dataclass(frozen=True, slots=True)
class Zeroise:
    """Crypto-erase the state now and go on as a new life (docs/protocol.md §8)."""


Action = Send | Feedback | Delivered | Zeroise
