"""`vigil-hub` driven as an operator would: subprocesses against a real broker and store."""

from __future__ import annotations

import io
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.hubrig import T0, wearable, write_config
from tests.support.parties import EPOCH, parties
from tests.support.peek import write
from tests.support.sinks import SmtpSink, WebhookSink, smtp_sink, webhook_sink
from tests.support.wait import wait_until
from vigil.hub.cli import main
from vigil.hub.config import load_config
from vigil.hub.store import open_store
from vigil.wire import AgedFix, Alarm, Fix, Heartbeat, HubPublicKeys, Message, Trigger

pytestmark = pytest.mark.integration

VIGIL_HUB = [sys.executable, "-m", "vigil.hub.cli"]
FIX = AgedFix(
    Fix(lat=17.0654, lon=-96.7237, fix_time=None, quality=1, satellites=7, hdop=0.9), age=3.0
)


@pytest.fixture
def sinks() -> Iterator[tuple[SmtpSink, WebhookSink]]:
    with smtp_sink() as smtp, webhook_sink() as hook:
        yield smtp, hook


@pytest.fixture
def config(tmp_path: Path, mosquitto: Broker, sinks: tuple[SmtpSink, WebhookSink]) -> Path:
    path = write_config(tmp_path, broker=mosquitto, smtp=sinks[0], hook=sinks[1])
    assert cli(path, "init")[0] == 0
    keys = parties().device.public().to_text()
    status, _ = cli(path, "enroll", "--device-id", parties().device_id.hex, "--label", "Ana",
                    "--signing", keys["signing"], "--kem", keys["kem"])  # fmt: skip
    assert status == 0
    return path


def cli(path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    return main([*args, "--config", str(path)], out=out), out.getvalue()


def hub_cmd(path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [*VIGIL_HUB, *args, "--config", str(path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=check,
                          cwd=Path(__file__).parents[2])  # fmt: skip


def test_help_explains_itself_with_examples() -> None:
    done = subprocess.run([*VIGIL_HUB, "--help"], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[2])  # fmt: skip
    assert "examples:" in done.stdout
    assert "vigil-hub ack 12" in done.stdout


def test_keygen_writes_private_file_and_prints_public_keys(tmp_path: Path) -> None:
    out = io.StringIO()
    key = tmp_path / "k" / "hub.key"
    assert main(["keygen", "--out", str(key)], out=out) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    lines = dict(line.split(" = ") for line in out.getvalue().splitlines() if " = " in line)
    HubPublicKeys.from_text({k: v.strip('"') for k, v in lines.items()})
    assert main(["keygen", "--out", str(key)], out=io.StringIO()) == 1  # no silent overwrite


def test_config_errors_name_key_and_file(tmp_path: Path) -> None:
    bad = tmp_path / "hub.toml"
    bad.write_text('[hub]\nkeys = "k"\n[store]\nurl = "sqlite:///x.db"\n[mqtt]\nport = 1\n')
    done = subprocess.run([*VIGIL_HUB, "alerts", "--config", str(bad)], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).parents[2])  # fmt: skip
    assert done.returncode == 1
    assert "mqtt.host is required" in done.stderr
    assert str(bad) in done.stderr


def test_run_as_a_service_with_operator_commands(
    config: Path, mosquitto: Broker, sinks: tuple[SmtpSink, WebhookSink]
) -> None:
    smtp, hook = sinks
    # Run as systemd would: a shared subscription, and a notify socket to tell us it is up.
    text = config.read_text().replace(
        'client_id = "hub-test"', 'client_id = "hub-test"\nshared_group = "hub"'
    )
    config.write_text(text)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # closed in `finally`
    notify.bind(str(config.parent / "notify.sock"))
    notify.settimeout(20)
    log = (config.parent / "hub.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]),
           "NOTIFY_SOCKET": str(config.parent / "notify.sock")}  # fmt: skip
    hub = subprocess.Popen([*VIGIL_HUB, "run", "--config", str(config)], stdout=log,
                           stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        said = [notify.recv(4096).decode() for _ in range(2)]
        while "WATCHDOG=1" not in said:
            said.append(notify.recv(4096).decode())
        # READY=1 only once the broker acknowledged the subscription; the status line says so.
        ready = said.index("READY=1")
        assert any(s.startswith("STATUS=broker: connected to 127.0.0.1:") for s in said[ready:])
        assert all(s.startswith("STATUS=waiting for the broker") for s in said[:ready])
        with wearable(mosquitto) as device:
            # The hub may still be subscribing: resend like the wearable's outbox does.
            def stored() -> bool:
                if not device.downlinks:
                    device.send(
                        Message(
                            seq=1, body=Alarm(Trigger.BUTTON, fix=FIX, battery=64), epoch=EPOCH
                        )
                    )
                return bool(device.downlinks)

            wait_until(stored, 20, what="stored receipt from the hub process")
            wait_until(lambda: smtp.messages, 20, what="email")
            assert "Ana" in smtp.messages[0].subject
            listed = hub_cmd(config, "alerts").stdout.splitlines()
            assert listed[1].split()[:3] == ["1", "open", "Ana"]
            assert "alert:        1: open (alarm)" in hub_cmd(config, "alerts", "--id", "1").stdout

            refused = hub_cmd(config, "broadcast", "1", check=False)
            assert refused.returncode == 1
            assert "not verified" in refused.stderr
            assert hub_cmd(config, "ack", "1", "--by", "rosa").stdout == "alert 1: acknowledged\n"
            device.wait_for("acknowledged", timeout=20)
            hub_cmd(config, "verify", "1")
            hub_cmd(config, "broadcast", "1")
            wait_until(lambda: [p for p in hook.posts if p.path == "/public"], 20, what="public")
            hub_cmd(config, "resolve", "1", "--note", "safe")
            device.wait_for("resolved", timeout=20)
    finally:
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(timeout=20) == 0
        log.close()
        notify.close()
    assert "Traceback" not in (config.parent / "hub.log").read_text()


def test_run_refuses_a_channel_url_that_would_reach_nobody(
    config: Path,
    sinks: tuple[SmtpSink, WebhookSink],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found as the hub starts, not at the first alarm; named by its label, since a URL
    may hold a token."""
    partners = sinks[1].url("/partners")
    config.write_text(config.read_text().replace(partners, "nosuchchannel://tok3n@partners"))
    assert cli(config, "run")[0] == 1
    err = capsys.readouterr().err
    assert "[channels.partners] partners #1 (nosuchchannel): Apprise does not accept" in err
    assert "tok3n" not in err
    assert "tok3n" not in caplog.text  # nor in the journal, by way of Apprise's own log


def test_tail_is_plain_when_piped_and_coloured_on_request(config: Path) -> None:
    store = open_store(load_config(config).store_url)
    heartbeat = Message(seq=4, body=Heartbeat(battery=70), epoch=EPOCH)
    write(store, lambda tx: tx.uplinks.accept(parties().device_id, heartbeat, received_at=T0))
    write(store, lambda tx: tx.rejections.count("BadSignature", at=1.0))
    store.close()
    plain = hub_cmd(config, "tail", "--once").stdout
    assert "\x1b[" not in plain
    assert "heartbeat" in plain
    assert "battery 70%" in plain
    assert "enroll" in plain
    assert "reject BadSignature x1" in plain
    coloured = hub_cmd(config, "tail", "--once", "--colour", "always").stdout
    assert "\x1b[" in coloured


def test_devices_revoke_and_stats(config: Path) -> None:
    status, out = cli(config, "devices")
    assert status == 0
    assert "Ana" in out
    assert " never heard" in out  # enrolled, not yet heard from
    assert cli(config, "revoke", parties().device_id.hex)[0] == 0
    assert " revoked " in cli(config, "devices")[1]
    assert "stored uplinks: 0" in cli(config, "stats")[1]
    assert cli(config, "revoke", "nonsense")[0] == 1


def test_audit_verify_detects_edits_and_deletions(config: Path) -> None:
    for _ in range(3):
        cli(config, "revoke", parties().device_id.hex)
    status, out = cli(config, "audit", "verify")
    # enroll, 3 revokes, and a signed checkpoint after each of these operator actions
    assert (status, out.splitlines()[-1]) == (0, "audit log: 8 entries, intact")
    db = sqlite3.connect(config.parent / "hub.db")
    with db:
        db.execute("UPDATE audit SET actor = 'someone else' WHERE id = 3")
    status, out = cli(config, "audit", "verify")
    assert status == 1
    assert "TAMPERED entry 3: was edited" in out
    with db:
        db.execute("DELETE FROM audit WHERE id = 5")
    status, out = cli(config, "audit", "verify")
    assert status == 1
    assert "missing" in out
    db.close()


def test_tail_follows_live(config: Path) -> None:
    argv = [*VIGIL_HUB, "tail", "--config", str(config)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(lambda: any("enroll" in line for line in lines), what="existing events")
        store = open_store(load_config(config).store_url)
        alarm = Message(seq=9, body=Alarm(Trigger.TAMPER), epoch=EPOCH)
        write(store, lambda tx: tx.uplinks.accept(parties().device_id, alarm, received_at=T0))
        store.close()
        line = wait_until(lambda: [x for x in lines if "alarm" in x], what="live alarm line")[0]
        assert "trigger tamper" in line
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]


def test_pubkey_prints_what_a_device_config_needs(config: Path) -> None:
    status, out = cli(config, "pubkey")
    assert status == 0
    expected = parties().hub.public().to_text()
    assert out.splitlines() == ["[hub]", *(f'{k} = "{v}"' for k, v in expected.items())]


def test_a_risk_window_is_armed_shown_audited_and_cleared(config: Path) -> None:
    device = parties().device_id.hex
    status, out = cli(config, "risk", device, "--hours", "6")
    assert status == 0
    assert "armed for 6 h" in out
    store = open_store(load_config(config).store_url)
    try:
        with store.read() as tx:
            record = tx.devices.get(parties().device_id)
            assert record is not None
            assert record.risk_until is not None
            assert "risk window" in [e.action for e in tx.audit.entries()]
    finally:
        store.close()
    assert cli(config, "risk", device, "--clear")[0] == 0
    store = open_store(load_config(config).store_url)
    try:
        with store.read() as tx:
            record = tx.devices.get(parties().device_id)
            assert record is not None
            assert record.risk_until is None
    finally:
        store.close()


def test_a_risk_window_needs_a_sensible_span(config: Path) -> None:
    device = parties().device_id.hex
    for bad in ("0", "-1", "1e9", "soon"):
        with pytest.raises(SystemExit) as exit_:
            cli(config, "risk", device, "--hours", bad)
        assert exit_.value.code == 2
    assert cli(config, "risk", "nonsense", "--hours", "1")[0] == 1
