"""End to end with real parts: mosquitto, the hub, SQLite, an SMTP sink and a webhook sink.

An alarm sealed by a test wearable ends as an email and webhook POSTs with what
a responder needs; the wearer gets a verifiable `stored`, then `acknowledged`
after `vigil-hub ack`; escalation follows a driven clock.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.hubrig import FakeClock, running_hub, wearable, write_config
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek
from tests.support.sinks import SmtpSink, WebhookSink, smtp_sink, webhook_sink
from tests.support.wait import wait_until
from vigil.hub.cli import main
from vigil.hub.store.traffic import RECEIPT_EVERY
from vigil.wire import (
    Acknowledged,
    AgedFix,
    Alarm,
    Cancel,
    ClockSource,
    Fix,
    Heartbeat,
    Message,
    Stored,
    Trigger,
)
from vigil.wire.keys import DevicePublicKeys

pytestmark = pytest.mark.integration

FIX = AgedFix(
    Fix(lat=17.0654, lon=-96.7237, fix_time=None, quality=1, satellites=7, hdop=0.9), age=42.0
)


@pytest.fixture
def sinks() -> Iterator[tuple[SmtpSink, WebhookSink]]:
    with smtp_sink() as smtp, webhook_sink() as hook:
        yield smtp, hook


@pytest.fixture
def config(tmp_path: Path, mosquitto: Broker, sinks: tuple[SmtpSink, WebhookSink]) -> Path:
    path = write_config(tmp_path, broker=mosquitto, smtp=sinks[0], hook=sinks[1])
    assert cli(path, "init")[0] == 0
    enroll(path, label="Ana (Oaxaca)")
    return path


def enroll(path: Path, *, label: str, other: bool = False) -> None:
    p = parties()
    device_id = p.other_id if other else p.device_id
    keys: DevicePublicKeys = (p.other if other else p.device).public()
    text = keys.to_text()
    argv = ["--config", str(path), "enroll", "--device-id", device_id.hex, "--label", label,
            "--signing", text["signing"], "--kem", text["kem"]]  # fmt: skip
    assert main(argv, out=io.StringIO()) == 0


def cli(path: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main([*args, "--config", str(path)], out=out)
    return status, out.getvalue()


def posts(hook: WebhookSink, path: str) -> list[dict[str, str]]:
    return [p.json() for p in hook.posts if p.path == path]


def test_alarm_reaches_responders_and_wearer_feels_receipts(
    config: Path, mosquitto: Broker, sinks: tuple[SmtpSink, WebhookSink]
) -> None:
    smtp, hook = sinks
    clock = FakeClock()
    with running_hub(config, clock) as hub, wearable(mosquitto) as device:
        alarm = Message(seq=1, body=Alarm(Trigger.BUTTON, fix=FIX, battery=77),
                        sent_at=clock.now, clock=ClockSource.NTP, epoch=EPOCH)  # fmt: skip
        envelope = device.send(alarm)
        (stored,) = device.wait_for("stored")
        assert stored.body == Stored(1, device.digest(1))
        assert stored.epoch == device.epoch

        mail = wait_until(lambda: smtp.messages, what="email to operators")[0]
        assert mail.recipients == ["ops@vigil.test"]
        assert "Ana (Oaxaca)" in mail.subject
        expected = ["panic button held", "17.065400, -96.723700", "42 s old", "Battery: 77%",
                    "mlat=17.065400&mlon=-96.723700", "vigil-hub ack 1"]  # fmt: skip
        for text in expected:
            assert text in mail.text
        (op_post,) = wait_until(lambda: posts(hook, "/operators"), what="operators webhook")
        assert "Ana (Oaxaca)" in op_post["title"]
        assert "Map: https://www.openstreetmap.org/?mlat=17.065400" in op_post["message"]
        assert posts(hook, "/partners") == []

        # The first receipt may be lost: a resend gets a fresh one (at most one per
        # RECEIPT_EVERY, version 2), and nothing twice.
        clock.advance(RECEIPT_EVERY)
        resent = device.resend(1)
        assert resent != envelope  # sealed afresh: the broker never sees the same bytes
        second = device.wait_for("stored", 2)
        assert [m.body.seq for m in second] == [1, 1]  # type: ignore[union-attr]
        assert second[0].seq != second[1].seq  # downlink seqs never repeat
        assert second[0].nonce != second[1].nonce  # every downlink carries a fresh nonce
        assert peek(hub.store, lambda tx: tx.uplinks.count()) == 1
        assert len(peek(hub.store, lambda tx: tx.alerts.all())) == 1

        # Nobody took it within 2 minutes: the partners are told.
        clock.advance(121)
        wait_until(lambda: posts(hook, "/partners"), what="partners webhook")

        status, out = cli(config, "ack", "1", "--by", "rosa")
        assert (status, out) == (0, "alert 1: acknowledged\n")
        (ack,) = device.wait_for("acknowledged")
        assert ack.body == Acknowledged(1, device.digest(1))
        assert cli(config, "resolve", "1", "--note", "safe")[0] == 0
        device.wait_for("resolved")
        assert device.bad_downlinks == 0
        assert device.dropped_downlinks == []
        assert len(smtp.messages) == 1
        assert len(posts(hook, "/operators")) == 1
        deliveries = peek(hub.store, lambda tx: tx.deliveries.for_alert(1))
        assert sorted((d.step, d.status) for d in deliveries) == [
            ("operators", "sent"), ("operators", "sent"), ("partners", "sent")]  # fmt: skip
    status, out = cli(config, "audit", "verify")
    assert status == 0
    assert out.endswith("entries, intact\n")


def test_acknowledging_stops_escalation(
    config: Path, mosquitto: Broker, sinks: tuple[SmtpSink, WebhookSink]
) -> None:
    _, hook = sinks
    clock = FakeClock()
    with running_hub(config, clock) as hub, wearable(mosquitto) as device:
        device.send(Message(seq=3, body=Alarm(Trigger.TAMPER, battery=40), epoch=EPOCH))
        device.wait_for("stored")
        wait_until(lambda: posts(hook, "/operators"), what="operators webhook")
        assert cli(config, "ack", "1")[0] == 0
        clock.advance(600)
        hub.escalate(clock.now)
        assert peek(hub.store, lambda tx: tx.deliveries.fired_steps(1)) == {"operators"}
        assert posts(hook, "/partners") == []


def test_duress_cancel_escalates_at_once_and_shows_as_duress(
    config: Path, mosquitto: Broker, sinks: tuple[SmtpSink, WebhookSink]
) -> None:
    _, hook = sinks
    clock = FakeClock()
    with running_hub(config, clock) as hub, wearable(mosquitto) as device:
        device.send(Message(seq=5, body=Alarm(Trigger.BUTTON, fix=FIX, battery=60), epoch=EPOCH))
        device.wait_for("stored")
        device.send(Message(seq=6, body=Cancel(alarm_seq=5, duress=True), epoch=EPOCH))
        stored = device.wait_for("stored", 2)
        assert [m.body.seq for m in stored] == [5, 6]  # type: ignore[union-attr]
        # Every tier fires now, without waiting two minutes.
        (partners,) = wait_until(lambda: posts(hook, "/partners"), what="partners webhook")
        assert partners["title"].startswith("[Vigil] DURESS")
        assert "made to cancel" in partners["message"]
        alert = peek(hub.store, lambda tx: tx.alerts.get(1))
        assert alert.active
        assert alert.duress
        status, out = cli(config, "alerts")
        assert status == 0
        assert "DURESS" in out
        # Nothing beyond `stored` reached the wearer: it looks like any cancel.
        assert {m.kind for m in device.downlinks} == {"stored"}


def test_real_cancel_closes_and_stops(
    config: Path, mosquitto: Broker, sinks: tuple[SmtpSink, WebhookSink]
) -> None:
    clock = FakeClock()
    with running_hub(config, clock) as hub, wearable(mosquitto) as device:
        device.send(Message(seq=7, body=Alarm(Trigger.BUTTON), epoch=EPOCH))
        device.send(Message(seq=8, body=Cancel(alarm_seq=7), epoch=EPOCH))
        device.wait_for("stored", 2)
        wait_until(
            lambda: peek(hub.store, lambda tx: tx.alerts.get(1)).state.value == "cancelled",
            what="cancelled",
        )
        clock.advance(600)
        hub.escalate(clock.now)
        assert "partners" not in peek(hub.store, lambda tx: tx.deliveries.fired_steps(1))


def test_heartbeat_then_silence_and_will_raise_device_silent(
    config: Path, mosquitto: Broker, sinks: tuple[SmtpSink, WebhookSink]
) -> None:
    smtp, _ = sinks
    clock = FakeClock()
    enroll(config, label="Bea", other=True)
    with running_hub(config, clock) as hub, wearable(mosquitto) as ana, \
            wearable(mosquitto, other=True) as bea:  # fmt: skip
        ana.send(Message(seq=1, body=Alarm(Trigger.BUTTON, fix=FIX), epoch=EPOCH))
        ana.send(Message(seq=2, body=Cancel(alarm_seq=1), epoch=EPOCH))
        bea.send(Message(seq=1, body=Heartbeat(battery=90), epoch=EPOCH))
        ana.wait_for("stored", 2)
        bea.wait_for("stored")
        bea.publish(b"")  # what the broker sends as bea's Will
        alert = wait_until(
            lambda: [
                a for a in peek(hub.store, lambda tx: tx.alerts.all()) if a.kind.value == "silent"
            ]
        )
        assert [a.device_id for a in alert] == [parties().other_id]
        clock.advance(301)  # ana's deadline passes
        ana_id = parties().device_id
        silent = wait_until(
            lambda: [
                a
                for a in peek(hub.store, lambda tx: tx.alerts.all(active_only=True))
                if a.device_id == ana_id
            ]
        )
        assert silent[0].last_fix is not None
        assert silent[0].last_fix.lat == pytest.approx(FIX.fix.lat)
        wait_until(lambda: any("SILENT: Ana" in m.text for m in smtp.messages), what="mail")
        # Ana speaks again. Her first heartbeat echoes a nonce from before the alert: it
        # proves nothing new (it may have been stashed). Its receipt brings a fresh nonce,
        # and the next heartbeat, echoing it, closes her silent alert (version 2, §8).
        ana.send(Message(seq=3, body=Heartbeat(battery=50), epoch=EPOCH))
        ana.wait_for("stored", 3)
        assert peek(hub.store, lambda tx: tx.alerts.get(silent[0].id)).active
        ana.send(Message(seq=4, body=Heartbeat(battery=50), epoch=EPOCH))
        wait_until(
            lambda: not peek(hub.store, lambda tx: tx.alerts.get(silent[0].id)).active,
            what="closed",
        )
