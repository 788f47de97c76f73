"""Run the wearable: drivers and MQTT feed one queue, the core decides, the outbox delivers.

One main loop owns the core and the outbox writes. gpiozero, the GPS reader
and paho call in from their own threads only to put items on the queue (fixes,
which nothing waits for, go beside it and are handed over before the next
input, so a receiver does not wake the wearable every second). Each
`Send` is signed and committed to the outbox before it is published, sealed
afresh for every attempt; entries are resent with backoff until a verified
`stored` for that seq and digest arrives. Heartbeats are sent once, carrying
what waits in the outbox. Downlinks that do not verify, whose seq was already
seen, that answer another epoch or another message are dropped and logged;
the newest nonce of those accepted is echoed in every uplink (docs §7-§8).
Log lines at INFO and above never name a message kind, the alarm mode or a
position: the journal of a seized wearable must not tell a duress cancel from
a real one. A `Zeroise` from the core crypto-erases the state (the outbox's
key file) and carries on as a new life: new epoch, seqs from 0, no echo yet.
Downlinks open with the newest rotated downlink key that can, and heartbeats
announce the next one (vigil.device.rekey, docs §11.2).
systemd gets READY=1 once pins, GPS and outbox are up, and WATCHDOG=1 only
from this loop, so a hung loop is restarted; the broker connection's state
(connected, or connecting since when and why it fails) goes to the unit's
status line whenever it changed.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from vigil.device import rekey
from vigil.device.config import DeviceConfig
from vigil.device.core import (
    AlarmCore,
    BatteryLevel,
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
    Tick,
    Zeroise,
)
from vigil.device.drivers.battery import read_battery
from vigil.device.drivers.link import read_link_quality
from vigil.device.outbox import PRIORITY, Entry, Outbox
from vigil.errors import StorageError, TransportError, VigilError
from vigil.runtime.mqtt import ConnectionState, MqttSettings, Transport, Will
from vigil.runtime.systemd import sd_notify, status_assignment
from vigil.wire.envelope import seal_uplink_payload
from vigil.wire.keys import DeviceKeys
from vigil.wire.messages import (
    MAX_PENDING,
    Acknowledged,
    ClockSource,
    Heartbeat,
    Message,
    Resolved,
    Stored,
    encode_payload,
)
from vigil.wire.replay import Verdict
from vigil.wire.topics import down_topic, up_topic

_LOG = logging.getLogger(__name__)

MEMORY_KEY = "memory"
NTP_FLAG = Path("/run/systemd/timesync/synchronized")  # systemd-timesyncd's "in sync" flag
BATTERY_POLL = 60.0
MAX_WAIT = 30.0  # idle wake-up without a watchdog; every deadline is in the wait anyway
GPS_EVERY = 1.0  # hand at most one fix per second to the core
FIX_GAP = 10.0  # a fix after this long without one is logged as acquired again
HEARTBEATS_KEPT = 4  # digests of recent heartbeats, to check their receipts


@runtime_checkable
class _Described(Protocol):
    """A transport that can say how its broker connection stands (`MqttClient`)."""

    @property
    def state(self) -> ConnectionState: ...


class Player(Protocol):
    def play(self, pattern: Pattern) -> None: ...


@dataclass(frozen=True, slots=True)
class _Downlink:
    topic: str
    payload: bytes


def mqtt_settings(cfg: DeviceConfig) -> MqttSettings:
    """Connection settings: client id and username = device id, Will = empty `up` payload."""
    if cfg.mqtt.tls_ca is None:
        _LOG.warning("mqtt.tls_ca is not set: talking to %s in PLAIN TCP", cfg.mqtt.host)
    return MqttSettings(
        host=cfg.mqtt.host,
        port=cfg.mqtt.port,
        client_id=cfg.device_id.hex,
        username=cfg.mqtt.username or cfg.device_id.hex,
        password=cfg.mqtt_password(),
        tls_ca=cfg.mqtt.tls_ca,
        keepalive=cfg.mqtt.keepalive,
        will=Will(up_topic(cfg.device_id), b""),
    )


class Daemon:
    """The imperative shell around `AlarmCore`; hardware and transport are passed in."""

    def __init__(
        self,
        cfg: DeviceConfig,
        *,
        keys: DeviceKeys,
        outbox: Outbox,
        feedback: Player,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        ntp_flag: Path = NTP_FLAG,
        battery: Callable[[], int | None] | None = None,
        link_quality: Callable[[], int | None] = read_link_quality,
        notify: Callable[[str], bool] = sd_notify,
        rand: Callable[[], float] | None = None,
    ) -> None:
        self.cfg, self._keys, self.outbox, self._feedback = cfg, keys, outbox, feedback
        self._clock, self._wall, self._ntp_flag = clock, wall, ntp_flag
        self._battery = battery or (lambda: read_battery(cfg.battery_path))
        self._link_quality, self._notify = link_quality, notify
        self._queue: queue.Queue[Event | _Downlink | None] = queue.Queue()
        self._memory = _load_memory(outbox)
        self.core = AlarmCore(
            cfg.alarm, first_seq=outbox.next_seq, started_at=clock(), memory=self._memory,
            pending=outbox.pending(), **({} if rand is None else {"rand": rand}),
        )  # fmt: skip
        self._epoch = outbox.epoch
        self.keyring = rekey.Keyring.load(
            cfg.state_dir / rekey.FILE, enrolled=keys, epoch=outbox.epoch,
            every=cfg.rotate_keys_every, clock=clock,
        )  # fmt: skip
        self._nonce: str | None = None  # the newest hub nonce, echoed in every uplink
        self._heartbeats: dict[int, str] = {}  # seq -> digest of heartbeats sent lately
        self._online = False  # the link as flush() last saw it
        self._window = outbox.downlink_window()
        self._transport: Transport | None = None
        self._unsaved: dict[int, Entry] = {}  # sealed but not on disk (disk full)
        self._unsaved_retry = 0.0
        self._last_fix: GpsFix | None = None
        self._last_gps_post: float | None = None  # when the GPS thread last passed one on
        self._fixes: deque[GpsFix] = deque()  # passed on by the GPS thread, not yet handled
        self._next_battery = 0.0
        self._watchdog = _watchdog_interval()
        self._last_ping = 0.0
        self._link_status = ""  # the status line systemd last got
        self._link_state: object = None  # the transport's state that line describes
        self.stop_event = threading.Event()
        self.ready = threading.Event()

    # -- inputs from other threads --------------------------------------------------------

    def post(self, event: Event) -> None:
        self._queue.put(event)

    def on_fix(self, fix: GpsFix) -> None:
        """GPS thread: pass on a fix, at most one per second, without waking the loop.

        Nothing falls due because of a fix: the core only keeps the newest, for the next
        alarm or heartbeat. So fixes wait beside the queue and each step hands the core
        those seen before its own input first (`_take_fixes`): the core sees the same
        fixes in the same order as if each had been queued, and the wearable does not
        wake once a second for them. A fix after none, or after a gap, does wake the
        loop, which logs it as acquired.
        """
        last = self._last_gps_post
        if last is not None and fix.at - last < GPS_EVERY:
            return
        self._last_gps_post = fix.at
        if last is None or fix.at - last > FIX_GAP:
            self._queue.put(fix)
        else:
            self._fixes.append(fix)

    def on_message(self, topic: str, payload: bytes) -> None:
        self._queue.put(_Downlink(topic, payload))

    def on_connection(self, up: bool, reason: str) -> None:
        self._queue.put(LinkChanged(self._clock(), up))

    def attach(self, transport: Transport) -> None:
        self._transport = transport

    def stop(self) -> None:
        """Any thread or a signal handler: end `run()` now, not at the next deadline."""
        self.stop_event.set()
        self._queue.put(None)  # wakes the loop from its wait

    # -- the main loop ----------------------------------------------------------------

    def run(self) -> None:
        """Loop until `stop_event` is set; tell systemd when ready and while healthy."""
        self.ready.set()
        self._notify("READY=1")
        _LOG.info("device %s ready, next seq %s", self.cfg.device_id, self.core.next_seq)
        while not self.stop_event.is_set():
            self.step()
        self._notify("STOPPING=1")

    def step(self) -> None:
        """Wait for one input (or the next deadline), handle it, deliver, ping systemd."""
        now = self._clock()
        try:
            item = self._queue.get(timeout=self._wait_time(now))
        except queue.Empty:
            item = Tick(self._clock())
        if item is None:  # stop() woke us: leave without acting on anything more
            return
        self._take_fixes(until=self._clock() if isinstance(item, _Downlink) else item.at)
        event = self._downlink(item) if isinstance(item, _Downlink) else item
        if isinstance(event, LinkChanged) and event.up:
            self.outbox.retry_all_now()
        if isinstance(event, GpsFix):
            self._note_fix(event)
        if event is not None:
            self._carry_out(self.core.handle(event))
        self._poll_battery()
        # An alarm is on disk with its state (put(): one commit, one fsync); publish it before
        # any other write, then save the rest of the state.
        self.flush()
        self._save_memory()
        self._report_link()
        self._ping_watchdog()

    def _take_fixes(self, until: float) -> None:
        """Hand the core the newest fix the GPS thread saw at or before `until` (the time
        of the input at hand), so no input meets an older fix than it would have."""
        fixes, newest = self._fixes, None
        while fixes and fixes[0].at <= until:
            newest = fixes.popleft()
        if newest is not None:  # never one after a gap: those come through the queue, logged
            self._last_fix = newest
            self._carry_out(self.core.handle(newest))

    def run_due(self, *, limit: int = 1000) -> None:
        """Handle every queued input and every deadline already due, never waiting.

        For a driven clock (tests, the adversary harness): `run()` is the real loop.
        """
        for _ in range(limit):
            if self._queue.empty() and self._wait_time(self._clock()) > 0:
                return
            self.step()

    def _wait_time(self, now: float) -> float:
        unsaved = self._unsaved_retry if self._unsaved else None
        times = [t for t in (self.core.next_deadline(), self.outbox.next_retry(), unsaved) if t]
        ping = self._last_ping + self._watchdog if self._watchdog else now + MAX_WAIT
        wait = min([*times, ping, now + MAX_WAIT, self._next_battery]) - now
        return max(0.0, wait)

    def _carry_out(self, actions: list[Send | Feedback | Delivered | Zeroise]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._enqueue(action)
            elif isinstance(action, Feedback):
                self._feedback.play(action.pattern)
            elif isinstance(action, Delivered):
                self._delivered(action.seq)
            else:
                self._zeroise()

    def _zeroise(self) -> None:
        """Crypto-erase the state and go on as a new life, heartbeats at the same times."""
        try:
            self.outbox.erase()
        except StorageError:  # the key file may be gone already: the next open starts over
            _LOG.exception("device %s could not renew its state", self.cfg.device_id)
            return
        self._epoch, self._window, self._nonce = (
            self.outbox.epoch,
            self.outbox.downlink_window(),
            None,
        )
        self.keyring.new_life(self._epoch)  # its rotated keys open the old life's downlinks
        self._heartbeats.clear()
        self._unsaved.clear()
        self._memory = Memory()
        self.core.renumber(self.outbox.next_seq)
        _LOG.info("device %s state renewed", self.cfg.device_id)

    def _delivered(self, seq: int) -> None:
        in_memory = self._unsaved.pop(seq, None) is not None
        try:
            on_disk = self.outbox.ack(seq)
        except StorageError:  # it will be resent and acknowledged again: nothing is lost
            _LOG.exception(
                "device %s seq=%s could not be removed from the outbox", self.cfg.device_id, seq
            )
            return
        if in_memory or on_disk:
            _LOG.info("device %s seq=%s stored by the hub", self.cfg.device_id, seq)

    def _enqueue(self, send: Send) -> None:
        sent_at, source = self._time_now()
        body = send.body
        if isinstance(body, Heartbeat):  # the device's word on what the hub should have
            count, oldest = self.outbox.waiting()
            unsaved = [*self._unsaved, *([] if oldest is None else [oldest])]
            count += len(self._unsaved)
            body = replace(body, pending=min(count, MAX_PENDING),
                           oldest_pending=min(unsaved) if unsaved else None)  # fmt: skip
        message = Message(seq=send.seq, body=body, sent_at=sent_at, clock=source,
                          epoch=self._epoch, nonce=self._nonce)  # fmt: skip
        message = self.keyring.announce(message)  # a heartbeat may carry a new downlink key
        payload = encode_payload(message)
        if isinstance(body, Heartbeat):
            self._send_heartbeat(send.seq, payload)
            return
        try:  # with the alarm state: a power cut right after leaves no alarm without it
            dropped = self.outbox.put(send.seq, message.kind, payload, state=self._memory_row())
        except StorageError as exc:
            # Disk full or broken: never lose it, keep sending it from memory until stored.
            self._unsaved[send.seq] = Entry(send.seq, message.kind, payload)
            _LOG.error(
                "device %s seq=%s kept in memory only: %s", self.cfg.device_id, send.seq, exc
            )
            return
        _LOG.info("device %s seq=%s queued", self.cfg.device_id, send.seq)
        if dropped:
            _LOG.warning("device %s outbox full, dropped seqs %s", self.cfg.device_id, dropped)

    def _send_heartbeat(self, seq: int, payload: bytes) -> None:
        """Send once, never queue: the next heartbeat supersedes this one."""
        try:
            self.outbox.reserve(seq)  # a seq sent twice with two payloads would look cloned
        except StorageError as exc:
            _LOG.error("device %s seq=%s not sent: %s", self.cfg.device_id, seq, exc)
            return
        self._heartbeats[seq] = Entry(seq, Heartbeat.KIND, payload).digest
        while len(self._heartbeats) > HEARTBEATS_KEPT:
            del self._heartbeats[min(self._heartbeats)]
        transport = self._transport
        if transport is None or not transport.connected:
            return
        self.flush()  # what waits in the outbox reaches the hub before this heartbeat
        try:
            transport.publish(up_topic(self.cfg.device_id), self._seal(payload), qos=1)
        except TransportError as exc:
            _LOG.warning("device %s seq=%s publish failed: %s", self.cfg.device_id, seq, exc)

    def _seal(self, payload: bytes) -> bytes:
        cfg = self.cfg
        return seal_uplink_payload(
            payload, device_id=cfg.device_id, device_keys=self._keys, hub=cfg.hub, suite=cfg.suite
        )

    def flush(self) -> None:
        """Publish what is due, alarms first, while the link is up."""
        transport = self._transport
        online = transport is not None and transport.connected
        was_online, self._online = self._online, online
        if transport is None or not online:
            return
        if not was_online:  # the link came back before the loop heard of it: go at once
            self.outbox.retry_all_now()
        now = self._clock()
        topic = up_topic(self.cfg.device_id)
        entries = self.outbox.due(now)
        if self._unsaved and now >= self._unsaved_retry:
            self._unsaved_retry = now + self.cfg.outbox.retry_initial
            memory = sorted(self._unsaved.values(), key=lambda e: (-PRIORITY[e.kind], e.seq))
            entries = memory + entries
        for entry in entries:
            try:
                transport.publish(topic, self._seal(entry.payload), qos=1)
            except TransportError as exc:
                _LOG.warning(
                    "device %s seq=%s publish failed: %s", self.cfg.device_id, entry.seq, exc
                )
                return
            self.outbox.mark_sent(entry.seq, now)
            _LOG.debug("device %s seq=%s published", self.cfg.device_id, entry.seq)

    # -- helpers ------------------------------------------------------------------------

    def _downlink(self, item: _Downlink) -> DownlinkReceived | None:
        """Verify a downlink; return it as an event, or None (logged) when it must be dropped."""
        dev = self.cfg.device_id
        if item.topic != down_topic(dev):
            _LOG.warning("device %s dropped a message on unexpected topic %s", dev, item.topic)
            return None
        try:
            message = self.keyring.open(item.payload, device_id=dev, hub=self.cfg.hub)
        except VigilError as exc:
            _LOG.warning("device %s rejected a downlink: %s: %s", dev, type(exc).__name__, exc)
            return None
        verdict = self._window.check(message.seq)
        if verdict is not Verdict.ACCEPT:
            _LOG.warning("device %s dropped downlink seq=%s: %s", dev, message.seq, verdict.value)
            return None
        problem = self._receipt_problem(message)
        if problem is not None:
            _LOG.warning("device %s dropped downlink seq=%s: %s", dev, message.seq, problem)
            return None
        self._window = self._window.accept(message.seq)
        self._nonce = message.nonce
        try:
            self.outbox.save_downlink_window(self._window)
        except StorageError:
            _LOG.exception("device %s could not persist the downlink window", dev)
        # The kind only at DEBUG (off in the journal): a receipt must not read as an ack.
        _LOG.debug("device %s downlink seq=%s kind=%s accepted", dev, message.seq, message.kind)
        return DownlinkReceived(self._clock(), message)

    def _receipt_problem(self, message: Message) -> str | None:
        """Why a verified downlink does not answer this life of the device (None: it does)."""
        if message.epoch != self._epoch:
            return f"it is for epoch {message.epoch}, this device is in {self._epoch}"
        body = message.body
        if isinstance(body, Stored):
            unsaved = self._unsaved.get(body.seq)
            expected = (
                self._heartbeats.get(body.seq)
                or (unsaved.digest if unsaved is not None else None)
                or self.outbox.digest(body.seq)
                or self.outbox.alarm_digest(body.seq)
            )
            seq = body.seq
        elif isinstance(body, Acknowledged | Resolved):
            expected, seq = self.outbox.alarm_digest(body.alarm_seq), body.alarm_seq
        else:
            return None
        if expected != body.digest:
            return f"its digest does not match what this device sent as seq {seq}"
        return None

    def _time_now(self) -> tuple[float | None, ClockSource]:
        """Wall time for `sent_at`: NTP when synchronised, else GPS, else none (no RTC)."""
        if self._ntp_flag.exists():
            return self._wall(), ClockSource.NTP
        seen = self._last_fix
        if seen is not None and seen.fix.fix_time is not None:
            return seen.fix.fix_time + seen.age(self._clock()), ClockSource.GPS
        return None, ClockSource.UNSYNCED

    def _note_fix(self, fix: GpsFix) -> None:
        """Keep the fix for GPS time; log (without the position) when one is (re)acquired."""
        previous, self._last_fix = self._last_fix, fix
        if previous is None or fix.at - previous.at > FIX_GAP:
            _LOG.info(
                "device %s gps fix acquired: quality %s, %s satellites",
                self.cfg.device_id,
                fix.fix.quality,
                fix.fix.satellites,
            )

    def _memory_row(self) -> tuple[str, str]:
        """The core's memory as the outbox's (sealed) state row: key, JSON."""
        return MEMORY_KEY, self.core.memory().to_json()

    def _save_memory(self) -> None:
        memory = self.core.memory()
        if memory == self._memory:
            return
        try:
            self.outbox.save_state(*self._memory_row())
            self.outbox.forget_alarms(keep={*memory.raised, *memory.covert})
        except StorageError:
            _LOG.exception("device %s could not persist its state", self.cfg.device_id)
            return
        self._memory = memory
        _LOG.debug("device %s state saved", self.cfg.device_id)

    def _poll_battery(self) -> None:
        """Read battery and link quality for the heartbeats (every BATTERY_POLL seconds)."""
        now = self._clock()
        if now < self._next_battery:
            return
        self._next_battery = now + BATTERY_POLL
        self._carry_out(self.core.handle(BatteryLevel(now, self._battery())))
        self._carry_out(self.core.handle(SignalLevel(now, self._link_quality())))

    def _report_link(self) -> None:
        """Put the broker connection's state in systemd's status line when it changed."""
        transport = self._transport
        if not isinstance(transport, _Described):
            return
        state = transport.state
        if state is self._link_state:  # replaced whole on every change: nothing to say
            return
        self._link_state = state
        line = f"broker: {state.describe()}"
        if line != self._link_status:
            self._link_status = line
            self._notify(status_assignment(line))

    def _ping_watchdog(self) -> None:
        now = self._clock()
        if self._watchdog and now - self._last_ping >= self._watchdog:
            self._last_ping = now
            self._notify("WATCHDOG=1")


def _load_memory(outbox: Outbox) -> Memory:
    """The alarm state saved before the last stop or power cut (idle if none or unreadable)."""
    text = outbox.load_state(MEMORY_KEY)
    if text is None:
        return Memory()
    try:
        return Memory.from_json(text)
    except ValueError:
        _LOG.exception("saved state is unreadable; starting idle")
        return Memory()


def _watchdog_interval() -> float:
    """Half of systemd's WatchdogSec for this process, or 0 when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return 0.0
    return int(usec) / 2e6
