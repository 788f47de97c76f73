"""What the running hub does, one step at a time: ingest, receipts, the periodic work.

`handle_batch` decodes a batch of messages, stores them (one durable commit,
before any receipt), runs each kind's handler and publishes the receipts
(`vigil.hub.ingest`); nothing it meets ends the loop that calls it: bad input is
counted and dropped, and an uplink whose handler raises is stored, marked failed
with its reason and receipted (see `HubService.handle_batch`). `tick` is the
periodic work (silence watchdog under a lease, escalation timers, downlinks,
checkpoints, receipt pruning); each part selects only what is due, by index.
`deliver` sends due notices. `vigil.hub.process` runs these on their own threads.
The clock is injected (tests drive it).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from vigil.errors import RevokedDevice, StorageError, TransportError, UnknownDevice
from vigil.hub import alerts, escalation, pipeline, watchdog
from vigil.hub.channels import Notifier
from vigil.hub.checkpoints import Checkpointer
from vigil.hub.config import HubConfig
from vigil.hub.delivery import Dispatcher
from vigil.hub.ingest import MAX_BATCH, Ingest, Outcome
from vigil.hub.pipeline import Decoded
from vigil.hub.registry import Registry
from vigil.hub.store import Alert, DeviceRecord, PendingDownlink, Store, Transaction
from vigil.hub.store.intake import QueuedReceipt, ReceiptMarks
from vigil.hub.triage import urgent
from vigil.runtime.mqtt import Transport
from vigil.wire.envelope import seal_downlink
from vigil.wire.ids import DeviceId
from vigil.wire.keys import DevicePublicKeys, HubKeys
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
from vigil.wire.topics import down_topic

_LOG = logging.getLogger(__name__)
DOWNLINK_LEASE = 10.0  # s a hub holds a downlink it publishes; then another may send it
OPEN_CHUNK = 8  # messages opened before an alarm may jump the queue
WATCHDOG_LEASE = "silence watchdog"  # one hub at a time raises device-silent alerts
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
        self._nonces = NonceMinter(hub_keys.nonce_secret())
        self.registry = Registry(store)
        self._watching = False  # whether this hub held the watchdog lease at its last look
        self._marks, self._marks_lock = ReceiptMarks(), threading.Lock()
        # What arrived since the round began (up to n, never waiting): set by the process.
        self.arrivals: Callable[[int], list[tuple[str, bytes]]] | None = None
        self._carried: list[Decoded] = []  # opened routine uplinks for the next round
        self.ingest = Ingest(store, hub_keys=hub_keys, registry=self.registry,
                             nonces=self._nonces, audit=self.audit,
                             max_active_alerts=config.limits.max_active_alerts)  # fmt: skip
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

    @property
    def accepted(self) -> int:
        """Uplinks this instance stored (not duplicates)."""
        return self.ingest.accepted

    @property
    def failed(self) -> int:
        """Uplinks whose handling raised (see `stats` for the store's count)."""
        return self.ingest.failed

    @property
    def rejected(self) -> Counter[str]:
        return self.ingest.rejected

    # -- ingest ------------------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """Process one MQTT message: a batch of one (see `handle_batch`)."""
        self.handle_batch([(topic, payload)])

    def handle_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Process a batch of MQTT messages with one durable commit, then send the receipts.

        Nothing but a failing store (`StorageError`: no receipt, the devices resend) is
        raised. Bad input is counted and dropped. An uplink whose handling raises
        anything else (a bug, a poisoned message) is recorded as failed with its
        reason, counted in `stats`, logged once, and not run again. If it was stored, it
        is receipted all the same: the alarm IS on disk, so the wearer must feel
        `stored` (and stop resending); the operator sees the failure in `stats`, the
        log and the audit trail. See `vigil.hub.ingest` for the batch and its order.

        Alarms jump the queue at every stage (`vigil.hub.triage`): messages are opened
        a few at a time, and each urgent uplink found is stored, answered and escalated
        at once with a commit of its own; between the routine rest's stages (after each
        chunk opened, before its commit, before each of its receipts) whatever arrived
        since (`arrivals`) is opened the same way, its routine part kept for the next
        round (`carried`).
        """
        self.registry.refresh()  # once a round: enrolments and revocations by any hub
        routine, self._carried = self._carried, []
        routine += self._triage(messages, jump=True)
        if routine:
            self._jump_queue()  # what came while this round was opened goes before its commit
            self._store_and_answer(routine, routine=True)

    @property
    def carried(self) -> bool:
        """Whether opened routine uplinks wait for the next round."""
        return bool(self._carried)

    def _triage(
        self, messages: Sequence[tuple[str, bytes]], *, jump: bool = False
    ) -> list[Decoded]:
        """Open `messages` OPEN_CHUNK at a time; store and answer the urgent ones of each
        chunk at once; return the routine ones. `jump`: between chunks, let what arrived
        since jump the queue (never from a jump itself: the nesting stays one deep)."""
        routine: list[Decoded] = []
        for i in range(0, len(messages), OPEN_CHUNK):
            if jump and i:
                self._jump_queue()
            first: list[Decoded] = []
            for decoded in self.ingest.open(messages[i : i + OPEN_CHUNK]):
                (first if urgent(decoded) else routine).append(decoded)
            if first:
                self._store_and_answer(first)
        return routine

    def _jump_queue(self) -> None:
        """Between the stages of a routine round: answer the urgent part of what arrived
        since now, keep the rest (bounded) for the next round."""
        room = MAX_BATCH - len(self._carried)
        if self.arrivals is None or room <= 0:
            return
        arrived = self.arrivals(min(room, OPEN_CHUNK))
        if arrived:
            self._carried += self._triage(arrived)

    def _store_and_answer(self, decoded: Sequence[Decoded], *, routine: bool = False) -> None:
        now = self.clock()
        online = self.transport is not None and self.transport.connected
        marks = self._take_marks()
        try:
            seal = (functools.partial(self._seal_receipt, now=now)
                    if online and self.store.runs_on_server else None)  # fmt: skip
            outcome = self.ingest.store_opened(decoded, now=now, sent=online, marks=marks,
                                               seal=seal)  # fmt: skip
        except StorageError:
            self._give_back(marks)
            raise
        if online:
            self._send_receipts(outcome, now, jump=routine)
        if outcome.escalate:  # responders hear of a new alarm now, not on the next timer round
            self.escalate(now)

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
            up = pipeline.Uplink(u.device_id, message, u.payload)
            try:
                with self.store.transaction() as tx:
                    self.ingest.run_handler(tx, up, received_at=u.received_at)
            except StorageError:
                raise
            except Exception as exc:
                self.ingest.failed_alone(up, self.clock(), exc)
        return len(pending)

    def _mark_unreadable(self, device_id: DeviceId, epoch: str, seq: int, exc: Exception) -> None:
        reason = f"unreadable: {type(exc).__name__}: {exc}"
        _LOG.error("stored uplink device=%s seq=%s failed: %s", device_id, seq, reason)
        self.ingest.failed += 1
        with self.store.transaction() as tx:
            tx.uplinks.mark_failed(device_id, epoch, seq, error=reason)

    # -- downlinks -----------------------------------------------------------------------------

    def _send_receipts(self, outcome: Outcome, now: float, *, jump: bool = False) -> None:
        """Publish a batch's receipts (alarms' first; written as sent); those the broker does
        not take are given back for the next batch (or the timer) to write (`flush_marks`).
        `jump`: let alarms that arrived since go first, before each receipt."""
        assert self.transport is not None  # noqa: S101 - checked by the caller
        receipts = outcome.receipts
        for i, r in enumerate(receipts):
            if jump:
                self._jump_queue()
            newer = outcome.rotated.get((r.device_id, r.epoch))  # §11.2
            key, envelope = outcome.sealed.get((r.device_id, r.seq), (None, None))
            if envelope is None or key != newer:  # not sealed yet, or to a key since rotated
                envelope = self._seal_receipt(r, newer, now=now)
            if envelope is None:
                continue  # revoked since: nobody to tell any more
            try:
                self.transport.publish(down_topic(DeviceId.parse(r.device_id)), envelope, qos=1)
            except TransportError as exc:
                _LOG.warning("receipts wait for the broker: %s", exc)
                self._give_back(ReceiptMarks(receipts[i:]))
                return

    def _seal_receipt(self, r: QueuedReceipt, newer: str | None, *, now: float) -> bytes | None:
        """A receipt sealed to its device's keys, or to `newer` where its life rotated them
        (§11.2); None for a device revoked since."""
        try:
            device = self.registry.active(DeviceId.parse(r.device_id))
        except (UnknownDevice, RevokedDevice):
            return None
        keys = device.public_keys if newer is None else device.public_keys.rotated(newer)
        return self._seal(device.device_id, keys, r.seq, Kind.STORED, arg=r.arg,
                          epoch=r.epoch, digest=r.digest, now=now)  # fmt: skip

    def _take_marks(self) -> ReceiptMarks:
        with self._marks_lock:
            marks, self._marks = self._marks, ReceiptMarks()
        return marks

    def _give_back(self, marks: ReceiptMarks) -> None:
        with self._marks_lock:
            self._marks.unsent += marks.unsent

    def flush_marks(self) -> None:
        """Write the receipts given back since the last batch (the timer's part when no batch
        comes), so that the timer's flush sends them once the broker is back; lost in a
        crash, they stay marked sent and the devices' resends are answered instead."""
        marks = self._take_marks()
        if not marks:
            return
        try:
            with self.store.transaction(durable=False) as tx:
                tx.intake.settle(marks)
        except StorageError:
            self._give_back(marks)
            raise

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

    def _seal(self, device_id: DeviceId, keys: DevicePublicKeys, seq: int, kind: Kind, *,
              arg: int, epoch: str, digest: str, now: float) -> bytes:  # fmt: skip
        """A downlink sealed to `keys`, with a fresh nonce for the next heartbeat to echo."""
        body: DownlinkBody = _DOWNLINKS[kind](arg, digest)
        message = Message(
            seq=seq, body=body, sent_at=now, clock=ClockSource.NTP, epoch=Epoch.parse(epoch),
            nonce=self._nonces.mint(device_id, at=now),
        )  # fmt: skip
        return seal_downlink(message, device_id=device_id, hub_keys=self.keys, device=keys)

    def _publish(self, d: PendingDownlink, keys: DevicePublicKeys, now: float) -> bool:
        """Seal and publish one claimed downlink; False (and released) if the broker is away."""
        assert self.transport is not None  # noqa: S101 - checked by flush_downlinks
        if d.epoch is None or d.digest is None:  # queued by protocol version 1: unanswerable
            with self.store.transaction() as tx:
                tx.downlinks.mark_sent(d.id, at=now)
            return True
        envelope = self._seal(d.device_id, keys, d.seq, Kind(d.kind), arg=d.arg, epoch=d.epoch,
                              digest=d.digest, now=now)  # fmt: skip
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
        """The store's log checkpoint, silence watchdog, escalation, queued downlinks (e.g. an
        operator's ACK), audit checkpoints, and a chunk of old receipts pruned."""
        now = self.clock()
        self.store.checkpoint_log()
        self.flush_marks()
        self.watch(now)
        self.escalate(now)
        self.flush_downlinks()
        self.checkpoints.tick(now)
        self.prune(now)

    def prune(self, now: float) -> int:
        """Delete a bounded chunk of receipts sent longer ago than `[store] receipt_retention`."""
        with self.store.transaction() as tx:
            pruned = tx.downlinks.prune_sent(before=now - self.config.receipt_retention)
        if pruned:
            _LOG.debug("pruned %s receipts sent before the retention", pruned)
        return pruned

    def watch(self, now: float) -> bool:
        """Raise one device-silent alert per silence, for the devices the store says are due.

        Only the hub holding the watchdog lease looks (False: another hub does); when it
        dies, the next hub to try takes the lease over.
        """
        with self.store.transaction() as tx:
            holding = tx.leases.hold(WATCHDOG_LEASE)
            if holding != self._watching:
                _LOG.info("%s the silence watchdog lease", "took" if holding else "lost")
                self._watching = holding
            if not holding:
                return False
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
        return True

    def escalate(self, now: float) -> None:
        """Fire the steps of the alerts whose escalation timer has come; set the next timer.

        Not durable: lost in a crash, the plan is made again, since the timer it moves
        was committed (with the alert) before. A notice is claimed durably before it is
        sent, which also writes this plan, in order, before it.
        """
        with self.store.transaction(durable=False) as tx:
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
