"""Load the wearable's TOML config into one frozen `DeviceConfig`, naming key and file on error.

Pin defaults come from `hardware/pinout.toml`, the single source of truth;
`BUILTIN_PINS` is its copy for installs that do not ship the `hardware/`
directory, and a unit test keeps the two equal. See docs in contracts:

    [device] id, keys, state_dir     [hub] signing, kem, hybrid_kem, suite
    [mqtt] host, port, tls_ca, username, password_file, keepalive
    [pins] button, tamper, vibration, led, vibration_pwm
    [gps] port, baud                 [battery] capacity_path
    [alarm] see vigil.device.core.AlarmSettings
    [outbox] capacity, retry_initial, retry_max
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from vigil.device.core import AlarmSettings
from vigil.errors import BadConfigValue, ConfigError, KeyFileError, MissingConfigValue
from vigil.wire.ids import DeviceId
from vigil.wire.keys import HubPublicKeys, Suite, check_private_file

_LOG = logging.getLogger(__name__)

PINOUT = Path(__file__).resolve().parents[2] / "hardware" / "pinout.toml"
BUILTIN_PINS = {"button": 17, "tamper": 27, "vibration": 18, "led": 23}
BUILTIN_UART = ("/dev/serial0", 9600)
SUITES = {"x25519": Suite.X25519_CHACHA20, "mlkem768-x25519": Suite.MLKEM768_X25519_CHACHA20}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MqttConfig:
    host: str
    port: int = 8883
    tls_ca: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive: int = 30


@dataclass(frozen=True, slots=True)
class PinConfig:
    """BCM GPIO numbers of the wearable's parts."""

    button: int
    tamper: int
    vibration: int
    led: int
    vibration_pwm: bool = True

    def __post_init__(self) -> None:
        pins = (self.button, self.tamper, self.vibration, self.led)
        if any(type(p) is not int or not 0 <= p <= 27 for p in pins):
            raise ValueError("pins are BCM GPIO numbers 0..27")
        if len(set(pins)) != len(pins):
            raise ValueError("button, tamper, vibration and led need four different pins")


@dataclass(frozen=True, slots=True)
class GpsConfig:
    port: str = BUILTIN_UART[0]
    baud: int = BUILTIN_UART[1]

    def __post_init__(self) -> None:
        if self.baud not in (4800, 9600, 19200, 38400, 57600, 115200):
            raise ValueError(f"baud must be a standard NMEA rate, got {self.baud!r}")


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    capacity: int = 512
    retry_initial: float = 10.0
    retry_max: float = 300.0

    def __post_init__(self) -> None:
        # The hub's replay window is 4096 seqs wide; stay well inside it.
        if type(self.capacity) is not int or not 16 <= self.capacity <= 2048:
            raise ValueError("capacity must be an integer in 16..2048")
        if not 0 < self.retry_initial <= self.retry_max <= 3600:
            raise ValueError("retries need 0 < retry_initial <= retry_max <= 3600 s")


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """Everything the daemon needs, validated; `path` is the file it came from."""

    path: Path
    device_id: DeviceId
    keys_path: Path
    state_dir: Path
    hub: HubPublicKeys
    suite: Suite
    mqtt: MqttConfig
    pins: PinConfig
    gps: GpsConfig
    battery_path: Path | None
    alarm: AlarmSettings
    outbox: OutboxConfig

    def mqtt_password(self) -> str | None:
        """Read the broker password file (0600), or None without one."""
        path = self.mqtt.password_file
        if path is None:
            return None
        try:
            check_private_file(path)
            return path.read_text().strip()
        except KeyFileError as exc:
            raise type(exc)(f"{self.path}: mqtt.password_file: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise BadConfigValue(
                f"{self.path}: mqtt.password_file: cannot read {path}: {exc}"
            ) from exc


def default_pins(pinout: Path = PINOUT) -> tuple[dict[str, int], tuple[str, int]]:
    """Read pin and UART defaults from the hardware pinout (built-in copy if absent)."""
    try:
        doc = tomllib.loads(pinout.read_text())
    except FileNotFoundError:
        return dict(BUILTIN_PINS), BUILTIN_UART
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{pinout}: cannot read the pinout: {exc}") from exc
    pins = {name: int(doc["pins"][name]["gpio"]) for name in BUILTIN_PINS}
    return pins, (str(doc["uart"]["device"]), int(doc["uart"]["baud"]))


class _Reader:
    """Typed access to a TOML document whose errors name the key and the file."""

    def __init__(self, doc: dict[str, Any], path: Path) -> None:
        self.doc, self.path = doc, path

    def section(self, name: str) -> dict[str, Any]:
        value = self.doc.get(name, {})
        if not isinstance(value, dict):
            raise BadConfigValue(f"{self.path}: [{name}] must be a table")
        return value

    def get(
        self, key: str, kind: type[T], default: T | None = None, *, required: bool = False
    ) -> T:
        section, _, name = key.partition(".")
        table = self.section(section)
        if name not in table:
            if required:
                raise MissingConfigValue(f"{self.path}: missing key {key}")
            return default  # type: ignore[return-value]
        value = table[name]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise BadConfigValue(f"{self.path}: {key} must be a {kind.__name__}, got {value!r}")
        return value  # type: ignore[no-any-return]

    def build(self, section: str, cls: type[T], **values: Any) -> T:
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except (ValueError, TypeError) as exc:
            raise BadConfigValue(f"{self.path}: [{section}] {exc}") from exc

    def check_unknown(self, section: str, known: set[str]) -> None:
        unknown = set(self.section(section)) - known
        if unknown:
            key = f"{section}.{sorted(unknown)[0]}"
            raise BadConfigValue(f"{self.path}: unknown key {key} (typo?)")


def _path(r: _Reader, key: str, *, required: bool = False) -> Path | None:
    text = r.get(key, str, required=required)
    return Path(text) if text else None


def _hub(r: _Reader) -> tuple[HubPublicKeys, Suite]:
    r.check_unknown("hub", {"signing", "kem", "hybrid_kem", "suite"})
    doc = {k: r.get(f"hub.{k}", str, required=True) for k in ("signing", "kem", "hybrid_kem")}
    try:
        keys = HubPublicKeys.from_text(dict(doc))
    except (ValueError, ConfigError) as exc:
        raise BadConfigValue(f"{r.path}: [hub] {exc}") from exc
    suite_name = r.get("hub.suite", str, "x25519")
    if suite_name not in SUITES:
        raise BadConfigValue(f"{r.path}: hub.suite must be one of {sorted(SUITES)}")
    return keys, SUITES[suite_name]


def _mqtt(r: _Reader) -> MqttConfig:
    keys = {"host", "port", "tls_ca", "username", "password_file", "keepalive"}
    r.check_unknown("mqtt", keys)
    cfg = MqttConfig(
        host=r.get("mqtt.host", str, required=True),
        port=r.get("mqtt.port", int, 8883),
        tls_ca=_path(r, "mqtt.tls_ca"),
        username=r.get("mqtt.username", str),
        password_file=_path(r, "mqtt.password_file"),
        keepalive=r.get("mqtt.keepalive", int, 30),
    )
    if not 0 < cfg.port < 65536:
        raise BadConfigValue(f"{r.path}: mqtt.port must be in 1..65535, got {cfg.port}")
    if not 5 <= cfg.keepalive <= 3600:
        raise BadConfigValue(f"{r.path}: mqtt.keepalive must be in 5..3600 s")
    if cfg.tls_ca is not None and not cfg.tls_ca.is_file():
        raise BadConfigValue(f"{r.path}: mqtt.tls_ca: no CA file at {cfg.tls_ca}")
    return cfg


def _pins(r: _Reader, pinout: Path) -> tuple[PinConfig, GpsConfig]:
    pins, (uart, baud) = default_pins(pinout)
    r.check_unknown("pins", {*BUILTIN_PINS, "vibration_pwm"})
    r.check_unknown("gps", {"port", "baud"})
    values = {name: r.get(f"pins.{name}", int, default) for name, default in pins.items()}
    pin_cfg = r.build("pins", PinConfig, **values, vibration_pwm=r.get("pins.vibration_pwm", bool))
    gps = r.build(
        "gps", GpsConfig, port=r.get("gps.port", str, uart), baud=r.get("gps.baud", int, baud)
    )
    return pin_cfg, gps


def _alarm(r: _Reader) -> AlarmSettings:
    kinds = {f.name: (str if f.type == "str" else float) for f in fields(AlarmSettings)}
    r.check_unknown("alarm", set(kinds))
    values = {name: r.get(f"alarm.{name}", kind) for name, kind in kinds.items()}
    return r.build("alarm", AlarmSettings, **values)


def load_config(path: Path, *, pinout: Path = PINOUT) -> DeviceConfig:
    """Read and validate `path`; raise a `ConfigError` naming the key and the file."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise BadConfigValue(f"{path}: not valid TOML: {exc}") from exc
    r = _Reader(doc, path)
    known = {"device", "hub", "mqtt", "pins", "gps", "battery", "alarm", "outbox"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise BadConfigValue(f"{path}: unknown section [{unknown[0]}] (typo?)")
    r.check_unknown("device", {"id", "keys", "state_dir"})
    r.check_unknown("battery", {"capacity_path"})
    r.check_unknown("outbox", {"capacity", "retry_initial", "retry_max"})
    try:
        device_id = DeviceId.parse(r.get("device.id", str, required=True))
    except BadConfigValue as exc:
        raise BadConfigValue(f"{path}: device.id: {exc}") from exc
    hub, suite = _hub(r)
    pins, gps = _pins(r, pinout)
    outbox = r.build(
        "outbox",
        OutboxConfig,
        capacity=r.get("outbox.capacity", int),
        retry_initial=r.get("outbox.retry_initial", float),
        retry_max=r.get("outbox.retry_max", float),
    )
    return DeviceConfig(
        path=path,
        device_id=device_id,
        keys_path=Path(r.get("device.keys", str, "/var/lib/vigil-device/device.key")),
        state_dir=Path(r.get("device.state_dir", str, "/var/lib/vigil-device")),
        hub=hub,
        suite=suite,
        mqtt=_mqtt(r),
        pins=pins,
        gps=gps,
        battery_path=_path(r, "battery.capacity_path"),
        alarm=_alarm(r),
        outbox=outbox,
    )
