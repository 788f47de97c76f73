"""Decide when there is an alarm: the wearable's pure state machine (events in, actions out).

No threads, sleeps, clock reads or I/O: every event carries its own monotonic
time `at`, and the shell (device/daemon.py) carries out the returned actions.
`AlarmCore.next_deadline()` is the schedule: the shell must deliver a `Tick`
no later than that time.

Gestures (all configurable in `[alarm]`, see `GestureSettings`):

- **hold** the button for `hold_seconds` (default 2 s) while no alarm is
  raised: alarm, trigger `button`, one `RAISED` vibration. A short bump does
  nothing (or counts as a check-in when check-ins are on).
- presses separated by less than `gap_seconds` form a gesture, written as
  dots (short press) and dashes (a press of `long_press_seconds` or more, but
  shorter than a hold). A gesture is read when the gap after it has passed:
    - `cancel` (default `...`, three quick presses) within `grace_seconds`
      of a button or missed-check-in alarm: send `cancel`, `CANCELLED` vibration.
    - `duress_cancel` (default `..-`, two quick presses and a longer one) in
      the same window: a `cancel` with `duress=true`, and nothing else differs.
    - `duress` (default `....`, four quick presses) while no alarm is raised:
      silent alarm, trigger `duress`, and nothing else differs.
- the **tamper** loop opening for `tamper_debounce` raises an alarm (trigger
  `tamper`) that the wearer cannot cancel. The loop is armed once it has been
  seen closed, so a device booted before it is put on does not raise one.
- **check-in** (off when `checkin_interval` is 0): a single short press within
  each interval; a `REMINDER` vibration `checkin_reminder` seconds before the
  deadline; a missed deadline raises an alarm (trigger `missed-checkin`).

**Two sets of alarms.** `raised` are the alarms the wearer (and whoever holds
the wearable) knows of: every local reaction — vibrations, receipts felt,
hold, tamper, check-ins, the not-delivered nudge — depends on them alone.
`covert` are the alarms the hub keeps open under duress: a silent duress
alarm, and any raised alarm cancelled with the duress gesture. A duress
cancel therefore leaves the device exactly as a real cancel does in the hand:
a new hold raises a normal-looking alarm (RAISED, `stored` and `acknowledged`
felt), a tamper vibrates, check-ins resume. Only two things differ, both
inside ciphertext: while `covert` is not empty the heartbeats say
`mode: silent`, and every cancel says `duress=true` (the wearer is coerced;
the hub keeps later alarms in the duress incident, docs/protocol.md §8).

**One schedule in every mode.** The device never sends `position`: every
heartbeat carries the latest fix, at the same jittered times in every mode,
so during any alarm the positions ride in the regular heartbeats. Only the
alarm and the cancel go out at once. This holds for visible alarms too: a
position stream after an alarm would tell the broker an alarm is running, and
after any cancel the wire must look the same whether it was real or coerced.

**Zeroise.** A tamper alarm (and, with `zeroise_after_duress`, any cancel,
real or coerced alike so that the erase marks neither) arms a crypto-erase:
once the hub's `stored` for that message arrives, or `zeroise_timeout`
seconds pass, the core returns `Zeroise`, forgets every alarm and the shell
erases the state and starts a new life. Heartbeats go on at the same times.

```mermaid
stateDiagram-v2
    [*] --> Idle
    Idle --> Active: hold / tamper / missed check-in (RAISED)
    Idle --> Silent: duress gesture (no feedback; covert)
    Active --> Idle: cancel gesture in grace (CANCELLED)
    Active --> Silent: duress-cancel gesture in grace (CANCELLED; covert)
    Silent --> Silent: hold / tamper / missed check-in (RAISED, as in Idle)
    Active --> Active: tamper (new alarm, no cancel any more)
    Active --> Idle: resolved (all alarms)
    Silent --> Idle: resolved (all alarms)
    Active --> Idle: zeroise (stored or timeout after tamper)
    Silent --> Idle: zeroise
```
`mode` (in heartbeats) is `silent` while any alarm is covert, else `active`
while one is raised, else `idle`; in the hand, Silent behaves as Idle.
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
    Memory,
    Pattern,
    Send,
    SignalLevel,
    TamperClosed,
    TamperOpened,
    Tick,
    Zeroise,
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
    "Zeroise",
]


# -- the machine ---------------------------------------------------------------------------


@dataclass
class _State:
    raised: list[int] = field(default_factory=list)  # alarms the wearer knows of, newest last
    covert: list[int] = field(default_factory=list)  # alarms the hub holds under duress
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
    undelivered: dict[int, float] = field(default_factory=dict)  # raised seq -> next nudge
    checkin_due: float | None = None
    reminded: bool = False
    zeroise_after: int | None = None  # erase once this seq is stored...
    zeroise_at: float | None = None  # ...or at this time


_NO_MEMORY = Memory()  # frozen: one shared default is safe


class AlarmCore:
    """The alarm state machine; `handle(event)` returns the actions to carry out, in order.

    `first_seq` is the outbox's persisted next sequence number: the core hands
    out seqs from there, so they never repeat across restarts. `memory` is the
    last `memory()` persisted before the restart, `pending` the seqs still
    waiting in the outbox for their `stored`.
    """

    def __init__(
        self,
        settings: AlarmSettings,
        *,
        first_seq: int,
        started_at: float,
        memory: Memory = _NO_MEMORY,
        pending: Iterable[int] = (),
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self._seq = first_seq
        self._rand = rand
        self._s = s = _State(next_heartbeat=self._heartbeat_after(started_at))
        waiting = set(pending)
        s.raised, s.covert = list(memory.raised), list(memory.covert)
        s.tamper_fired = memory.tamper_fired and bool(s.raised)
        nudge = started_at + settings.undelivered_after
        s.undelivered = {seq: nudge for seq in s.raised if seq in waiting}
        if memory.zeroise_after is not None:
            s.zeroise_after = memory.zeroise_after
            stored = memory.zeroise_after not in waiting
            s.zeroise_at = started_at + (0.0 if stored else settings.zeroise_timeout)
        if settings.checkin_interval and not s.raised:
            s.checkin_due = started_at + settings.checkin_interval

    def memory(self) -> Memory:
        """The part of the state to persist (see `Memory`)."""
        s = self._s
        return Memory(tuple(s.raised), tuple(s.covert), s.tamper_fired, s.zeroise_after)

    @property
    def mode(self) -> Mode:
        return Memory(tuple(self._s.raised), tuple(self._s.covert)).mode

    @property
    def active_alarms(self) -> tuple[int, ...]:
        """Every alarm the hub may still hold open: raised and covert, oldest first."""
        return tuple(sorted({*self._s.raised, *self._s.covert}))

    @property
    def next_seq(self) -> int:
        return self._seq

    def renumber(self, first_seq: int) -> None:
        """Hand out seqs from `first_seq` (a new life after `Zeroise` starts again at 0)."""
        self._seq = first_seq

    def next_deadline(self) -> float | None:
        """Return the latest monotonic time by which the shell must send a `Tick`."""
        s, cfg = self._s, self.settings
        times = [s.next_heartbeat, s.zeroise_at]  # nothing happens when grace ends
        times += s.undelivered.values()
        if s.pressed_at is not None and not s.held:
            times.append(s.pressed_at + cfg.hold_seconds)
        if s.last_release is not None and s.presses and s.pressed_at is None:
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
                if not self._s.raised:
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
        if not s.raised:
            self._raise(Trigger.BUTTON, at, out)

    def _read_gesture(self, at: float, out: list[Action]) -> None:
        s, cfg = self._s, self.settings
        ended = s.last_release if s.last_release is not None else at
        gesture, s.presses, s.last_release = s.presses, "", None
        # A gesture counts when it was finished in time, even if it is read after the gap.
        in_grace = s.cancellable_until is not None and ended <= s.cancellable_until
        if s.raised and in_grace and gesture in (cfg.cancel, cfg.duress_cancel):
            self._cancel(at, out, duress=gesture == cfg.duress_cancel)
        elif not s.raised and gesture == cfg.duress:
            self._raise(Trigger.DURESS, at, out, covert=True)
        elif gesture == "." and s.checkin_due is not None and not s.raised:
            self._send(Checkin(), out)
            s.checkin_due, s.reminded = at + cfg.checkin_interval, False

    # -- alarms --------------------------------------------------------------------------

    def _raise(
        self, trigger: Trigger, at: float, out: list[Action], *, covert: bool = False
    ) -> int:
        s = self._s
        seq = self._send(Alarm(trigger, self._wire_fix(at), s.battery), out)
        if s.zeroise_after is not None:
            s.zeroise_after = seq  # the final alarm is the one to see stored
        if covert:  # a silent alarm: nothing in the hand changes
            s.covert.append(seq)
            return seq
        s.raised.append(seq)
        s.undelivered[seq] = at + self.settings.undelivered_after
        cancellable = trigger in (Trigger.BUTTON, Trigger.MISSED_CHECKIN) and not s.tamper_fired
        s.cancellable_until = at + self.settings.grace_seconds if cancellable else None
        s.checkin_due = None  # check-ins pause until the alarm is over
        out.append(Feedback(Pattern.RAISED))
        return seq

    def _cancel(self, at: float, out: list[Action], *, duress: bool) -> None:
        s = self._s
        # The same body size and the same feedback for both: a captor cannot tell them
        # apart. Under duress already, every cancel is coerced: the hub keeps it open.
        duress = duress or bool(s.covert)
        seq = self._send(Cancel(alarm_seq=s.raised[-1], duress=duress), out)
        out.append(Feedback(Pattern.CANCELLED))
        if duress:
            s.covert += s.raised
        self._end_raised(at)
        if self.settings.zeroise_after_duress:  # after every cancel: the erase marks neither
            self._arm_zeroise(seq, at)

    def _end_raised(self, at: float) -> None:
        """The wearer's alarms are over: the hand is back to idle (covert ones stay)."""
        s = self._s
        s.raised, s.cancellable_until = [], None
        s.undelivered.clear()
        if s.tamper_open_at is None:
            s.tamper_fired = False
        if self.settings.checkin_interval:
            s.checkin_due, s.reminded = at + self.settings.checkin_interval, False

    def _arm_zeroise(self, seq: int, at: float) -> None:
        s = self._s
        s.zeroise_after = seq
        if s.zeroise_at is None:
            s.zeroise_at = at + self.settings.zeroise_timeout

    def _zeroise(self, at: float, out: list[Action]) -> None:
        """Forget every alarm: the shell erases the state and starts a new life."""
        s = self._s
        out.append(Zeroise())
        s.covert, s.zeroise_after, s.zeroise_at = [], None, None
        self._end_raised(at)

    def _on_downlink(self, message: Message, at: float, out: list[Action]) -> None:
        s = self._s
        body = message.body
        if isinstance(body, Stored):
            out.append(Delivered(body.seq))
            first = s.undelivered.pop(body.seq, None) is not None  # a repeat says nothing new
            if first and s.raised and body.seq == s.raised[-1]:
                out.append(Feedback(Pattern.STORED))
            if body.seq == s.zeroise_after:
                self._zeroise(at, out)
        elif isinstance(body, Acknowledged):
            if body.alarm_seq in s.raised:
                out.append(Feedback(Pattern.ACKNOWLEDGED))
        elif isinstance(body, Resolved):
            self._resolved(body.alarm_seq, at)
        elif isinstance(body, Config):  # pragma: no branch - settings changes: not yet
            pass

    def _resolved(self, seq: int, at: float) -> None:
        s = self._s
        if seq in s.covert:
            s.covert.remove(seq)
        if seq in s.raised:
            s.raised.remove(seq)
            s.undelivered.pop(seq, None)
            if not s.raised:
                self._end_raised(at)

    # -- time ----------------------------------------------------------------------------

    def _tick(self, now: float, out: list[Action]) -> None:
        s, cfg = self._s, self.settings
        if s.pressed_at is not None and not s.held and now - s.pressed_at >= cfg.hold_seconds:
            self._hold(now, out)
        # Not while the button is down: the gap is from a release to the next press, and a
        # long press may outlast it ("..-" would be read as ".." during its dash).
        gap_over = s.last_release is not None and now - s.last_release > cfg.gap_seconds
        if s.presses and gap_over and s.pressed_at is None:
            self._read_gesture(now, out)
        tamper_open = s.tamper_open_at is not None and s.tamper_armed and not s.tamper_fired
        if tamper_open and now - s.tamper_open_at >= cfg.tamper_debounce:  # type: ignore[operator]
            s.tamper_fired = True  # no cancel any more, for any alarm
            self._arm_zeroise(self._raise(Trigger.TAMPER, now, out), now)
        self._tick_checkin(now, out)
        self._tick_undelivered(now, out)
        if s.zeroise_at is not None and now >= s.zeroise_at:
            self._zeroise(now, out)
        self._tick_heartbeat(now, out)

    def _tick_undelivered(self, now: float, out: list[Action]) -> None:
        """Nudge the wearer while a raised alarm has no `stored`: help was not told yet."""
        s = self._s
        due = [seq for seq, at in s.undelivered.items() if now >= at]
        for seq in due:
            s.undelivered[seq] = now + self.settings.undelivered_after
        if due:
            out.append(Feedback(Pattern.UNDELIVERED))

    def _tick_checkin(self, now: float, out: list[Action]) -> None:
        s, cfg = self._s, self.settings
        if s.checkin_due is None:
            return
        if now >= s.checkin_due:
            self._raise(Trigger.MISSED_CHECKIN, now, out)
        elif not s.reminded and now >= s.checkin_due - cfg.checkin_reminder:
            s.reminded = True
            out.append(Feedback(Pattern.REMINDER))

    def _tick_heartbeat(self, now: float, out: list[Action]) -> None:
        """Heartbeats, with the latest fix, are the only periodic uplink in every mode."""
        s = self._s
        if s.next_heartbeat is not None and now >= s.next_heartbeat:
            s.next_heartbeat = self._heartbeat_after(now)
            # `pending` and `oldest_pending` are the outbox's to fill in (the shell's).
            self._send(Heartbeat(s.battery, self._wire_fix(now), s.signal, self.mode), out)

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
