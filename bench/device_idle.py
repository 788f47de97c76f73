"""Idle cost of the wearable daemon: RSS and CPU over 60 s, against a bare Python interpreter.

The daemon runs as `vigil-device simulate` (mock pins, the real outbox, the
real MQTT client) against a local mosquitto, with an NMEA capture replayed at
5 sentences per second, about what a 1 Hz receiver prints. Nobody presses the
button: this is the state the wearable is in almost all of its life. Figures
come from /proc (utime+stime and VmRSS), sampled after a warm-up.

    .venv/bin/python -m bench.device_idle [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import nmea_log
from tests.support.broker import running_mosquitto
from tests.support.device_setup import make_device
from vigil.device.outbox import Outbox

TICKS = os.sysconf("SC_CLK_TCK")
WARMUP = 5.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(proc: subprocess.Popen[bytes], seconds: float) -> tuple[float, float, float]:
    """Return (CPU % of one core, RSS MiB at the end, peak RSS MiB sampled each second)."""
    time.sleep(WARMUP)  # let imports, connection and the first fixes settle
    start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
    peak = 0.0
    while time.monotonic() - start < seconds:
        time.sleep(1.0)  # sampling period of the measurement, not a wait for an event
        peak = max(peak, rss_mib(proc.pid))
    used = cpu_seconds(proc.pid) - start_cpu
    return 100 * used / (time.monotonic() - start), rss_mib(proc.pid), peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-gps", action="store_true", help="no NMEA replay (no receiver)")
    args = parser.parse_args(argv)
    gps = "no GPS" if args.no_gps else "GPS replay at 5 lines/s"
    print(f"== device: idle daemon over {args.seconds:.0f} s, {gps} ==")  # noqa: T201
    with tempfile.TemporaryDirectory() as tmp, running_mosquitto(Path(tmp) / "broker") as broker:
        dev = make_device(Path(tmp) / "dev", port=broker.port)
        log = (Path(tmp) / "daemon.log").open("wb")
        cmd = [
            sys.executable,
            "-m",
            "vigil.device.cli",
            "simulate",
            "--config",
            str(dev.config_path),
        ]
        if not args.no_gps:
            cmd += ["--nmea", str(nmea_log("gpsd-mt3339.log")), "--nmea-rate", "5"]
        bare = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        daemon = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, cwd=tmp
        )
        try:
            results = measure(daemon, args.seconds)
            base = (100 * cpu_seconds(bare.pid) / (args.seconds + WARMUP), rss_mib(bare.pid))
        finally:
            for proc in (daemon, bare):
                proc.terminate()
                proc.wait(10)
            log.close()
        # Heartbeats are sent once, never queued (protocol v2): count the seqs they spent.
        outbox = Outbox.open(dev.state_dir / "outbox.sqlite3")
        made, queued = outbox.next_seq, len(outbox)
        outbox.close()
    cpu, rss, peak = results
    print(f"{'daemon CPU (one core)':<40} {cpu:8.2f} %    baseline {base[0]:6.2f} %")  # noqa: T201
    print(f"{'daemon RSS at the end':<40} {rss:8.1f} MiB  baseline {base[1]:6.1f} MiB")  # noqa: T201
    print(f"{'daemon RSS peak':<40} {peak:8.1f} MiB")  # noqa: T201
    print(f"{'uplinks made (idle: heartbeats)':<40} {made:8d}")  # noqa: T201
    print(f"{'left in the outbox':<40} {queued:8d}")  # noqa: T201


if __name__ == "__main__":
    main()
