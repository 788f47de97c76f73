"""What an operator reads: `devices`, `alerts`, `alerts --id`, `audit show` and `tail`,
parsed as text from the CLI against a real SQLite store."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.hubrig import write_config
from tests.support.parties import EPOCH as LIFE  # EPOCH here is the raw-epoch regex
from tests.support.parties import parties
from tests.support.peek import write
from tests.support.sinks import smtp_sink, webhook_sink
from vigil.hub import alerts
from vigil.hub.cli import main
from vigil.hub.config import load_config
from vigil.hub.store import Store, open_store
from vigil.wire import AgedFix, Alarm, Fix, Heartbeat, Message, Trigger

pytestmark = pytest.mark.integration

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)")
EPOCH = re.compile(r"\b1\d{9}(\.\d+)?\b")  # a raw Unix time of this era
LONG_NAME = "operator-with-a-forty-character-name-xyz"
FIX = AgedFix(
    Fix(lat=17.0654, lon=-96.7237, fix_time=None, quality=1, satellites=7, hdop=0.9), age=3.0
)


@pytest.fixture
def config(tmp_path: Path, mosquitto: Broker) -> Iterator[Path]:
    with smtp_sink() as smtp, webhook_sink() as hook:
        path = write_config(tmp_path, broker=mosquitto, smtp=smtp, hook=hook)
        assert cli(path, "init")[0] == 0
        keys = parties().device.public().to_text()
        assert cli(path, "enroll", "--device-id", parties().device_id.hex, "--label", "Ana",
                   "--signing", keys["signing"], "--kem", keys["kem"])[0] == 0  # fmt: skip
        yield path


def cli(path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    return main([*args, "--config", str(path)], out=out), out.getvalue()


def shown(path: Path, *args: str) -> str:
    status, out = cli(path, *args)
    assert status == 0, out
    return out


def store_of(config: Path) -> Store:
    return open_store(load_config(config).store_url)


def heard(config: Path, *, ago: float, seq: int = 1) -> None:
    """The device's last heartbeat arrived `ago` seconds before now."""
    store = store_of(config)
    fix = AgedFix(Fix(lat=17.0654, lon=-96.7237), age=0.9)
    beat = Message(seq=seq, body=Heartbeat(battery=64, fix=fix, signal=55), epoch=LIFE)
    write(store, lambda tx: tx.uplinks.accept(parties().device_id, beat,
                                              received_at=time.time() - ago))  # fmt: skip
    write(store, lambda tx: tx.devices.note_state(parties().device_id, battery=64))
    store.close()


def alarm(config: Path) -> int:
    store = store_of(config)
    now = time.time()
    body = Alarm(Trigger.BUTTON, fix=FIX, battery=61)

    def raise_alarm(tx):  # type: ignore[no-untyped-def]
        message = Message(seq=9, body=body, epoch=LIFE)
        tx.uplinks.accept(parties().device_id, message, received_at=now)
        draft = alerts.from_alarm(parties().device_id, LIFE.hex, 9, body, received_at=now)
        return tx.alerts.open(draft).id

    alert_id = int(write(store, raise_alarm))
    store.close()
    return alert_id


def columns(table: str) -> list[dict[str, str]]:
    """Rows of a table as {title: cell}, cut at the header's column starts."""
    header, *rows = table.rstrip("\n").splitlines()
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: \S+)*", header)]
    titles = [header[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
    out = []
    for row in rows:
        for s in starts[1:]:
            assert row[s - 1] == " ", f"a cell runs into column {s}: {row!r}"
        cells = [row[s:e].strip() for s, e in zip(starts, [*starts[1:], None], strict=True)]
        out.append(dict(zip(titles, cells, strict=True)))
    return out


def state_of(config: Path) -> dict[str, str]:
    (row,) = columns(shown(config, "devices", "--utc"))
    return row


def test_a_silent_device_shows_as_silent_with_its_alert(config: Path) -> None:
    heard(config, ago=17 * 60)  # silent_after is 300 s in the test config
    row = state_of(config)
    assert row["STATE"] == "silent (past its deadline)"
    assert row["LAST HEARD"].endswith("Z (17 min ago)")
    assert row["BATTERY"] == "64%"
    store = store_of(config)
    device = write(store, lambda tx: tx.devices.get(parties().device_id))
    assert device is not None
    opened = write(store, lambda tx: tx.alerts.open(alerts.device_silent(
        device, now=time.time(), reason="no message for 1020 s (deadline 300 s)")))  # fmt: skip
    store.close()
    assert state_of(config)["STATE"] == f"silent (alert {opened.id})"


def test_a_device_heard_in_time_is_ok(config: Path) -> None:
    assert state_of(config)["STATE"] == "never heard"
    heard(config, ago=42)
    row = state_of(config)
    assert (row["STATE"], row["LAST HEARD"][-10:]) == ("ok", "(42 s ago)")
    assert ISO.match(row["LAST HEARD"])


def test_columns_stay_aligned_with_a_forty_character_operator(config: Path) -> None:
    alert_id = alarm(config)
    assert cli(config, "ack", str(alert_id), "--by", LONG_NAME, "--note", "on my way")[0] == 0
    (listed,) = columns(shown(config, "alerts"))
    assert (listed["ID"], listed["STATE"], listed["TAKEN BY"]) == (str(alert_id), "acknowledged",
                                                                   LONG_NAME)  # fmt: skip
    log = columns(shown(config, "audit", "show"))
    ack = next(r for r in log if r["ACTION"] == "ack")
    assert (ack["BY"], ack["SUBJECT"], ack["DETAIL"]) == (LONG_NAME, f"alert {alert_id}",
                                                          "on my way")  # fmt: skip
    assert all(ISO.fullmatch(r["TIME"]) for r in log)
    tail = shown(config, "tail", "--once").splitlines()
    events = [line for line in tail if "  event  " in line]
    # The actor column is cut at 16 cells with an ellipsis: the actions still line up.
    assert len({line.index(" ack ") if " ack " in line else None for line in events} - {None}) == 1
    assert f"{LONG_NAME[:15]}… ack" in "\n".join(events)
    starts = {line.index("alert ") for line in events if " alert 1" in line}
    assert len(starts) == 1, events


def test_alert_shows_who_did_what_and_only_valid_actions(config: Path) -> None:
    alert_id = str(alarm(config))
    opened = shown(config, "alerts", "--id", alert_id, "--utc")
    assert "next: vigil-hub ack 1 --by NAME" in opened
    assert "vigil-hub verify" not in opened
    assert "vigil-hub broadcast" not in opened
    assert re.search(r"position: +17\.065400, -96\.723700, taken \S+Z \(\d+\.\d s old\)", opened)
    assert re.search(r"battery: +61%", opened)
    assert cli(config, "ack", alert_id, "--by", "rosa", "--note", "calling her")[0] == 0
    taken = shown(config, "alerts", "--id", alert_id, "--utc")
    assert re.search(r"acknowledged: \d{4}-\d\d-\d\dT[\d:]+Z by rosa", taken)
    assert re.search(r"Z +rosa +ack +calling her", taken)  # the history, with the note
    assert "vigil-hub ack" not in taken
    assert "next: vigil-hub verify 1" in taken
    assert cli(config, "verify", alert_id, "--by", "rosa")[0] == 0
    assert "next: vigil-hub broadcast 1" in shown(config, "alerts", "--id", alert_id)
    assert cli(config, "resolve", alert_id, "--by", "luis", "--note", "safe at home")[0] == 0
    closed = shown(config, "alerts", "--id", alert_id, "--utc")
    assert re.search(r"closed: +\S+Z: resolved by luis", closed)
    assert re.search(r"note: +safe at home", closed)
    assert "no actions: the alert is resolved" in closed
    assert "next:" not in closed


def test_every_time_has_a_date_and_zone_and_no_raw_epoch(config: Path) -> None:
    heard(config, ago=5)
    alarm(config)
    for args in (("devices",), ("alerts", "--all"), ("alerts", "--id", "1"), ("audit", "show"),
                 ("tail", "--once")):  # fmt: skip
        out = shown(config, *args, "--utc")
        assert ISO.search(out), args
        assert not EPOCH.search(out), (args, EPOCH.search(out))
    assert "fix_age 0.9 s" in shown(config, "tail", "--once")


def test_tz_chooses_the_zone_and_utc_overrides_it(config: Path) -> None:
    def run(*args: str) -> str:
        env = {**os.environ, "TZ": "VGL+6"}  # POSIX form: six hours behind UTC
        argv = [sys.executable, "-m", "vigil.hub.cli", *args, "--config", str(config)]
        return subprocess.run(argv, capture_output=True, text=True, check=True, env=env,
                              timeout=60).stdout  # fmt: skip

    assert "-06:00" in run("audit", "show")
    assert "-06:00" not in run("audit", "show", "--utc")
    assert re.search(r"\dZ ", run("--utc", "audit", "show"))


def test_hostile_labels_and_names_are_escaped(config: Path) -> None:
    alert_id = str(alarm(config))
    assert cli(config, "ack", alert_id, "--by", "x\x1b[2Jy", "--note", "a\nb")[0] == 0
    for args in (("alerts",), ("alerts", "--id", alert_id), ("audit", "show"), ("tail", "--once")):
        out = shown(config, *args)
        assert "\x1b" not in out, args
        assert "x\\x1b[2Jy" in out, args
