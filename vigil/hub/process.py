"""The hub process: three workers on their own threads, and a supervisor that tells systemd.

- ingest: paho's thread only queues (topic, payload); this worker takes whatever
  arrived while its previous batch was committed (at most `MAX_BATCH`), opens it,
  and stores and answers its urgent uplinks (alarms and what follows them) first,
  with a commit of their own, then the rest as one batch (`vigil.hub.ingest`: one
  durable commit before any receipt), publishing the receipts of each. Opening is
  CPU work under the interpreter lock: on a thread of its own it would take the
  lock every time the store's driver lets go of it for I/O, and the store would
  wait at each statement (measured: half the throughput);
- delivery: dispatches due notices onto the sending pool, woken early when escalation
  plans some or a send ends, so a slow SMTP server never delays an ACK or a webhook;
- timer: the periodic work (`HubService.tick`) every `tick` seconds, not after each uplink.

Each worker beats after every round that finished (see `vigil.hub.health`); an error
in a round is logged and the worker goes on. The supervisor (the calling thread)
sends READY=1 once the broker acknowledged our subscription (SUBACK), WATCHDOG=1
only while every worker beats within its bound, and the status line (broker state,
stuck workers) to systemd whenever it changes, and to the store, where
`vigil-hub stats` reads it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Protocol

from vigil.errors import StorageError
from vigil.hub.channels import AppriseNotifier, Notifier, refuse_unreachable
from vigil.hub.config import HubConfig
from vigil.hub.daemon import HubService
from vigil.hub.health import Heartbeats, WorkerBounds, describe_stuck
from vigil.hub.ingest import MAX_BATCH
from vigil.hub.store import open_store
from vigil.runtime.mqtt import ConnectionState, MqttClient, Transport
from vigil.runtime.systemd import sd_notify, sd_status
from vigil.wire.keys import HubKeys
from vigil.wire.topics import UP_FILTER, shared_up_filter

_LOG = logging.getLogger(__name__)
TICK = 1.0  # s between rounds of the periodic work
WATCHDOG_PING = 1.0  # s between WATCHDOG=1 pings (WatchdogSec is several times longer)
REPORT_EVERY = 30.0  # s between status reports to the store when nothing changed

Inbox = queue.Queue[tuple[str, bytes]]


class Broker(Transport, Protocol):
    """What the supervisor needs of the MQTT client (`MqttClient`)."""

    @property
    def subscribed(self) -> bool: ...

    @property
    def state(self) -> ConnectionState: ...


def serve(service: HubService, client: Broker, inbox: Inbox, stop: threading.Event, *,
          interval: float = 0.2, tick: float = TICK, bounds: WorkerBounds | None = None,
          beats: Heartbeats | None = None, instance: str = "hub") -> None:  # fmt: skip
    """Run the workers and supervise them until `stop` is set."""
    bounds = bounds or WorkerBounds()
    beats = beats or Heartbeats(bounds.per_worker())
    service.transport = client
    service.arrivals = lambda most: _arrived(inbox, most)
    service.recover()
    rounds: dict[str, Callable[[], bool]] = {
        "ingest": lambda: _ingest_round(service, inbox, interval),
        "delivery": lambda: _delivery_round(service, interval, bounds.send),
        "timer": lambda: _timer_round(service, stop, tick),
    }
    workers = [
        threading.Thread(target=_work, args=(n, r, beats, stop), name=f"vigil-{n}", daemon=True)
        for n, r in rounds.items()
    ]
    for w in workers:
        w.start()
    supervisor = _Supervisor(service, client, beats, instance)
    try:
        while not stop.wait(interval):
            supervisor.step()
    finally:
        stop.set()
        sd_notify("STOPPING=1")
        for w in workers:
            w.join(timeout=10)
        service.dispatcher.close()
        try:
            service.flush_marks()  # else receipts the broker did not take stay marked sent
        except StorageError as exc:
            _LOG.warning("receipts the broker did not take are not given back: %s", exc)
        supervisor.report("stopped")
        service.checkpoints.flush(service.clock())  # sign what this run logged last


def _work(name: str, round_: Callable[[], bool], beats: Heartbeats, stop: threading.Event) -> None:
    """Run `round_` until `stop`; beat after each healthy round; an error never ends it."""
    while not stop.is_set():
        try:
            healthy = round_()
        except StorageError:
            _LOG.exception("store failed in the %s worker", name)
            stop.wait(0.5)  # the store is away: do not spin
            continue
        except Exception:
            _LOG.exception("the %s worker failed a round; it goes on", name)
            continue
        if healthy:
            beats.beat(name)
    _LOG.debug("the %s worker stopped", name)


def _ingest_round(service: HubService, inbox: Inbox, interval: float) -> bool:
    """Handle whatever arrived while the previous batch was committed, as one batch."""
    first: list[tuple[str, bytes]] = []
    if not service.carried:  # nothing opened waits: wait for a message
        try:
            first.append(inbox.get(timeout=interval))
        except queue.Empty:
            return True
    service.handle_batch(first + _arrived(inbox, MAX_BATCH - len(first)))
    return True  # only StorageError gets out of a batch: no receipt, the devices resend


def _arrived(inbox: Inbox, most: int) -> list[tuple[str, bytes]]:
    """Up to `most` messages that have arrived, never waiting."""
    taken: list[tuple[str, bytes]] = []
    while len(taken) < most:
        try:
            taken.append(inbox.get_nowait())
        except queue.Empty:
            break
    return taken


def _delivery_round(service: HubService, interval: float, send_bound: float) -> bool:
    dispatcher = service.dispatcher
    dispatcher.wake.wait(interval)
    dispatcher.wake.clear()
    dispatcher.dispatch(service.clock())
    oldest = dispatcher.oldest_send()
    return oldest is None or oldest <= send_bound  # a send past its bound is a stuck worker


def _timer_round(service: HubService, stop: threading.Event, tick: float) -> bool:
    if not stop.wait(tick):
        service.tick()
    return True


class _Supervisor:
    """READY once subscribed, WATCHDOG while every worker beats, the status line on change."""

    def __init__(self, service: HubService, client: Broker, beats: Heartbeats,
                 instance: str) -> None:  # fmt: skip
        self.service, self.client, self.beats, self.instance = service, client, beats, instance
        self.ready = False
        self.status = ""
        self._reported = self._pinged = -float("inf")

    def step(self) -> None:
        if not self.ready and self.client.subscribed:
            self.ready = True
            sd_notify("READY=1")
            _LOG.info("hub ready: subscribed at %s", self.client.state.broker)
        stuck = self.beats.stuck()
        line = _status_line(self.client, ready=self.ready, stuck=describe_stuck(stuck))
        if line != self.status:
            self.status = line
            sd_status(line)
            _LOG.log(logging.WARNING if stuck else logging.INFO, "hub status: %s", line)
            self.report(line)
        elif time.monotonic() - self._reported >= REPORT_EVERY:
            self.report(line)
        if stuck:
            self.beats.withheld += 1  # no WATCHDOG=1: systemd restarts us if it lasts
        elif time.monotonic() - self._pinged >= WATCHDOG_PING:
            sd_notify("WATCHDOG=1")
            self._pinged = time.monotonic()

    def report(self, line: str) -> None:
        """Put the status line in the store for `vigil-hub stats` (best effort)."""
        try:
            with self.service.store.transaction() as tx:
                tx.hubs.report(self.instance, line, at=time.time())  # wall time, for people
        except StorageError as exc:
            _LOG.warning("cannot report the hub's status to the store: %s", exc)
            return
        self._reported = time.monotonic()


def _status_line(client: Broker, *, ready: bool, stuck: str) -> str:
    """'broker: connected to h:1883 since ...' or why not, and which worker is stuck."""
    state = client.state.describe()
    if not ready:
        line = (
            f"waiting for the broker to acknowledge the subscription: {state}"
            if client.connected
            else f"waiting for the broker: {state}"
        )
    else:
        line = f"broker: {state}"
    return f"{line}; {stuck}" if stuck else line


def _enqueue(inbox: Inbox, topic: str, payload: bytes) -> None:
    """Hand a message to the ingest worker; if it is swamped, drop it (the device resends)."""
    try:
        inbox.put_nowait((topic, payload))
    except queue.Full:
        _LOG.warning("inbox full, dropped a message on %s; the sender will retry", topic)


def run(config: HubConfig, *, stop: threading.Event, clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None, create: bool = False) -> None:  # fmt: skip
    """Start the hub from `config` and serve until `stop` is set (`create`: a missing store)."""
    refuse_unreachable(config.channels.values())
    store = open_store(config.store_url, create=create)
    try:
        keys = HubKeys.load(config.keys_path)
        service = HubService(
            config, store=store, hub_keys=keys, notifier=notifier or AppriseNotifier(), clock=clock
        )
        inbox: Inbox = queue.Queue(maxsize=10000)
        group = config.mqtt.shared_group
        subscription = shared_up_filter(group) if group else UP_FILTER
        client = MqttClient(
            config.mqtt.settings(),
            on_message=lambda topic, payload: _enqueue(inbox, topic, payload),
            subscriptions=[subscription],
        )
        client.start()
        _LOG.info(
            "hub subscribing to %s on %s:%s", subscription, config.mqtt.host, config.mqtt.port
        )
        try:
            serve(service, client, inbox, stop, instance=config.mqtt.client_id or "hub")
        finally:
            client.stop()
    finally:
        store.close()
