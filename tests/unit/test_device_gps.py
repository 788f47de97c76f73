"""GPS reader fed real captures through pyserial `loop://` and a pty, checked against gpsd."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import nmea_checks, nmea_log
from tests.support.wait import wait_until
from vigil.device.drivers.gps import GpsReader, NmeaDecoder
from vigil.device.events import GpsFix

CHK_FILES = nmea_checks()


def capture(log: Path) -> bytes:
    """The capture as bytes, with gpsd's `#` header lines kept (the reader must skip them)."""
    return log.read_bytes()


def oracle(chk: Path) -> tuple[list[tuple[float, float]], bool]:
    """gpsd's fixes (lat, lon) for the capture, and whether it had a fix at the end."""
    reports = [json.loads(line) for line in chk.read_text().splitlines() if line.startswith("{")]
    tpv = [r for r in reports if r.get("class") == "TPV"]
    fixes = [(r["lat"], r["lon"]) for r in tpv if r.get("mode", 0) >= 2 and "lat" in r]
    return fixes, bool(tpv) and tpv[-1].get("mode", 0) >= 2


def feed_through_loop(data: bytes) -> tuple[GpsReader, list[GpsFix]]:
    port = serial.serial_for_url("loop://", timeout=0.05)
    fixes: list[GpsFix] = []
    reader = GpsReader(port, on_fix=fixes.append, not_before=0)
    reader.start()
    writer = threading.Thread(target=port.write, args=(data + b"\r\n",))
    writer.start()
    # One budget for the whole transfer: loop:// moves one byte per queue operation, which a
    # real CPU does for the largest capture in a second and emulated aarch64 on a loaded
    # machine in about a minute (make pi-proof).
    wait_until(lambda: reader.bytes_read >= len(data) + 2, 100, what="the reader to drain")
    writer.join(5)
    decoded = len(fixes)
    reader.stop()
    assert not reader.alive
    assert len(fixes) == decoded  # bytes_read counts bytes already decoded
    return reader, fixes


@pytest.mark.parametrize(
    "chk", CHK_FILES, ids=[p.name.removesuffix(".log.chk") for p in CHK_FILES]
)
def test_capture_through_serial_matches_gpsd(chk: Path) -> None:
    log = nmea_log(chk.name.removesuffix(".chk"))
    expected, fix_at_end = oracle(chk)
    reader, fixes = feed_through_loop(capture(log))
    assert bool(fixes) == bool(expected)
    assert reader.decoder.has_fix is fix_at_end
    if expected:
        last = reader.last_fix()
        assert last is not None
        assert last == fixes[-1]
        assert last.fix.lat == pytest.approx(expected[-1][0], abs=1e-4)
        assert last.fix.lon == pytest.approx(expected[-1][1], abs=1e-4)
        gpsd_points = {(round(a, 3), round(b, 3)) for a, b in expected}
        assert all((round(f.fix.lat, 3), round(f.fix.lon, 3)) in gpsd_points for f in fixes[-3:])


def test_no_fix_capture_gives_no_fix_and_counts_why() -> None:
    reader, fixes = feed_through_loop(capture(nmea_log("gpsd-skytraq.log")))
    assert fixes == []
    assert reader.last_fix() is None
    assert reader.decoder.stats["nofix"] > 10


def test_stress_capture_counts_bad_lines_and_survives() -> None:
    reader, fixes = feed_through_loop(capture(nmea_log("gpsd-gp-320fw-2019-04-07-coldboot.log")))
    stats = reader.decoder.stats
    assert stats["checksum"] >= 20
    assert stats["malformed"] + stats["garbage"] >= 5
    assert fixes


def test_ublox_garbage_prefix_resyncs() -> None:
    d = NmeaDecoder(not_before=0)
    fixes = d.feed(capture(nmea_log("gpsd-ublox-8.log")), at=0.0)
    assert d.stats["checksum"] >= 1
    assert len(fixes) > 100


def test_cr_only_line_ends_and_other_talkers() -> None:
    d = NmeaDecoder(not_before=0)
    fixes = d.feed(capture(nmea_log("pynmea2-data.log")) + b"\r", at=0.0)
    assert len(fixes) == 1  # the one GGA; RTE, R00, foobar and IIMWV are skipped
    assert d.stats["garbage"] == 1
    assert fixes[0].fix.satellites > 0


def test_gps_time_only_when_plausible() -> None:
    line = b"$GPRMC,081836,A,3751.65,S,14507.36,E,000.0,360.0,130998,011.3,E*62"
    old = NmeaDecoder().feed_line(line, at=5.0)  # 1998: a week-rollover date, not trusted
    assert old is not None
    assert old.fix.fix_time is None
    trusted = NmeaDecoder(not_before=0).feed_line(line, at=5.0)
    assert trusted is not None
    assert trusted.fix.fix_time == 905674716.0
    assert (round(trusted.fix.lat, 4), round(trusted.fix.lon, 4)) == (-37.8608, 145.1227)
    assert trusted.age(12.5) == 7.5


def test_stale_position_in_a_void_rmc_is_not_trusted() -> None:
    d = NmeaDecoder(not_before=0)
    data = capture(nmea_log("gpsd-myguide-3100.log"))
    void_lines = [ln for ln in data.splitlines() if b"RMC" in ln and b",V," in ln]
    assert void_lines
    for line in void_lines:
        assert d.feed_line(line, 0.0) is None
    assert not d.has_fix


def test_reader_over_a_pty() -> None:
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), 9600, timeout=0.05)
    fixes: list[GpsFix] = []
    reader = GpsReader(port, on_fix=fixes.append, not_before=0)
    reader.start()
    try:
        data = capture(nmea_log("gpsd-mt3339.log"))
        for start in range(0, len(data), 512):
            os.write(master, data[start : start + 512])
        wait_until(lambda: len(fixes) >= 50, 20, what="fixes over the pty")
        last = reader.last_fix()
        assert last is not None
        assert last.fix.lat == pytest.approx(44.0688, abs=1e-3)
    finally:
        reader.stop()
        os.close(master)
        os.close(slave)


def test_overlong_lines_do_not_grow_memory() -> None:
    d = NmeaDecoder()
    for _ in range(100):
        d.feed(b"\xb5b" * 500, at=0.0)
    assert len(d._buffer) <= 1000
    assert d.stats["garbage"] >= 50


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_is_never_fatal(data: bytes) -> None:
    d = NmeaDecoder(not_before=0)
    for reading in d.feed(data, at=1.0):
        assert -90 <= reading.lat <= 90
        assert -180 <= reading.lon <= 180


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.binary(max_size=20))
def test_truncated_and_corrupted_sentences(cut: int, junk: bytes) -> None:
    line = b"$GPGGA,165007.000,4143.6058,N,08338.0778,W,1,06,1.5,204.3,M,-33.7,M,,0000*67"
    d = NmeaDecoder(not_before=0)
    d.feed_line(line[:cut] + junk, at=0.0)
    assert sum(d.stats.values()) <= 1
