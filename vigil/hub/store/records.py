"""Rows of the hub store as frozen dataclasses (no I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from vigil.wire.ids import DeviceId
from vigil.wire.keys import DevicePublicKeys


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    FALSE_ALARM = "false-alarm"
    CANCELLED = "cancelled"

    @property
    def closed(self) -> bool:
        return self in (AlertState.RESOLVED, AlertState.FALSE_ALARM, AlertState.CANCELLED)


class AlertKind(enum.StrEnum):
    ALARM = "alarm"  # raised by the wearer (button, tamper, missed check-in, duress)
    SILENT = "silent"  # raised by the hub: the device stopped talking
    DARK = "dark"  # the device went silent inside its risk window
    WITHHELD = "withheld"  # the device's own word names a message the hub never got
    CONFLICT = "conflict"  # two different messages signed with one (device, epoch, seq)

    @property
    def alarm_grade(self) -> bool:
        """Escalates like an alarm (every tier), not as a notice to the first tier."""
        return self is not AlertKind.SILENT


@dataclass(frozen=True, slots=True)
class LastFix:
    """A position as the hub knows it: where, when the fix was taken (hub clock)."""

    lat: float
    lon: float
    taken_at: float  # hub time of the fix: received_at - age (fix_time if no better)
    received_at: float

    def age(self, now: float) -> float:
        return max(0.0, now - self.taken_at)


@dataclass(slots=True)
class DeviceNote:
    """What a batch learned of one device, written with one UPDATE of its row at the end
    (`tx.devices.write_notes`), whatever the batch held from it. None keeps the stored value.
    """

    down_seq: int | None = None  # the last downlink seq given out
    last_seen: float | None = None
    alive_at: float | None = None  # the newest hub time its nonce echo proves (never back)
    battery: int | None = None
    gps_fix_at: float | None = None
    fix: LastFix | None = None  # kept only if taken no earlier than the stored one

    def report(self, *, battery: int | None = None, fix: LastFix | None = None,
               gps_fix_at: float | None = None) -> None:  # fmt: skip
        """A later message's word, as if written after the earlier ones."""
        self.battery = self.battery if battery is None else battery
        self.gps_fix_at = self.gps_fix_at if gps_fix_at is None else gps_fix_at
        if fix is not None and (self.fix is None or self.fix.taken_at <= fix.taken_at):
            self.fix = fix

    def proves_alive(self, at: float | None) -> None:
        if at is not None and (self.alive_at is None or self.alive_at < at):
            self.alive_at = at


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """An enrolled device with its keys, owner label, contacts and last known state."""

    device_id: DeviceId
    label: str
    public_keys: DevicePublicKeys
    contacts: tuple[str, ...] = ()
    enrolled_at: float = 0.0
    revoked_at: float | None = None
    last_seen: float | None = None
    battery: int | None = None
    last_fix: LastFix | None = None
    down_seq: int = -1
    offline_at: float | None = None  # Will received, not seen since
    gps_fix_at: float | None = None  # hub time of the device's last GPS fix (heartbeats)
    epoch: str | None = None  # the newest life of the device the hub has heard from
    alive_at: float | None = None  # the latest hub time the device's own word proves
    risk_until: float | None = None  # end of the wearer's risk window, if one is armed
    compromised_at: float | None = None  # hub time its tamper alarm was stored
    compromised_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def compromised(self) -> bool:
        """Its keys may be in a captor's hands: its later messages prove nothing."""
        return self.compromised_at is not None

    def sent_by_captor(self, received_at: float) -> bool:
        """Whether a message that arrived at `received_at` may have been sent by a captor."""
        return self.compromised_at is not None and received_at > self.compromised_at


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: an alarm from a wearer or a silent device, and what operators did."""

    id: int
    device_id: DeviceId
    kind: AlertKind
    state: AlertState
    opened_at: float
    updated_at: float
    alarm_seq: int | None = None
    alarm_epoch: str | None = None
    trigger: str | None = None
    duress: bool = False
    battery: int | None = None
    last_fix: LastFix | None = None
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    verified_at: float | None = None
    closed_at: float | None = None
    note: str | None = None
    joined: int = 0  # further alarms of a flooding device, joined to this alert

    @property
    def active(self) -> bool:
        """Still needs help: open or acknowledged (a duress cancel stays open)."""
        return not self.state.closed


@dataclass(frozen=True, slots=True)
class StoredUplink:
    """An accepted uplink as stored: its canonical payload and whether handlers ran."""

    device_id: DeviceId
    seq: int
    kind: str
    payload: bytes
    received_at: float
    processed: bool
    epoch: str = ""
    digest: str | None = None
    error: str | None = None  # why its handler failed (it stays stored; see `stats`)


@dataclass(frozen=True, slots=True)
class PendingDownlink:
    """A downlink with its persisted seq, waiting to be published."""

    id: int
    device_id: DeviceId
    seq: int
    kind: str
    arg: int
    created_at: float
    epoch: str | None = None  # the device's life the receipt answers
    digest: str | None = None  # the uplink it answers


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recipient of one escalation step of one alert (never two rows for the same)."""

    id: int
    alert_id: int
    step: str
    channel: str
    label: str
    url: str
    status: str  # pending | sent | failed | stopped (its alert closed first)
    attempts: int
    next_at: float | None
    last_error: str | None = None
    device_id: DeviceId | None = None  # the alert's device (filled in by `due`)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the append-only audit log, chained by hash to the previous one."""

    id: int
    at: float
    actor: str
    action: str
    subject: str
    detail: str
    prev_hash: str
    hash: str
