"""The listening end of systemd's notify protocol, to know a daemon under test is ready.

A daemon run with `Type=notify` sends `READY=1` (and `WATCHDOG=1`, `STOPPING=1`, ...)
as datagrams to `$NOTIFY_SOCKET`. Tests start it with the address of this socket and
wait for READY the way systemd does, instead of for a line in its log. The socket is
in the abstract namespace, so no path length or folder permission gets in the way.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any


class NotifySocket:
    """Bind a fresh socket; pass `.env` to the daemon, then `wait_for("READY=1", ...)`."""

    def __init__(self) -> None:
        name = f"vigil-test-notify-{secrets.token_hex(8)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + name)
        self.address = "@" + name  # the value for $NOTIFY_SOCKET
        self.received: list[str] = []  # each assignment, in the order sent

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address}

    def wait_for(
        self, assignment: str, timeout: float, *, count: int = 1,
        process: subprocess.Popen[Any] | None = None,
    ) -> None:  # fmt: skip
        """Wait until the daemon has sent `assignment` (e.g. "READY=1") `count` times.

        With `process`, a daemon that exits first fails at once with its exit code
        instead of after the whole timeout.
        """
        deadline = time.monotonic() + timeout
        while self.received.count(assignment) < count:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the daemon exited ({process.returncode}) before {assignment}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {assignment} (x{count}) on the notify socket within "
                                   f"{timeout}s; got {self.received}")  # fmt: skip
            self._receive(deadline)

    def wait_line(
        self, predicate: Callable[[str], bool], timeout: float, *, what: str, after: int = 0
    ) -> int:
        """Wait until an assignment matching `predicate` arrives (or has) at an index of
        `received` from `after` on; return its index."""
        deadline = time.monotonic() + timeout
        while True:
            for index in range(after, len(self.received)):
                if predicate(self.received[index]):
                    return index
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} on the notify socket within {timeout}s; "
                                   f"got {self.received}")  # fmt: skip
            self._receive(deadline)

    def _receive(self, deadline: float) -> None:
        self.sock.settimeout(min(0.2, max(deadline - time.monotonic(), 0.01)))
        try:
            datagram = self.sock.recv(4096)
        except TimeoutError:
            return
        self.received += datagram.decode(errors="replace").splitlines()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
