"""The daemon shell and its GPS: GPS time until NTP syncs (battery and signal in heartbeats), and
fixes that reach the core before the next input without waking the loop."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.support.daemon_seams import Clock, Recorder, Wire, hold, open_up, opened
from tests.support.device_setup import ProvisionedDevice
from vigil.device.core import ButtonPressed, ButtonReleased, GpsFix, Mode, Pattern, Tick
from vigil.device.daemon import Daemon
from vigil.wire.fix import Fix
from vigil.wire.messages import Alarm, ClockSource, Heartbeat


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
