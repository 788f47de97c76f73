"""Chaos (`make chaos`, not in `make test`): power cuts and broker restarts, no alarm lost.

Real processes throughout (mosquitto, `vigil-hub run`, `vigil-device simulate`).
Each round the wearer holds the button; once the device has felt the alarm
raised, chaos strikes at random: the device is SIGKILLed and restarted (a
power cut), the broker restarts, both, or nothing. The round ends when the hub
has stored every alarm raised so far; then an operator acknowledges and
resolves, so that the next hold raises a new alarm. Bounded by
VIGIL_CHAOS_SECONDS (default 90 s); the seed is printed so a failure replays.
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from demo.processes import Watched, run, wait_for
from demo.setup import DemoFiles, prepare
from tests.support.broker import Broker, running_mosquitto
from tests.support.sinks import smtp_sink, webhook_sink

pytestmark = pytest.mark.chaos

BIN = Path(sys.executable).parent
SECONDS = float(os.environ.get("VIGIL_CHAOS_SECONDS", "90"))
# The last round may start just before the deadline and then waits up to ~3 minutes;
# pytest's default per-test timeout (120 s) would otherwise cap any chaos run.
ROUND_ALLOWANCE = 300.0


def start_device(files: DemoFiles, log: Path) -> Watched:
    argv = [str(BIN / "vigil-device"), "-v", "simulate", "--config", str(files.device_config),
            "--nmea", str(files.nmea), "--nmea-rate", "40"]  # fmt: skip
    return Watched("device", argv, log=log, stdin=True)


def stored_alarms(files: DemoFiles) -> int:
    with sqlite3.connect(files.hub_config.parent / "hub.db") as db:
        return int(db.execute("SELECT count(*) FROM uplinks WHERE kind = 'alarm'").fetchone()[0])


def hub(files: DemoFiles, *args: str, check: bool = True) -> str:
    return run([str(BIN / "vigil-hub"), "--config", str(files.hub_config), *args], check=check)


def close_open_alerts(files: DemoFiles) -> None:
    """Ack and resolve what is open; a device-silent alert may close itself meanwhile."""
    for line in hub(files, "alerts").strip().splitlines()[1:]:
        alert = line.split()[0]
        hub(files, "ack", alert, "--by", "chaos", check=False)
        hub(files, "resolve", alert, "--by", "chaos", check=False)


def strike(
    rng: random.Random,
    *,
    broker: Broker,
    device: Watched,
    files: DemoFiles,
    work: Path,
    n: int,
) -> Watched:
    choice = rng.choice(["power-cut", "broker-restart", "both", "calm"])
    print(f"round {n}: {choice}")  # noqa: T201
    if choice in ("power-cut", "both"):
        device.process.kill()
        device.stop()
        device = start_device(files, work / f"device-{n}.log")
    if choice in ("broker-restart", "both"):
        broker.restart()
    return device


def play_round(  # noqa: PLR0917 - one round's whole context
    rng: random.Random,
    broker: Broker,
    devices: list[Watched],
    files: DemoFiles,
    work: Path,
    round_: int,
    raised: int,
) -> int:
    """One hold, one strike of chaos, then check the hub has every alarm once; return 1."""
    device = devices[-1]
    wait_for("the device to connect", lambda: device.seen("mqtt connected"), 30)
    mark = device.mark()
    device.send("hold")
    wait_for("the alarm", lambda: device.seen("[vibration] raised", mark), 15)
    device = strike(rng, broker=broker, device=device, files=files, work=work, n=round_)
    devices.append(device)
    wait_for(f"{raised + 1} alarms at the hub", lambda: stored_alarms(files) > raised, 90)
    assert stored_alarms(files) == raised + 1, "an alarm was stored twice"
    mark = device.mark()
    close_open_alerts(files)
    wait_for("the device to hear resolved", lambda: device.seen("kind=resolved", mark), 30)
    return 1


@pytest.mark.timeout(SECONDS + ROUND_ALLOWANCE)
def test_no_alarm_is_lost_under_power_cuts_and_broker_restarts(tmp_path: Path) -> None:
    seed = int(os.environ.get("VIGIL_CHAOS_SEED", time.time_ns() % 1_000_000))
    print(f"chaos seed {seed}, {SECONDS:.0f} s")  # noqa: T201
    rng = random.Random(seed)  # noqa: S311 - chaos, not cryptography
    with running_mosquitto(tmp_path / "broker") as broker, smtp_sink() as smtp, \
            webhook_sink() as hook:  # fmt: skip
        files = prepare(tmp_path, broker=broker, smtp=smtp, hook=hook)
        hub_process = Watched("hub", [str(BIN / "vigil-hub"), "--config", str(files.hub_config),
                                      "run"], log=tmp_path / "hub.log")  # fmt: skip
        devices = [start_device(files, tmp_path / "device-0.log")]
        raised, round_, deadline = 0, 0, time.monotonic() + SECONDS
        try:
            while time.monotonic() < deadline:
                round_ += 1
                raised += play_round(rng, broker, devices, files, tmp_path, round_, raised)
        finally:
            devices[-1].stop()
            hub_process.stop()
        assert raised >= 1
        assert stored_alarms(files) == raised
        print(f"{round_} rounds, {raised} alarms raised, {stored_alarms(files)} stored")  # noqa: T201
