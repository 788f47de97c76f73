"""What operators do to alerts (used by the CLI): each action is stored, audited, and
the wearer is told through a queued downlink that the running hub publishes."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vigil.hub import alerts, escalation
from vigil.hub.config import Channel
from vigil.hub.store import Alert, AlertKind, Store
from vigil.wire.messages import Acknowledged, Resolved

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
    alert = store.get_alert(alert_id)
    if action == "broadcast":
        planned = escalation.broadcast_recipients(alert, channels or {})
        store.fire_step(alert.id, escalation.PUBLIC_STEP, planned, now=now)
        _audit(
            store,
            alert,
            at=now,
            by=by,
            action="public broadcast",
            detail=f"{len(planned)} recipients",
        )
        return alert
    if action == "ack":
        updated = alerts.acknowledge(alert, by=by, now=now)
        downlink = Acknowledged.KIND
    elif action == "verify":
        updated, downlink = alerts.verify(alert, by=by, now=now), ""
    elif action in ("resolve", "false-alarm"):
        updated = alerts.close(alert, false_alarm=action == "false-alarm", now=now, note=note)
        downlink = Resolved.KIND
    else:
        raise ValueError(f"unknown action {action!r}; choose one of {', '.join(ACTIONS)}")
    store.save_alert(updated)
    if downlink and alert.kind is AlertKind.ALARM and alert.alarm_seq is not None:
        seq = store.queue_downlink(alert.device_id, downlink, alert.alarm_seq, now=now)
        _LOG.info("queued %s seq %s for device %s", downlink, seq, alert.device_id)
    _audit(store, alert, at=now, by=by, action=action, detail=note or "")
    return updated


def _audit(store: Store, alert: Alert, *, at: float, by: str, action: str, detail: str) -> None:
    store.append_audit(at=at, actor=by, action=action, subject=f"alert {alert.id}", detail=detail)
