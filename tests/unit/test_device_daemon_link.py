"""The daemon shell and its link: MQTT settings, a full disk that still sends the alarm, the
outbox ahead of a heartbeat when the link returns, and a stop that wakes the loop."""

from __future__ import annotations

import contextlib
import threading

import pytest

from tests.support.daemon_seams import Clock, Recorder, Wire, hold, open_up, receipt
from tests.support.device_setup import ProvisionedDevice
from tests.support.parties import DIGEST
from tests.support.wait import wait_until
from vigil.device.config import load_config
from vigil.device.daemon import Daemon, mqtt_settings
from vigil.device.outbox import Outbox
from vigil.errors import StorageError, VigilError
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import Kind, Message, Stored, encode_payload
from vigil.wire.topics import down_topic, up_topic


def test_mqtt_settings_from_config(dev: ProvisionedDevice) -> None:
    settings = mqtt_settings(load_config(dev.config_path))
    assert settings.client_id == settings.username == dev.device_id.hex
    assert settings.will is not None
    assert (settings.will.topic, settings.will.payload) == (up_topic(dev.device_id), b"")
    assert settings.clean_start is False


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
