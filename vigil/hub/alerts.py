"""Alert lifecycle (pure): every transition is a function from an alert to a new alert.

```mermaid
stateDiagram-v2
    [*] --> open: alarm / device silent
    open --> acknowledged: operator takes it
    open --> cancelled: wearer cancels
    acknowledged --> cancelled: wearer cancels
    open --> open: duress cancel (duress=true, escalates at once)
    acknowledged --> resolved: operator
    acknowledged --> false_alarm: operator
    open --> resolved: operator
    open --> false_alarm: operator
```

A duress cancel looks like any cancel to the wearer and to anyone watching
the device (same `stored` receipt), but the alert stays open, is flagged
`duress`, escalates at once, and shows to operators as DURESS.
"""

from __future__ import annotations

from dataclasses import replace

from vigil.errors import BadTransition
from vigil.hub.store.records import Alert, AlertKind, AlertState, DeviceRecord, LastFix
from vigil.wire.fix import AgedFix
from vigil.wire.ids import DeviceId
from vigil.wire.messages import Alarm, Trigger


def last_fix(reported: AgedFix, *, received_at: float) -> LastFix:
    """Place a wire fix on the hub's clock: taken `age` seconds before it arrived."""
    fix, taken_at = reported.fix, received_at - reported.age
    return LastFix(fix.lat, fix.lon, taken_at=taken_at, received_at=received_at)


def from_alarm(
    device_id: DeviceId, epoch: str, seq: int, alarm: Alarm, *, received_at: float
) -> Alert:
    """A new alert for alarm `seq` of the device's life `epoch` (its id comes from the store)."""
    return Alert(
        id=0,
        device_id=device_id,
        kind=AlertKind.ALARM,
        state=AlertState.OPEN,
        opened_at=received_at,
        updated_at=received_at,
        alarm_seq=seq,
        alarm_epoch=epoch,
        trigger=alarm.trigger.value,
        duress=alarm.trigger is Trigger.DURESS,
        battery=alarm.battery,
        last_fix=None if alarm.fix is None else last_fix(alarm.fix, received_at=received_at),
    )


def device_silent(device: DeviceRecord, *, now: float, reason: str) -> Alert:
    """A new alert for a device that stopped talking, with its last known position.

    Inside the wearer's risk window it is alarm-grade (`DARK`): it escalates at once.
    """
    dark = device.risk_until is not None and now <= device.risk_until
    return suspicion(
        device, AlertKind.DARK if dark else AlertKind.SILENT,
        trigger="went-dark" if dark else "device-silent", now=now, reason=reason,
    )  # fmt: skip


def suspicion(
    device: DeviceRecord, kind: AlertKind, *, trigger: str, now: float, reason: str
) -> Alert:
    """An alert the hub raises itself (silence, a withheld or a conflicting message).

    It has no alarm seq: at most one of each kind is active per device.
    """
    return Alert(
        id=0,
        device_id=device.device_id,
        kind=kind,
        state=AlertState.OPEN,
        opened_at=now,
        updated_at=now,
        trigger=trigger,
        battery=device.battery,
        last_fix=device.last_fix,
        note=reason,
    )


def cancel(alert: Alert, *, duress: bool, now: float) -> Alert:
    """Apply the wearer's cancel; under duress the alert stays open and is flagged."""
    if not alert.active:
        return alert  # a late or repeated cancel changes nothing
    if duress:
        return replace(alert, duress=True, updated_at=now, note="cancelled under duress")
    return replace(alert, state=AlertState.CANCELLED, updated_at=now, closed_at=now)


def acknowledge(alert: Alert, *, by: str, now: float) -> Alert:
    """An operator or responder takes the alert: escalation stops."""
    if alert.state is not AlertState.OPEN:
        raise BadTransition(f"alert {alert.id} is {alert.state.value}, not open")
    return replace(
        alert,
        state=AlertState.ACKNOWLEDGED,
        acknowledged_by=by,
        acknowledged_at=now,
        updated_at=now,
    )


def verify(alert: Alert, *, by: str, now: float) -> Alert:
    """An operator confirmed the emergency is real (needed before any public broadcast)."""
    if alert.state is not AlertState.ACKNOWLEDGED:
        raise BadTransition(f"alert {alert.id} must be acknowledged before it is verified")
    return replace(alert, verified_at=now, updated_at=now)


def close(alert: Alert, *, false_alarm: bool, now: float, note: str | None = None) -> Alert:
    """Resolve the alert, or close it as a false alarm."""
    if not alert.active:
        raise BadTransition(f"alert {alert.id} is already {alert.state.value}")
    state = AlertState.FALSE_ALARM if false_alarm else AlertState.RESOLVED
    return replace(alert, state=state, closed_at=now, updated_at=now, note=note or alert.note)


def attach_position(alert: Alert, fix: LastFix, *, now: float) -> Alert:
    """Keep the newest position on the alert (positions may arrive out of order)."""
    if alert.last_fix is not None and alert.last_fix.taken_at >= fix.taken_at:
        return alert
    return replace(alert, last_fix=fix, updated_at=now)


def join(alert: Alert, alarm: Alert, *, now: float) -> Alert:
    """Count a further alarm of a device at its cap on its newest active alert: a duress
    alarm makes it duress, a newer position or battery level is kept."""
    fix = alert.last_fix
    if alarm.last_fix is not None and (fix is None or alarm.last_fix.taken_at > fix.taken_at):
        fix = alarm.last_fix
    return replace(
        alert,
        joined=alert.joined + 1,
        duress=alert.duress or alarm.duress,
        last_fix=fix,
        battery=alert.battery if alarm.battery is None else alarm.battery,
        updated_at=now,
    )


def may_broadcast(alert: Alert) -> bool:
    """Public broadcast only for an active alert an operator verified; never automatic."""
    return alert.active and alert.verified_at is not None


def operator_view(alert: Alert) -> str:
    """The state as operators see it: a duress cancel shows as DURESS."""
    if alert.duress and alert.active:
        return "DURESS"
    return alert.state.value


CAPTOR = "possibly sent by a captor"
_SENT = (AlertKind.ALARM, AlertKind.WITHHELD, AlertKind.CONFLICT)  # opened by a message


def from_captor(alert: Alert, device: DeviceRecord | None) -> bool:
    """Whether the alert was opened by a message of a compromised device after its
    compromise (its tamper alarm), which a captor holding its key may have sent."""
    return device is not None and alert.kind in _SENT and device.sent_by_captor(alert.opened_at)


def device_view(alert: Alert) -> str:
    """The state as the wearer's side sees it: a duress cancel looks cancelled."""
    if cancelled_for_the_wearer(alert):
        return AlertState.CANCELLED.value
    return alert.state.value


def cancelled_for_the_wearer(alert: Alert) -> bool:
    """Whether the wearer (and anyone holding the wearable) must see the alarm as cancelled:
    it was, or it was cancelled under duress, and then nothing more may reach the wearer."""
    return alert.state is AlertState.CANCELLED or (
        alert.duress and alert.trigger != Trigger.DURESS.value
    )
