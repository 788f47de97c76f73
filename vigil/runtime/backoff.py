"""How long to wait before retry number n: capped exponential backoff with full jitter.

Pure: the attempt number, the base and the cap go in, a delay comes out; the
random source is a parameter, so tests pass a constant and get exact times.

Full jitter, as the AWS Architecture Blog's "Exponential Backoff And Jitter"
describes it: sleep = random_between(0, min(cap, base * 2 ** attempt)). We
chose it over decorrelated jitter (random_between(base, previous_sleep * 3))
because that one needs the previous delay, and our callers keep only an
attempt count (the device outbox per seq in memory, the hub per delivery row);
the note found the two about equally good at spreading a crowd of clients
apart, and both much better than no jitter, which is what we had: every
wearable that lost the broker at the same moment retried at the same moments.

    backoff_delay(1, base=10, cap=300)   # first retry: 0..10 s
    backoff_delay(6, base=10, cap=300)   # sixth: 0..300 s (10 * 32 = 320, capped)

Libraries considered: `backoff` and `tenacity` compute the same delays, but
inside their own retry loops (a decorator that sleeps and calls again, with a
state object and the module's global random). Both our callers schedule a
next-due time and never sleep in a loop, so the dependency would bring a retry
engine to use one formula from it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

MAX_DOUBLINGS = 62  # 2**62 * any sensible base is far past any cap; avoids float overflow


def backoff_ceiling(attempt: int, *, base: float, cap: float) -> float:
    """The un-jittered delay before retry `attempt` (1 = first): base * 2^(attempt-1), capped."""
    if attempt < 1:
        raise ValueError(f"attempt counts retries from 1, got {attempt}")
    if not 0 < base <= cap:
        raise ValueError(f"backoff needs 0 < base <= cap, got base={base} cap={cap}")
    return min(cap, base * 2.0 ** min(attempt - 1, MAX_DOUBLINGS))


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry `attempt`: uniform in [0, ceiling] (full jitter).

    `rand` returns a number in [0, 1]; `random.random` in production, a
    constant in tests (`lambda: 1.0` gives the ceiling itself).
    """
    ceiling = backoff_ceiling(attempt, base=base, cap=cap)
    return ceiling * min(1.0, max(0.0, rand()))
