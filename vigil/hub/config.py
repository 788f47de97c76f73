"""Load the hub's TOML config into one frozen `HubConfig`, naming key and file on error.

    [hub]      keys, silent_after (s without traffic => device-silent alert),
               map_url (template with {lat} {lon})
    [store]    url ("sqlite:///rel.db", "sqlite:////abs.db" or "postgresql://...")
    [mqtt]     host, port, client_id, tls_ca, username, password_file, shared_group, keepalive
    [broker]   device_host, device_port, ca_file, password_file   (read by provisioning)
    [escalation] retry_attempts, retry_backoff, retry_max
    [[escalation.tiers]] name, delay (s after the alert opened), channels, radius_km
               (channel "contacts" = the wearer's own contacts from the registry)
    [channels.<name>] urls = [...] and/or [[channels.<name>.recipients]] label, url, lat, lon;
               public = true marks a public broadcast channel (only sent after verification)
    [audit]    anchor_file (default: audit-anchors.txt beside the keys), checkpoint_every
               (entries), checkpoint_interval (s)

Relative paths (and a relative SQLite path) are resolved against the config file's folder.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vigil.errors import BadConfigValue, ConfigError, KeyFileError, MissingConfigValue
from vigil.hub.audit import CheckpointPolicy
from vigil.runtime.mqtt import MqttSettings
from vigil.wire.keys import check_private_file

DEFAULT_MAP_URL = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """How the hub reaches the broker."""

    host: str
    port: int = 8883
    client_id: str = "vigil-hub"
    tls_ca: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    shared_group: str | None = None
    keepalive: int = 30

    def settings(self) -> MqttSettings:
        """Build vigil.runtime.mqtt settings, reading the password file if there is one."""
        password = None
        if self.password_file is not None:
            try:
                check_private_file(self.password_file)  # a secret: 0600 like the keys
                password = self.password_file.read_text().strip()
            except KeyFileError as exc:
                raise type(exc)(f"mqtt.password_file: {exc}") from exc
            except OSError as exc:
                raise BadConfigValue(
                    f"mqtt.password_file: cannot read {self.password_file}: {exc}"
                ) from exc
        return MqttSettings(
            host=self.host,
            port=self.port,
            client_id=self.client_id,
            username=self.username,
            password=password,
            tls_ca=self.tls_ca,
            keepalive=self.keepalive,
        )


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
    map_url: str = DEFAULT_MAP_URL
    audit: AuditConfig = field(default_factory=AuditConfig)


class _Section:
    """A TOML table with typed getters whose errors name the key and the file."""

    def __init__(
        self, doc: Mapping[str, Any], where: str, path: Path, parent: _Section | None = None
    ) -> None:
        self.doc, self.where, self.path = doc, where, path
        self.seen: set[str] = set()
        self.children: list[_Section] = []
        if parent is not None:
            parent.children.append(self)

    def unknown_keys(self) -> list[str]:
        """Keys in the file that nothing read: typos, which must not pass silently."""
        found = [self.key(k) for k in self.doc if k not in self.seen]
        for child in self.children:
            found += child.unknown_keys()
        return found

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, problem: str) -> BadConfigValue:
        return BadConfigValue(f"{self.path}: {self.key(name)}: {problem}")

    def raw(self, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.seen.add(name)
        if name not in self.doc:
            if default is _REQUIRED:
                raise MissingConfigValue(f"{self.path}: {self.key(name)} is required")
            return default
        value = self.doc[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(name, f"must be {names}, got {value!r:.60}")
        return value

    def text(self, name: str, default: Any = None) -> Any:
        value = self.raw(name, str, default)
        if value is not None and not value.strip():
            raise self.fail(name, "must not be empty")
        return value

    def integer(self, name: str, default: Any, low: int, high: int) -> Any:
        value = self.raw(name, int, default)
        if value is not None and not low <= value <= high:
            raise self.fail(name, f"must be in {low}..{high}, got {value}")
        return value

    def number(self, name: str, default: Any) -> Any:
        value = self.raw(name, (int, float), default)
        if isinstance(value, bool) or (value is not None and not math.isfinite(value)):
            raise self.fail(name, f"must be a finite number, got {value!r}")
        return None if value is None else float(value)

    def path_(self, name: str, default: Any = None) -> Any:
        value = self.text(name, default)
        if value is None or isinstance(value, Path):
            return value
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def table(self, name: str, *, required: bool = False) -> _Section:
        value = self.raw(name, dict, _REQUIRED if required else {})
        return _Section(value, self.key(name), self.path, self)


_REQUIRED = object()


def load_config(path: Path) -> HubConfig:
    """Read and validate the hub config at `path`."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"hub config {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read hub config {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BadConfigValue(f"{path}: not valid TOML: {exc}") from exc
    top = _Section(doc, "", path)
    hub = top.table("hub", required=True)
    channels = _channels(top.table("channels"))
    escalation = _escalation(top.table("escalation"), channels)
    map_url = hub.text("map_url", DEFAULT_MAP_URL)
    if "{lat}" not in map_url or "{lon}" not in map_url:
        raise hub.fail("map_url", "must contain {lat} and {lon}")
    silent_after = hub.number("silent_after", 600.0)
    if not silent_after > 0:
        raise hub.fail("silent_after", "must be > 0 seconds")
    keys_path = hub.path_("keys", _REQUIRED)
    config = HubConfig(
        path=path,
        keys_path=keys_path,
        store_url=_store_url(top.table("store", required=True)),
        mqtt=_mqtt(top.table("mqtt", required=True)),
        broker=_broker(top.table("broker")),
        escalation=escalation,
        channels=MappingProxyType(channels),
        silent_after=silent_after,
        map_url=map_url,
        audit=_audit(top.table("audit"), keys_path.parent / "audit-anchors.txt"),
    )
    unknown = top.unknown_keys()
    if unknown:
        raise BadConfigValue(f"{path}: unknown key {unknown[0]} (a typo?)")
    return config


def _store_url(s: _Section) -> str:
    url: str = s.text("url", _REQUIRED)
    if url.startswith("sqlite:///"):
        rest = url.removeprefix("sqlite:///")
        if not rest:
            raise s.fail("url", "names no database file")
        p = Path(rest) if rest.startswith("/") else (s.path.parent / rest).resolve()
        return f"sqlite:///{p}"
    if url.startswith(("postgresql://", "postgres://")):
        return url
    raise s.fail("url", f"must start with sqlite:/// or postgresql://, got {url!r}")


def _mqtt(s: _Section) -> MqttConfig:
    group = s.text("shared_group")
    if group is not None and any(c in group for c in "/+#"):
        raise s.fail("shared_group", "must not contain '/', '+' or '#'")
    return MqttConfig(
        host=s.text("host", _REQUIRED),
        port=s.integer("port", 8883, 1, 65535),
        client_id=s.text("client_id", "vigil-hub"),
        tls_ca=s.path_("tls_ca"),
        username=s.text("username"),
        password_file=s.path_("password_file"),
        shared_group=group,
        keepalive=s.integer("keepalive", 30, 5, 3600),
    )


def _audit(s: _Section, default_anchor: Path) -> AuditConfig:
    every = s.integer("checkpoint_every", 100, 1, 1_000_000)
    interval = s.number("checkpoint_interval", 300.0)
    try:
        policy = CheckpointPolicy(every, interval)
    except ValueError as exc:
        raise s.fail("checkpoint_interval", str(exc)) from exc
    return AuditConfig(s.path_("anchor_file") or default_anchor, policy)


def _broker(s: _Section) -> BrokerConfig:
    return BrokerConfig(
        device_host=s.text("device_host", "127.0.0.1"),
        device_port=s.integer("device_port", 8883, 1, 65535),
        ca_file=s.path_("ca_file"),
        password_file=s.path_("password_file"),
    )


def _channels(s: _Section) -> dict[str, Channel]:
    out: dict[str, Channel] = {}
    for name in s.doc:
        c = s.table(name)
        # A bare URL may hold tokens: label it by channel and scheme, never by the URL.
        recipients = [
            Recipient(label=f"{name} #{i + 1} ({u.split('://', 1)[0]})", url=u)
            for i, u in enumerate(_strings(c, "urls"))
        ]
        for i, item in enumerate(c.raw("recipients", list, [])):
            r = _Section(
                item if isinstance(item, dict) else {}, f"{c.key('recipients')}[{i}]", s.path, c
            )
            try:
                recipients.append(
                    Recipient(
                        label=r.text("label", _REQUIRED),
                        url=r.text("url", _REQUIRED),
                        lat=r.number("lat", None),
                        lon=r.number("lon", None),
                    )
                )
            except ValueError as exc:
                if isinstance(exc, ConfigError):
                    raise
                raise r.fail("url", str(exc)) from exc
        if not recipients:
            raise c.fail("urls", "a channel needs at least one URL or recipient")
        out[name] = Channel(name, tuple(recipients), public=c.raw("public", bool, False))
    return out


def _strings(s: _Section, name: str) -> list[str]:
    values = s.raw(name, list, [])
    for v in values:
        if not isinstance(v, str) or "://" not in v:
            raise s.fail(name, f"holds {v!r:.60}, not a URL like 'scheme://...'")
    return list(values)


def _escalation(s: _Section, channels: Mapping[str, Channel]) -> EscalationConfig:
    tiers = []
    for i, item in enumerate(s.raw("tiers", list, [])):
        t = _Section(item if isinstance(item, dict) else {}, f"{s.key('tiers')}[{i}]", s.path, s)
        names = t.raw("channels", list, _REQUIRED)
        for n in names:
            if n == "contacts" and n not in channels:
                continue  # the wearer's own contacts, from the device registry
            if n not in channels:
                raise t.fail("channels", f"names channel {n!r}, which [channels] does not define")
            if channels[n].public:
                raise t.fail("channels", f"{n!r} is public: it is sent only after verification")
        try:
            tiers.append(
                Tier(
                    name=t.text("name", f"tier {i + 1}"),
                    delay=t.number("delay", 0.0),
                    channels=tuple(names),
                    radius_km=t.number("radius_km", None),
                )
            )
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise t.fail("delay", str(exc)) from exc
    try:
        return EscalationConfig(
            tiers=tuple(tiers),
            retry_attempts=s.integer("retry_attempts", 5, 1, 100),
            retry_backoff=s.number("retry_backoff", 2.0),
            retry_max=s.number("retry_max", 300.0),
        )
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise s.fail("tiers", str(exc)) from exc
