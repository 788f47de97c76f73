"""The daemon shell without a broker: seal-then-commit, clock source, battery, downlink checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.device_setup import ProvisionedDevice, make_device
from tests.support.parties import DIGEST, EPOCH, NONCE
from tests.support.wait import wait_until
from vigil.device.config import DeviceConfig, load_config
from vigil.device.core import ButtonPressed, GpsFix, Mode, Pattern
from vigil.device.daemon import MEMORY_KEY, Daemon, mqtt_settings
from vigil.device.drivers.link import read_link_quality
from vigil.device.outbox import Outbox
from vigil.errors import StorageError
from vigil.wire.envelope import open_uplink, seal_downlink, seal_uplink
from vigil.wire.fix import Fix
from vigil.wire.keys import HubKeys
from vigil.wire.messages import (
    Alarm,
    Cancel,
    ClockSource,
    Heartbeat,
    Kind,
    Message,
    Stored,
    Trigger,
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


def opened(dev: ProvisionedDevice, daemon: Daemon) -> list[Message]:
    return [
        open_uplink(
            e.envelope,
            device_id=dev.device_id,
            hub_keys=dev.hub_keys,
            lookup=lambda _: dev.device_keys.public().signing,
        )
        for e in daemon.outbox.due(1e9, limit=100)
    ]


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
    raw = (dev.state_dir / "outbox.sqlite3").read_bytes()
    assert b"button" not in raw  # only ciphertext touches the disk


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
    clock.now += 60
    daemon.step()
    beat = [m for m in opened(dev, daemon) if isinstance(m.body, Heartbeat)]
    assert [(m.sent_at, m.clock) for m in beat] == [(1_800_000_000.0, ClockSource.NTP)]
    body = beat[0].body
    assert (body.battery, body.signal, body.mode) == (42, 50, Mode.IDLE)
    assert body.fix is not None
    assert body.fix.age == 66.0


def test_downlinks_on_other_topics_or_forged_change_nothing(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    daemon, clock, player = parts
    hold(daemon, clock)
    seq = daemon.outbox.pending()[0]
    good = seal_downlink(
        Message(seq=0, body=Stored(seq, DIGEST), epoch=EPOCH, nonce=NONCE),
        device_id=dev.device_id,
        hub_keys=dev.hub_keys,
        device=dev.device_keys.public(),
    )
    forged = seal_downlink(
        Message(seq=1, body=Stored(seq, DIGEST), epoch=EPOCH, nonce=NONCE),
        device_id=dev.device_id,
        hub_keys=HubKeys.generate(),
        device=dev.device_keys.public(),
    )
    for topic, payload in ((up_topic(dev.device_id), good), (down_topic(dev.device_id), forged)):
        daemon.on_message(topic, payload)
        daemon.step()
    assert daemon.outbox.pending() == [seq]
    daemon.on_message(down_topic(dev.device_id), good)
    daemon.step()
    assert daemon.outbox.pending() == []
    assert player.played == [Pattern.RAISED, Pattern.STORED]


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
        outbox.save_state(MEMORY_KEY, '{"mode": "panic", "alarms": "x"}')
        daemon = Daemon(cfg, keys=dev.device_keys, outbox=outbox, feedback=Recorder())
        assert daemon.core.mode is Mode.IDLE
    finally:
        outbox.close()


class Wire:
    """The Transport seam, recording what the daemon hands to the broker."""

    connected = True

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.sent.append(payload)


def test_disk_full_keeps_the_alarm_in_memory_and_sends_it(dev: ProvisionedDevice) -> None:
    cfg = load_config(dev.config_path)
    path = cfg.state_dir / "outbox.sqlite3"
    outbox = Outbox.open(path)
    (pages,) = outbox._conn.execute("PRAGMA page_count").fetchone()
    outbox._conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's "disk full"

    def fill() -> None:
        for seq in range(200):
            outbox.put(seq, Kind.HEARTBEAT, bytes(600))

    with pytest.raises(StorageError, match="full"):
        fill()
    clock, wire = Clock(), Wire()
    daemon = Daemon(cfg, keys=dev.device_keys, outbox=outbox, feedback=Recorder(), clock=clock)
    daemon.attach(wire)
    first = daemon.core.next_seq
    hold(daemon, clock)
    assert first not in outbox.pending()
    alarm = [p for p in wire.sent if p not in {e.envelope for e in outbox.due(1e9, limit=999)}]
    assert len(alarm) == 1
    message = open_uplink(
        alarm[0],
        device_id=dev.device_id,
        hub_keys=dev.hub_keys,
        lookup=lambda _: dev.device_keys.public().signing,
    )
    assert (message.seq, message.kind) == (first, "alarm")
    clock.now += 100
    daemon.step()
    assert wire.sent.count(alarm[0]) == 2  # resent from memory until stored
    stored = seal_downlink(
        Message(seq=0, body=Stored(first, DIGEST), epoch=EPOCH, nonce=NONCE),
        device_id=dev.device_id,
        hub_keys=dev.hub_keys,
        device=dev.device_keys.public(),
    )
    daemon.on_message(down_topic(dev.device_id), stored)
    daemon.step()
    clock.now += 100
    daemon.step()
    assert wire.sent.count(alarm[0]) == 2
    outbox.close()
    assert Outbox.open(path).next_seq > first  # the seq sent from memory is never reused


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
