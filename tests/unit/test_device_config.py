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
from vigil.errors import BadConfigValue, ConfigError, MissingConfigValue
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
        ({"mqtt": {"port": "1883"}}, "mqtt.port"),
        ({"mqtt": {"hots": "x"}}, "mqtt.hots"),
        ({"pins": {"button": 27}}, "[pins]"),
        ({"pins": {"button": 99}}, "[pins]"),
        ({"pins": {"led": True}}, "pins.led"),
        ({"alarm": {"hold_seconds": -1}}, "hold_seconds"),
        ({"alarm": {"cancel": "...", "duress": "..."}}, "different"),
        ({"alarm": {"hold": 2}}, "alarm.hold"),
        ({"hub": {"suite": "rot13"}}, "hub.suite"),
        ({"hub": {"signing": "ed25519:AAAA"}}, "[hub]"),
        ({"gps": {"baud": 1234}}, "baud"),
        ({"outbox": {"capacity": 5000}}, "capacity"),
        ({"extra": {"x": 1}}, "[extra]"),
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
    path.write_text(render_toml({"device": {"id": "00" * 16}, "mqtt": {"host": "h"}}))
    with pytest.raises(MissingConfigValue, match=r"missing key hub\.signing") as info:
        load_config(path)
    assert str(path) in str(info.value)


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
