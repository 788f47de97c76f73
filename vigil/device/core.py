"""Decide when there is an alarm: the wearable's pure state machine (events in, actions out).

No threads, sleeps, clock reads or I/O: every event carries its own monotonic
time `at`, and the shell (device/daemon.py) carries out the returned actions.
`AlarmCore.next_deadline()` is the schedule: the shell must deliver a `Tick`
no later than that time.

Gestures (all configurable in `[alarm]`, see `GestureSettings`):

- **hold** the button for `hold_seconds` (default 2 s): alarm, trigger `button`,
  one `RAISED` vibration. A short bump does nothing (or counts as a check-in
  when check-ins are on).
- presses separated by less than `gap_seconds` form a gesture, written as
  dots (short press) and dashes (a press of `long_press_seconds` or more, but
  shorter than a hold). A gesture is read when the gap after it has passed:
    - `cancel` (default `...`, three quick presses) within `grace_seconds`
      of a button or missed-check-in alarm: send `cancel`, `CANCELLED` vibration.
    - `duress_cancel` (default `..-`, two quick presses and a longer one) in
      the same window: exactly the same `CANCELLED` vibration and a `cancel`
      of the same size on the wire, but with `duress=true`; the device then
      keeps sending positions silently.
    - `duress` (default `....`, four quick presses) while idle: silent alarm,
      trigger `duress`: no vibration, no LED, no receipts.
- the **tamper** loop opening for `tamper_debounce` raises an alarm (trigger
  `tamper`) that the wearer cannot cancel. The loop is armed once it has been
  seen closed, so a device booted before it is put on does not raise one.
- **check-in** (off when `checkin_interval` is 0): a single short press within
  each interval; a `REMINDER` vibration `checkin_reminder` seconds before the
  deadline; a missed deadline raises an alarm (trigger `missed-checkin`).

Verified downlinks: `stored` for the newest alarm gives pattern `STORED`,
`acknowledged` gives pattern `ACKNOWLEDGED` (never while silent), `resolved`
ends the alarm and its follow-up positions.

```mermaid
stateDiagram-v2
    [*] --> Idle
    Idle --> Active: hold / tamper / missed check-in (RAISED)
    Idle --> Silent: duress gesture (no feedback)
    Active --> Idle: cancel gesture in grace (CANCELLED)
    Active --> Silent: duress-cancel gesture in grace (CANCELLED)
    Active --> Active: tamper (new alarm, no cancel any more)
    Silent --> Silent: tamper (new alarm, silent)
    Active --> Idle: resolved (all alarms)
    Silent --> Idle: resolved (all alarms)
```
In `Active` and `Silent` a `position` follows every `position_interval`
while there is a fix; heartbeats go out every `heartbeat_interval` in all states.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from vigil.device.events import (
    Action,
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
    Pattern,
    Send,
    SignalLevel,
    TamperClosed,
    TamperOpened,
    Tick,
)
from vigil.wire.fix import AgedFix
from vigil.wire.messages import (
    Acknowledged,
    Alarm,
    Cancel,
    Checkin,
    Config,
    Heartbeat,
    Message,
    Mode,
    Position,
    Resolved,
    Stored,
    Trigger,
    UplinkBody,
)

__all__ = [
    "Action",
    "AlarmCore",
    "AlarmSettings",
    "BatteryLevel",
    "ButtonPressed",
    "ButtonReleased",
    "Delivered",
    "DownlinkReceived",
    "Event",
    "Feedback",
    "GpsFix",
    "LinkChanged",
    "Memory",
    "Mode",
    "Pattern",
    "Send",
    "SignalLevel",
    "TamperClosed",
    "TamperOpened",
    "Tick",
]


# -- the machine ---------------------------------------------------------------------------


@dataclass
class _State:
    mode: Mode = Mode.IDLE
    alarms: list[int] = field(default_factory=list)  # active alarm seqs, newest last
    cancellable_until: float | None = None
    tamper_fired: bool = False
    tamper_armed: bool = False  # armed once the loop was seen closed: not worn at boot is fine
    pressed_at: float | None = None
    held: bool = False
    presses: str = ""
    last_release: float | None = None
    tamper_open_at: float | None = None
    fix: GpsFix | None = None
    battery: int | None = None
    signal: int | None = None
    next_heartbeat: float | None = None
    next_position: float | None = None
    undelivered: dict[int, float] = field(default_factory=dict)  # alarm seq -> next nudge
    checkin_due: float | None = None
    reminded: bool = False


@dataclass(frozen=True, slots=True)
class Memory:
    """What must survive a power cut: the active alarms and whether they are silent.

    After a restart the grace period is over (no cancel), but follow-up
    positions resume, a silent alarm stays silent and a tamper alarm stays
    uncancellable.
    """

    mode: Mode = Mode.IDLE
    alarms: tuple[int, ...] = ()
    tamper_fired: bool = False


class AlarmCore:
    """The alarm state machine; `handle(event)` returns the actions to carry out, in order.

    `first_seq` is the outbox's persisted next sequence number: the core hands
    out seqs from there, so they never repeat across restarts. `memory` is the
    last `memory()` persisted before the restart.
    """

    def __init__(
        self,
        settings: AlarmSettings,
        *,
        first_seq: int,
        started_at: float,
        memory: Memory = Memory(),  # frozen: a shared default is safe
        undelivered: Iterable[int] = (),
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._seq = first_seq
        self._rand = rand
        self._s = _State(next_heartbeat=self._heartbeat_after(started_at))
        if memory.alarms and memory.mode is not Mode.IDLE:
            self._s.mode, self._s.alarms = memory.mode, list(memory.alarms)
            self._s.tamper_fired = memory.tamper_fired
            self._s.next_position = started_at + settings.position_interval
            nudge = started_at + settings.undelivered_after
            self._s.undelivered = {seq: nudge for seq in undelivered if seq in memory.alarms}
        elif settings.checkin_interval:
            self._s.checkin_due = started_at + settings.checkin_interval

    def memory(self) -> Memory:
        """The part of the state to persist (see `Memory`)."""
        s = self._s
        return Memory(s.mode, tuple(s.alarms), s.tamper_fired)

    @property
    def mode(self) -> Mode:
        return self._s.mode

    @property
    def active_alarms(self) -> tuple[int, ...]:
        return tuple(self._s.alarms)

    @property
    def next_seq(self) -> int:
        return self._seq

    def next_deadline(self) -> float | None:
        """Return the latest monotonic time by which the shell must send a `Tick`."""
        s, cfg = self._s, self.settings
        times = [s.next_heartbeat, s.next_position]  # nothing happens when grace ends
        times += s.undelivered.values()
        if s.pressed_at is not None and not s.held:
            times.append(s.pressed_at + cfg.hold_seconds)
        if s.last_release is not None and s.presses:
            times.append(s.last_release + cfg.gap_seconds)
        if s.tamper_open_at is not None and s.tamper_armed and not s.tamper_fired:
            times.append(s.tamper_open_at + cfg.tamper_debounce)
        if s.checkin_due is not None:
            times.append(s.checkin_due if s.reminded else s.checkin_due - cfg.checkin_reminder)
        present = [t for t in times if t is not None]
        return min(present) if present else None

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; return the actions it causes (sends, feedback, deliveries)."""
        out: list[Action] = []
        match event:
            case ButtonPressed(at):
                self._on_press(at, out)
            case ButtonReleased(at):
                self._on_release(at, out)
            case TamperOpened(at):
                if self._s.tamper_open_at is None:
                    self._s.tamper_open_at = at
            case TamperClosed():
                self._s.tamper_open_at, self._s.tamper_armed = None, True
                if self._s.mode is Mode.IDLE:
                    self._s.tamper_fired = False
            case DownlinkReceived(at, message):
                self._on_downlink(message, at, out)
            case Tick():
                pass
            case _:
                self._on_sensor(event)
        self._tick(event.at, out)
        return out

    def _on_sensor(self, event: GpsFix | BatteryLevel | SignalLevel | LinkChanged) -> None:
        s = self._s
        match event:
            case GpsFix():
                s.fix = event
            case BatteryLevel(_, percent):
                s.battery = percent
            case SignalLevel(_, percent):
                s.signal = percent
            case LinkChanged(_, up, signal):
                s.signal = None if not up else (signal if signal is not None else s.signal)

    # -- button gestures -----------------------------------------------------------------

    def _on_press(self, at: float, out: list[Action]) -> None:
        s = self._s
        if (
            s.presses
            and s.last_release is not None
            and at - s.last_release > (self.settings.gap_seconds)
        ):
            self._read_gesture(at, out)
        s.pressed_at, s.held = at, False

    def _on_release(self, at: float, out: list[Action]) -> None:
        s = self._s
        if s.pressed_at is None:
            return
        if not s.held and at - s.pressed_at >= self.settings.hold_seconds:
            self._hold(at, out)
        if not s.held:
            long = at - s.pressed_at >= self.settings.long_press_seconds
            s.presses += "-" if long else "."
            s.last_release = at
        s.pressed_at, s.held = None, False

    def _hold(self, at: float, out: list[Action]) -> None:
        s = self._s
        s.held, s.presses, s.last_release = True, "", None
        if s.mode is Mode.IDLE:
            self._raise(Trigger.BUTTON, at, out, silent=False)

    def _read_gesture(self, at: float, out: list[Action]) -> None:
        s, cfg = self._s, self.settings
        ended = s.last_release if s.last_release is not None else at
        gesture, s.presses, s.last_release = s.presses, "", None
        # A gesture counts when it was finished in time, even if it is read after the gap.
        in_grace = s.cancellable_until is not None and ended <= s.cancellable_until
        if s.mode is Mode.ACTIVE and in_grace and gesture in (cfg.cancel, cfg.duress_cancel):
            self._cancel(at, out, duress=gesture == cfg.duress_cancel)
        elif s.mode is Mode.IDLE and gesture == cfg.duress:
            self._raise(Trigger.DURESS, at, out, silent=True)
        elif gesture == "." and s.checkin_due is not None and s.mode is Mode.IDLE:
            self._send(Checkin(), out)
            s.checkin_due, s.reminded = at + cfg.checkin_interval, False

    # -- alarms --------------------------------------------------------------------------

    def _raise(self, trigger: Trigger, at: float, out: list[Action], *, silent: bool) -> None:
        s = self._s
        seq = self._send(Alarm(trigger, self._wire_fix(at), s.battery), out)
        s.alarms.append(seq)
        s.undelivered[seq] = at + self.settings.undelivered_after
        if s.mode is Mode.IDLE:
            s.mode = Mode.SILENT if silent else Mode.ACTIVE
            s.next_position = at + self.settings.position_interval
        cancellable = trigger in (Trigger.BUTTON, Trigger.MISSED_CHECKIN) and not s.tamper_fired
        s.cancellable_until = at + self.settings.grace_seconds if cancellable else None
        s.checkin_due = None  # check-ins pause until the alarm is resolved
        if s.mode is Mode.ACTIVE:
            out.append(Feedback(Pattern.RAISED))

    def _cancel(self, at: float, out: list[Action], *, duress: bool) -> None:
        s = self._s
        # Same body size and the same feedback for both: a captor cannot tell them apart.
        self._send(Cancel(alarm_seq=s.alarms[-1], duress=duress), out)
        out.append(Feedback(Pattern.CANCELLED))
        s.cancellable_until = None
        if duress:
            s.mode = Mode.SILENT
        else:
            self._end_alarm(at)

    def _end_alarm(self, at: float) -> None:
        s = self._s
        s.mode, s.alarms, s.cancellable_until, s.next_position = Mode.IDLE, [], None, None
        s.undelivered.clear()
        if s.tamper_open_at is None:
            s.tamper_fired = False
        if self.settings.checkin_interval:
            s.checkin_due, s.reminded = at + self.settings.checkin_interval, False

    def _on_downlink(self, message: Message, at: float, out: list[Action]) -> None:
        s = self._s
        body = message.body
        if isinstance(body, Stored):
            out.append(Delivered(body.seq))
            first = s.undelivered.pop(body.seq, None) is not None  # a repeat says nothing new
            if first and s.mode is Mode.ACTIVE and s.alarms and body.seq == s.alarms[-1]:
                out.append(Feedback(Pattern.STORED))
        elif isinstance(body, Acknowledged):
            if s.mode is Mode.ACTIVE and body.alarm_seq in s.alarms:
                out.append(Feedback(Pattern.ACKNOWLEDGED))
        elif isinstance(body, Resolved):
            if body.alarm_seq in s.alarms:
                s.alarms.remove(body.alarm_seq)
                s.undelivered.pop(body.alarm_seq, None)
                if not s.alarms:
                    self._end_alarm(at)
        elif isinstance(body, Config):  # pragma: no branch - settings changes: not yet
            pass

    # -- time ----------------------------------------------------------------------------

    def _tick(self, now: float, out: list[Action]) -> None:
        s, cfg = self._s, self.settings
        if s.pressed_at is not None and not s.held and now - s.pressed_at >= cfg.hold_seconds:
            self._hold(now, out)
        if s.presses and s.last_release is not None and now - s.last_release > cfg.gap_seconds:
            self._read_gesture(now, out)
        tamper_open = s.tamper_open_at is not None and s.tamper_armed and not s.tamper_fired
        if tamper_open and now - s.tamper_open_at >= cfg.tamper_debounce:  # type: ignore[operator]
            s.tamper_fired = True
            self._raise(Trigger.TAMPER, now, out, silent=s.mode is Mode.SILENT)
        self._tick_checkin(now, out)
        self._tick_undelivered(now, out)
        self._tick_periodic(now, out)

    def _tick_undelivered(self, now: float, out: list[Action]) -> None:
        """Nudge the wearer while an alarm has no `stored`: help was not told yet."""
        s = self._s
        due = [seq for seq, at in s.undelivered.items() if now >= at]
        for seq in due:
            s.undelivered[seq] = now + self.settings.undelivered_after
        if due and s.mode is Mode.ACTIVE:  # never in a silent alarm
            out.append(Feedback(Pattern.UNDELIVERED))

    def _tick_checkin(self, now: float, out: list[Action]) -> None:
        s, cfg = self._s, self.settings
        if s.checkin_due is None:
            return
        if now >= s.checkin_due:
            self._raise(Trigger.MISSED_CHECKIN, now, out, silent=False)
        elif not s.reminded and now >= s.checkin_due - cfg.checkin_reminder:
            s.reminded = True
            out.append(Feedback(Pattern.REMINDER))

    def _tick_periodic(self, now: float, out: list[Action]) -> None:
        s, cfg = self._s, self.settings
        if s.next_position is not None and now >= s.next_position:
            s.next_position = now + cfg.position_interval
            fix = self._wire_fix(now)
            if fix is not None and s.alarms:
                self._send(Position(alarm_seq=s.alarms[-1], fix=fix), out)
        if s.next_heartbeat is not None and now >= s.next_heartbeat:
            s.next_heartbeat = self._heartbeat_after(now)
            # `pending` and `oldest_pending` are the outbox's to fill in (the shell's).
            self._send(Heartbeat(s.battery, self._wire_fix(now), s.signal, s.mode), out)

    def _heartbeat_after(self, now: float) -> float:
        """The next heartbeat time: no fixed grid a broker could filter by (docs §8)."""
        return now + self.settings.heartbeat_interval * (0.75 + 0.5 * self._rand())

    # -- helpers -------------------------------------------------------------------------

    def _send(self, body: UplinkBody, out: list[Action]) -> int:
        seq, self._seq = self._seq, self._seq + 1
        out.append(Send(seq, body))
        return seq

    def _wire_fix(self, now: float) -> AgedFix | None:
        f = self._s.fix
        return None if f is None else AgedFix(f.fix, age=round(f.age(now), 1))
