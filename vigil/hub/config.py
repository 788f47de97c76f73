"""Load the hub's TOML config into one frozen `HubConfig`, naming key and file on error.

    [hub]      keys, silent_after (s without traffic => device-silent alert),
               map_url (template with {lat} and {lon}, no other placeholder: checked at load),
               max_active_alerts_per_device (further alarms join the newest active alert),
               max_notices_per_device_per_minute (a flooding device's notices wait their turn)
    [store]    url ("sqlite:///rel.db", "sqlite:////abs.db" or "postgresql://..."),
               receipt_retention (s a sent receipt is kept; default 7 days)
    [mqtt]     host, port, client_id, tls_ca, username, password_file, shared_group, keepalive
    [broker]   device_host, device_port, ca_file, password_file   (read by provisioning)
    [escalation] retry_attempts, retry_backoff, retry_max
    [[escalation.tiers]] name, delay (s after the alert opened), channels, radius_km
               (channel "contacts" = the wearer's own contacts from the registry)
    [channels.<name>] urls = [...] and/or [[channels.<name>.recipients]] label, url, lat, lon;
               public = true marks a public broadcast channel (only sent after verification)
    [audit]    anchor_file (default: audit-anchors.txt beside the keys), checkpoint_every
               (entries), checkpoint_interval (s)

Read with vigil.runtime.config: errors name the file and the dotted key, unknown keys are
typos. Relative paths (and a relative SQLite path) are resolved against the config file's
folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from types import MappingProxyType

from vigil.hub.audit import CheckpointPolicy
from vigil.runtime.config import REQUIRED, MqttConfig, Table, load_toml

DEFAULT_MAP_URL = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"
MAP_PLACEHOLDERS = ("lat", "lon")  # what vigil.hub.channels.compose passes to map_url.format
RECEIPT_RETENTION = 7 * 86400.0  # s a sent receipt is kept before the timer prunes it


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """What provisioning needs to let a new device onto the broker."""

    device_host: str
    device_port: int = 8883
    ca_file: Path | None = None
    password_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    """One person or endpoint an alert can reach, as an Apprise URL."""

    label: str
    url: str
    lat: float | None = None
    lon: float | None = None

    def __post_init__(self) -> None:
        if not self.label or not self.url or "://" not in self.url:
            raise ValueError(
                f"recipient needs a label and a URL like 'scheme://...': {self.url!r}"
            )
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon of a recipient, or neither")


@dataclass(frozen=True, slots=True)
class Channel:
    """A named group of recipients; `public` ones are never sent automatically."""

    name: str
    recipients: tuple[Recipient, ...]
    public: bool = False


@dataclass(frozen=True, slots=True)
class Tier:
    """One escalation step: notify `channels` `delay` seconds after the alert opened."""

    name: str
    delay: float
    channels: tuple[str, ...]
    radius_km: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {self.delay!r}")
        if not self.channels:
            raise ValueError("a tier needs at least one channel")
        if self.radius_km is not None and not self.radius_km > 0:
            raise ValueError("radius_km must be > 0")


@dataclass(frozen=True, slots=True)
class EscalationConfig:
    """Tiers in order of delay, and how failed deliveries are retried."""

    tiers: tuple[Tier, ...] = ()
    retry_attempts: int = 5
    retry_backoff: float = 2.0
    retry_max: float = 300.0

    def __post_init__(self) -> None:
        if not 1 <= self.retry_attempts <= 100:
            raise ValueError("retry_attempts must be in 1..100")
        if not 0 < self.retry_backoff <= self.retry_max:
            raise ValueError("need 0 < retry_backoff <= retry_max")
        delays = [t.delay for t in self.tiers]
        if delays != sorted(delays):
            raise ValueError("tiers must be listed in order of delay")


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Where signed heads of the audit log are anchored, and how often the hub signs."""

    anchor_file: Path | None = None
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    """What one device may cost the hub: a seized device flooding alarms must not bury
    another device's genuine alarm."""

    max_active_alerts: int = 5
    notices_per_minute: int = 30

    def __post_init__(self) -> None:
        if not 1 <= self.max_active_alerts <= 1000:
            raise ValueError("max_active_alerts_per_device must be in 1..1000")
        if not 1 <= self.notices_per_minute <= 100_000:
            raise ValueError("max_notices_per_device_per_minute must be in 1..100000")


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Everything the hub needs, validated; `path` is the file it came from."""

    path: Path
    keys_path: Path
    store_url: str
    mqtt: MqttConfig
    broker: BrokerConfig
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    channels: Mapping[str, Channel] = field(default_factory=dict)
    silent_after: float = 600.0
    risk_silent_after: float = 180.0  # the deadline inside a wearer's risk window
    map_url: str = DEFAULT_MAP_URL
    audit: AuditConfig = field(default_factory=AuditConfig)
    limits: DeviceLimits = field(default_factory=DeviceLimits)
    receipt_retention: float = RECEIPT_RETENTION


def load_config(path: Path) -> HubConfig:
    """Read and validate the hub config at `path`; raise a `ConfigError` naming key and file."""
    top = load_toml(path)
    hub = top.table("hub", required=True)
    channels = _channels(top.table("channels"))
    keys_path = hub.path("keys")
    store = top.table("store", required=True)
    config = HubConfig(
        path=top.file,
        keys_path=keys_path,
        store_url=_store_url(store),
        receipt_retention=store.number(
            "receipt_retention", RECEIPT_RETENTION, low=60, high=10 * 365 * 86400
        ),
        mqtt=MqttConfig.read(top.table("mqtt", required=True), client_id="vigil-hub", shared=True),
        broker=_broker(top.table("broker")),
        escalation=_escalation(top.table("escalation"), channels),
        channels=MappingProxyType(channels),
        silent_after=hub.number("silent_after", 600.0, above=0),
        risk_silent_after=hub.number("risk_silent_after", 180.0, above=0),
        map_url=_map_url(hub),
        audit=_audit(top.table("audit"), keys_path.parent / "audit-anchors.txt"),
        limits=DeviceLimits(
            max_active_alerts=hub.integer("max_active_alerts_per_device", 5, low=1, high=1000),
            notices_per_minute=hub.integer(
                "max_notices_per_device_per_minute", 30, low=1, high=100_000
            ),
        ),
    )
    top.check_unknown()
    return config


def _map_url(hub: Table) -> str:
    """Refuse at load a template that `str.format(lat=..., lon=...)` would fail on at delivery."""
    url = hub.text("map_url", DEFAULT_MAP_URL)
    allowed = " and ".join(f"{{{name}}}" for name in MAP_PLACEHOLDERS)
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in Formatter().parse(url) if f is not None]
    except ValueError as exc:  # an unmatched brace
        raise hub.fail(
            "map_url", f"is not a template: {exc}; write a literal brace as {{{{"
        ) from exc
    for name, spec, conversion in fields:
        if name not in MAP_PLACEHOLDERS or spec or conversion:
            shown = (
                "{"
                + name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise hub.fail(
                "map_url", f"has the placeholder {shown}; the allowed ones are {allowed}"
            )
    if {name for name, _, _ in fields} != set(MAP_PLACEHOLDERS):
        raise hub.fail("map_url", f"must contain {allowed}, got {url!r}")
    return url


def _store_url(s: Table) -> str:
    url = s.text("url")
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        if not rest:
            raise s.fail("url", "names no database file")
        p = Path(rest) if rest.startswith("/") else (s.file.parent / rest).resolve()
        return f"sqlite:///{p}"
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise s.fail("url", f"must start with sqlite:/// or postgresql://, got {url!r}")


def _audit(s: Table, default_anchor: Path) -> AuditConfig:
    every = s.integer("checkpoint_every", 100, low=1, high=1_000_000)
    interval = s.number("checkpoint_interval", 300.0)
    try:
        policy = CheckpointPolicy(every, interval)
    except ValueError as exc:
        raise s.fail("checkpoint_interval", str(exc)) from exc
    return AuditConfig(s.path("anchor_file", None) or default_anchor, policy)


def _broker(s: Table) -> BrokerConfig:
    return BrokerConfig(
        device_host=s.text("device_host", "127.0.0.1"),
        device_port=s.integer("device_port", 8883, low=1, high=65535),
        ca_file=s.path("ca_file", None),
        password_file=s.path("password_file", None),
    )


def _channels(s: Table) -> dict[str, Channel]:
    out: dict[str, Channel] = {}
    for name, c in s.subtables().items():
        # A bare URL may hold tokens: label it by channel and scheme, never by the URL.
        recipients = [
            Recipient(label=f"{name} #{i + 1} ({u.split('://', 1)[0]})", url=u)
            for i, u in enumerate(_urls(c, "urls"))
        ]
        recipients += [_recipient(r) for r in c.tables("recipients")]
        if not recipients:
            raise c.fail("urls", "is missing: a channel needs at least one URL or recipient")
        out[name] = Channel(name, tuple(recipients), public=c.boolean("public", False))
    return out


def _recipient(r: Table) -> Recipient:
    label, url = r.text("label"), _urls(r, "url")[0]
    lat = r.number("lat", None, low=-90, high=90)
    lon = r.number("lon", None, low=-180, high=180)
    if (lat is None) != (lon is None):
        raise r.fail(
            "lon" if lon is None else "lat", "is missing: give both lat and lon, or neither"
        )
    return Recipient(label=label, url=url, lat=lat, lon=lon)


def _urls(s: Table, name: str) -> tuple[str, ...]:
    """Apprise URLs: a list under `urls`, one string under `url`."""
    values = s.strings(name) if name == "urls" else (s.text(name),)
    for v in values:
        if "://" not in v:
            raise s.fail(name, f"holds {v!r:.60}, not a URL like 'scheme://...'")
    return values


def _escalation(s: Table, channels: Mapping[str, Channel]) -> EscalationConfig:
    tiers: list[Tier] = []
    for i, t in enumerate(s.tables("tiers")):
        names = t.strings("channels", default=REQUIRED)
        if not names:
            raise t.fail("channels", "is empty: a tier needs at least one channel")
        for n in names:
            if n == "contacts" and n not in channels:
                continue  # the wearer's own contacts, from the device registry
            if n not in channels:
                raise t.fail("channels", f"names channel {n!r}, which [channels] does not define")
            if channels[n].public:
                raise t.fail(
                    "channels", f"names {n!r}, which is public: sent only after verification"
                )
        delay = t.number("delay", 0.0, low=0)
        if tiers and delay < tiers[-1].delay:
            raise t.fail(
                "delay", f"{delay:g} is before the previous tier's: list tiers in order of delay"
            )
        radius = t.number("radius_km", None, above=0)
        tiers.append(Tier(t.text("name", f"tier {i + 1}"), delay, names, radius))
    retry_max = s.number("retry_max", 300.0, above=0, high=86400)
    return EscalationConfig(
        tiers=tuple(tiers),
        retry_attempts=s.integer("retry_attempts", 5, low=1, high=100),
        retry_backoff=s.number("retry_backoff", 2.0, above=0, high=retry_max),
        retry_max=retry_max,
    )
