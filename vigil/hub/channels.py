"""Responder channels: the text a responder needs, and delivery through Apprise with retries.

Apprise turns one URL per recipient into email, Signal, Telegram, SMS
gateways, webhooks and the rest it supports. Every attempt is stored with its
result; a failure is retried with exponential backoff up to
`[escalation] retry_attempts`; the store never plans one URL twice for one step.
"""

from __future__ import annotations

import logging
import random
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from vigil.hub.alerts import operator_view
from vigil.hub.config import EscalationConfig
from vigil.hub.store import Alert, AlertKind, Delivery, DeviceRecord, Store, Transaction
from vigil.runtime.backoff import backoff_delay

if sys.version_info < (3, 13):  # pragma: no branch
    # Apprise's email plugin imports the deprecated `imghdr`; import it first, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import imghdr  # noqa: F401

import apprise

_LOG = logging.getLogger(__name__)
CLAIM_LEASE = 120.0  # s a hub holds a delivery it is sending; then another may retry it

_TRIGGERS = {
    "button": "panic button held",
    "tamper": "wearable torn off (tamper loop opened)",
    "missed-checkin": "missed check-in",
    "duress": "duress signal",
    "device-silent": "device went silent",
    "went-dark": "device went silent inside its risk window",
    "withheld": "a message from the device is being withheld",
    "conflict": "two different messages signed under one seq: the device key may be cloned",
}


@dataclass(frozen=True, slots=True)
class Notice:
    """A message for responders."""

    title: str
    body: str


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float) -> str:
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


_HEADS = {
    AlertKind.ALARM: "ALARM",
    AlertKind.SILENT: "SILENT",
    AlertKind.DARK: "WENT DARK",  # silent inside the wearer's risk window
    AlertKind.WITHHELD: "WITHHELD",  # the device says it sent what never arrived
    AlertKind.CONFLICT: "CLONED KEY?",  # two messages signed under one seq
}


def compose(
    alert: Alert, device: DeviceRecord, *, now: float, map_url: str, step: str = ""
) -> Notice:
    """Say who, what, when, where (with a map link and the position's age) and battery."""
    trigger = _TRIGGERS.get(alert.trigger or "", alert.trigger or "unknown")
    state = operator_view(alert)
    head = "DURESS" if state == "DURESS" else _HEADS[alert.kind]
    needs = " needs help" if head in ("ALARM", "DURESS") else ""
    lines = [
        f"{head}: {device.label}{needs}",
        f"Trigger: {trigger}",
        f"Time: {_when(alert.opened_at)}",
    ]
    if alert.duress:
        lines.append("The wearer was made to cancel: act, and do not reveal the alarm to them.")
    fix = alert.last_fix
    if fix is None:
        lines.append("Position: unknown (no GPS fix yet)")
    else:
        link = map_url.format(lat=f"{fix.lat:.6f}", lon=f"{fix.lon:.6f}")
        lines.append(f"Position: {fix.lat:.6f}, {fix.lon:.6f} ({_age(fix.age(now))} old)")
        lines.append(f"Map: {link}")
    battery = alert.battery if alert.battery is not None else device.battery
    lines.append(f"Battery: {'unknown' if battery is None else f'{battery}%'}")
    lines.append(f"Alert {alert.id} ({state}){f', step: {step}' if step else ''}.")
    lines.append(f"Acknowledge: vigil-hub ack {alert.id}")
    title = f"[Vigil] {head} {device.label}: {trigger}"
    return Notice(title, "\n".join(lines))


def accepts_url(url: str) -> bool:
    """Whether Apprise can notify `url` at all (a contact it refuses would reach nobody)."""
    return bool(apprise.Apprise().add(url))


class Notifier(Protocol):
    """Sends one notice to one URL; returns (delivered?, detail)."""

    def send(self, url: str, notice: Notice) -> tuple[bool, str]: ...


class AppriseNotifier:
    """A `Notifier` backed by Apprise."""

    def send(self, url: str, notice: Notice) -> tuple[bool, str]:
        sender = apprise.Apprise()
        if not sender.add(url):
            return False, "Apprise does not accept this URL (check the channel config)"
        with apprise.LogCapture(level=logging.WARNING) as captured:  # type: ignore[no-untyped-call]
            ok = sender.notify(
                title=notice.title, body=notice.body, body_format=apprise.NotifyFormat.TEXT
            )
        log = captured.getvalue().strip().splitlines()
        detail = log[-1].split(" - ", 2)[-1] if log else ("delivered" if ok else "failed")
        return bool(ok), detail[:500]


def deliver_due(
    store: Store,
    notifier: Notifier,
    *,
    policy: EscalationConfig,
    map_url: str,
    now: float,
    actor: str = "hub",
    rand: Callable[[], float] = random.random,
) -> int:
    """Try every delivery that is due; store each attempt; return how many were tried.

    No transaction is open while a channel is sending: a slow server holds up
    nobody's writes. Claiming a delivery and recording its attempt (with its
    audit entry) are each one transaction. A failed attempt is retried after
    a jittered backoff; `rand` draws the jitter.
    """
    with store.read() as tx:
        due = tx.deliveries.due(now)
    for d in due:
        with store.transaction() as tx:
            if not tx.deliveries.claim(d.id, now=now, lease=CLAIM_LEASE):
                continue  # another hub instance took it
            alert = tx.alerts.get(d.alert_id)
            device = tx.devices.get(alert.device_id)
        if device is None:  # pragma: no cover - alerts reference enrolled devices
            continue
        notice = compose(alert, device, now=now, map_url=map_url, step=d.step)
        try:
            ok, detail = notifier.send(d.url, notice)
        except Exception as exc:  # a channel plugin bug must not stop the others
            _LOG.exception("delivery %s to %s crashed", d.id, d.label)
            ok, detail = False, f"crashed: {type(exc).__name__}"
        with store.transaction() as tx:
            next_at = _retry_at(d, ok=ok, policy=policy, now=now, rand=rand)
            _record(tx, d, ok=ok, detail=detail, next_at=next_at, now=now, actor=actor)
    return len(due)


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
