"""The hub's loops cannot die quietly: a handler that raises, a worker that stalls, a broker
that cannot be reached. Real mosquitto, real SQLite/PostgreSQL, real notify socket."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.broker import Broker, free_port, running_mosquitto
from tests.support.hubrig import FakeClock, running_hub, wearable, write_config
from tests.support.hubstore import store_url
from tests.support.notify import NotifySocket
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek, write
from tests.support.sinks import smtp_sink, webhook_sink
from tests.support.wait import wait_until
from vigil.hub import pipeline
from vigil.hub.channels import AppriseNotifier
from vigil.hub.cli import main
from vigil.hub.config import load_config
from vigil.hub.daemon import HubService
from vigil.hub.health import Heartbeats, WorkerBounds
from vigil.hub.store import open_store
from vigil.hub.store.traffic import RECEIPT_EVERY
from vigil.wire import Alarm, Heartbeat, Message, Trigger, seal_uplink
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration


def poisoned(calls: list[int]) -> Callable[[pipeline.Context, object], str]:
    def handler(ctx: pipeline.Context, body: object) -> str:
        calls.append(ctx.message.seq)
        raise RuntimeError("poisoned heartbeat")

    return handler


def seal(message: Message) -> bytes:
    p = parties()
    return seal_uplink(message, device_id=p.device_id, device_keys=p.device, hub=p.hub.public())


@pytest.fixture(params=["sqlite", "postgresql"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubService]:
    with smtp_sink() as smtp, webhook_sink() as hook, store_url(request, tmp_path) as url:
        broker = Broker("127.0.0.1", 1, tmp_path / "unused.conf")  # no broker: no downlinks
        config = replace(
            load_config(write_config(tmp_path, broker=broker, smtp=smtp, hook=hook)),
            store_url=url,
        )
        store = open_store(url, create=True)
        p = parties()
        write(store, lambda tx: tx.devices.enroll(p.device_id, label="Ana",
                                                  public_keys=p.device.public()))  # fmt: skip
        yield HubService(config, store=store, hub_keys=p.hub, notifier=AppriseNotifier(),
                         clock=FakeClock())  # fmt: skip
        store.close()


def test_a_handler_that_raises_is_recorded_receipted_and_never_run_again(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setitem(pipeline.HANDLERS, Heartbeat, poisoned(calls))
    topic = up_topic(parties().device_id)
    service.handle(topic, seal(Message(seq=1, body=Heartbeat(battery=50), epoch=EPOCH)))
    service.handle(
        topic, seal(Message(seq=2, body=Alarm(Trigger.BUTTON), epoch=EPOCH))
    )  # the next one
    clock = service.clock
    assert isinstance(clock, FakeClock)
    clock.advance(RECEIPT_EVERY)  # v2: a duplicate gets at most one receipt in that time
    service.handle(
        topic, seal(Message(seq=1, body=Heartbeat(battery=50), epoch=EPOCH))
    )  # a resend
    assert calls == [1]  # neither the resend nor start-up recovery runs it again
    assert service.recover() == 0
    (failed,) = peek(service.store, lambda tx: tx.uplinks.failed())
    assert (failed.seq, failed.kind, failed.processed) == (1, "heartbeat", True)
    assert failed.error == "RuntimeError: poisoned heartbeat"
    assert peek(service.store, lambda tx: tx.uplinks.count(failed=True)) == 1
    (alert,) = peek(service.store, lambda tx: tx.alerts.all())
    assert alert.alarm_seq == 2
    # Stored, so receipted: the first receipt, the alarm's, and the resend's again.
    receipts = peek(service.store, lambda tx: tx.downlinks.pending())
    assert [(d.kind, d.arg) for d in receipts] == [("stored", 1), ("stored", 2), ("stored", 1)]
    entries = peek(service.store, lambda tx: tx.audit.entries())
    (entry,) = [e for e in entries if e.action == "uplink failed"]
    assert "seq=1 kind=heartbeat RuntimeError: poisoned heartbeat" in entry.detail
    assert service.failed == 1


def test_a_decoder_that_crashes_is_counted_and_nothing_is_stored(
    service: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> tuple[Message, bytes]:
        raise ValueError("decoder bug")

    topic = up_topic(parties().device_id)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "open_uplink_payload", broken)
        service.handle(topic, seal(Message(seq=1, body=Heartbeat(), epoch=EPOCH)))
    assert peek(service.store, lambda tx: tx.rejections.totals()) == {"crashed:ValueError": 1}
    service.handle(
        topic, seal(Message(seq=1, body=Heartbeat(), epoch=EPOCH))
    )  # the device's resend
    assert peek(service.store, lambda tx: tx.uplinks.count()) == 1


def test_the_running_hub_survives_a_poisoned_uplink_and_stats_shows_it(
    tmp_path: Path, mosquitto: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setitem(pipeline.HANDLERS, Heartbeat, poisoned(calls))
    with smtp_sink() as smtp, webhook_sink() as hook:
        config = write_config(tmp_path, broker=mosquitto, smtp=smtp, hook=hook)
        with running_hub(config, FakeClock()) as hub:
            p = parties()
            keys, dev = p.device.public(), p.device_id
            write(hub.store, lambda tx: tx.devices.enroll(dev, label="Ana", public_keys=keys))
            with wearable(mosquitto) as device:
                device.send(Message(seq=1, body=Heartbeat(battery=50), epoch=EPOCH))
                device.wait_for("stored")  # the poisoned one is on disk: receipted
                device.send(Message(seq=2, body=Alarm(Trigger.BUTTON), epoch=EPOCH))
                device.wait_for("stored", 2)  # the loop went on
                wait_until(lambda: smtp.messages, 10, what="the alarm's email")
            wait_until(lambda: "broker: connected" in stats(config), 10, what="hub status")
        out = stats(config)
    assert "failed uplinks: 1 (stored and receipted; their handling raised)" in out
    assert "seq 1 heartbeat at " in out
    assert ": RuntimeError: poisoned heartbeat" in out
    assert "hub hub-test: stopped (reported " in out


def stats(config: Path) -> str:
    out = io.StringIO()
    assert main(["stats", "--config", str(config)], out=out) == 0
    return out.getvalue()


def test_a_stalled_timer_withholds_the_watchdog_until_it_moves_again(
    tmp_path: Path, mosquitto: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, entered = threading.Event(), threading.Event()
    beats = Heartbeats(WorkerBounds(ingest=5, delivery=5, timer=0.5).per_worker())
    with NotifySocket() as notify, smtp_sink() as smtp, webhook_sink() as hook:
        monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
        config = write_config(tmp_path, broker=mosquitto, smtp=smtp, hook=hook)
        with running_hub(config, FakeClock(), beats=beats) as hub:
            notify.wait_for("WATCHDOG=1", 10)
            tick = hub.tick

            def stalled_tick() -> None:
                entered.set()
                release.wait(30)
                tick()

            monkeypatch.setattr(hub, "tick", stalled_tick)
            entered.wait(10)
            stuck = notify.wait_line(lambda s: "timer stuck" in s, 10, what="stuck status")
            wait_until(lambda: beats.withheld >= 5, 10, what="pings withheld")
            release.set()
            healthy = notify.wait_line(
                lambda s: s.startswith("STATUS=broker: connected") and "stuck" not in s,
                10, what="healthy status again", after=stuck,
            )  # fmt: skip
            notify.wait_for("WATCHDOG=1", 10, count=notify.received.count("WATCHDOG=1") + 1)
    assert "WATCHDOG=1" not in notify.received[stuck:healthy]
    assert notify.received[stuck].startswith("STATUS=broker: connected to 127.0.0.1:")
    assert notify.received[stuck].endswith("; timer stuck (no round for over 0.5 s)")


def test_ready_only_after_the_subscription_and_an_unreachable_broker_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there yet
    with NotifySocket() as notify, smtp_sink() as smtp, webhook_sink() as hook:
        monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
        config = write_config(tmp_path, broker=Broker("127.0.0.1", port, tmp_path / "x"),
                              smtp=smtp, hook=hook)  # fmt: skip
        with running_hub(config, FakeClock(), connected=False):
            refused = notify.wait_line(lambda s: "connection refused" in s, 20, what="refusal")
            waiting = f"STATUS=waiting for the broker: connecting to 127.0.0.1:{port} since "
            assert notify.received[refused].startswith(waiting)
            assert "READY=1" not in notify.received
            assert "waiting for the broker: connecting" in stats(config)
            with running_mosquitto(tmp_path / "broker", port=port):
                notify.wait_for("READY=1", 30)
                notify.wait_line(lambda s: s.startswith("STATUS=broker: connected to"), 10,
                                 what="connected status")  # fmt: skip
                wait_until(lambda: "broker: connected to 127.0.0.1" in stats(config), 10)
