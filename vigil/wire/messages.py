"""Typed Vigil messages and their payload encoding (canonical JSON, strict decoding).

Uplink kinds (device -> hub): alarm, cancel, position, heartbeat, checkin.
Downlink kinds (hub -> device): stored, acknowledged, resolved, config.
Every message carries the sender's sequence number, its send time and where
that time came from (the Pi has no RTC). See docs/protocol.md §4. Kinds are
the `Kind` enum; code compares members (`message.kind is Kind.ALARM`), and
only the encoder and decoder see the strings.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias

from vigil.errors import MalformedMessage, UnknownKind
from vigil.wire.fix import MAX_TIME, AgedFix, check_float, check_int
from vigil.wire.liveness import Epoch, check_digest, check_nonce
from vigil.wire.rekey import KeyChunk
from vigil.wire.replay import MAX_SEQ

MAX_BATTERY = 100
MAX_SETTINGS = 32
MAX_TEXT = 64


class Direction(enum.IntEnum):
    UP = 1
    DOWN = 2


class Trigger(enum.StrEnum):
    BUTTON = "button"
    TAMPER = "tamper"
    MISSED_CHECKIN = "missed-checkin"
    DURESS = "duress"


class ClockSource(enum.StrEnum):
    """Where `sent_at` came from: NTP, the GPS, or nowhere yet (no RTC on the Pi)."""

    NTP = "ntp"
    GPS = "gps"
    UNSYNCED = "unsynced"


def _check_optional_int(name: str, value: object, low: int, high: int) -> None:
    if value is not None:
        check_int(name, value, low, high)


class Kind(enum.StrEnum):
    """Every message kind; its value is the `kind` string on the wire."""

    ALARM = "alarm"
    CANCEL = "cancel"
    POSITION = "position"
    HEARTBEAT = "heartbeat"
    CHECKIN = "checkin"
    STORED = "stored"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    CONFIG = "config"


@dataclass(frozen=True, slots=True)
class Alarm:
    """Help needed now. Carries the last fix (never waits for one) and the battery level."""

    KIND: ClassVar[Kind] = Kind.ALARM
    DIRECTION: ClassVar[Direction] = Direction.UP
    trigger: Trigger
    fix: AgedFix | None = None
    battery: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.trigger, Trigger):
            raise MalformedMessage(f"trigger must be one of {[t.value for t in Trigger]}")
        _check_optional_int("battery", self.battery, 0, MAX_BATTERY)


@dataclass(frozen=True, slots=True)
class Cancel:
    """The wearer cancels alarm `alarm_seq`; `duress` marks a cancel given under coercion."""

    KIND: ClassVar[Kind] = Kind.CANCEL
    DIRECTION: ClassVar[Direction] = Direction.UP
    alarm_seq: int
    duress: bool = False

    def __post_init__(self) -> None:
        check_int("alarm_seq", self.alarm_seq, 0, MAX_SEQ)
        if type(self.duress) is not bool:
            raise MalformedMessage(f"duress must be true or false, got {self.duress!r}")


@dataclass(frozen=True, slots=True)
class Position:
    """A follow-up position while alarm `alarm_seq` is active."""

    KIND: ClassVar[Kind] = Kind.POSITION
    DIRECTION: ClassVar[Direction] = Direction.UP
    alarm_seq: int
    fix: AgedFix

    def __post_init__(self) -> None:
        check_int("alarm_seq", self.alarm_seq, 0, MAX_SEQ)
        if not isinstance(self.fix, AgedFix):
            raise MalformedMessage("a position needs a fix")


class Mode(enum.StrEnum):
    """The device's alarm state, as its heartbeats report it to the hub (encrypted)."""

    IDLE = "idle"
    ACTIVE = "active"
    SILENT = "silent"


MAX_PENDING = 4095  # below the replay window: more could never all be accepted


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The device's own word on its state (docs/protocol.md §8).

    Battery %, the latest fix, link quality %, its alarm mode, and how many
    uplinks other than heartbeats wait for a `stored` (with the oldest seq), so
    that a hub which never saw that seq knows something is being withheld; and
    maybe one chunk of the device's next downlink key (`rekey`).
    """

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    DIRECTION: ClassVar[Direction] = Direction.UP
    battery: int | None = None
    fix: AgedFix | None = None
    signal: int | None = None
    mode: Mode = Mode.IDLE
    pending: int = 0
    oldest_pending: int | None = None
    rekey: KeyChunk | None = None  # a chunk of a new downlink key (docs/protocol.md §11.2)

    def __post_init__(self) -> None:
        if self.rekey is not None and not isinstance(self.rekey, KeyChunk):
            raise MalformedMessage("a heartbeat's rekey must be a key chunk or null")
        _check_optional_int("battery", self.battery, 0, MAX_BATTERY)
        if self.fix is not None and not isinstance(self.fix, AgedFix):
            raise MalformedMessage("a heartbeat's fix must be a fix object or null")
        _check_optional_int("signal", self.signal, 0, 100)
        if not isinstance(self.mode, Mode):
            raise MalformedMessage(f"mode must be one of {[m.value for m in Mode]}")
        check_int("pending", self.pending, 0, MAX_PENDING)
        _check_optional_int("oldest_pending", self.oldest_pending, 0, MAX_SEQ)
        if (self.pending == 0) != (self.oldest_pending is None):
            raise MalformedMessage("oldest_pending is given exactly when pending is not 0")


@dataclass(frozen=True, slots=True)
class Checkin:
    """The wearer checked in on time (the check-in gesture)."""

    KIND: ClassVar[Kind] = Kind.CHECKIN
    DIRECTION: ClassVar[Direction] = Direction.UP


@dataclass(frozen=True, slots=True)
class Stored:
    """The hub has uplink `seq` (the one with `digest`) on disk: the device may drop it."""

    KIND: ClassVar[Kind] = Kind.STORED
    DIRECTION: ClassVar[Direction] = Direction.DOWN
    seq: int
    digest: str  # of the uplink this answers (vigil.wire.liveness.uplink_digest)

    def __post_init__(self) -> None:
        check_int("seq", self.seq, 0, MAX_SEQ)
        check_digest(self.digest)


@dataclass(frozen=True, slots=True)
class _AlarmAnswer:
    """News about alarm `alarm_seq`, naming it by the digest of the uplink that raised it."""

    DIRECTION: ClassVar[Direction] = Direction.DOWN
    alarm_seq: int
    digest: str  # of the alarm uplink (vigil.wire.liveness.uplink_digest)

    def __post_init__(self) -> None:
        check_int("alarm_seq", self.alarm_seq, 0, MAX_SEQ)
        check_digest(self.digest)


@dataclass(frozen=True, slots=True)
class Acknowledged(_AlarmAnswer):
    """A human responder took alarm `alarm_seq`: help is on the way."""

    KIND: ClassVar[Kind] = Kind.ACKNOWLEDGED


@dataclass(frozen=True, slots=True)
class Resolved(_AlarmAnswer):
    """Alarm `alarm_seq` is closed: stop sending follow-up positions."""

    KIND: ClassVar[Kind] = Kind.RESOLVED


Setting: TypeAlias = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Config:
    """New device settings (flat name -> value); the device validates names and ranges."""

    KIND: ClassVar[Kind] = Kind.CONFIG
    DIRECTION: ClassVar[Direction] = Direction.DOWN
    settings: Mapping[str, Setting] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.settings, Mapping) or len(self.settings) > MAX_SETTINGS:
            raise MalformedMessage(f"settings must be a mapping of at most {MAX_SETTINGS} items")
        for key, value in self.settings.items():
            if not isinstance(key, str) or not 0 < len(key) <= MAX_TEXT:
                raise MalformedMessage(f"setting names are 1..{MAX_TEXT} characters: {key!r}")
            ok_number = type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
            ok_text = isinstance(value, str) and len(value) <= MAX_TEXT
            if not (type(value) is bool or ok_number or ok_text):
                raise MalformedMessage(f"setting {key!r} has an unsupported value {value!r}")
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))


UplinkBody: TypeAlias = Alarm | Cancel | Position | Heartbeat | Checkin
DownlinkBody: TypeAlias = Stored | Acknowledged | Resolved | Config
Body: TypeAlias = UplinkBody | DownlinkBody

UPLINK_KINDS: dict[Kind, type[UplinkBody]] = {
    k.KIND: k for k in (Alarm, Cancel, Position, Heartbeat, Checkin)
}
DOWNLINK_KINDS: dict[Kind, type[DownlinkBody]] = {
    k.KIND: k for k in (Stored, Acknowledged, Resolved, Config)
}


@dataclass(frozen=True, slots=True)
class Message:
    """One message: seq, send time, the device's epoch, the nonce, and the typed body.

    `epoch` is the device's current life (docs/protocol.md §7): the sender's in
    an uplink, the addressed one in a downlink. `nonce` is fresh from the hub in
    a downlink (never None there) and the device's echo of the newest one in an
    uplink (None until it has one).
    """

    seq: int
    body: Body
    sent_at: float | None = None
    clock: ClockSource = ClockSource.UNSYNCED
    epoch: Epoch = field(kw_only=True)
    nonce: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        check_int("seq", self.seq, 0, MAX_SEQ)
        if not isinstance(self.epoch, Epoch):
            raise MalformedMessage(f"epoch must be an Epoch, got {type(self.epoch).__name__}")
        if self.nonce is not None:
            check_nonce(self.nonce)
        elif self.body.DIRECTION is Direction.DOWN:
            raise MalformedMessage("a downlink carries a fresh nonce")
        if self.sent_at is not None:
            check_float("sent_at", self.sent_at, 0.0, MAX_TIME)
        if not isinstance(self.clock, ClockSource):
            raise MalformedMessage(f"clock must be one of {[c.value for c in ClockSource]}")
        if (self.sent_at is None) != (self.clock is ClockSource.UNSYNCED):
            raise MalformedMessage("sent_at is given exactly when the clock is synchronised")

    @property
    def direction(self) -> Direction:
        return self.body.DIRECTION

    @property
    def kind(self) -> Kind:
        return self.body.KIND


# -- encoding ----------------------------------------------------------------------


def _body_to_json(body: Body) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(body):
        name, value = f.name, getattr(body, f.name)
        if isinstance(value, AgedFix):
            value = value.to_json()
        elif isinstance(value, KeyChunk):
            value = value.to_text()
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, Mapping):
            value = dict(value)
        out[name] = value
    return out


def encode_payload(message: Message) -> bytes:
    """Canonical JSON: compact, sorted keys, UTF-8, no NaN."""
    doc = {
        "kind": message.kind.value,
        "seq": message.seq,
        "sent_at": message.sent_at,
        "clock": message.clock.value,
        "epoch": message.epoch.hex,
        "nonce": message.nonce,
        "body": _body_to_json(message.body),
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise MalformedMessage(f"payload holds a non-finite number: {name}")


def _exact_keys(where: str, doc: object, keys: set[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise MalformedMessage(f"{where} must be an object")
    if set(doc) != keys:
        raise MalformedMessage(f"{where} must have exactly the keys {sorted(keys)}")
    return doc


def _body_from_json(cls: type[Body], doc: object) -> Body:
    values = _exact_keys(f"{cls.KIND} body", doc, {f.name for f in fields(cls)})
    if values.get("fix") is not None:
        values["fix"] = AgedFix.from_json(values["fix"])
    if values.get("rekey") is not None:
        values["rekey"] = KeyChunk.parse(values["rekey"])
    if "mode" in values:
        try:
            values["mode"] = Mode(values["mode"])
        except ValueError as exc:
            raise MalformedMessage(f"unknown mode {values['mode']!r}") from exc
    if "trigger" in values:
        try:
            values["trigger"] = Trigger(values["trigger"])
        except ValueError as exc:
            raise MalformedMessage(f"unknown trigger {values['trigger']!r}") from exc
    return cls(**values)


def decode_payload(data: bytes, direction: Direction) -> Message:
    """Parse a payload made by `encode_payload`; raise `MalformedMessage` on anything else."""
    up = direction is Direction.UP
    kinds: Mapping[Kind, type[Body]] = UPLINK_KINDS if up else DOWNLINK_KINDS
    try:
        doc = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedMessage(f"payload is not UTF-8 JSON: {exc}") from exc
    top = _exact_keys("message", doc, _MESSAGE_KEYS)
    try:
        cls = kinds.get(Kind(top["kind"]))
    except (ValueError, TypeError):  # not a kind at all, or not even a string
        cls = None
    if cls is None:
        raise UnknownKind(f"unknown {direction.name.lower()}link kind {top['kind']!r}")
    try:
        clock = ClockSource(top["clock"])
    except ValueError as exc:
        raise MalformedMessage(f"unknown clock source {top['clock']!r}") from exc
    try:
        body = _body_from_json(cls, top["body"])
    except TypeError as exc:  # a dataclass given a value it cannot hold
        raise MalformedMessage(f"bad {cls.KIND} body: {exc}") from exc
    epoch = Epoch.parse(top["epoch"])
    return Message(
        seq=top["seq"], body=body, sent_at=top["sent_at"], clock=clock, epoch=epoch,
        nonce=top["nonce"],
    )  # fmt: skip


_MESSAGE_KEYS = {"kind", "seq", "sent_at", "clock", "epoch", "nonce", "body"}
