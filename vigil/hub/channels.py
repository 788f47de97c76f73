"""Responder channels: the text a responder needs, and delivery through Apprise with retries.

Apprise turns one URL per recipient into email, Signal, Telegram, SMS
gateways, webhooks and the rest it supports. `vigil.hub.delivery` sends the
notices (in parallel, each one contained), stores every attempt and retries.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from vigil.errors import BadConfigValue
from vigil.hub.alerts import CAPTOR, from_captor, operator_view
from vigil.hub.config import Channel
from vigil.hub.escalation import FLOOD_STEP
from vigil.hub.store import Alert, AlertKind, DeviceRecord

if sys.version_info < (3, 13):  # pragma: no branch
    # Apprise's email plugin imports the deprecated `imghdr`; import it first, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import imghdr  # noqa: F401

import apprise

_LOG = logging.getLogger(__name__)

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
    if from_captor(alert, device):
        since = _when(device.compromised_at or 0.0)
        lines.append(f"WARNING: {CAPTOR}: this device reported tampering at {since}; "
                     "its key may be in other hands.")  # fmt: skip
    if step == FLOOD_STEP:
        lines.append(
            f"FLOOD: {alert.joined} further alarms from this device joined this alert "
            "(it reached its cap of active alerts). Seized? Consider revoking it."
        )
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
    """Whether Apprise can notify `url` at all (a contact it refuses would reach nobody).

    Apprise's own complaint about a URL it refuses is not logged: it quotes the URL, and a
    URL may hold a token (callers name the recipient instead). Called before the hub's
    workers start, or by the CLI, so no other thread's Apprise log is silenced meanwhile.
    """
    log = apprise.logger  # the logger Apprise logs to
    quiet, log.disabled = log.disabled, True
    try:
        return bool(apprise.Apprise().add(url))
    finally:
        log.disabled = quiet


def refuse_unreachable(channels: Iterable[Channel]) -> None:
    """Raise `BadConfigValue` for the first recipient whose URL Apprise cannot notify.

    Run as the hub starts: a channel that would reach nobody is a config error found
    before the first alarm, not at it. It also has Apprise load its plugins now (a third
    of a second here) rather than in front of the first alarm's notices.
    """
    for channel in channels:
        for r in channel.recipients:
            if not accepts_url(r.url):  # the label, never the URL: it may hold tokens
                raise BadConfigValue(
                    f"[channels.{channel.name}] {r.label}: Apprise does not accept this URL "
                    "(check its scheme and parameters)"
                )


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
