"""What operators do to alerts (used by the CLI).

Each action is one transaction: the alert's new state, the downlink that tells
the wearer, the planned broadcast and the audit entry commit together or not
at all. The running hub publishes the queued downlink.

An alert the wearer cancelled under duress is worked like any open alarm, but
nothing of it is echoed to the wearer: a real cancel closes its alert, so it
never draws an `acknowledged` or `resolved` downlink, and a duress cancel must
draw none either, or the captor watching the wearable (or the broker counting
downlinks) could tell the two apart (docs/protocol.md §4.2).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vigil.hub import alerts, escalation
from vigil.hub.config import Channel
from vigil.hub.store import Alert, AlertKind, Store, Transaction
from vigil.wire.messages import Acknowledged, Kind, Resolved

_LOG = logging.getLogger(__name__)

ACTIONS = ("ack", "resolve", "false-alarm", "verify", "broadcast")


def act(
    store: Store,
    alert_id: int,
    action: str,
    *,
    by: str,
    now: float,
    channels: Mapping[str, Channel] | None = None,
    note: str | None = None,
) -> Alert:
    """Apply `action` to alert `alert_id` on behalf of operator `by`; return the new alert."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    with store.transaction() as tx:
        alert = tx.alerts.get(alert_id)
        if action == "broadcast":
            planned = escalation.broadcast_recipients(alert, channels or {})
            tx.deliveries.fire_step(alert.id, escalation.PUBLIC_STEP, planned, now=now)
            _audit(tx, alert, at=now, by=by, action="public broadcast",
                   detail=f"{len(planned)} recipients")  # fmt: skip
            return alert
        updated, downlink = _transition(alert, action, by=by, now=now, note=note)
        tx.alerts.save(updated)
        if downlink is not None:
            _tell_wearer(tx, alert, downlink, now=now)
        _audit(tx, alert, at=now, by=by, action=action, detail=note or "")
    return updated


def _transition(
    alert: Alert, action: str, *, by: str, now: float, note: str | None
) -> tuple[Alert, Kind | None]:
    """The alert after `action`, and the downlink kind that tells the wearer (None: none)."""
    if action == "ack":
        return alerts.acknowledge(alert, by=by, now=now), Acknowledged.KIND
    if action == "verify":
        return alerts.verify(alert, by=by, now=now), None
    closed = alerts.close(alert, false_alarm=action == "false-alarm", now=now, note=note)
    return closed, Resolved.KIND


def _tell_wearer(tx: Transaction, alert: Alert, kind: Kind, *, now: float) -> None:
    """Queue the downlink that answers the wearer's alarm (by its epoch and digest)."""
    if alert.kind is not AlertKind.ALARM or alert.alarm_seq is None or alert.alarm_epoch is None:
        return
    if alerts.cancelled_for_the_wearer(alert):  # a duress cancel: silent like a real one
        _LOG.info("alert %s was cancelled under duress: %s not sent", alert.id, kind)
        return
    alarm = tx.uplinks.get(alert.device_id, alert.alarm_epoch, alert.alarm_seq)
    if alarm is None or alarm.digest is None:  # a duress cancel that overtook its alarm
        return
    seq = tx.downlinks.queue(alert.device_id, kind.value, alert.alarm_seq, now=now,
                             epoch=alert.alarm_epoch, digest=alarm.digest)  # fmt: skip
    _LOG.info("queued %s seq %s for device %s", kind, seq, alert.device_id)


def _audit(tx: Transaction, alert: Alert, *, at: float, by: str, action: str, detail: str) -> None:
    tx.audit.append(at=at, actor=by, action=action, subject=f"alert {alert.id}", detail=detail)
