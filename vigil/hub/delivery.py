"""Deliver notices to responders: in parallel, each one contained, fairly across devices.

The dispatcher claims due deliveries in the store's order (first notices ahead of
retries, devices taking turns) up to the number of free sending threads, and sends
each on a bounded thread pool: one slow SMTP server holds one thread, never the
webhook beside it. A compose or channel that raises is recorded as a failed attempt
(and retried after a jittered backoff) like any other failure. A device over its notice rate
waits its turn; the others do not wait for it. No transaction is open while a
channel is sending; claiming a round's due deliveries and recording each attempt
(with its audit entry) are each one transaction, so several hubs never send one twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from vigil.errors import StorageError
from vigil.hub.channels import Notifier, compose
from vigil.hub.config import DeviceLimits, EscalationConfig
from vigil.hub.store import Alert, Delivery, DeviceRecord, Store, Transaction
from vigil.runtime.backoff import backoff_delay
from vigil.wire.ids import DeviceId

_LOG = logging.getLogger(__name__)
CLAIM_LEASE = 120.0  # s a hub holds a delivery it is sending; then another may retry it
SENDERS = 8  # notices sent at once
RECORD_PATIENCE = 60.0  # s a sender keeps trying to record a sent notice (< CLAIM_LEASE)
RECORD_RETRY = 0.5  # s between those tries
RATE_WINDOW = 60.0  # s over which a device's notice rate is counted


@dataclass(frozen=True, slots=True)
class _Claimed:
    delivery: Delivery
    alert: Alert
    device: DeviceRecord
    now: float


class Dispatcher:
    """Sends due notices on a pool of `senders` threads; see the module docstring."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        policy: EscalationConfig,
        map_url: str,
        limits: DeviceLimits,
        senders: int = SENDERS,
        actor: str = "hub",
        rand: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.notifier, self.policy, self.map_url = store, notifier, policy, map_url
        self.limits, self.actor, self._monotonic = limits, actor, monotonic
        self._rand = rand  # draws the retry jitter
        self._senders = senders
        self._pool = ThreadPoolExecutor(max_workers=senders, thread_name_prefix="vigil-notice")
        self._lock = threading.Lock()
        self._in_flight: dict[int, float] = {}  # delivery id -> monotonic start
        self._recent: dict[DeviceId, deque[float]] = {}  # hub times of notices, per device
        self.wake = threading.Event()  # set when a send ends or notices are planned

    def dispatch(self, now: float) -> list[Future[None]]:
        """Claim what is due (as many as there are free threads) and start sending it.

        One durable commit claims them all: an alarm's notices to several responders
        (email, webhook, ...) wait for one fsync, not one each after a read of their own.
        """
        with self._lock:
            free = self._senders - len(self._in_flight)
            busy = set(self._in_flight)
        if free <= 0:
            return []
        with self.store.transaction() as tx:
            due = tx.deliveries.due(now, limit=max(100, 10 * free) + len(busy))
            chosen = self._choose(due, busy, free, now)
            claimed = [c for d in chosen if (c := _claim(tx, d, now)) is not None]
        futures: list[Future[None]] = []
        for c in claimed:
            with self._lock:
                self._in_flight[c.delivery.id] = self._monotonic()
                self._recent.setdefault(c.alert.device_id, deque()).append(now)
            futures.append(self._pool.submit(self._send, c))
        return futures

    def _choose(
        self, due: list[Delivery], busy: set[int], free: int, now: float
    ) -> list[Delivery]:
        """At most `free` of `due`, in order, leaving out those in flight here and those
        whose device had its notices for the minute (counting the ones chosen now)."""
        chosen: list[Delivery] = []
        taking: Counter[DeviceId | None] = Counter()
        for d in due:
            if len(chosen) >= free:
                break
            if d.id in busy or self._over_rate(d.device_id, now, taking[d.device_id]):
                continue
            chosen.append(d)
            taking[d.device_id] += 1
        return chosen

    def run_due(self, now: float) -> int:
        """Send everything due at `now` and wait for it; return how many were tried."""
        tried = 0
        while futures := self.dispatch(now):
            wait(futures)
            tried += len(futures)
        return tried

    def oldest_send(self) -> float | None:
        """Seconds the longest send in progress has taken (None if none is in progress)."""
        with self._lock:
            started = min(self._in_flight.values(), default=None)
        return None if started is None else self._monotonic() - started

    def close(self) -> None:
        """Stop taking work; sends in progress finish (each channel has its own timeout)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- one delivery ------------------------------------------------------------------------

    def _over_rate(self, device_id: DeviceId | None, now: float, taking: int = 0) -> bool:
        """Whether `device_id` had its `notices_per_minute` already (this hub's count, with
        `taking` more about to be sent)."""
        if device_id is None:
            return False
        with self._lock:
            recent = self._recent.get(device_id)
            while recent and recent[0] <= now - RATE_WINDOW:
                recent.popleft()
            if recent is not None and not recent:
                del self._recent[device_id]
            return len(recent or ()) + taking >= self.limits.notices_per_minute

    def _send(self, c: _Claimed) -> None:
        d = c.delivery
        try:
            try:
                notice = compose(c.alert, c.device, now=c.now, map_url=self.map_url, step=d.step)
                ok, detail = self.notifier.send(d.url, notice)
            except Exception as exc:  # a compose or channel plugin bug must not stop the others
                _LOG.exception("delivery %s of alert %s to %s crashed", d.id, d.alert_id, d.label)
                ok, detail = False, f"crashed: {type(exc).__name__}: {exc}"[:500]
            next_at = _retry_at(d, ok=ok, policy=self.policy, now=c.now, rand=self._rand)
            self._record_patiently(d, ok=ok, detail=detail, next_at=next_at, now=c.now)
        finally:
            with self._lock:
                self._in_flight.pop(d.id, None)
            self.wake.set()

    def _record_patiently(
        self, d: Delivery, *, ok: bool, detail: str, next_at: float | None, now: float
    ) -> None:
        """Record an attempt; while the store is away, try again for RECORD_PATIENCE.

        A notice that went out but whose record is lost is sent again once its claim
        lapses: a store that restarts right after a send must not make responders
        hear it twice.
        """
        give_up = time.monotonic() + RECORD_PATIENCE  # real time: it sleeps for real
        while True:
            try:
                with self.store.transaction() as tx:
                    _record(tx, d, ok=ok, detail=detail, next_at=next_at, now=now,
                            actor=self.actor)  # fmt: skip
            except StorageError as exc:
                if time.monotonic() >= give_up:  # its claim lapses and it is tried again
                    _LOG.exception("delivery %s: could not record attempt (%s)", d.id, detail)
                    return
                _LOG.warning("delivery %s: cannot record attempt yet (%s); retrying", d.id, exc)
                time.sleep(RECORD_RETRY)  # the store is away; nothing else to do meanwhile
                continue
            return


def _claim(tx: Transaction, d: Delivery, now: float) -> _Claimed | None:
    # Durable (the caller's transaction), as the last commit before the notice leaves: a
    # crash between the send and its record must find it claimed (and its plan, committed
    # before, on disk), so that the record is written when the store is back, not the
    # notice sent again.
    if not tx.deliveries.claim(d.id, now=now, lease=CLAIM_LEASE):
        return None  # another hub instance took it
    alert = tx.alerts.get(d.alert_id)
    device = tx.devices.get(alert.device_id)
    if device is None:  # pragma: no cover - alerts reference enrolled devices
        return None
    return _Claimed(d, alert, device, now)


def _retry_at(
    d: Delivery, *, ok: bool, policy: EscalationConfig, now: float, rand: Callable[[], float]
) -> float | None:
    """When to try a failed delivery again (jittered backoff), or None: delivered or given up."""
    attempt = d.attempts + 1
    if ok or attempt >= policy.retry_attempts:
        return None
    base, cap = policy.retry_backoff, policy.retry_max
    return now + backoff_delay(attempt, base=base, cap=cap, rand=rand)


def _record(
    tx: Transaction,
    d: Delivery,
    *,
    ok: bool,
    detail: str,
    next_at: float | None,
    now: float,
    actor: str,
) -> None:
    attempt, retry = d.attempts + 1, next_at is not None
    tx.deliveries.record_attempt(d.id, at=now, ok=ok, detail=detail, next_at=next_at)
    outcome = "delivered" if ok else ("retry" if retry else "gave up")
    _LOG.log(
        logging.INFO if ok else logging.WARNING,
        "alert %s step %r to %s (%s): attempt %s %s: %s",
        d.alert_id, d.step, d.label, d.channel, attempt, outcome, detail,
    )  # fmt: skip
    tx.audit.append(
        at=now,
        actor=actor,
        action=f"delivery {outcome}",
        subject=f"alert {d.alert_id}",
        detail=f"step={d.step} channel={d.channel} to={d.label} attempt={attempt} {detail}",
    )
