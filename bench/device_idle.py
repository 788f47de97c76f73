"""Idle cost of the wearable daemon: RSS and CPU over 60 s, against a bare Python interpreter.

The daemon runs as `vigil-device simulate` (mock pins, the real outbox, the
real MQTT client) against a local mosquitto, with an NMEA capture replayed at
5 sentences per second in one burst a second, as a 1 Hz receiver prints them
(the replay thread runs in the daemon's process and is counted with it, though
no wearable has it). Nobody presses the button: this is the state the wearable
is in almost all of its life. Figures
come from /proc (utime+stime and VmRSS), sampled after a warm-up.

    .venv/bin/python -m bench.device_idle [--seconds 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.env import progress
from bench.results import Figure, Goal, Results
from tests.conftest import nmea_log
from tests.support.broker import running_mosquitto
from tests.support.device_setup import make_device
from tests.support.hubproc import cpu_seconds, rss_mib
from vigil.device.outbox import Outbox

WARMUP = 5.0


def measure(
    proc: subprocess.Popen[bytes], seconds: float, *, warmup: float = WARMUP
) -> tuple[float, float, float]:
    """Return (CPU % of one core, RSS MiB at the end, peak RSS MiB sampled each second)."""
    time.sleep(warmup)  # let imports, connection and the first fixes settle
    start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
    peak = 0.0
    while time.monotonic() - start < seconds:
        time.sleep(1.0)  # sampling period of the measurement, not a wait for an event
        peak = max(peak, rss_mib(proc.pid))
    used = cpu_seconds(proc.pid) - start_cpu
    return 100 * used / (time.monotonic() - start), rss_mib(proc.pid), peak


# Every module the idle daemon has loaded, and nothing running: its own, the libraries they
# import, and three the libraries load on first use (paho's connect encodes the broker's host
# name with the idna codec; cryptography loads its backend for the first public key read;
# pynmea2 parses the receiver's time with strptime).
# tests/integration/test_device_daemon.py checks that the daemon has no module beyond these.
BARE_MODULES = (
    "vigil.device.cli",
    "vigil.device.daemon",
    "vigil.device.hardware",
    "vigil.device.outbox",
    "vigil.device.drivers.gps",
    "gpiozero.pins.mock",
    "serial",
    "paho.mqtt.client",
    "encodings.idna",
    "cryptography.hazmat.backends.openssl.backend",
    "_strptime",
)
BARE_IMPORTS = f"import {', '.join(BARE_MODULES)}, time; time.sleep(3600)"


def idle(work: Path, seconds: float, *, gps: bool = True) -> dict[str, float]:
    """Run the simulated daemon idle against a local mosquitto; measure it and a bare twin."""
    with running_mosquitto(work / "broker") as broker:
        dev = make_device(work / "dev", port=broker.port)
        log = (work / "daemon.log").open("wb")
        cmd = [
            sys.executable,
            "-m",
            "vigil.device.cli",
            "simulate",
            "--config",
            str(dev.config_path),
        ]
        if gps:
            cmd += ["--nmea", str(nmea_log("gpsd-mt3339.log")), "--nmea-rate", "5"]
        bare = subprocess.Popen([sys.executable, "-c", BARE_IMPORTS])  # noqa: S603
        daemon = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, cwd=work
        )
        try:
            time.sleep(WARMUP)  # let imports, connection and the first fixes settle
            bare_start = cpu_seconds(bare.pid)
            cpu, rss, peak = measure(daemon, seconds, warmup=0.0)
            base_cpu = 100 * (cpu_seconds(bare.pid) - bare_start) / seconds
            base_rss = rss_mib(bare.pid)
        finally:
            for proc in (daemon, bare):
                proc.terminate()
                proc.wait(10)
            log.close()
        # Heartbeats are sent once, never queued (protocol v2): count the seqs they spent.
        outbox = Outbox.open(dev.state_dir / "outbox.sqlite3")
        made, queued = outbox.next_seq, len(outbox)
        outbox.close()
    return {
        "cpu": cpu,
        "rss": rss,
        "peak": peak,
        "base_cpu": base_cpu,
        "base_rss": base_rss,
        "made": made,
        "queued": queued,
    }


def run(results: Results, work: Path, seconds: float = 30.0) -> None:
    """The `make bench` figures: idle CPU and RSS against a bare twin."""
    work.mkdir(parents=True, exist_ok=True)
    progress(f"device: the simulated daemon idle for {seconds:.0f} s, GPS replay at 5 lines/s")
    m = idle(work, seconds)
    results.add(
        Figure(
            "device idle CPU (one core)",
            m["cpu"],
            "%",
            m["base_cpu"],
            "bare interpreter with the same imports",
            (Goal("value", "<=", 0.5),),
        )
    )
    results.add(
        Figure(
            "device idle RSS (peak)",
            m["peak"],
            "MiB",
            m["base_rss"],
            "bare interpreter with the same imports",
            (Goal("value", "<=", 40.0),),
            note=f"{m['made']:.0f} uplinks made, {m['queued']:.0f} left queued",
        )
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-gps", action="store_true", help="no NMEA replay (no receiver)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        m = idle(Path(tmp), args.seconds, gps=not args.no_gps)
    for name, key, base, unit in (
        ("daemon CPU (one core)", "cpu", "base_cpu", "%"),
        ("daemon RSS at the end", "rss", "base_rss", "MiB"),
    ):
        print(f"{name:<40} {m[key]:8.2f} {unit:<4} baseline {m[base]:6.2f} {unit}")  # noqa: T201
    print(f"{'daemon RSS peak':<40} {m['peak']:8.1f} MiB")  # noqa: T201
    print(f"{'uplinks made (idle: heartbeats)':<40} {m['made']:8.0f}")  # noqa: T201


if __name__ == "__main__":
    main()
