"""`vigil-hub run` as a real process: its config on disk, start, SIGKILL, restart, RSS.

The benchmarks and the failover chaos test run hubs this way, as systemd would:
one process per instance, each with its own MQTT client id, optionally in a
shared subscription group, on a store URL the caller prepared. Output goes to a
log file (no reader thread in the caller's process to steal its CPU).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.wait import wait_until

BIN = Path(sys.executable).parent
READY = "hub ready: subscribed"  # what `vigil.hub.process` logs once the broker SUBACKed


@dataclass(frozen=True)
class HubSetup:
    """What a hub config says; `hook_url` is a json:// webhook (one tier, at once)."""

    keys: Path
    store_url: str
    broker_port: int
    hook_url: str | None = None
    shared_group: str | None = None
    silent_after: float = 86400.0
    second_tier_delay: float | None = None  # a second tier to the same hook, this much later
    notices_per_minute: int = 30  # per device; a benchmark's wearer holds many times a minute


def write_hub_config(folder: Path, setup: HubSetup, *, client_id: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    group = f'shared_group = "{setup.shared_group}"\n' if setup.shared_group else ""
    tiers = ""
    if setup.hook_url is not None:
        tiers = (
            '[[escalation.tiers]]\nname = "operators"\ndelay = 0\nchannels = ["operators"]\n'
            f'[channels.operators]\nurls = ["{setup.hook_url}/operators"]\n'
        )
        if setup.second_tier_delay is not None:
            tiers += (
                f'[[escalation.tiers]]\nname = "partners"\n'
                f'delay = {setup.second_tier_delay}\nchannels = ["partners"]\n'
                f'[channels.partners]\nurls = ["{setup.hook_url}/partners"]\n'
            )
    path = folder / f"{client_id}.toml"
    path.write_text(f"""\
[hub]
keys = "{setup.keys}"
silent_after = {setup.silent_after}
max_notices_per_device_per_minute = {setup.notices_per_minute}
[store]
url = "{setup.store_url}"
[mqtt]
host = "127.0.0.1"
port = {setup.broker_port}
client_id = "{client_id}"
{group}[escalation]
retry_attempts = 5
retry_backoff = 0.5
retry_max = 2
{tiers}""")
    return path


class HubProcess:
    """One `vigil-hub run` process; `start` again after `kill` is a restart."""

    def __init__(self, config: Path, *, log: Path, log_level: str = "INFO") -> None:
        self.config, self.log_path, self.log_level = config, log, log_level
        self.process: subprocess.Popen[bytes] | None = None
        self._mark = 0

    def start(self, *, ready_timeout: float = 60.0) -> None:
        self._mark = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(BIN / "vigil-hub"),
                    "--config",
                    str(self.config),
                    "run",
                    "--log-level",
                    self.log_level,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if ready_timeout:
            self.wait_ready(ready_timeout)

    def wait_ready(self, timeout: float) -> None:
        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"the hub exited ({self.process.returncode}):\n{self.log()[-3000:]}"
                )
            return READY in self.log()[self._mark :]

        wait_until(ready, timeout, what=f"the hub {self.config.stem} to subscribe")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the hub is not running")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or said goodbye."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, *, tree: bool = False) -> float:
    """CPU time (user + system) process `pid` used so far, from /proc; with `tree`, that of
    every process below it too, and of its children that ended (e.g. a database server)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir() if tree else [Path(f"/proc/{pid}")]:
        try:
            stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (ValueError, OSError):  # not a process, or it ended meanwhile
            continue
    wanted, found = {pid}, True
    while tree and found:  # fields[1] is the parent's pid
        below = {p for p, f in stats.items() if int(f[1]) in wanted}
        found = not below <= wanted
        wanted |= below
    used = 0
    for p in wanted & stats.keys():
        f = stats[p]
        used += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if tree else 0)
    return used / ticks
