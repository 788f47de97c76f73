"""Device config: defaults from the pinout, and errors that name the key and the file."""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.device_setup import make_device, render_toml
from vigil.device.config import BUILTIN_PINS, BUILTIN_UART, PINOUT, default_pins, load_config
from vigil.errors import (
    BadConfigValue,
    ConfigError,
    InsecureKeyFile,
    KeyFileError,
    MissingConfigValue,
)
from vigil.wire.keys import Suite


def test_minimal_config_gets_defaults_from_the_pinout(tmp_path: Path) -> None:
    dev = make_device(tmp_path)
    cfg = load_config(dev.config_path)
    pinout = tomllib.loads(PINOUT.read_text())
    assert cfg.device_id == dev.device_id
    assert cfg.pins.button == pinout["pins"]["button"]["gpio"]
    assert cfg.pins.tamper == pinout["pins"]["tamper"]["gpio"]
    assert cfg.gps.port == pinout["uart"]["device"]
    assert cfg.suite is Suite.X25519_CHACHA20
    assert cfg.mqtt.tls_ca is None
    assert cfg.battery_path is None
    assert cfg.alarm.hold_seconds == 2.0


def test_builtin_pin_copy_matches_the_pinout() -> None:
    assert default_pins() == (BUILTIN_PINS, BUILTIN_UART)


def test_missing_pinout_falls_back_to_the_builtin_copy(tmp_path: Path) -> None:
    assert default_pins(tmp_path / "nope.toml") == (BUILTIN_PINS, BUILTIN_UART)


def test_overrides_are_read(tmp_path: Path) -> None:
    dev = make_device(
        tmp_path,
        overrides={
            "pins": {"button": 5, "vibration_pwm": False},
            "alarm": {"hold_seconds": 3, "cancel": "--"},
            "battery": {"capacity_path": "/tmp/cap"},
            "hub": {"suite": "mlkem768-x25519"},
            "outbox": {"capacity": 64},
        },
    )
    cfg = load_config(dev.config_path)
    assert (cfg.pins.button, cfg.pins.vibration_pwm) == (5, False)
    assert (cfg.alarm.hold_seconds, cfg.alarm.cancel) == (3.0, "--")
    assert cfg.battery_path == Path("/tmp/cap")
    assert cfg.suite is Suite.MLKEM768_X25519_CHACHA20
    assert cfg.outbox.capacity == 64


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"device": {"id": "XYZ"}}, "device.id"),
        ({"mqtt": {"port": 70000}}, "mqtt.port"),
        ({"mqtt": {"port": "1883"}}, "mqtt.port must be an integer 1-65535, got '1883'"),
        ({"mqtt": {"hots": "x"}}, "unknown key mqtt.hots (a typo? did you mean mqtt.host?)"),
        ({"pins": {"button": 27}}, "[pins]"),
        ({"pins": {"button": 99}}, "pins.button must be an integer 0-27, got 99"),
        ({"pins": {"led": True}}, "pins.led"),
        ({"alarm": {"hold_seconds": -1}}, "hold_seconds"),
        ({"alarm": {"cancel": "...", "duress": "..."}}, "different"),
        ({"alarm": {"hold": 2}}, "alarm.hold"),
        ({"hub": {"suite": "rot13"}}, "hub.suite"),
        ({"hub": {"signing": "ed25519:AAAA"}}, "[hub]"),
        ({"gps": {"baud": 1234}}, "baud"),
        ({"outbox": {"capacity": 5000}}, "capacity"),
        ({"extra": {"x": 1}}, "unknown table [extra]"),
        ({"device": {"id": "XYZ"}}, "device.id: a device id is 32 lowercase hex"),
        ({"mqtt": {"host": "h\nREADY=1"}}, "mqtt.host must be one line of printable text"),
        ({"mqtt": {"keepalive": 1.5}}, "mqtt.keepalive must be an integer 5-3600, got 1.5"),
        ({"mqtt": {"client_id": "x"}}, "unknown key mqtt.client_id"),
        ({"alarm": {"hold_seconds": float("nan")}}, "alarm.hold_seconds must be a finite number"),
        ({"alarm": {"grace_seconds": float("inf")}}, "alarm.grace_seconds must be a finite"),
        (
            {"mqtt": {"port": 2**70}},
            "mqtt.port must be an integer 1-65535, got an integer of more",
        ),
        ({"pins": {"vibration_pwm": "yes"}}, "pins.vibration_pwm must be true or false"),
        ({"outbox": {"retry_max": 0}}, "outbox.retry_max must be a number > 0"),
        ({"mqtt": {"tls_ca": "/nonexistent/ca.pem"}}, "mqtt.tls_ca: no CA file"),
    ],
)
def test_bad_values_name_the_key_and_the_file(
    tmp_path: Path, overrides: dict[str, dict[str, Any]], key: str
) -> None:
    dev = make_device(tmp_path, overrides=overrides)
    with pytest.raises(BadConfigValue) as info:
        load_config(dev.config_path)
    assert key in str(info.value)
    assert str(dev.config_path) in str(info.value)


def test_missing_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    doc = {"device": {"id": "00" * 16}, "hub": {"kem": "x"}, "mqtt": {"host": "h"}}
    path.write_text(render_toml(doc))
    with pytest.raises(MissingConfigValue, match=r"hub\.signing is required in \[hub\]") as info:
        load_config(path)
    assert str(path) in str(info.value)
    path.write_text(render_toml({"device": {"id": "00" * 16}}))
    with pytest.raises(MissingConfigValue, match=r"the table \[hub\] is required"):
        load_config(path)


def test_a_misspelt_required_key_is_pointed_at(tmp_path: Path) -> None:
    dev = make_device(tmp_path)
    text = dev.config_path.read_text().replace("host =", "hots =")
    dev.config_path.write_text(text)
    with pytest.raises(MissingConfigValue, match=r"mqtt\.host is required .*'hots'.* typo"):
        load_config(dev.config_path)


def test_relative_paths_are_read_from_the_config_folder(tmp_path: Path) -> None:
    dev = make_device(tmp_path, overrides={"battery": {"capacity_path": "sys/capacity"}})
    assert load_config(dev.config_path).battery_path == tmp_path / "sys" / "capacity"


def test_password_file_errors_name_file_and_key(tmp_path: Path) -> None:
    dev = make_device(tmp_path, overrides={"mqtt": {"password_file": "pw"}})
    cfg = load_config(dev.config_path)
    with pytest.raises(KeyFileError, match=r"device\.toml: mqtt\.password_file: .*does not exist"):
        cfg.mqtt_password()
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "pw").chmod(0o640)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        cfg.mqtt_password()
    (tmp_path / "pw").chmod(0o600)
    assert cfg.mqtt_password() == "s3cret"


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[device\nid = 1")
    with pytest.raises(BadConfigValue, match="not valid TOML"):
        load_config(bad)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=str(binary)):
        load_config(binary)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_files_give_config_errors_only(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "device.toml"
        path.write_bytes(data)
        with pytest.raises(ConfigError):
            load_config(path)
