"""The device never imports hub code or hub-only libraries, and the hub never the device's.

Each package's modules are imported in a fresh interpreter in which the other
side's packages cannot be imported at all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import importlib, importlib.abc, pkgutil, sys

blocked = set(sys.argv[2].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"{sys.argv[1]} must not import {name}")
        return None

sys.meta_path.insert(0, Block())
package = importlib.import_module(sys.argv[1])
names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(len(names) + 1)
"""

_DEVICE_LIBS = ["gpiozero", "serial", "pynmea2", "RPi", "lgpio"]
_HUB_LIBS = ["apprise", "psycopg", "aiosmtpd"]
BOUNDARIES = {
    # Pure: bytes, keys, messages; no sockets, no paho, no daemons.
    "vigil.wire": [
        "vigil.runtime",
        "vigil.device",
        "vigil.hub",
        "vigil.provision",
        "paho",
        "socket",
        *_DEVICE_LIBS,
        *_HUB_LIBS,
    ],
    "vigil.runtime": ["vigil.device", "vigil.hub", "vigil.provision", *_DEVICE_LIBS, *_HUB_LIBS],
    "vigil.device": ["vigil.hub", "vigil.provision", *_HUB_LIBS],
    "vigil.hub": ["vigil.device", *_DEVICE_LIBS],
}


@pytest.mark.parametrize(("package", "blocked"), BOUNDARIES.items())
def test_package_imports_without_the_other_side(package: str, blocked: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, package, ",".join(blocked)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip()) >= 1


def test_probe_catches_a_forbidden_import() -> None:
    """The probe itself must fail when a package does import a blocked module."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "vigil.wire", "cryptography"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "must not import cryptography" in result.stderr
