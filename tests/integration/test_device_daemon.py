"""The real daemon (`vigil-device simulate`, mock pins) against a real mosquitto.

Power cut right after a hold, broker down for a while, forged downlinks, and
systemd's notify protocol. A test hub end decrypts what arrives with
`wire.open_uplink` and answers with signed `stored` downlinks.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bench.device_idle import BARE_MODULES
from tests.conftest import nmea_log
from tests.support.broker import Broker, free_port, running_mosquitto
from tests.support.device_setup import ProvisionedDevice, make_device
from tests.support.hub_endpoint import HubEndpoint
from tests.support.notify import NotifySocket
from tests.support.parties import DIGEST, EPOCH
from tests.support.wait import wait_until
from vigil.device.hardware import SIMULATED_BATTERY
from vigil.wire.keys import HubKeys
from vigil.wire.messages import Alarm, Message, Mode, Stored, Trigger

pytestmark = pytest.mark.integration

FAST = {
    "alarm": {
        "hold_seconds": 0.5,
        "long_press_seconds": 0.3,
        "heartbeat_interval": 1.0,
    },
    "outbox": {"retry_initial": 0.3, "retry_max": 1.0},
}


class DaemonProcess:
    """`python -m vigil.device.cli simulate` with stdin for commands and a log file to watch.

    Ready when it sends READY=1 on its notify socket, as systemd would see it (its own
    socket, or `notify` when the test wants to watch the protocol itself). `command`
    is `simulate`, or `run` with VIGIL_HARDWARE=simulate in `env`; `nmea=False`
    leaves out the GPS replay (nothing then wakes the main loop but its deadlines).
    """

    def __init__(
        self, dev: ProvisionedDevice, log: Path, *, env: dict[str, str] | None = None,
        notify: NotifySocket | None = None, command: str = "simulate", nmea: bool = True,
        launcher: Sequence[str] = ("-m", "vigil.device.cli"),
    ) -> None:  # fmt: skip
        self.log_path = log
        self._log = log.open("ab")
        self._own_notify = notify is None
        self.notify = notify or NotifySocket()
        cmd = [sys.executable, *launcher, command, "--config", str(dev.config_path)]
        if nmea:
            cmd += ["--nmea", str(nmea_log("gpsd-mt3339.log")), "--nmea-rate", "50"]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, **self.notify.env, **(env or {})},
            cwd=log.parent,
        )
        self.notify.wait_for("READY=1", 20, process=self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._log.close()
        if self._own_notify:
            self.notify.close()
        return self.proc.returncode


@pytest.fixture
def hub_keys() -> HubKeys:
    return HubKeys.generate()


def make(tmp_path: Path, broker_port: int, hub_keys: HubKeys, **extra: Any) -> ProvisionedDevice:
    overrides = {k: dict(v) for k, v in FAST.items()}
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    return make_device(tmp_path / "dev", port=broker_port, hub_keys=hub_keys, overrides=overrides)


def endpoint(broker: Broker, dev: ProvisionedDevice, **kw: Any) -> HubEndpoint:
    return HubEndpoint(broker, dev.hub_keys, dev.device_id, dev.device_keys.public(), **kw)


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for d in started:
        d.stop()


def test_power_cut_after_hold_delivers_the_alarm_exactly_once(
    tmp_path: Path, mosquitto: Broker, hub_keys: HubKeys, daemons: list[DaemonProcess]
) -> None:
    dev = make(tmp_path, mosquitto.port, hub_keys)
    hub = endpoint(mosquitto, dev, auto_store=frozenset({"heartbeat", "position"})).start()
    try:
        first = DaemonProcess(dev, tmp_path / "daemon1.log")
        daemons.append(first)
        first.command("hold")
        wait_until(lambda: " queued" in first.log(), 10, what="alarm committed")
        first.kill()  # the power cut: no clean shutdown, no chance to flush anything

        second = DaemonProcess(dev, tmp_path / "daemon2.log")
        daemons.append(second)
        alarms = wait_until(lambda: hub.unique("alarm"), 60, what="the alarm at the hub")
        assert len(alarms) == 1
        (seq, message) = next(iter(alarms.items()))
        assert isinstance(message.body, Alarm)
        assert message.body.trigger is Trigger.BUTTON

        # the alarm is still active after the restart: heartbeats say so and carry the track
        def active_beats() -> list[Message]:
            beats = hub.unique("heartbeat").values()
            return [m for m in beats if m.body.mode is Mode.ACTIVE and m.body.fix]  # type: ignore[union-attr]

        beats = wait_until(active_beats, 60, what="a heartbeat with the alarm and a fix")
        assert not hub.unique("position")  # positions ride in heartbeats
        # the restarted daemon resends until the hub stores it; then it stops
        wait_until(lambda: len(hub.copies("alarm")) >= 2, 20, what="a resend")
        assert {m.epoch for m in beats} == {message.epoch}  # one life
        hub.store(seq)
        wait_until(lambda: f"seq={seq} stored by the hub" in second.log(), 10, what="ack")
        mark = max(hub.unique())
        wait_until(lambda: max(hub.unique()) > mark, 10, what="a later uplink")
        copies = len(hub.copies("alarm"))
        mark = max(hub.unique())
        wait_until(lambda: max(hub.unique()) >= mark + 3, 15, what="three more uplinks")
        assert len(hub.copies("alarm")) == copies
        assert len(hub.unique("alarm")) == 1
        assert "[vibration]" not in second.log()  # feedback goes to stdout, never the log
        assert "gps fix acquired" in second.log()
        assert "44.06" not in second.log()  # the replayed track is at 44.068 N, -121.314 E:
        assert "-121.3" not in second.log()  # no position in the log at INFO
    finally:
        hub.stop()


def test_broker_down_alarms_queue_and_drain_in_order(
    tmp_path: Path, hub_keys: HubKeys, daemons: list[DaemonProcess]
) -> None:
    port = free_port()
    with running_mosquitto(tmp_path / "broker", port=port) as broker:
        dev = make(tmp_path, port, hub_keys, alarm={"heartbeat_interval": 0.3})
        hub = endpoint(broker, dev).start()  # a persistent session the broker keeps for us
        hub.stop()
        broker.stop()

        daemon = DaemonProcess(dev, tmp_path / "daemon.log")
        daemons.append(daemon)
        daemon.command("hold")
        wait_until(lambda: daemon.log().count(" queued") == 1, 10, what="alarm 1")
        daemon.command("cut")
        wait_until(lambda: daemon.log().count(" queued") == 2, 10, what="alarm 2")

        queued = [int(n) for n in re.findall(r"seq=(\d+) queued", daemon.log())]
        broker.start()
        hub.start()
        try:
            wait_until(lambda: len(hub.unique("alarm")) == 2, 30, what="both alarms")
            order = hub.first_arrivals()
            alarms = [m for m in order if m.kind == "alarm"]
            assert [m.body.trigger for m in alarms] == [Trigger.BUTTON, Trigger.TAMPER]  # type: ignore[union-attr]
            assert alarms[0].seq < alarms[1].seq
            assert [m.kind for m in order[:2]] == ["alarm", "alarm"]
            assert not hub.unique("position")
            assert hub.rejected == 0
            # Version 2: heartbeats are never queued. Those made while the broker was away
            # spent seqs (the gaps between queued ones) and are never sent later.
            assert set(range(min(queued), max(queued))) - set(queued), "no heartbeat made"
            beats = wait_until(lambda: hub.copies("heartbeat"), 10, what="a fresh heartbeat")
            assert all(m.seq > max(queued) for m in beats)
        finally:
            hub.stop()


def test_forged_and_replayed_downlinks_are_rejected(
    tmp_path: Path, mosquitto: Broker, hub_keys: HubKeys, daemons: list[DaemonProcess]
) -> None:
    dev = make(tmp_path, mosquitto.port, hub_keys)
    hub = endpoint(mosquitto, dev).start()
    try:
        daemon = DaemonProcess(dev, tmp_path / "daemon.log")
        daemons.append(daemon)
        daemon.command("hold")
        alarms = wait_until(lambda: hub.unique("alarm"), 20, what="the alarm")
        seq = next(iter(alarms))
        receipt = hub.receipt(seq)
        forged = hub.seal(receipt, hub_keys=HubKeys.generate())  # signed by another key
        hub.publish_raw(forged)
        hub.publish_raw(os.urandom(600))
        hub.publish_raw(b"")
        wait_until(lambda: daemon.log().count("rejected a downlink") >= 3, 10, what="rejects")
        # Genuinely signed, but for another life of the device or another message (v2).
        hub.send(receipt, epoch=EPOCH)
        hub.send(Stored(seq, DIGEST))
        wait_until(lambda: "digest does not match" in daemon.log(), 10, what="digest drop")
        assert "it is for epoch" in daemon.log()
        copies = len(hub.copies("alarm"))
        wait_until(lambda: len(hub.copies("alarm")) > copies, 10, what="still resending")
        assert "stored by the hub" not in daemon.log()

        genuine = hub.send(receipt)
        wait_until(lambda: f"seq={seq} stored by the hub" in daemon.log(), 10, what="ack")
        hub.publish_raw(genuine)  # the same downlink again: a replay
        wait_until(lambda: "duplicate" in daemon.log(), 10, what="replay dropped")
    finally:
        hub.stop()


def test_ready_and_watchdog_reach_systemd(
    tmp_path: Path, mosquitto: Broker, hub_keys: HubKeys, daemons: list[DaemonProcess]
) -> None:
    dev = make(tmp_path, mosquitto.port, hub_keys)
    with NotifySocket() as notify:
        env = {"WATCHDOG_USEC": "400000"}
        daemon = DaemonProcess(dev, tmp_path / "daemon.log", env=env, notify=notify)
        daemons.append(daemon)
        notify.wait_for("WATCHDOG=1", 10, count=2)
        assert notify.received[0] == "READY=1"
        pings = [s for s in notify.received[1:] if not s.startswith("STATUS=")]
        assert set(pings) == {"WATCHDOG=1"}
        connected = f"STATUS=broker: connected to 127.0.0.1:{mosquitto.port} since "
        wait_until(lambda: [s for s in statuses(notify) if s.startswith(connected)], 10)
        daemon.command("quit")
        assert daemon.proc.wait(10) == 0
        notify.wait_for("STOPPING=1", 10)
        assert notify.received[-1] == "STOPPING=1"
        pings = [s for s in notify.received[1:-1] if not s.startswith("STATUS=")]
        assert set(pings) == {"WATCHDOG=1"}


def statuses(notify: NotifySocket) -> list[str]:
    """The STATUS= lines received so far, after one more watchdog ping."""
    notify.wait_for("WATCHDOG=1", 10, count=notify.received.count("WATCHDOG=1") + 1)
    return [s for s in notify.received if s.startswith("STATUS=")]


def test_an_unreachable_broker_is_in_the_status_line(
    tmp_path: Path, hub_keys: HubKeys, daemons: list[DaemonProcess]
) -> None:
    port = free_port()  # nothing listens there
    dev = make(tmp_path, port, hub_keys)
    with NotifySocket() as notify:
        env = {"WATCHDOG_USEC": "400000"}  # the loop passes often: the line follows promptly
        daemons.append(DaemonProcess(dev, tmp_path / "daemon.log", env=env, notify=notify))
        refused = wait_until(
            lambda: [s for s in statuses(notify) if "connection refused" in s],
            20,
            what="the refusal in the status line",
        )
        line = refused[0]
        assert line.startswith(f"STATUS=broker: connecting to 127.0.0.1:{port} since ")
        assert "failed, last: connection refused: nothing listens on" in line


# The main loop used to sleep until its next deadline (up to 30 s) before it saw a signal,
# so systemd's stop took 15-18 s. Without a GPS replay nothing else wakes it: the worst case.
STOP_BOUND = 10.0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_daemon_promptly(
    tmp_path: Path,
    mosquitto: Broker,
    hub_keys: HubKeys,
    daemons: list[DaemonProcess],
    signum: signal.Signals,
) -> None:
    dev = make(tmp_path, mosquitto.port, hub_keys, alarm={"heartbeat_interval": 600.0})
    daemon = DaemonProcess(dev, tmp_path / "daemon.log", nmea=False)
    daemons.append(daemon)
    wait_until(lambda: "mqtt connected" in daemon.log(), 20, what="broker connection")
    daemon.proc.send_signal(signum)
    assert daemon.proc.wait(timeout=STOP_BOUND) == 0  # raises TimeoutExpired if it lingers
    assert f"signal {int(signum)}: stopping" in daemon.log()


def test_a_stop_with_the_gps_replay_running_logs_no_error(
    tmp_path: Path, mosquitto: Broker, hub_keys: HubKeys, daemons: list[DaemonProcess]
) -> None:
    """The replayed receiver is hung up only after the reader has let go of it."""
    dev = make(tmp_path, mosquitto.port, hub_keys)
    daemon = DaemonProcess(dev, tmp_path / "daemon.log")
    daemons.append(daemon)
    wait_until(lambda: "gps fix acquired" in daemon.log(), 20, what="a fix from the replay")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=STOP_BOUND) == 0
    assert " ERROR " not in daemon.log()


# The daemon itself, with a handler that writes the modules it has loaded on SIGUSR1.
_MODULES_ON_SIGNAL = """
import os, signal, sys
def dump(signum, frame):
    with open(os.environ["MODULES_TO"], "w") as out:
        out.write("\\n".join(sorted(sys.modules)))
signal.signal(signal.SIGUSR1, dump)
from vigil.device.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_the_idle_daemon_loads_nothing_beyond_the_bench_baseline(
    tmp_path: Path, mosquitto: Broker, hub_keys: HubKeys, daemons: list[DaemonProcess]
) -> None:
    """bench.device_idle compares the daemon with a bare interpreter importing BARE_MODULES;
    a module loaded only in the daemon would make it look heavier than it is, one loaded
    only in the bare twin lighter. After its heartbeats, receipts and fixes, the daemon has
    exactly the twin's modules, and never a hub or provisioning one."""
    dev = make(tmp_path, mosquitto.port, hub_keys)
    dump = tmp_path / "modules.txt"
    daemon = DaemonProcess(dev, tmp_path / "daemon.log", env={"MODULES_TO": str(dump)},
                           launcher=("-c", _MODULES_ON_SIGNAL))  # fmt: skip
    daemons.append(daemon)
    hub = endpoint(mosquitto, dev, auto_store=frozenset({"heartbeat"})).start()
    try:
        wait_until(lambda: len(hub.unique("heartbeat")) >= 2, 20, what="heartbeats stored")
        wait_until(lambda: "gps fix acquired" in daemon.log(), 20, what="a fix")
        daemon.proc.send_signal(signal.SIGUSR1)
        loaded = set(wait_until(lambda: dump.exists() and dump.read_text().split(), 10,
                                what="the daemon's modules"))  # fmt: skip
    finally:
        hub.stop()
    code = f"import sys, {', '.join(BARE_MODULES)}; print('\\n'.join(sys.modules))"
    twin = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60).stdout.split()  # fmt: skip
    assert sorted(loaded - set(twin)) == []
    assert sorted(set(twin) - loaded) == []
    assert not [m for m in loaded if m.startswith(("vigil.hub", "vigil.provision"))]


def test_run_with_the_simulate_backend_is_the_same_daemon(
    tmp_path: Path, mosquitto: Broker, hub_keys: HubKeys, daemons: list[DaemonProcess]
) -> None:
    dev = make(tmp_path, mosquitto.port, hub_keys)
    env = {"VIGIL_HARDWARE": "simulate"}
    daemon = DaemonProcess(dev, tmp_path / "daemon.log", env=env, command="run", nmea=False)
    daemons.append(daemon)
    hub = endpoint(mosquitto, dev).start()
    try:
        assert "hardware backend simulate" in daemon.log()
        daemon.command("hold")  # the stdin commands drive the mock pins under `run` too
        alarms = wait_until(lambda: hub.unique("alarm"), 20, what="the alarm at the hub")
        (message,) = alarms.values()
        assert message.body == Alarm(Trigger.BUTTON, None, SIMULATED_BATTERY)
        daemon.command("quit")
        assert daemon.proc.wait(timeout=STOP_BOUND) == 0
    finally:
        hub.stop()
