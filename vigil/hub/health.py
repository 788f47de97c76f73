"""Heartbeats of the hub's workers, for systemd's watchdog.

Each worker (ingest loop, delivery dispatcher, periodic timer) beats after every
round it finished without an error, idle rounds included. The supervisor pings
the watchdog (WATCHDOG=1) only while every worker beat within its bound: a worker
that hangs, keeps failing or died withholds the ping, and systemd restarts the hub.

    beats = Heartbeats({"ingest": 30.0, "timer": 60.0})
    beats.beat("ingest")
    beats.stuck()   # [("timer", 60.0)] once the timer has not beaten for 60 s
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerBounds:
    """How long (s) each worker may go without finishing a round before the hub is unhealthy.

    `send` bounds one notice in progress (each channel has its own timeout, far shorter).
    systemd restarts the hub `WatchdogSec` after the last ping, so the restart comes that
    long after a bound is passed.
    """

    ingest: float = 30.0
    delivery: float = 30.0
    timer: float = 60.0
    send: float = 300.0

    def __post_init__(self) -> None:
        if min(self.ingest, self.delivery, self.timer, self.send) <= 0:
            raise ValueError("worker bounds must be > 0 seconds")

    def per_worker(self) -> dict[str, float]:
        return {"ingest": self.ingest, "delivery": self.delivery, "timer": self.timer}


class Heartbeats:
    """When each worker last finished a round (monotonic clock), and who is overdue."""

    def __init__(
        self, bounds: Mapping[str, float], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._bounds = dict(bounds)
        self._clock = clock
        self._lock = threading.Lock()
        start = clock()
        self._last = dict.fromkeys(self._bounds, start)
        self.withheld = 0  # pings the supervisor held back (for tests and logs)

    def beat(self, worker: str) -> None:
        """`worker` finished a round (raises KeyError for a worker it does not know)."""
        if worker not in self._bounds:
            raise KeyError(f"unknown worker {worker!r}")
        with self._lock:
            self._last[worker] = self._clock()

    def stuck(self) -> list[tuple[str, float]]:
        """(worker, its bound) for every worker whose last round is older than its bound."""
        now = self._clock()
        with self._lock:
            late = [(w, now - t) for w, t in self._last.items()]
        return [(w, self._bounds[w]) for w, age in late if age > self._bounds[w]]


def describe_stuck(stuck: list[tuple[str, float]]) -> str:
    """'ingest stuck (no round for over 30 s)' for each stuck worker (empty when none is).

    The text stays the same while the worker stays stuck: the status line changes
    (and is sent) only when the state does.
    """
    return ", ".join(f"{worker} stuck (no round for over {bound:g} s)" for worker, bound in stuck)
