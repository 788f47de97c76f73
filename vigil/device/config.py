"""Load the wearable's TOML config into one frozen `DeviceConfig`, naming key and file on error.

Pin defaults come from `vigil/device/pinout.toml`, the single source of truth,
shipped in the package; `BUILTIN_PINS` is its copy for an install that lost the
file, and a unit test keeps the two equal. Read with vigil.runtime.config:
errors name the file and the dotted key, unknown keys are typos, relative paths
are resolved against the config file's folder. The keys:

    [device] id, keys, state_dir, rotate_keys_every
    [hub] signing, kem, hybrid_kem, suite
    [mqtt] host, port, tls_ca, username, password_file, keepalive
    [pins] button, tamper, vibration, led, vibration_pwm
    [gps] port, baud                 [battery] capacity_path
    [alarm] see vigil.device.core.AlarmSettings
    [outbox] capacity, retry_initial, retry_max
    [hardware] backend ("pi" or "simulate"; see vigil.device.hardware)
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from vigil.device.core import AlarmSettings
from vigil.errors import ConfigError
from vigil.runtime.config import MqttConfig, Table, load_toml
from vigil.wire.ids import DeviceId
from vigil.wire.keys import HubPublicKeys, Suite

_LOG = logging.getLogger(__name__)

# Package data: the wearable runs from an installed wheel, where no repository folder exists.
PINOUT = Path(__file__).resolve().with_name("pinout.toml")
BUILTIN_PINS = {"button": 17, "tamper": 27, "vibration": 18, "led": 23}
BUILTIN_UART = ("/dev/serial0", 9600)
# Hardware backends (vigil.device.hardware); the environment variable overrides the file.
BACKENDS = ("pi", "simulate")
BACKEND_ENV = "VIGIL_HARDWARE"
ROTATE_KEYS_EVERY = 86400.0  # a new downlink key a day (and at every start)
SUITES = {"x25519": Suite.X25519_CHACHA20, "mlkem768-x25519": Suite.MLKEM768_X25519_CHACHA20}


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
    backend: str = "pi"
    rotate_keys_every: float = ROTATE_KEYS_EVERY  # s of uptime between downlink keys

    def mqtt_password(self) -> str | None:
        """Read the broker password file (0600, one line), or None without one."""
        return self.mqtt.password()


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


def _hub(t: Table) -> tuple[HubPublicKeys, Suite]:
    doc: dict[str, object] = {k: t.text(k) for k in ("signing", "kem", "hybrid_kem")}
    keys = t.build(HubPublicKeys.from_text, {"doc": doc})
    return keys, t.choice("suite", SUITES, "x25519")


def _mqtt(t: Table) -> MqttConfig:
    mqtt = MqttConfig.read(t)  # client id and username are the device id
    mqtt.check_tls_ca()
    return mqtt


def _pins(top: Table, pinout: Path) -> tuple[PinConfig, GpsConfig]:
    pins, (uart, baud) = default_pins(pinout)
    t, g = top.table("pins"), top.table("gps")
    values = {name: t.integer(name, default, low=0, high=27) for name, default in pins.items()}
    pin_cfg = t.build(PinConfig, {**values, "vibration_pwm": t.boolean("vibration_pwm", True)})
    port, rate = g.text("port", uart), g.integer("baud", baud, low=1, high=10**7)
    gps = g.build(GpsConfig, {"port": port, "baud": rate})
    return pin_cfg, gps


def _alarm(t: Table) -> AlarmSettings:
    defaults = AlarmSettings()
    values: dict[str, object] = {}
    for f in fields(AlarmSettings):
        default = getattr(defaults, f.name)
        if f.type == "str":
            values[f.name] = t.text(f.name, default)
        elif f.type == "bool":
            values[f.name] = t.boolean(f.name, default)
        else:
            values[f.name] = t.number(f.name, default)
    return t.build(AlarmSettings, values)


def _outbox(t: Table) -> OutboxConfig:
    values = {
        "capacity": t.integer("capacity", 512, low=16, high=2048),
        "retry_initial": t.number("retry_initial", 10.0, above=0),
        "retry_max": t.number("retry_max", 300.0, above=0, high=3600),
    }
    return t.build(OutboxConfig, values)


def load_config(path: Path, *, pinout: Path = PINOUT) -> DeviceConfig:
    """Read and validate `path`; raise a `ConfigError` naming the key and the file."""
    top = load_toml(path)
    device = top.table("device", required=True)
    device_id = device.build(DeviceId.parse, {"text": device.text("id")}, blame="id")
    hub, suite = _hub(top.table("hub", required=True))
    pins, gps = _pins(top, pinout)
    config = DeviceConfig(
        path=top.file,
        device_id=device_id,
        keys_path=device.path("keys", Path("/var/lib/vigil-device/device.key")),
        state_dir=device.path("state_dir", Path("/var/lib/vigil-device")),
        hub=hub,
        suite=suite,
        mqtt=_mqtt(top.table("mqtt", required=True)),
        pins=pins,
        gps=gps,
        battery_path=top.table("battery").path("capacity_path", None),
        alarm=_alarm(top.table("alarm")),
        outbox=_outbox(top.table("outbox")),
        backend=top.table("hardware").choice("backend", {b: b for b in BACKENDS}, "pi"),
        rotate_keys_every=device.number(
            "rotate_keys_every", ROTATE_KEYS_EVERY, low=60.0, high=30 * 86400.0
        ),
    )
    top.check_unknown()
    return config
