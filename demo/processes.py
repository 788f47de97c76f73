"""Run the demo's daemons as real subprocesses and watch what they print."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class Watched:
    """A subprocess whose output lines are kept (and logged to a file) as they come."""

    def __init__(self, name: str, argv: Sequence[str], *, log: Path, stdin: bool = False) -> None:
        self.name = name
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._log = log.open("w")
        self.process = subprocess.Popen(  # noqa: S603 - our own entry points, no shell
            list(argv),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name=f"{name}-out", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout or ():
            self._log.write(line)
            self._log.flush()
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def send(self, command: str) -> None:
        """Write one command line to the process's stdin."""
        if self.process.stdin is None:
            raise RuntimeError(f"{self.name} was started without stdin")
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def seen(self, needle: str, since: int = 0) -> str | None:
        """The first line (from index `since`) containing `needle`, if any."""
        with self._lock:
            return next((line for line in self.lines[since:] if needle in line), None)

    def mark(self) -> int:
        with self._lock:
            return len(self.lines)

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._log.close()


def wait_for(what: str, predicate: Callable[[], object], timeout: float) -> object:
    """Poll `predicate` until truthy; raise with `what` if it does not happen in time."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo waited {timeout:.0f} s for {what}")
        time.sleep(0.05)  # polling interval
    return value


def run(argv: Sequence[str], *, check: bool = True) -> str:
    """Run a CLI command to completion and return its stdout (stderr passes through)."""
    result = subprocess.run(  # noqa: S603 - our own entry points, no shell
        list(argv), capture_output=True, text=True, check=False, timeout=60
    )
    if check and result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}")
    return result.stdout
