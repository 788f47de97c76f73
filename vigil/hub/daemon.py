"""The hub's shell: MQTT in, store, `stored` receipts out, watchdog, escalation, deliveries.

paho's thread only queues (topic, payload); the main loop decodes, stores
(before any receipt), runs the kind's handler, publishes the receipt, then
ticks the watchdog and the escalation. A second thread delivers notices, so a
slow SMTP server never delays an ACK. The clock is injected (tests drive it).
"""

from __future__ import annotations

import functools
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from vigil.errors import ReplayedMessage, StorageError, TransportError, VigilError
from vigil.hub import alerts, escalation, liveness, pipeline, watchdog
from vigil.hub.channels import AppriseNotifier, Notifier, deliver_due
from vigil.hub.checkpoints import Checkpointer
from vigil.hub.config import HubConfig
from vigil.hub.store import (
    Acceptance,
    AlertKind,
    DeviceRecord,
    PendingDownlink,
    Store,
    Transaction,
    open_store,
)
from vigil.runtime.mqtt import MqttClient, Transport
from vigil.runtime.systemd import sd_notify
from vigil.wire.envelope import seal_downlink
from vigil.wire.ids import DeviceId
from vigil.wire.keys import HubKeys
from vigil.wire.liveness import Epoch, NonceMinter
from vigil.wire.messages import (
    Acknowledged,
    ClockSource,
    DownlinkBody,
    Kind,
    Message,
    Resolved,
    Stored,
)
from vigil.wire.topics import UP_FILTER, down_topic, shared_up_filter

_LOG = logging.getLogger(__name__)
DOWNLINK_LEASE = 10.0  # s a hub holds a downlink it publishes; then another may send it
WATCHDOG_PING = 1.0  # s between WATCHDOG=1 pings (WatchdogSec is several times longer)
_DOWNLINKS: dict[Kind, type[Stored] | type[Acknowledged] | type[Resolved]] = {
    k.KIND: k for k in (Stored, Acknowledged, Resolved)
}


class HubService:
    """Everything the running hub does, one step at a time, on an injected clock."""

    def __init__(
        self,
        config: HubConfig,
        *,
        store: Store,
        hub_keys: HubKeys,
        notifier: Notifier,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config, self.store, self.keys = config, store, hub_keys
        self.notifier, self.clock, self._rand = notifier, clock, rand
        self.transport: Transport | None = None
        self.rejected: Counter[str] = Counter()
        self.accepted = 0  # uplinks this instance stored (not duplicates)
        self._silent: dict[object, float] = {}
        self._nonces = NonceMinter(hub_keys.nonce_secret())
        self.checkpoints = Checkpointer(store, hub_keys.signing, policy=config.audit.checkpoints,
                                        anchor_file=config.audit.anchor_file)  # fmt: skip
        with store.read() as tx:
            for a in tx.alerts.all():
                if a.kind in (AlertKind.SILENT, AlertKind.DARK):
                    since = self._silent.get(a.device_id, 0.0)
                    self._silent[a.device_id] = max(a.opened_at, since)

    def audit(self, tx: Transaction, action: str, subject: str, detail: str = "") -> None:
        """Append the hub's own audit entry within the caller's transaction."""
        tx.audit.append(
            at=self.clock(), actor="hub", action=action, subject=subject, detail=detail
        )

    def active_device(self, device_id: DeviceId) -> DeviceRecord:
        with self.store.read() as tx:
            return tx.devices.active(device_id)

    # -- ingest ------------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """Process one MQTT message; bad input is counted and dropped, never raised."""
        now = self.clock()
        decoded = pipeline.decode(topic, payload, hub_keys=self.keys, registry=self.active_device)
        if isinstance(decoded, pipeline.Rejected):
            self._reject(decoded.reason, decoded.detail, decoded.device, now)
        elif isinstance(decoded, pipeline.ConnectionLost):
            with self.store.transaction() as tx:
                tx.devices.note_offline(decoded.device_id, at=now)
                self.audit(tx, "connection lost", f"device {decoded.device_id}", "MQTT Will")
            _LOG.warning("device %s connection lost (Will)", decoded.device_id)
        else:
            self._ingest(decoded, now)

    def _reject(self, reason: str, detail: str, device: str | None, now: float) -> None:
        self.rejected[reason] += 1
        with self.store.transaction() as tx:
            tx.rejections.count(reason, at=now)
        _LOG.warning("rejected uplink device=%s reason=%s: %s", device, reason, detail)

    def _ingest(self, up: pipeline.Uplink, now: float) -> None:
        msg, device_id, epoch = up.message, up.device_id, up.message.epoch.hex
        try:
            with self.store.transaction() as tx:
                accepted = tx.uplinks.accept(device_id, msg, received_at=now)
                if accepted.previous_epoch is not None:
                    self.audit(tx, "device state was reset", f"device {device_id}",
                               f"epoch {accepted.previous_epoch} -> {epoch}")  # fmt: skip
        except ReplayedMessage as exc:  # below the window: no receipt (docs/protocol.md §7)
            self._reject("ReplayedMessage", str(exc), device_id.hex, now)
            return
        status = accepted.status
        self.accepted += status is Acceptance.NEW
        alive_at = liveness.proven_at(self._nonces, device_id, msg)
        # The uplink is on disk; its effects and its receipt commit together.
        with self.store.transaction() as tx:
            if alive_at is not None:
                tx.devices.note_alive(device_id, at=alive_at)
            receipt = self._settle(tx, up, status, now=now, alive_at=alive_at)
            if receipt:
                tx.downlinks.queue(device_id, Stored.KIND.value, msg.seq, now=now,
                                   epoch=epoch, digest=accepted.digest)  # fmt: skip
        _LOG.info("uplink device=%s seq=%s kind=%s %s%s", device_id, msg.seq, msg.kind,
                  status.value, "" if receipt else " (no receipt)")  # fmt: skip
        self.flush_downlinks()

    def _settle(
        self, tx: Transaction, up: pipeline.Uplink, status: Acceptance, *, now: float,
        alive_at: float | None,
    ) -> bool:  # fmt: skip
        """Run what the uplink causes; return whether it gets a receipt."""
        msg, device_id = up.message, up.device_id
        if status is Acceptance.NEW:
            self._run_handler(tx, up, received_at=now, alive_at=alive_at)
            return True
        if status is Acceptance.CONFLICT:  # never receipted: the wearer must not feel "stored"
            liveness.conflict(tx, tx.devices.active(device_id), msg, now=now,
                              audit=functools.partial(self.audit, tx))  # fmt: skip
            return False
        stored = tx.uplinks.get(device_id, msg.epoch.hex, msg.seq)
        if stored is not None and not stored.processed:  # a crash interrupted it
            self._run_handler(tx, up, received_at=stored.received_at, alive_at=alive_at)
        # The first receipt may have been lost; a replaying broker gets few more.
        return tx.uplinks.may_receipt(device_id, msg.epoch.hex, msg.seq, now=now)

    def _run_handler(
        self, tx: Transaction, up: pipeline.Uplink, *, received_at: float,
        alive_at: float | None = None,
    ) -> None:  # fmt: skip
        device = tx.devices.active(up.device_id)
        audit = functools.partial(self.audit, tx)
        ctx = pipeline.Context(tx, device, up.message, received_at, audit, alive_at)
        summary = pipeline.handle(ctx)
        tx.uplinks.mark_processed(up.device_id, up.message.epoch.hex, up.message.seq)
        _LOG.info("device=%s seq=%s kind=%s: %s", up.device_id, up.message.seq,
                  up.message.kind, summary)  # fmt: skip

    def recover(self) -> int:
        """Run the handlers of uplinks stored before a crash but not processed."""
        with self.store.read() as tx:
            pending = tx.uplinks.unprocessed()
        for u in pending:
            try:
                message = _decode_stored(u.payload)
                with self.store.transaction() as tx:
                    up = pipeline.Uplink(u.device_id, message)
                    self._run_handler(tx, up, received_at=u.received_at)
            except VigilError:
                _LOG.exception("cannot recover uplink device=%s seq=%s", u.device_id, u.seq)
        return len(pending)

    # -- downlinks -----------------------------------------------------------------------------

    def flush_downlinks(self) -> int:
        """Seal and publish queued downlinks; keep them queued while the broker is away."""
        if self.transport is None or not self.transport.connected:
            return 0
        sent = 0
        with self.store.read() as tx:
            pending = tx.downlinks.pending(now=self.clock())
        for d in pending:
            now = self.clock()
            with self.store.transaction() as tx:
                if not tx.downlinks.claim(d.id, now=now, lease=DOWNLINK_LEASE):
                    continue  # another hub instance is sending it
                device = tx.devices.get(d.device_id)
                if device is None or device.revoked:
                    tx.downlinks.mark_sent(d.id, at=now)  # nobody to tell any more
                    continue
            if not self._publish(d, device, now):
                break
            sent += 1
        return sent

    def _publish(self, d: PendingDownlink, device: DeviceRecord, now: float) -> bool:
        """Seal and publish one claimed downlink; False (and released) if the broker is away."""
        assert self.transport is not None  # noqa: S101 - checked by flush_downlinks
        if d.epoch is None or d.digest is None:  # queued by protocol version 1: unanswerable
            with self.store.transaction() as tx:
                tx.downlinks.mark_sent(d.id, at=now)
            return True
        body: DownlinkBody = _DOWNLINKS[Kind(d.kind)](d.arg, d.digest)
        message = Message(
            seq=d.seq, body=body, sent_at=now, clock=ClockSource.NTP, epoch=Epoch.parse(d.epoch),
            nonce=self._nonces.mint(d.device_id, at=now),
        )  # fmt: skip
        envelope = seal_downlink(
            message, device_id=d.device_id, hub_keys=self.keys, device=device.public_keys
        )
        try:
            self.transport.publish(down_topic(d.device_id), envelope, qos=1)
        except TransportError as exc:
            with self.store.transaction() as tx:
                tx.downlinks.release(d.id)
            _LOG.warning("downlink device=%s seq=%s kind=%s waits: %s",
                         d.device_id, d.seq, d.kind, exc)  # fmt: skip
            return False
        with self.store.transaction() as tx:
            tx.downlinks.mark_sent(d.id, at=now)
        _LOG.info("downlink device=%s seq=%s kind=%s arg=%s", d.device_id, d.seq, d.kind, d.arg)
        return True

    # -- periodic work --------------------------------------------------------------------------

    def tick(self) -> None:
        """Watchdog, escalation, and queued downlinks (e.g. an operator's ACK)."""
        now = self.clock()
        self.watch(now)
        self.escalate(now)
        self.flush_downlinks()
        self.checkpoints.tick(now)

    def watch(self, now: float) -> None:
        with self.store.transaction() as tx:
            found = watchdog.silent_devices(
                tx.devices.all(),
                now=now,
                silent_after=self.config.silent_after,
                last_silent_alert=self._silent,  # type: ignore[arg-type]
                risk_silent_after=self.config.risk_silent_after,
            )
            for device, reason in found:
                alert = tx.alerts.open(alerts.device_silent(device, now=now, reason=reason))
                self.audit(tx, "device silent", f"alert {alert.id}", reason)
                _LOG.warning("device %s silent: %s (alert %s)", device.device_id, reason, alert.id)
        for device, _ in found:  # remembered only once the alerts are committed
            self._silent[device.device_id] = now

    def escalate(self, now: float) -> None:
        tiers, channels = self.config.escalation.tiers, self.config.channels
        with self.store.transaction() as tx:
            for alert in tx.alerts.all(active_only=True):
                fired = tx.deliveries.fired_steps(alert.id)
                for tier in escalation.due_tiers(alert, tiers, fired, now=now):
                    device = tx.devices.get(alert.device_id)
                    if device is None:  # pragma: no cover - alerts reference enrolled devices
                        continue
                    planned = escalation.recipients(tier, channels, device, alert)
                    if tx.deliveries.fire_step(alert.id, tier.name, planned, now=now):
                        _LOG.info("alert %s escalated to %s (%s recipients)",
                                  alert.id, tier.name, len(planned))  # fmt: skip
                        self.audit(tx, "escalated", f"alert {alert.id}",
                                   f"step={tier.name} recipients={len(planned)}")  # fmt: skip

    def deliver(self) -> int:
        """Send every notice that is due (first attempts and retries)."""
        return deliver_due(
            self.store,
            self.notifier,
            policy=self.config.escalation,
            map_url=self.config.map_url,
            now=self.clock(),
            rand=self._rand,
        )


def _decode_stored(payload: bytes) -> Message:
    from vigil.wire.messages import Direction, decode_payload  # noqa: PLC0415 - recovery path only

    return decode_payload(payload, Direction.UP)


# -- the process -----------------------------------------------------------------------------


def serve(service: HubService, client: MqttClient, inbox: queue.Queue[tuple[str, bytes]],
          stop: threading.Event, *, interval: float = 0.2) -> None:  # fmt: skip
    """Run the main loop and the delivery thread until `stop` is set."""
    service.transport = client
    service.recover()
    worker = threading.Thread(target=_deliveries, args=(service, stop, interval), daemon=True)
    worker.start()
    sd_notify("READY=1")
    pinged = -WATCHDOG_PING
    try:
        while not stop.is_set():
            healthy = True
            try:
                topic, payload = inbox.get(timeout=interval)
                service.handle(topic, payload)
            except queue.Empty:
                pass
            except StorageError:  # no receipt: the device will resend
                _LOG.exception("store failed while handling an uplink")
                healthy = False
            try:
                service.tick()
            except StorageError:
                _LOG.exception("store failed during the periodic tick")
                healthy = False
            if healthy and time.monotonic() - pinged >= WATCHDOG_PING:
                sd_notify("WATCHDOG=1")
                pinged = time.monotonic()
    finally:
        sd_notify("STOPPING=1")
        worker.join(timeout=10)
        service.checkpoints.flush(service.clock())  # sign what this run logged last


def _enqueue(inbox: queue.Queue[tuple[str, bytes]], topic: str, payload: bytes) -> None:
    """Hand a message to the main loop; if it is swamped, drop it (the device resends)."""
    try:
        inbox.put_nowait((topic, payload))
    except queue.Full:
        _LOG.warning("inbox full, dropped a message on %s; the sender will retry", topic)


def _deliveries(service: HubService, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        try:
            service.deliver()
        except StorageError:
            _LOG.exception("store failed during deliveries")


def run(config: HubConfig, *, stop: threading.Event, clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None, create: bool = False) -> None:  # fmt: skip
    """Start the hub from `config` and serve until `stop` is set (`create`: a missing store)."""
    store = open_store(config.store_url, create=create)
    try:
        keys = HubKeys.load(config.keys_path)
        service = HubService(
            config, store=store, hub_keys=keys, notifier=notifier or AppriseNotifier(), clock=clock
        )
        inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=10000)
        group = config.mqtt.shared_group
        subscription = shared_up_filter(group) if group else UP_FILTER
        client = MqttClient(
            config.mqtt.settings(),
            on_message=lambda topic, payload: _enqueue(inbox, topic, payload),
            subscriptions=[subscription],
        )
        client.start()
        _LOG.info(
            "hub subscribed to %s on %s:%s", subscription, config.mqtt.host, config.mqtt.port
        )
        try:
            serve(service, client, inbox, stop)
        finally:
            client.stop()
    finally:
        store.close()
