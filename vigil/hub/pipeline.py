"""Ingest pipeline: decode and verify an uplink (pure), then a table of small handlers per kind.

`decode` never raises: it returns an `Uplink`, a `ConnectionLost` (the device's
empty Will payload) or a `Rejected` with the reason (the `VigilError` class
name) for the shell to count and log. Forged input never reaches the store.

Handlers run after the uplink is stored and before it is marked processed,
inside one transaction (`Context.tx`) with its receipt; they are idempotent, so
a crash in between is repaired by running them again (on the device's resend,
or at start-up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vigil.errors import VigilError
from vigil.hub import alerts
from vigil.hub.store import (
    Alert,
    AlertKind,
    AlertState,
    DeviceNote,
    DeviceRecord,
    LastFix,
    Transaction,
)
from vigil.wire import rekey
from vigil.wire.envelope import open_uplink_payload
from vigil.wire.ids import DeviceId
from vigil.wire.keys import HubKeys
from vigil.wire.messages import Alarm, Cancel, Checkin, Heartbeat, Message, Position, Trigger
from vigil.wire.rekey import KeyChunk
from vigil.wire.topics import parse_topic

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Uplink:
    device_id: DeviceId
    message: Message
    payload: bytes  # the signed payload as the device sent it (stored; its digest answered)


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    device_id: DeviceId


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    detail: str
    device: str | None = None


Decoded = Uplink | ConnectionLost | Rejected
Registry = Callable[[DeviceId], DeviceRecord]  # raises UnknownDevice / RevokedDevice


def decode(topic: str, payload: bytes, *, hub_keys: HubKeys, registry: Registry) -> Decoded:
    """Turn one MQTT message into a verified uplink, a lost connection, or a rejection."""
    device: str | None = None
    try:
        device_id, direction = parse_topic(topic)
        device = device_id.hex
        if direction != "up":
            return Rejected("WrongDirection", f"hub got a message on {topic}", device)
        if len(payload) == 0:
            registry(device_id)  # a Will from an unknown device is noise, not news
            return ConnectionLost(device_id)

        def signing_key(d: DeviceId) -> Ed25519PublicKey:
            return registry(d).public_keys.signing

        message, signed = open_uplink_payload(payload, device_id=device_id, hub_keys=hub_keys,
                                              lookup=signing_key)  # fmt: skip
    except VigilError as exc:
        return Rejected(type(exc).__name__, str(exc), device)
    return Uplink(device_id, message, signed)


# -- handlers ---------------------------------------------------------------------------

Audit = Callable[[str, str, str], None]  # (action, subject, detail)


@dataclass(frozen=True, slots=True)
class Known:
    """What an ingest batch looked up for all its devices at once (True: look again).

    A handler skips a query whose answer the batch already knows is empty, so a
    heartbeat costs no read of the alerts table unless its device has some.
    """

    silent_open: bool = True  # the device may have an open silent alert to close
    alarm_active: bool = True  # the device may have an active alarm to add a fix to


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler gets: the open transaction's repositories, the sender, the message.

    `alive_at` is the hub time the message's nonce echo proves it was made after
    (None: it proves nothing, docs/protocol.md §8).
    """

    tx: Transaction
    device: DeviceRecord
    message: Message
    received_at: float
    audit: Audit
    alive_at: float | None = None
    max_active_alerts: int = 5  # [hub] max_active_alerts_per_device
    known: Known = Known()  # what the batch already looked up (default: nothing)
    notes: dict[str, DeviceNote] | None = None  # the batch's notes of its devices, if any

    @property
    def epoch(self) -> str:
        return self.message.epoch.hex

    def note_state(self, *, battery: int | None = None, fix: LastFix | None = None,
                   gps_fix_at: float | None = None) -> None:  # fmt: skip
        """What the device reported of itself: into the batch's one UPDATE of its row, or
        written now outside a batch."""
        if self.notes is None:
            self.tx.devices.note_state(self.device.device_id, battery=battery, fix=fix,
                                       gps_fix_at=gps_fix_at)  # fmt: skip
            return
        note = self.notes.setdefault(self.device.device_id.hex, DeviceNote())
        note.report(battery=battery, fix=fix, gps_fix_at=gps_fix_at)


def _alarm(ctx: Context, body: Alarm) -> str:
    tx, device_id = ctx.tx, ctx.device.device_id
    draft = alerts.from_alarm(
        device_id, ctx.epoch, ctx.message.seq, body, received_at=ctx.received_at
    )
    if body.trigger is Trigger.TAMPER:
        _compromised(ctx, f"tamper alarm seq {ctx.message.seq} of epoch {ctx.epoch}")
    if tx.alerts.find(device_id, ctx.epoch, ctx.message.seq) is None:  # not a crash re-run
        active = tx.alerts.active_for(device_id, AlertKind.ALARM)
        if len(active) >= ctx.max_active_alerts:
            return _join(ctx, active[0], draft)
    incident = _duress_incident(ctx)
    if incident is not None:
        draft = replace(draft, note=f"under duress: joins the incident of alert {incident.id}")
    alert = tx.alerts.open(draft)
    ctx.note_state(battery=body.battery, fix=draft.last_fix)
    ctx.audit(
        "alert opened", f"alert {alert.id}", f"trigger={body.trigger.value} seq={alert.alarm_seq}"
    )
    if incident is not None and alert.opened_at == ctx.received_at:
        ctx.audit("alarm under duress", f"alert {alert.id}", f"joins alert {incident.id}")
    return f"alert {alert.id} open ({body.trigger.value})"


def _duress_incident(ctx: Context, *, besides: int | None = None) -> Alert | None:
    """The device's newest active duress alert, in any of its lives (None: not under duress).

    After a duress cancel the wearable behaves as after a real one, so a later
    alarm looks normal on the wire and in the hand; it opens its own alert (its
    receipts reach the wearer as usual) marked as part of the duress incident.
    """
    seq = ctx.message.seq if besides is None else besides
    active = ctx.tx.alerts.active_for(ctx.device.device_id, AlertKind.ALARM)
    return next((a for a in active if a.duress and a.alarm_seq != seq), None)


def _compromised(ctx: Context, reason: str) -> None:
    """The wearable was torn off (and erases its keys): whoever sends under its key from
    now on may be a captor. Recorded once; re-enrolling new keys clears it."""
    if ctx.tx.devices.mark_compromised(ctx.device.device_id, at=ctx.received_at, reason=reason):
        ctx.audit("device compromised", f"device {ctx.device.device_id}",
                  f"{reason}: its later messages may be a captor's")  # fmt: skip
        _LOG.warning("device %s compromised: %s", ctx.device.device_id, reason)


def _join(ctx: Context, newest: Alert, draft: Alert) -> str:
    """A device at its cap of active alerts (a seized device flooding?): the alarm joins
    its newest active alert as a position and a count; the first join is audited once and
    the escalation timer sends operators one flood notice."""
    if draft.last_fix is not None:
        ctx.tx.alerts.add_position(
            newest.id, newest.device_id, ctx.epoch, ctx.message.seq, draft.last_fix
        )
    joined = alerts.join(newest, draft, now=ctx.received_at)
    ctx.tx.alerts.save(joined)
    if joined.joined == 1:
        ctx.audit("alarm flood", f"alert {newest.id}",
                  f"device at its cap of {ctx.max_active_alerts} active alerts; "
                  f"further alarms join this alert (first seq={ctx.message.seq})")  # fmt: skip
    return f"alarm joined alert {newest.id} ({joined.joined} joined: device at its cap)"


def _cancel(ctx: Context, body: Cancel) -> str:
    tx, device_id = ctx.tx, ctx.device.device_id
    alert = tx.alerts.find(device_id, ctx.epoch, body.alarm_seq)
    if alert is None:
        if not body.duress:
            return withheld(ctx, body.alarm_seq, "a cancel names it")
        # A duress cancel that overtook its alarm must still raise one.
        draft = alerts.from_alarm(
            device_id, ctx.epoch, body.alarm_seq, Alarm(Trigger.DURESS),
            received_at=ctx.received_at,
        )  # fmt: skip
        alert = tx.alerts.open(draft)
    if ctx.device.sent_by_captor(ctx.received_at) and not body.duress:
        # Its keys may be in a captor's hands: a cancel proves nothing (a duress one still
        # escalates, below).
        why = f"{alerts.CAPTOR} (device compromised)"
        ctx.audit("cancel ignored", f"alert {alert.id}", f"seq={body.alarm_seq}: {why}")
        return f"alert {alert.id} cancel ignored: {why}"
    # Under duress the wearer is coerced: a cancel of a later alarm keeps it open too (a
    # device that erased its state after the duress cancel no longer knows to say so).
    duress = body.duress or _duress_incident(ctx, besides=alert.alarm_seq) is not None
    updated = alerts.cancel(alert, duress=duress, now=ctx.received_at)
    if updated != alert:
        tx.alerts.save(updated)
        what = "duress cancel" if duress else "cancelled by wearer"
        ctx.audit(what, f"alert {alert.id}", f"seq={body.alarm_seq}")
    return f"alert {alert.id} {alerts.operator_view(updated)}"


def _position(ctx: Context, body: Position) -> str:
    tx, device_id = ctx.tx, ctx.device.device_id
    fix = alerts.last_fix(body.fix, received_at=ctx.received_at)
    ctx.note_state(fix=fix)
    alert = tx.alerts.find(device_id, ctx.epoch, body.alarm_seq)
    if alert is None:
        return withheld(ctx, body.alarm_seq, "a position follows it")
    tx.alerts.add_position(alert.id, device_id, ctx.epoch, ctx.message.seq, fix)
    updated = alerts.attach_position(alert, fix, now=ctx.received_at)
    if updated != alert:
        tx.alerts.save(updated)
    return f"position for alert {alert.id}"


def _heartbeat(ctx: Context, body: Heartbeat) -> str:
    fix = None if body.fix is None else alerts.last_fix(body.fix, received_at=ctx.received_at)
    fix_at = None if fix is None else fix.taken_at
    ctx.note_state(battery=body.battery, fix=fix, gps_fix_at=fix_at)
    if fix is not None:  # devices send no `position`: an alarm's track rides in heartbeats
        _follow(ctx, fix)
    if body.rekey is not None:
        _rekey(ctx, body.rekey)
    oldest = body.oldest_pending
    if oldest is not None and not ctx.tx.uplinks.has(ctx.device.device_id, ctx.epoch, oldest):
        return withheld(ctx, oldest, f"the device reports {body.pending} waiting for a receipt")
    return "heartbeat"


def _follow(ctx: Context, fix: LastFix) -> None:
    """Add a heartbeat's fix to the track of the device's active alarms (the newest holds it)."""
    if not ctx.known.alarm_active:
        return
    device_id = ctx.device.device_id
    active = ctx.tx.alerts.active_for(device_id, AlertKind.ALARM)
    for n, alert in enumerate(active):
        if n == 0:
            ctx.tx.alerts.add_position(alert.id, device_id, ctx.epoch, ctx.message.seq, fix)
        updated = alerts.attach_position(alert, fix, now=ctx.received_at)
        if updated != alert:
            ctx.tx.alerts.save(updated)


def _rekey(ctx: Context, chunk: KeyChunk) -> None:
    """Keep a chunk of the device's next downlink key; take the key once it is whole and
    its digest checks (docs/protocol.md §11.2). Downlinks are then sealed to it."""
    kems, device_id = ctx.tx.kems, ctx.device.device_id
    if kems.known(device_id, ctx.epoch, chunk.key):
        return  # a repeat of a key already taken
    text = rekey.assemble(chunk.key, chunk.size, kems.add_part(device_id, ctx.epoch, chunk))
    if text is None:
        return
    try:
        ctx.device.public_keys.rotated(text)  # the same kind of key as enrolled
    except VigilError as exc:
        kems.drop_parts(device_id, ctx.epoch)
        ctx.audit("downlink key refused", f"device {device_id}", f"key {chunk.key}: {exc}")
        return
    kems.verified(device_id, ctx.epoch, chunk.key, text, at=ctx.received_at)
    ctx.audit("downlink key rotated", f"device {device_id}", f"key {chunk.key} epoch {ctx.epoch}")


def withheld(ctx: Context, seq: int, evidence: str) -> str:
    """The device's own word names seq `seq`, which never arrived: someone holds it back."""
    reason = f"seq {seq} of epoch {ctx.epoch} never arrived, but {evidence}"
    device = ctx.tx.devices.get(ctx.device.device_id) or ctx.device  # its newest fix, battery
    draft = alerts.suspicion(device, AlertKind.WITHHELD, trigger="withheld",
                             now=ctx.received_at, reason=reason)  # fmt: skip
    alert = ctx.tx.alerts.open(draft)
    if alert.opened_at == ctx.received_at:
        ctx.audit("message withheld", f"alert {alert.id}", reason)
    _LOG.warning("device %s: %s (alert %s)", ctx.device.device_id, reason, alert.id)
    return f"message withheld: alert {alert.id}"


def _checkin(ctx: Context, body: Checkin) -> str:
    return "check-in"


HANDLERS: dict[type, Callable[[Context, object], str]] = {
    Alarm: _alarm,  # type: ignore[dict-item]
    Cancel: _cancel,  # type: ignore[dict-item]
    Position: _position,  # type: ignore[dict-item]
    Heartbeat: _heartbeat,  # type: ignore[dict-item]
    Checkin: _checkin,  # type: ignore[dict-item]
}


def _fallback(ctx: Context, body: object) -> str:
    _LOG.warning("no handler for kind %s from %s", ctx.message.kind, ctx.device.device_id)
    return f"kind {ctx.message.kind} stored, not handled"


def handle(ctx: Context) -> str:
    """Run the handler for the message's kind; return a one-line summary for logs and tail."""
    _end_silence(ctx)
    body = ctx.message.body
    summary = HANDLERS.get(type(body), _fallback)(ctx, body)
    if ctx.device.sent_by_captor(ctx.received_at):
        return f"{summary} ({alerts.CAPTOR}: device compromised)"
    return summary


def _end_silence(ctx: Context) -> None:
    """A silent device spoke again: close its open (not yet taken) silent alert.

    Only a message proven made after the alert opened counts: a heartbeat the
    broker stashed and released later says nothing about now.
    """
    if ctx.alive_at is None or not ctx.known.silent_open:
        return
    if ctx.device.sent_by_captor(ctx.received_at):
        return  # a compromised device's word is never an all-clear
    for alert in ctx.tx.alerts.active_for(ctx.device.device_id, AlertKind.SILENT):
        if alert.state is AlertState.OPEN and ctx.alive_at >= alert.opened_at:
            closed = alerts.close(alert, false_alarm=False, now=ctx.received_at,
                                  note="device spoke again")  # fmt: skip
            ctx.tx.alerts.save(replace(closed, note="device spoke again"))
            ctx.audit("silent alert closed", f"alert {alert.id}", "device spoke again")
