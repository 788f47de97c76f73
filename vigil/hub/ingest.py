"""Ingest as a pipeline with group commit: a batch of uplinks, one durable commit, receipts.

The ingest worker hands over whatever arrived while the previous batch was being
committed (at most `MAX_BATCH` messages, so at low load a batch of one), and
`Ingest.open` and `Ingest.store_opened`:

1. opens and verifies every envelope (HPKE, Ed25519: the CPU part), with the
   senders' keys from the registry cache (`vigil.hub.registry`);
2. orders the uplinks **alarms first** (alarms and duress cancels, then the
   cancels and positions that follow an alarm, then heartbeats and check-ins),
   keeping arrival order within each class;
3. in ONE transaction: locks the batch's device rows, decides every uplink
   against its life's replay window in memory (docs/protocol.md §7: dedup by
   (device, epoch, seq), inside the batch too; CONFLICT; a new epoch audited),
   writes the new uplinks and windows with one statement per table, runs each
   kind's handler in priority order (withheld detection, nonce liveness §8),
   queues the receipts, and commits once: `stored` still means on disk;
4. returns the receipts, alarms' first, for the caller to seal and publish.

Every envelope has the same size and is sealed, so the hub knows an alarm only
once it has opened it. `HubService.handle_batch` opens the batch, then stores
and answers its urgent uplinks (`vigil.hub.triage`) with a commit of their own
before the rest: an alarm waits at most for the batch in progress and the
opening of its own (at most `MAX_BATCH` messages each). Within a batch, alarms
are handled, stored and answered first.

Containment: if anything in a batch fails (a handler raises, a write is
refused), the transaction rolls back as a whole and the batch runs again one
uplink per transaction, each handler inside a savepoint. The poisoned uplink is
stored, marked failed with its reason, audited and receipted (it IS on disk:
the wearer must feel `stored`); its neighbours are handled as usual.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vigil.errors import StorageError
from vigil.hub import liveness, pipeline
from vigil.hub.registry import Registry
from vigil.hub.store import Acceptance, AlertKind, AlertState, DeviceNote, Store, Transaction
from vigil.hub.store.intake import DeviceLock, NewUplink, QueuedReceipt, ReceiptMarks, WindowKey
from vigil.hub.triage import Priority, priority
from vigil.wire.keys import HubKeys
from vigil.wire.liveness import NonceMinter, uplink_digest
from vigil.wire.messages import Alarm, Message, Trigger
from vigil.wire.replay import ReplayWindow, Verdict

_LOG = logging.getLogger(__name__)
MAX_BATCH = 64  # uplinks per round: bounds how long an alarm waits behind a flood
Audit = Callable[[Transaction, str, str, str], None]
_LOOK = pipeline.Known()  # a handler run outside a batch looks everything up itself


def _level(message: Message, status: Acceptance) -> int:
    """A fleet's routine traffic (a new heartbeat or check-in) is logged at DEBUG: at INFO a
    hub serving thousands of wearables would write several lines a second that tell an
    operator nothing, at a cost on every message. Alarms, their follow-ups, repeats and
    conflicts stay at INFO."""
    routine = status is Acceptance.NEW and priority(message) is Priority.ROUTINE
    return logging.DEBUG if routine else logging.INFO


@dataclass(frozen=True, slots=True)
class _Item:
    """One verified uplink on its way through a batch (ids as the store keeps them)."""

    up: pipeline.Uplink
    digest: str
    device: str
    epoch: str
    seq: int
    rank: Priority

    @classmethod
    def of(cls, up: pipeline.Uplink) -> _Item:
        message = up.message
        return cls(up, uplink_digest(up.payload), up.device_id.hex, message.epoch.hex, message.seq,
                   priority(message))  # fmt: skip

    @property
    def payload(self) -> bytes:
        return self.up.payload


Sealed = tuple[str | None, bytes]  # the downlink key a receipt was sealed to, the envelope
Sealer = Callable[[QueuedReceipt, "str | None"], "bytes | None"]  # None: nobody to tell


def _sealed(seal: Sealer, receipts: Sequence[QueuedReceipt],
            keys: dict[WindowKey, str]) -> dict[tuple[str, int], Sealed]:  # fmt: skip
    """Each receipt sealed to its life's newest key as the batch began (the caller seals
    again the few whose key the batch rotated)."""
    out: dict[tuple[str, int], Sealed] = {}
    for r in receipts:
        key = keys.get((r.device_id, r.epoch))
        envelope = seal(r, key)
        if envelope is not None:
            out[(r.device_id, r.seq)] = (key, envelope)
    return out


def _after(now: float, item: _Item, tampered: set[str]) -> float:
    """When `item` is taken to arrive: just after `now` if a tamper alarm of its device came
    before it in this batch (so it counts as sent after the device was compromised)."""
    at = math.nextafter(now, math.inf) if item.device in tampered else now
    body = item.up.message.body
    if isinstance(body, Alarm) and body.trigger is Trigger.TAMPER:
        tampered.add(item.device)
    return at


@dataclass(frozen=True, slots=True)
class _Step:
    """An uplink with what the batch decided about it."""

    item: _Item
    status: Acceptance
    alive_at: float | None  # the hub time its nonce echo proves (docs/protocol.md §8)
    known: pipeline.Known  # what the batch knows of its device's alerts


@dataclass
class _Tally:
    """What one attempt at a batch counted; kept only once it committed."""

    accepted: int = 0
    failed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    notes: dict[str, DeviceNote] = field(default_factory=dict)  # one UPDATE a device
    escalate: bool = False  # an escalation timer has come (e.g. this batch opened an alert)
    rotated: dict[WindowKey, str] = field(default_factory=dict)  # newest downlink keys
    sealed: dict[tuple[str, int], Sealed] = field(default_factory=dict)  # (device, seq)

    def note(self, device: str) -> DeviceNote:
        return self.notes.setdefault(device, DeviceNote())


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a batch left to do once committed: its receipts (alarms' first) and whether an
    alert's escalation is due now (run it at once rather than on the next timer round)."""

    receipts: list[QueuedReceipt]
    escalate: bool
    rotated: dict[WindowKey, str]  # each receipt's life's newest downlink key, if it rotated
    sealed: dict[tuple[str, int], Sealed] = field(default_factory=dict)  # sealed in the batch


class Ingest:
    """Runs batches of MQTT messages; counts what it accepted, refused and failed."""

    def __init__(self, store: Store, *, hub_keys: HubKeys, registry: Registry,
                 nonces: NonceMinter, audit: Audit, max_active_alerts: int) -> None:  # fmt: skip
        self.store, self.keys, self.registry, self.nonces = store, hub_keys, registry, nonces
        self.audit, self.max_active_alerts = audit, max_active_alerts
        self.accepted = 0  # uplinks this instance stored (not duplicates)
        self.failed = 0  # uplinks whose handling raised
        self.rejected: Counter[str] = Counter()

    def open(self, messages: Sequence[tuple[str, bytes]]) -> list[pipeline.Decoded]:
        """Open and verify `messages` (the CPU part), with the registry as last refreshed
        (a device revoked since is refused under its row lock when stored)."""
        return [self._decode(topic, payload) for topic, payload in messages]

    def store_opened(self, decoded: Sequence[pipeline.Decoded], *, now: float, sent: bool,
                     marks: ReceiptMarks | None = None,
                     seal: Sealer | None = None) -> Outcome:  # fmt: skip
        """Store and handle opened messages (`open`) as one batch; return its receipts
        (written as `sent` if the caller publishes them at once: `Intake.queue_receipts`).

        `marks` (earlier receipts given back) are written in the batch's transaction.
        `seal`: seal the batch's receipts while its writes run, before the commit is
        waited for (a store whose statements run on a server, beside this process).
        Nothing but a failing store (`StorageError`: no receipt, the devices resend;
        `marks` not written) is raised; see the module docstring for what happens to a
        failing uplink.
        """
        marks = marks or ReceiptMarks()
        items = sorted((_Item.of(d) for d in decoded if isinstance(d, pipeline.Uplink)),
                       key=lambda i: i.rank)  # fmt: skip
        edges = [d for d in decoded if not isinstance(d, pipeline.Uplink)]
        if len(items) <= 1:  # nothing to share a commit with: contained at once
            return self._one_by_one(edges, items, now, sent, marks)
        tally = _Tally()
        try:
            with self.store.batch() as tx:
                tx.intake.settle(marks)
                self._edges(tx, edges, now, tally)
                receipts = self._batch(tx, items, now, tally, contained=False)
                self._finish(tx, receipts, tally, now=now, sent=sent)
                if seal:  # the server works on the writes meanwhile
                    tally.sealed = _sealed(seal, receipts, tally.rotated)
                self._after_writes(tx, receipts, tally, now)
        except Exception as exc:  # contained below, uplink by uplink
            self.registry.forget()  # it may hold records read inside the rolled-back batch
            _LOG.warning("a batch of %s failed (%s: %s); handling its uplinks one by one",
                         len(decoded), type(exc).__name__, exc)  # fmt: skip
            return self._one_by_one(edges, items, now, sent, marks)
        self._keep(tally)
        return Outcome(receipts, tally.escalate, tally.rotated, tally.sealed)

    def _one_by_one(self, edges: Sequence[pipeline.Decoded], items: list[_Item], now: float,
                    sent: bool, marks: ReceiptMarks) -> Outcome:  # fmt: skip
        tally, escalate, rotated = _Tally(), False, {}
        if edges or marks:
            with self.store.transaction() as tx:
                tx.intake.settle(marks)
                self._edges(tx, edges, now, tally)
            self._keep(tally)
        receipts: list[QueuedReceipt] = []
        tampered: set[str] = set()
        for item in items:
            tally, at = _Tally(), _after(now, item, tampered)
            try:
                with self.store.transaction() as tx:
                    mine = self._batch(tx, [item], at, tally, contained=True)
                    self._finish(tx, mine, tally, now=now, sent=sent)
                    self._after_writes(tx, mine, tally, now)
            except StorageError:
                raise
            except Exception as exc:  # a bug outside the handler: record it on its own
                self.failed_alone(item.up, now, exc)
                continue
            self._keep(tally)
            receipts += mine
            escalate = escalate or tally.escalate
            rotated.update(tally.rotated)
        return Outcome(receipts, escalate, rotated)

    def _finish(self, tx: Transaction, receipts: list[QueuedReceipt], tally: _Tally, *,
                now: float, sent: bool) -> None:  # fmt: skip
        """Queue the receipts; one UPDATE a device for all the batch learned of it."""
        tx.intake.queue_receipts(receipts, now=now, sent=sent)
        for r in receipts:  # in the order they were numbered
            tally.note(r.device_id).down_seq = r.seq
        tx.devices.write_notes(tally.notes)

    def _after_writes(self, tx: Transaction, receipts: list[QueuedReceipt], tally: _Tally,
                      now: float) -> None:  # fmt: skip
        """What the batch's writes may have changed: whether an escalation is due now, and
        the newest downlink key of each receipt's life (a heartbeat may have rotated it)."""
        keys = tx.intake.newest_keys((r.device_id, r.epoch) for r in receipts)
        tally.escalate = tally.escalate or tx.alerts.escalation_due(now)
        tally.rotated = keys()

    def _keep(self, tally: _Tally) -> None:
        self.accepted += tally.accepted
        self.failed += tally.failed
        self.rejected.update(tally.rejected)

    # -- decoding and the edges (refused input, lost connections) ---------------------------

    def _decode(self, topic: str, payload: bytes) -> pipeline.Decoded:
        try:
            return pipeline.decode(
                topic, payload, hub_keys=self.keys, registry=self.registry.active
            )
        except StorageError:
            raise
        except Exception as exc:  # a decoder bug: nothing is stored
            _LOG.exception("decoding a message on %s crashed", topic)
            return pipeline.Rejected(f"crashed:{type(exc).__name__}", str(exc))

    def _edges(self, tx: Transaction, edges: Sequence[pipeline.Decoded], now: float,
               tally: _Tally) -> None:  # fmt: skip
        for d in edges:
            if isinstance(d, pipeline.Rejected):
                self._refuse(tx, tally, d.reason, d.detail, device=d.device, now=now)
            elif isinstance(d, pipeline.ConnectionLost):
                tx.devices.note_offline(d.device_id, at=now)
                self.audit(tx, "connection lost", f"device {d.device_id}", "MQTT Will")
                _LOG.warning("device %s connection lost (Will)", d.device_id)

    def _refuse(self, tx: Transaction, tally: _Tally, reason: str, detail: str, *,
                device: str | None, now: float) -> None:  # fmt: skip
        tally.rejected[reason] += 1
        tx.rejections.count(reason, at=now)
        _LOG.warning("rejected uplink device=%s reason=%s: %s", device, reason, detail)

    # -- the batch ----------------------------------------------------------------------------

    def _batch(self, tx: Transaction, items: list[_Item], now: float, tally: _Tally, *,
               contained: bool) -> list[QueuedReceipt]:  # fmt: skip
        """Decide, store and handle `items` (in their order); return their receipts."""
        devices, lives = sorted({i.device for i in items}), {(i.device, i.epoch) for i in items}
        # The batch's reads go out together, before its first write (which a read after it
        # would wait for): one round trip on PostgreSQL.
        read_locks, read_active = tx.intake.lock_devices(devices), tx.intake.active_alerts(devices)
        read_windows, read_keys = tx.intake.windows(lives), tx.intake.newest_keys(lives)
        locks, active, tally.rotated = read_locks(), read_active(), read_keys()
        plans = self._plan(tx, items, locks, read_windows(), now=now, tally=tally)
        proofs = {id(i): liveness.proven_at(self.nonces, i.up.device_id, i.up.message)
                  for i, _ in plans}  # fmt: skip
        alarming = {i.device for i, _ in plans if i.rank is Priority.ALARM}
        down_seq = {d: lock.down_seq for d, lock in locks.items()}
        receipts: list[QueuedReceipt] = []
        settle = self._contained if contained else self._settle
        tampered: set[str] = set()
        for item, status in plans:
            kinds = active.get(item.device, set())
            known = pipeline.Known(silent_open=(AlertKind.SILENT, AlertState.OPEN) in kinds,
                                   alarm_active=item.device in alarming
                                   or any(k is AlertKind.ALARM for k, _ in kinds))  # fmt: skip
            step = _Step(item, status, proofs[id(item)], known)
            tally.note(item.device).proves_alive(step.alive_at)
            receipt = settle(tx, step, _after(now, item, tampered), tally)
            msg = item.up.message
            _LOG.log(_level(msg, status), "uplink device=%s seq=%s kind=%s %s%s",
                     item.device, msg.seq, msg.kind, status.value,
                     "" if receipt else " (no receipt)")  # fmt: skip
            if receipt:
                down_seq[item.device] += 1
                receipts.append(QueuedReceipt(item.device, down_seq[item.device], msg.seq,
                                              item.epoch, item.digest))  # fmt: skip
        return receipts

    def _plan(self, tx: Transaction, items: list[_Item], locks: dict[str, DeviceLock],
              windows: dict[WindowKey, ReplayWindow], *, now: float,
              tally: _Tally) -> list[tuple[_Item, Acceptance]]:  # fmt: skip
        """Each uplink's acceptance; store the new ones and their windows (one statement each)."""
        live = [i for i in items if self._admitted(tx, i, locks, now, tally)]
        changed: set[WindowKey] = set()
        seen: dict[tuple[str, str, int], str] = {}  # (device, epoch, seq) -> digest, this batch
        plans: list[tuple[_Item, Acceptance]] = []
        new: list[NewUplink] = []
        for item in live:
            key = (item.device, item.epoch, item.seq)
            status = self._status(tx, item, seen.get(key), windows, now)
            if status is None:
                self._refuse(tx, tally, "ReplayedMessage",
                             f"seq {item.seq} of epoch {item.epoch} is below the window",
                             device=item.device, now=now)  # fmt: skip
                continue
            if status is Acceptance.NEW:
                windows[(item.device, item.epoch)] = windows[(item.device, item.epoch)].accept(
                    item.seq
                )
                changed.add((item.device, item.epoch))
                kind = item.up.message.kind.value
                new.append(NewUplink(item.device, item.epoch, item.seq, kind, item.payload,
                                     item.digest))  # fmt: skip
                tally.accepted += 1
                tally.note(item.device).last_seen = now
            seen.setdefault(key, item.digest)
            plans.append((item, status))
        tx.intake.store(new, received_at=now)
        tx.intake.save_windows({k: windows[k] for k in changed})
        return plans

    def _admitted(self, tx: Transaction, item: _Item, locks: dict[str, DeviceLock],
                  now: float, tally: _Tally) -> bool:  # fmt: skip
        """Refuse a device revoked (or removed) since its envelope was opened."""
        lock = locks.get(item.device)
        if lock is not None and not lock.revoked:
            return True
        reason = "UnknownDevice" if lock is None else "RevokedDevice"
        self._refuse(tx, tally, reason, f"device {item.device} changed during the batch",
                     device=item.device, now=now)  # fmt: skip
        return False

    def _status(self, tx: Transaction, item: _Item, earlier: str | None,
                windows: dict[WindowKey, ReplayWindow], now: float,
                ) -> Acceptance | None:  # fmt: skip
        """NEW, DUPLICATE or CONFLICT (None: below the replay window, never answered)."""
        if earlier is not None:  # the same (device, epoch, seq) earlier in this batch
            return Acceptance.DUPLICATE if earlier == item.digest else Acceptance.CONFLICT
        key = (item.device, item.epoch)
        if key not in windows:  # the first message of a new life of the device
            previous = tx.devices.start_epoch(item.up.device_id, item.epoch, now=now)
            tx.intake.new_window(item.device, item.epoch, now=now)
            windows[key] = ReplayWindow()
            if previous is not None:
                self.audit(tx, "device state was reset", f"device {item.device}",
                           f"epoch {previous} -> {item.epoch}")  # fmt: skip
        verdict = windows[key].check(item.seq)
        if verdict is Verdict.TOO_OLD:
            return None
        if verdict is Verdict.ACCEPT:
            return Acceptance.NEW
        stored = tx.uplinks.get(item.up.device_id, item.epoch, item.seq)
        same = stored is None or stored.digest == item.digest
        return Acceptance.DUPLICATE if same else Acceptance.CONFLICT

    # -- what an uplink causes ----------------------------------------------------------------

    def _settle(self, tx: Transaction, step: _Step, now: float, tally: _Tally, *,
                deferred: bool = True) -> bool:  # fmt: skip
        """Run what the uplink causes; return whether it gets a receipt. `deferred`: what
        the device reported of itself goes into the batch's one UPDATE of its row."""
        item, alive_at, known = step.item, step.alive_at, step.known
        up, msg = item.up, item.up.message
        if step.status is Acceptance.NEW:
            self.run_handler(tx, up, received_at=now, alive_at=alive_at, known=known,
                             stored_processed=True,
                             notes=tally.notes if deferred else None)  # fmt: skip
            return True
        if step.status is Acceptance.CONFLICT:  # no receipt: the wearer must not feel "stored"
            liveness.conflict(tx, tx.devices.active(up.device_id), msg, now=now,
                              audit=functools.partial(self.audit, tx))  # fmt: skip
            return False
        stored = tx.uplinks.get(up.device_id, item.epoch, msg.seq)
        if stored is not None and not stored.processed:  # a crash interrupted it
            self.run_handler(tx, up, received_at=stored.received_at, alive_at=alive_at,
                             known=known)  # fmt: skip
            return True  # its receipt was never sent: the wearer must not wait for it
        # The first receipt may have been lost; a replaying broker gets few more.
        return tx.uplinks.may_receipt(up.device_id, item.epoch, msg.seq, now=now)

    def _contained(self, tx: Transaction, step: _Step, now: float, tally: _Tally) -> bool:
        """`_settle` inside a savepoint: if it raises, record the uplink as failed."""
        try:
            with self.store.transaction() as inner:  # a savepoint of `tx`
                return self._settle(inner, step, now, tally, deferred=False)
        except StorageError:
            raise
        except Exception as exc:  # a poisoned uplink: recorded, not raised
            return self._record_failure(tx, step.item, now, exc, tally)

    def _record_failure(self, tx: Transaction, item: _Item, now: float, exc: Exception,
                        tally: _Tally) -> bool:  # fmt: skip
        """Mark a stored uplink whose handling raised as failed; receipt it (it is on disk)."""
        up, msg = item.up, item.up.message
        reason = f"{type(exc).__name__}: {exc}"
        _LOG.error("uplink device=%s seq=%s kind=%s failed: %s", up.device_id, msg.seq, msg.kind,
                   reason, exc_info=exc)  # fmt: skip
        stored = tx.uplinks.get(up.device_id, item.epoch, msg.seq)
        if stored is None or stored.digest != item.digest:  # not stored: the device resends
            tally.rejected[f"crashed:{type(exc).__name__}"] += 1
            tx.rejections.count(f"crashed:{type(exc).__name__}", at=now)
            return False
        tally.failed += 1
        tx.uplinks.mark_failed(up.device_id, item.epoch, msg.seq, error=reason)
        self.audit(tx, "uplink failed", f"device {up.device_id}",
                   f"seq={msg.seq} kind={msg.kind} {reason}"[:500])  # fmt: skip
        return True

    def failed_alone(self, up: pipeline.Uplink, now: float, exc: Exception) -> None:
        """An uplink whose own transaction raised outside its handler: record it alone."""
        item, tally = _Item.of(up), _Tally()
        with self.store.transaction() as tx:
            if self._record_failure(tx, item, now, exc, tally):
                tx.downlinks.queue(item.up.device_id, "stored", item.seq, now=now,
                                   epoch=item.epoch, digest=item.digest)  # fmt: skip
        self._keep(tally)

    def run_handler(self, tx: Transaction, up: pipeline.Uplink, *, received_at: float,
                    alive_at: float | None = None, known: pipeline.Known = _LOOK,
                    stored_processed: bool = False,
                    notes: dict[str, DeviceNote] | None = None) -> None:  # fmt: skip
        """Run the kind's handler for a stored uplink and mark it processed."""
        device = self.registry.active(up.device_id)
        ctx = pipeline.Context(tx, device, up.message, received_at,
                               functools.partial(self.audit, tx), alive_at,
                               max_active_alerts=self.max_active_alerts,
                               known=known, notes=notes)  # fmt: skip
        summary = pipeline.handle(ctx)
        body = up.message.body
        if isinstance(body, Alarm) and body.trigger is Trigger.TAMPER:
            self.registry.forget(up.device_id)  # now compromised: later uplinks must see it
        if not stored_processed:
            tx.uplinks.mark_processed(up.device_id, up.message.epoch.hex, up.message.seq)
        _LOG.log(_level(up.message, Acceptance.NEW), "device=%s seq=%s kind=%s: %s",
                 up.device_id, up.message.seq, up.message.kind, summary)  # fmt: skip
