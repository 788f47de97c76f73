"""What the running hub does, one step at a time: ingest, receipts, the periodic work.

`handle` decodes, stores (before any receipt), runs the kind's handler and queues
the receipt; nothing it meets ends the loop that calls it: bad input is counted
and dropped, and an uplink whose handler raises is stored, marked failed with its
reason and receipted (see `HubService.handle`). `tick` is the periodic work
(silence watchdog, escalation timers, downlinks, checkpoints); each part selects
only what is due, by index. `deliver` sends due notices. `vigil.hub.process` runs
these on their own threads. The clock is injected (tests drive it).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

from vigil.errors import ReplayedMessage, StorageError, TransportError
from vigil.hub import alerts, escalation, liveness, pipeline, watchdog
from vigil.hub.channels import Notifier
from vigil.hub.checkpoints import Checkpointer
from vigil.hub.config import HubConfig
from vigil.hub.delivery import Dispatcher
from vigil.hub.store import (
    Acceptance,
    Alert,
    DeviceRecord,
    PendingDownlink,
    Store,
    Transaction,
)
from vigil.runtime.mqtt import Transport
from vigil.wire.envelope import seal_downlink
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DevicePublicKeys, HubKeys
from vigil.wire.liveness import Epoch, NonceMinter, uplink_digest
from vigil.wire.messages import (
    Acknowledged,
    ClockSource,
    DownlinkBody,
    Kind,
    Message,
    Resolved,
    Stored,
    encode_payload,
)
from vigil.wire.topics import down_topic

_LOG = logging.getLogger(__name__)
DOWNLINK_LEASE = 10.0  # s a hub holds a downlink it publishes; then another may send it
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
        self.failed = 0  # uplinks whose handling raised (see `stats` for the store's count)
        self._nonces = NonceMinter(hub_keys.nonce_secret())
        self.checkpoints = Checkpointer(store, hub_keys.signing, policy=config.audit.checkpoints,
                                        anchor_file=config.audit.anchor_file)  # fmt: skip
        self.dispatcher = Dispatcher(store, notifier, policy=config.escalation,
                                     map_url=config.map_url, limits=config.limits,
                                     rand=rand)  # fmt: skip

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
        """Process one MQTT message; nothing but a failing store (`StorageError`: no
        receipt, the device resends) is raised.

        Bad input is counted and dropped. An uplink whose handling raises anything else
        (a bug, a poisoned message) is recorded as failed with its reason, counted in
        `stats`, logged once, and not run again. If it was stored, it is receipted all the
        same: the alarm IS on disk, so the wearer must feel `stored` (and stop resending);
        the operator sees the failure in `stats`, the log and the audit trail.
        """
        now = self.clock()
        try:
            decoded = pipeline.decode(
                topic, payload, hub_keys=self.keys, registry=self.active_device
            )
        except StorageError:
            raise
        except Exception as exc:  # a decoder bug: nothing was stored
            _LOG.exception("decoding a message on %s crashed", topic)
            self._reject(f"crashed:{type(exc).__name__}", str(exc), None, now)
            return
        if isinstance(decoded, pipeline.Rejected):
            self._reject(decoded.reason, decoded.detail, decoded.device, now)
        elif isinstance(decoded, pipeline.ConnectionLost):
            with self.store.transaction() as tx:
                tx.devices.note_offline(decoded.device_id, at=now)
                self.audit(tx, "connection lost", f"device {decoded.device_id}", "MQTT Will")
            _LOG.warning("device %s connection lost (Will)", decoded.device_id)
        else:
            try:
                self._ingest(decoded, now)
            except StorageError:
                raise
            except Exception as exc:
                self._failed(decoded, now, exc)

    def _failed(self, up: pipeline.Uplink, now: float, exc: Exception) -> None:
        """Record an uplink whose handling raised; receipt it if it is stored."""
        msg, device_id = up.message, up.device_id
        reason = f"{type(exc).__name__}: {exc}"
        self.failed += 1
        _LOG.error("uplink device=%s seq=%s kind=%s failed: %s", device_id, msg.seq, msg.kind,
                   reason, exc_info=exc)  # fmt: skip
        epoch, digest = msg.epoch.hex, uplink_digest(encode_payload(msg))
        with self.store.transaction() as tx:
            stored = tx.uplinks.get(device_id, epoch, msg.seq)
            if stored is not None and stored.digest == digest:  # this very message is on disk
                tx.uplinks.mark_failed(device_id, epoch, msg.seq, error=reason)
                tx.downlinks.queue(device_id, Stored.KIND.value, msg.seq, now=now,
                                   epoch=epoch, digest=digest)  # fmt: skip
                self.audit(tx, "uplink failed", f"device {device_id}",
                           f"seq={msg.seq} kind={msg.kind} {reason}"[:500])  # fmt: skip
            else:  # not stored: no receipt, the device resends it
                tx.rejections.count(f"crashed:{type(exc).__name__}", at=now)
        self.flush_downlinks()

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
            return True  # its receipt was never sent: the wearer must not wait for it
        # The first receipt may have been lost; a replaying broker gets few more.
        return tx.uplinks.may_receipt(device_id, msg.epoch.hex, msg.seq, now=now)

    def _run_handler(
        self, tx: Transaction, up: pipeline.Uplink, *, received_at: float,
        alive_at: float | None = None,
    ) -> None:  # fmt: skip
        device = tx.devices.active(up.device_id)
        audit = functools.partial(self.audit, tx)
        ctx = pipeline.Context(tx, device, up.message, received_at, audit, alive_at,
                               max_active_alerts=self.config.limits.max_active_alerts)  # fmt: skip
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
            except Exception as exc:  # recorded as failed, never run again
                self._mark_unreadable(u.device_id, u.epoch, u.seq, exc)
                continue
            up = pipeline.Uplink(u.device_id, message)
            try:
                with self.store.transaction() as tx:
                    self._run_handler(tx, up, received_at=u.received_at)
            except StorageError:
                raise
            except Exception as exc:
                self._failed(up, self.clock(), exc)
        return len(pending)

    def _mark_unreadable(self, device_id: DeviceId, epoch: str, seq: int, exc: Exception) -> None:
        reason = f"unreadable: {type(exc).__name__}: {exc}"
        _LOG.error("stored uplink device=%s seq=%s failed: %s", device_id, seq, reason)
        self.failed += 1
        with self.store.transaction() as tx:
            tx.uplinks.mark_failed(device_id, epoch, seq, error=reason)

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
                keys = _downlink_keys(tx, device, d.epoch)
            if not self._publish(d, keys, now):
                break
            sent += 1
        return sent

    def _publish(self, d: PendingDownlink, keys: DevicePublicKeys, now: float) -> bool:
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
        envelope = seal_downlink(message, device_id=d.device_id, hub_keys=self.keys, device=keys)
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
        """Silence watchdog, escalation, queued downlinks (e.g. an operator's ACK), checkpoints."""
        now = self.clock()
        self.watch(now)
        self.escalate(now)
        self.flush_downlinks()
        self.checkpoints.tick(now)

    def watch(self, now: float) -> None:
        """Raise one device-silent alert per silence, for the devices the store says are due."""
        with self.store.transaction() as tx:
            cfg = self.config
            due = tx.devices.due_silent(
                now=now, silent_after=cfg.silent_after, risk_silent_after=cfg.risk_silent_after
            )
            found = watchdog.silent_devices(
                due,
                now=now,
                silent_after=self.config.silent_after,
                last_silent_alert={},
                risk_silent_after=self.config.risk_silent_after,
            )
            for device, reason in found:
                alert = tx.alerts.open(alerts.device_silent(device, now=now, reason=reason))
                tx.devices.mark_silent(device.device_id)
                self.audit(tx, "device silent", f"alert {alert.id}", reason)
                _LOG.warning("device %s silent: %s (alert %s)", device.device_id, reason, alert.id)

    def escalate(self, now: float) -> None:
        """Fire the steps of the alerts whose escalation timer has come; set the next timer."""
        with self.store.transaction() as tx:
            planned = sum(self._escalate_one(tx, a, now) for a in tx.alerts.due_escalation(now))
        if planned:
            self.dispatcher.wake.set()

    def _escalate_one(self, tx: Transaction, alert: Alert, now: float) -> int:
        tiers, channels = self.config.escalation.tiers, self.config.channels
        device = tx.devices.get(alert.device_id)
        fired = tx.deliveries.fired_steps(alert.id)
        planned = 0
        steps = [(t.name, t) for t in escalation.due_tiers(alert, tiers, fired, now=now)]
        flood = escalation.flood_due(alert, tiers, fired)
        steps += [] if flood is None else [(escalation.FLOOD_STEP, flood)]
        for step, tier in steps:
            if device is None:  # pragma: no cover - alerts reference enrolled devices
                break
            recipients = escalation.recipients(tier, channels, device, alert)
            if tx.deliveries.fire_step(alert.id, step, recipients, now=now):
                planned += len(recipients)
                fired.add(step)
                _LOG.info("alert %s escalated to %s (%s recipients)",
                          alert.id, step, len(recipients))  # fmt: skip
                self.audit(tx, "escalated", f"alert {alert.id}",
                           f"step={step} recipients={len(recipients)}")  # fmt: skip
        tx.alerts.schedule_escalation(alert.id, escalation.next_due(alert, tiers, fired))
        return planned

    def deliver(self) -> int:
        """Send every notice that is due (first attempts and retries) and wait for them."""
        return self.dispatcher.run_due(self.clock())


def _downlink_keys(tx: Transaction, device: DeviceRecord, epoch: str | None) -> DevicePublicKeys:
    """The key a downlink answering `epoch` is sealed to: the newest the device rotated to in
    that life (docs/protocol.md §11.2), else the one it was enrolled with."""
    rotated = None if epoch is None else tx.kems.newest(device.device_id, epoch)
    return device.public_keys if rotated is None else device.public_keys.rotated(rotated)


def _decode_stored(payload: bytes) -> Message:
    from vigil.wire.messages import Direction, decode_payload  # noqa: PLC0415 - recovery path only

    return decode_payload(payload, Direction.UP)
