"""Fixtures for real parts: a mosquitto per test on a free loopback port, stopped afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker, running_mosquitto

SHARED = Path(os.environ.get("VIGIL_SHARED", Path(__file__).resolve().parents[2] / "shared"))
NMEA_CORPUS = SHARED / "nmea-corpus"
HPKE_VECTORS = SHARED / "hpke-vectors" / "rfc9180-x25519.json"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A plain, anonymous mosquitto on 127.0.0.1:<free port>, for client-logic tests."""
    with running_mosquitto(tmp_path / "broker") as broker:
        yield broker
