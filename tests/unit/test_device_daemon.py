"""The daemon shell without a broker: seal-then-commit, clock source, battery, downlink checks."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.device_setup import ProvisionedDevice, make_device
from tests.support.parties import DIGEST, EPOCH, NONCE
from tests.support.wait import wait_until
from vigil.device.config import DeviceConfig, load_config
from vigil.device.core import ButtonPressed, ButtonReleased, GpsFix, Mode, Pattern, Tick
from vigil.device.daemon import MEMORY_KEY, Daemon, mqtt_settings
from vigil.device.drivers.link import read_link_quality
from vigil.device.outbox import Outbox
from vigil.errors import StorageError, VigilError
from vigil.wire.envelope import open_uplink, seal_downlink, seal_uplink
from vigil.wire.fix import Fix
from vigil.wire.keys import HubKeys
from vigil.wire.liveness import Epoch, uplink_digest
from vigil.wire.messages import (
    Acknowledged,
    Alarm,
    Cancel,
    ClockSource,
    Heartbeat,
    Kind,
    Message,
    Stored,
    Trigger,
    encode_payload,
)
from vigil.wire.topics import down_topic, up_topic


class Recorder:
    def __init__(self) -> None:
        self.played: list[Pattern] = []

    def play(self, pattern: Pattern) -> None:
        self.played.append(pattern)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dev(tmp_path: Path) -> ProvisionedDevice:
    capacity = tmp_path / "capacity"
    capacity.write_text("42\n")
    return make_device(
        tmp_path,
        overrides={"alarm": {"hold_seconds": 1.0}, "battery": {"capacity_path": str(capacity)}},
    )


@pytest.fixture
def parts(dev: ProvisionedDevice, tmp_path: Path) -> Iterator[tuple[Daemon, Clock, Recorder]]:
    cfg: DeviceConfig = load_config(dev.config_path)
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3")
    clock, player = Clock(), Recorder()
    wireless = tmp_path / "wireless"
    wireless.write_text("h1\nh2\n wlan0: 0000   35.  -56.  -256  0 0 0 0 26 0\n")
    daemon = Daemon(
        cfg,
        link_quality=lambda: read_link_quality(wireless),
        keys=dev.device_keys,
        outbox=outbox,
        feedback=player,
        clock=clock,
        wall=lambda: 1_800_000_000.0,
        ntp_flag=tmp_path / "synchronized",
    )
    yield daemon, clock, player
    outbox.close()


def open_up(dev: ProvisionedDevice, envelope: bytes) -> Message:
    """Open an uplink as the hub does: decrypt, verify the device's signature, decode."""
    return open_uplink(
        envelope,
        device_id=dev.device_id,
        hub_keys=dev.hub_keys,
        lookup=lambda _: dev.device_keys.public().signing,
    )


def opened(dev: ProvisionedDevice, daemon: Daemon) -> list[Message]:
    """What waits in the outbox, as the hub would read it once the daemon seals it."""
    wire = Wire()
    daemon.attach(wire)
    daemon.outbox.retry_all_now()
    daemon.flush()
    daemon.attach(Wire(connected=False))
    return [open_up(dev, envelope) for envelope in wire.sent]


def receipt(
    dev: ProvisionedDevice, body: object, *, seq: int = 0, epoch: Epoch | None = None,
    nonce: str = NONCE, hub: HubKeys | None = None,
) -> bytes:  # fmt: skip
    """A downlink from the hub (or, with `hub`, from an impostor) for this device's life."""
    with Outbox.open(dev.state_dir / "outbox.sqlite3") as outbox:
        daemon_epoch = outbox.epoch
    return seal_downlink(
        Message(seq=seq, body=body, epoch=epoch or daemon_epoch, nonce=nonce),  # type: ignore[arg-type]
        device_id=dev.device_id,
        hub_keys=hub or dev.hub_keys,
        device=dev.device_keys.public(),
    )


def hold(daemon: Daemon, clock: Clock) -> None:
    daemon.post(ButtonPressed(clock.now))
    daemon.step()
    clock.now += 1.0
    daemon.step()  # the deadline passes: the hold is an alarm


def test_alarm_is_sealed_and_committed_without_a_broker(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    daemon, clock, player = parts
    hold(daemon, clock)
    (message,) = opened(dev, daemon)
    assert message.body == Alarm(Trigger.BUTTON, None, 42)
    assert (message.sent_at, message.clock) == (None, ClockSource.UNSYNCED)
    assert player.played == [Pattern.RAISED]
    assert message.epoch == daemon.outbox.epoch
    assert message.nonce is None  # no downlink seen yet: nothing to echo


def test_a_seized_card_does_not_show_what_was_sent(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    """Every row is sealed under state.key before SQLite sees it: WAL and database alike
    hold no kind, trigger or mode, a pending duress cancel included."""
    daemon, clock, _ = parts
    hold(daemon, clock)
    for mark in "..-":
        daemon.post(ButtonPressed(clock.now))
        daemon.step()
        clock.now += 0.1 if mark == "." else 0.7
        daemon.post(ButtonReleased(clock.now))
        daemon.step()
        clock.now += 0.2
    clock.now += 1.0
    daemon.step()
    assert [m.body for m in opened(dev, daemon)] == [Alarm(Trigger.BUTTON, None, 42),
                                                     Cancel(0, duress=True)]  # fmt: skip
    raw = b"".join(p.read_bytes() for p in dev.state_dir.iterdir() if p.is_file())
    for word in (b"button", b"alarm", b"cancel", b"duress", b"silent", b"covert", b"true"):
        assert word not in raw, word


def test_gps_time_then_ntp_time(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder], tmp_path: Path
) -> None:
    daemon, clock, _ = parts
    daemon.post(GpsFix(at=clock.now, fix=Fix(lat=1.0, lon=2.0, fix_time=1_750_000_000.0)))
    daemon.step()
    clock.now += 5
    hold(daemon, clock)
    (message,) = opened(dev, daemon)
    assert (message.sent_at, message.clock) == (1_750_000_006.0, ClockSource.GPS)
    assert isinstance(message.body, Alarm)
    assert message.body.fix is not None
    (tmp_path / "synchronized").touch()
    wire = Wire()
    daemon.attach(wire)
    clock.now += daemon.cfg.alarm.heartbeat_interval * 1.25  # the jittered heartbeat falls due
    daemon.step()
    beat = [m for m in map(lambda e: open_up(dev, e), wire.sent) if isinstance(m.body, Heartbeat)]
    assert [(m.sent_at, m.clock) for m in beat] == [(1_800_000_000.0, ClockSource.NTP)]
    body = beat[0].body
    assert (body.battery, body.signal, body.mode) == (42, 50, Mode.ACTIVE)
    assert body.fix is not None
    assert body.fix.age == pytest.approx(clock.now - 100.0)
    # What waits for a `stored`: the alarm (positions ride in heartbeats, never queued).
    assert (body.pending, body.oldest_pending) == (len(daemon.outbox.pending()), message.seq)
    assert body.pending == 1
    assert beat[0].seq not in daemon.outbox.pending()  # heartbeats are never queued


def fix_at(at: float, lat: float) -> GpsFix:
    return GpsFix(at=at, fix=Fix(lat=lat, lon=2.0, fix_time=None))


def test_fixes_wait_for_the_next_input_without_waking_the_loop(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    """Nothing falls due because of a fix: only a first fix (and one after a gap) wakes the
    loop; the others reach the core just before the next input, the newest last."""
    daemon, clock, _ = parts
    daemon.on_fix(fix_at(clock.now, 1.0))
    assert daemon._queue.qsize() == 1  # the first: the loop logs it as acquired at once
    daemon.step()
    for lat in (2.0, 3.0, 4.0):
        clock.now += 1.0
        daemon.on_fix(fix_at(clock.now, lat))
        daemon.on_fix(fix_at(clock.now + 0.2, -lat))  # within the second: not passed on
    assert daemon._queue.empty()  # a receiver printing fixes does not wake the wearable
    clock.now += 0.5
    hold(daemon, clock)
    (message,) = opened(dev, daemon)
    assert isinstance(message.body, Alarm)
    assert message.body.fix is not None
    assert message.body.fix.fix.lat == 4.0
    assert message.body.fix.age == 1.5  # seen at 103.0, the alarm raised at 104.5
    clock.now += 15.0  # the receiver lost the sky for a while
    daemon.on_fix(fix_at(clock.now, 5.0))
    assert daemon._queue.qsize() == 1  # back after a gap: logged at once again


def test_a_steady_receiver_is_logged_once_however_long_the_loop_sleeps(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    daemon, clock, _ = parts
    with caplog.at_level(logging.INFO, logger="vigil.device.daemon"):
        for _ in range(40):  # a fix a second while the loop sleeps up to its 30 s wait
            daemon.on_fix(fix_at(clock.now, 1.0))
            clock.now += 1.0
            if not daemon._queue.empty():
                daemon.step()
        daemon.post(Tick(clock.now))  # the loop wakes at last and takes the newest fix
        daemon.step()
    assert [r.message.count("gps fix acquired") for r in caplog.records] == [1]


def test_a_fix_seen_after_an_input_is_not_handled_before_it(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    """A fix waiting beside the queue must not move the core's time past an input that
    came before it: here it would turn a 0.9 s bump into a 1 s hold, an alarm."""
    daemon, clock, player = parts
    daemon.on_fix(fix_at(clock.now, 1.0))
    daemon.step()
    daemon.post(ButtonPressed(clock.now))
    daemon.step()
    clock.now += 0.9
    daemon.post(ButtonReleased(clock.now))
    clock.now += 0.2
    daemon.on_fix(fix_at(clock.now, 2.0))  # seen after the release, before the loop took it
    daemon.step()
    assert daemon.outbox.pending() == []
    assert Pattern.RAISED not in player.played


def test_downlinks_on_other_topics_or_forged_change_nothing(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    daemon, clock, player = parts
    hold(daemon, clock)
    seq = daemon.outbox.pending()[0]
    digest = daemon.outbox.digest(seq)
    assert digest is not None
    good = receipt(dev, Stored(seq, digest))
    forged = receipt(dev, Stored(seq, digest), seq=1, hub=HubKeys.generate())
    for topic, payload in ((up_topic(dev.device_id), good), (down_topic(dev.device_id), forged)):
        daemon.on_message(topic, payload)
        daemon.step()
    assert daemon.outbox.pending() == [seq]
    daemon.on_message(down_topic(dev.device_id), good)
    daemon.step()
    assert daemon.outbox.pending() == []
    assert player.played == [Pattern.RAISED, Pattern.STORED]


def test_receipts_for_another_life_or_another_message_are_dropped(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    """A broker replaying an old life's receipts, or one for other content, changes nothing."""
    daemon, clock, player = parts
    hold(daemon, clock)
    (seq,) = daemon.outbox.pending()
    digest = daemon.outbox.digest(seq)
    assert digest is not None
    stale = [
        receipt(dev, Stored(seq, digest), seq=1, epoch=EPOCH, nonce="01" * 16),  # old life
        receipt(dev, Stored(seq, DIGEST), seq=2, nonce="02" * 16),  # another message
        receipt(dev, Acknowledged(seq, DIGEST), seq=3, nonce="03" * 16),
        receipt(dev, Acknowledged(seq, digest), seq=4, epoch=EPOCH, nonce="04" * 16),
    ]
    for payload in stale:
        daemon.on_message(down_topic(dev.device_id), payload)
        daemon.step()
    assert daemon.outbox.pending() == [seq]
    assert player.played == [Pattern.RAISED]
    assert [m.nonce for m in opened(dev, daemon)] == [None]  # no dropped nonce is echoed
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Stored(seq, digest), seq=5))
    daemon.step()
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Acknowledged(seq, digest), seq=6))
    daemon.step()
    assert daemon.outbox.pending() == []
    assert player.played == [Pattern.RAISED, Pattern.STORED, Pattern.ACKNOWLEDGED]


def test_the_newest_accepted_nonce_is_echoed(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    daemon, clock, _ = parts
    hold(daemon, clock)
    (alarm,) = daemon.outbox.pending()
    digest = daemon.outbox.digest(alarm)
    assert digest is not None
    first, second = "0a" * 16, "0b" * 16
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Acknowledged(alarm, digest),
                                                         seq=1, nonce=first))  # fmt: skip
    daemon.step()
    # A resend is the payload signed before the nonce came: a new envelope, the same word.
    assert [m.nonce for m in opened(dev, daemon)] == [None]
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Stored(alarm, digest), seq=2,
                                                         nonce=second))  # fmt: skip
    daemon.step()
    wire = Wire()
    daemon.attach(wire)
    clock.now += daemon.cfg.alarm.heartbeat_interval * 1.25  # a heartbeat falls due
    daemon.step()
    fresh = [open_up(dev, e) for e in wire.sent]
    assert any(isinstance(m.body, Heartbeat) for m in fresh)
    assert {m.nonce for m in fresh if m.seq > alarm} == {second}


def test_every_send_is_a_new_envelope_of_one_payload(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    """The broker never sees the same bytes twice; the hub sees one digest (docs §7)."""
    daemon, clock, _ = parts
    hold(daemon, clock)
    wire = Wire()
    daemon.attach(wire)
    for _ in range(3):
        daemon.outbox.retry_all_now()
        daemon.flush()
    assert len(wire.sent) == len(set(wire.sent)) == 3
    payloads = {encode_payload(open_up(dev, e)) for e in wire.sent}
    assert len(payloads) == 1
    assert uplink_digest(payloads.pop()) == daemon.outbox.digest(daemon.outbox.pending()[0])


def test_mqtt_settings_from_config(dev: ProvisionedDevice) -> None:
    settings = mqtt_settings(load_config(dev.config_path))
    assert settings.client_id == settings.username == dev.device_id.hex
    assert settings.will is not None
    assert (settings.will.topic, settings.will.payload) == (up_topic(dev.device_id), b"")
    assert settings.clean_start is False


def test_duress_cancel_is_the_same_size_on_the_wire(dev: ProvisionedDevice) -> None:
    cfg = load_config(dev.config_path)
    sizes = {
        len(
            seal_uplink(
                Message(seq=7, body=Cancel(3, duress=duress), epoch=EPOCH),
                device_id=dev.device_id,
                device_keys=dev.device_keys,
                hub=cfg.hub,
            )
        )
        for duress in (False, True)
    }
    assert len(sizes) == 1


def test_active_alarm_survives_a_restart(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder], tmp_path: Path
) -> None:
    daemon, clock, _ = parts
    hold(daemon, clock)
    cfg = load_config(dev.config_path)
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3")  # a second process after a power cut
    try:
        again = Daemon(cfg, keys=dev.device_keys, outbox=outbox, feedback=Recorder())
        assert again.core.mode is Mode.ACTIVE
        assert again.core.active_alarms == (0,)
        assert again.core.next_seq == 1
    finally:
        outbox.close()


def test_unreadable_saved_state_starts_idle(dev: ProvisionedDevice) -> None:
    cfg = load_config(dev.config_path)
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3")
    try:
        outbox.save_state(MEMORY_KEY, '{"raised": "x", "covert": [], "tamper": 1}')
        daemon = Daemon(cfg, keys=dev.device_keys, outbox=outbox, feedback=Recorder())
        assert daemon.core.mode is Mode.IDLE
    finally:
        outbox.close()


class Wire:
    """The Transport seam, recording what the daemon hands to the broker."""

    def __init__(self, *, connected: bool = True) -> None:
        self.connected = connected
        self.sent: list[bytes] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.sent.append(payload)


def test_disk_full_keeps_the_alarm_in_memory_and_sends_it(dev: ProvisionedDevice) -> None:
    cfg = load_config(dev.config_path)
    path = cfg.state_dir / "outbox.sqlite3"
    outbox = Outbox.open(path)
    (pages,) = outbox._conn.execute("PRAGMA page_count").fetchone()
    outbox._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's "disk full"

    seqs = iter(range(10_000))
    for size in (600, 60, 6):  # smaller and smaller, until not even a short payload fits

        def fill(size: int = size) -> None:
            for seq in seqs:
                outbox.put(seq, Kind.POSITION, bytes(size))

        with pytest.raises(StorageError, match="full"):
            fill()
    clock, wire = Clock(), Wire()
    daemon = Daemon(cfg, keys=dev.device_keys, outbox=outbox, feedback=Recorder(), clock=clock)
    daemon.attach(wire)
    first = daemon.core.next_seq
    hold(daemon, clock)
    assert first not in outbox.pending()

    def alarms_sent() -> list[Message]:
        """The alarm's copies on the wire (the filler entries are no messages at all)."""
        found = []
        for envelope in wire.sent:
            with contextlib.suppress(VigilError):
                message = open_up(dev, envelope)
                if message.seq == first:
                    found.append(message)
        return found

    (message,) = alarms_sent()
    assert message.kind == "alarm"
    clock.now += 100
    daemon.step()
    assert len(alarms_sent()) == 2  # resent from memory until stored
    assert len({encode_payload(m) for m in alarms_sent()}) == 1  # the same signed payload
    digest = uplink_digest(encode_payload(message))
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Stored(first, DIGEST), seq=0))
    daemon.step()  # another message's receipt: still unsaved, still sent
    clock.now += 100
    daemon.step()
    assert len(alarms_sent()) == 3
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Stored(first, digest), seq=1))
    daemon.step()
    clock.now += 100
    daemon.step()
    assert len(alarms_sent()) == 3
    outbox.close()
    with Outbox.open(path) as again:
        assert again.next_seq > first  # the seq sent from memory is never reused


def test_stop_wakes_the_loop_from_its_wait(
    parts: tuple[Daemon, Clock, Recorder],
) -> None:
    daemon, _, _ = parts
    loop = threading.Thread(target=daemon.run, name="daemon-under-test")
    loop.start()
    wait_until(daemon.ready.is_set, 10, what="the loop to start")
    daemon.stop()  # the fake clock never moves: only the wake-up can end the wait
    loop.join(timeout=10)
    assert not loop.is_alive()


@pytest.mark.parametrize("tried", [False, True], ids=["never-sent", "on-backoff"])
def test_queued_alarms_leave_before_a_heartbeat_when_the_link_returns(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder], tried: bool
) -> None:
    """The link comes up on paho's thread; a heartbeat may fall due before the loop hears
    of it. Whatever waits in the outbox still reaches the hub ahead of that heartbeat."""
    daemon, clock, _ = parts
    wire = Wire(connected=tried)
    daemon.attach(wire)
    hold(daemon, clock)
    wire.connected = False
    clock.now += 1
    daemon.step()
    wire.connected = True  # no LinkChanged yet: the loop only sees the deadline
    clock.now += daemon.cfg.alarm.heartbeat_interval * 1.25
    daemon.step()
    kinds = [open_up(dev, envelope).kind for envelope in wire.sent[int(tried) :]]
    assert kinds[:2] == [Kind.ALARM, Kind.HEARTBEAT]
