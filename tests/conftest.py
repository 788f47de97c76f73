"""Fixtures for real parts: a mosquitto per test, a PostgreSQL per session, the shipped data.

Everything a test reads ships in the repository (`tests/data/`, and the packaged GPS
capture in `vigil/device/captures/`); a missing file or tool is an error that names
it, never a skipped test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker, running_mosquitto
from tests.support.postgres import PostgresServer, running_postgres
from vigil.device.captures import PI_GPS_HAT

# The alarm scenarios assert inside their support module: rewritten, a failing step there
# shows the actions returned beside those expected, as it would inside a test.
pytest.register_assert_rewrite("tests.support.alarm_timeline")

DATA = Path(__file__).resolve().parent / "data"
NMEA_CORPUS = DATA / "nmea-corpus"


def data_file(path: Path) -> Path:
    """`path` if it exists; otherwise an error naming it (test data is never optional)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"test data {path} is missing: it ships with the repository "
            "(see tests/data/README.md); restore it with 'git checkout -- tests/data'"
        )
    return path


def nmea_log(name: str) -> Path:
    """A capture of the NMEA corpus by file name, e.g. "gpsd-skytraq.log"."""
    if name == PI_GPS_HAT.name:  # ships with the package: the demo and simulate replay it
        return data_file(PI_GPS_HAT)
    return data_file(NMEA_CORPUS / name)


def nmea_checks() -> list[Path]:
    """gpsd's expected-output files (`.log.chk`) of the corpus; at least one, or an error."""
    checks = sorted(NMEA_CORPUS.glob("gpsd-*.log.chk"))
    if not checks:
        raise FileNotFoundError(f"no gpsd-*.log.chk in {NMEA_CORPUS}: see tests/data/README.md")
    return checks


HPKE_VECTORS = DATA / "hpke-vectors" / "rfc9180-x25519.json"


def require_tool(name: str) -> str:
    """The path of the program `name`, or an error saying how to install it."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"):
        if candidate and Path(candidate).is_file():
            return candidate
    raise FileNotFoundError(f"the tests need '{name}': run 'make system-deps'")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A plain, anonymous mosquitto on 127.0.0.1:<free port>, for client-logic tests."""
    with running_mosquitto(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """This run's own PostgreSQL on 127.0.0.1:<free port>; tests take a schema each."""
    with running_postgres() as server:
        yield server
