"""The hardware docs, the boot fragment and the device's config defaults agree with pinout.toml."""

from __future__ import annotations

import csv
import re
import tomllib
from pathlib import Path

import pytest

from vigil.device.config import BUILTIN_PINS, BUILTIN_UART, default_pins

HARDWARE = Path(__file__).resolve().parents[2] / "hardware"
PINOUT_FILE = Path(__file__).resolve().parents[2] / "vigil" / "device" / "pinout.toml"
PINOUT = tomllib.loads(PINOUT_FILE.read_text())


@pytest.mark.parametrize("name", sorted(PINOUT["pins"]))
def test_wiring_table_has_every_pin_with_its_numbers(name: str) -> None:
    pin = PINOUT["pins"][name]
    rows = [r for r in (HARDWARE / "WIRING.md").read_text().splitlines() if r.startswith("|")]
    wanted = re.compile(rf"\|\s*GPIO {pin['gpio']}\s*\|\s*{pin['header']}\s*\|")
    assert any(wanted.search(row) for row in rows), f"{name}: GPIO {pin['gpio']} [{pin['header']}]"


def test_wiring_table_names_no_pin_that_pinout_lacks() -> None:
    text = (HARDWARE / "WIRING.md").read_text()
    in_doc = {int(g) for g in re.findall(r"\|\s*GPIO (\d+)\s*\|", text)}
    assert in_doc == {p["gpio"] for p in PINOUT["pins"].values()}


def test_device_defaults_come_from_the_pinout() -> None:
    pins, uart = default_pins(PINOUT_FILE)
    for name, gpio in pins.items():
        assert PINOUT["pins"][name]["gpio"] == gpio
    assert uart == (PINOUT["uart"]["device"], PINOUT["uart"]["baud"])
    assert (pins, uart) == (BUILTIN_PINS, BUILTIN_UART)


def test_boot_fragment_enables_what_the_pins_need() -> None:
    lines = set((HARDWARE / "config.txt").read_text().splitlines())
    assert {"enable_uart=1", "dtoverlay=disable-bt", "dtparam=i2c_arm=on"} <= lines


def test_bom_is_well_formed_and_priced() -> None:
    with (HARDWARE / "bom.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"part", "qty", "rough_price_eur"} <= set(rows[0])
    assert all(int(r["qty"]) > 0 and float(r["rough_price_eur"]) >= 0 for r in rows)
    parts = " ".join(r["part"].lower() for r in rows)
    for needed in ("zero 2 w", "gps", "button", "tamper", "vibration", "diode", "lipo"):
        assert needed in parts


def test_fuel_gauge_address_agrees_everywhere() -> None:
    i2c = PINOUT["i2c"]
    assert PINOUT["pins"]["i2c_sda"]["gpio"] == 2  # I2C-1 is fixed to GPIO 2/3 on the Pi
    unit = (HARDWARE.parent / "systemd" / "vigil-fuel-gauge.service").read_text()
    binding = f"echo max17048 {i2c['fuel_gauge']:#04x} > /sys/bus/i2c/devices/i2c-{i2c['bus']}/"
    assert binding in unit
    assert f"/sys/bus/i2c/devices/{i2c['bus']}-{i2c['fuel_gauge']:04x}" in unit
    wiring = (HARDWARE / "WIRING.md").read_text()
    assert binding in wiring
    assert i2c["capacity_path"] in wiring
    assert i2c["capacity_path"] in unit


def test_power_budget_arithmetic_holds() -> None:
    text = (HARDWARE / "POWER.md").read_text()
    rows = [r.split("|")[1:-1] for r in text.splitlines() if r.startswith("| ") and " mA" in r]
    loads = [float(re.findall(r"([\d.]+) mA", r[-1])[0]) for r in rows if "total" not in r[0]]
    total = re.search(r"\*\*~(\d+) mA = ([\d.]+) W\*\*", text)
    assert total, "POWER.md states the total as **~N mA = W W**"
    assert abs(sum(loads) - int(total.group(1))) <= 2
    assert abs(int(total.group(1)) * 5 / 1000 - float(total.group(2))) <= 0.01
    life = re.search(r"([\d.]+) Wh / ([\d.]+) W ≈ \*\*(\d+) hours\*\*", text)
    assert life
    assert abs(float(life.group(1)) / float(life.group(2)) - int(life.group(3))) < 1
    stated = r"3\.7 V (\d+) mAh.*?about (\d+) %.*?about \*\*([\d.]+) Wh\*\*"
    battery = re.search(stated, text, re.S)
    assert battery
    mah, efficiency, usable = int(battery[1]), int(battery[2]), float(battery[3])
    assert abs(3.7 * mah / 1000 * efficiency / 100 - usable) < 0.05
