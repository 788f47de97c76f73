"""Notices: in parallel (a stalled SMTP server never holds up the webhook), first notices
ahead of retries, fair across devices, capped per device, stopped when the alert closes;
escalation and silence selected by index. Real SQLite/PostgreSQL, SMTP and HTTP sinks."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import Broker
from tests.support.hubrig import FakeClock, write_config
from tests.support.hubstore import store_url
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek, write
from tests.support.sinks import SmtpSink, WebhookSink, smtp_sink, webhook_sink
from tests.support.wait import wait_until
from vigil.hub import operator
from vigil.hub.channels import AppriseNotifier
from vigil.hub.config import DeviceLimits, load_config
from vigil.hub.daemon import HubService
from vigil.hub.delivery import Dispatcher
from vigil.hub.store import Transaction, open_store
from vigil.wire import Alarm, Cancel, DeviceId, DeviceKeys, Message, Trigger, seal_uplink
from vigil.wire.liveness import NonceMinter
from vigil.wire.messages import Checkin
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    service: HubService
    clock: FakeClock
    smtp: SmtpSink
    hook: WebhookSink

    def alarm(self, seq: int, *, other: bool = False) -> None:
        p = parties()
        device_id, keys = (p.other_id, p.other) if other else (p.device_id, p.device)
        self.send(device_id, keys, Message(seq=seq, body=Alarm(Trigger.BUTTON), epoch=EPOCH))

    def send(self, device_id: DeviceId, keys: DeviceKeys, message: Message) -> None:
        env = seal_uplink(
            message, device_id=device_id, device_keys=keys, hub=parties().hub.public()
        )
        self.service.handle(up_topic(device_id), env)

    def posts(self, path: str = "/operators") -> list[str]:
        """The first line of each notice the webhook got on `path`, in arrival order."""
        return [p.json()["message"].splitlines()[0] for p in self.hook.posts if p.path == path]


def _enroll(
    device_id: DeviceId, label: str, keys: DeviceKeys, tx: Transaction, *, now: float
) -> None:
    tx.devices.enroll(device_id, label=label, public_keys=keys.public(), now=now)


def rig_for(url: str, tmp_path: Path, smtp: SmtpSink, hook: WebhookSink, **limits: int) -> Rig:
    broker = Broker("127.0.0.1", 1, tmp_path / "unused.conf")  # no broker: no downlinks
    config = load_config(write_config(tmp_path, broker=broker, smtp=smtp, hook=hook))
    config = replace(config, store_url=url, limits=DeviceLimits(**limits))
    store = open_store(url, create=True)
    p, clock = parties(), FakeClock()
    # Enrolled on the hub's clock: a device never heard from is watched from its enrolment.
    for device_id, label, keys in ((p.device_id, "Ana", p.device), (p.other_id, "Bea", p.other)):
        write(store, functools.partial(_enroll, device_id, label, keys, now=clock.now))
    service = HubService(config, store=store, hub_keys=p.hub, notifier=AppriseNotifier(),
                         clock=clock, rand=lambda: 1.0)  # fmt: skip
    return Rig(service, clock, smtp, hook)


@pytest.fixture(params=["sqlite", "postgresql"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    with smtp_sink() as smtp, webhook_sink() as hook, store_url(request, tmp_path) as url:
        r = rig_for(url, tmp_path, smtp, hook)
        yield r
        r.service.dispatcher.close()
        r.service.store.close()


def test_a_stalled_smtp_server_does_not_hold_up_the_webhook(rig: Rig) -> None:
    rig.smtp.stall()
    rig.alarm(1)
    rig.service.tick()  # tier "operators": email and webhook, due at once
    futures = rig.service.dispatcher.dispatch(rig.clock())
    try:
        # The email waits at the server while the webhook gets its notice.
        wait_until(lambda: rig.smtp.stalled.is_set() and rig.posts(), 10, what="the webhook")
        email = next(d for d in peek(rig.service.store, lambda tx: tx.deliveries.for_alert(1))
                     if d.url.startswith("mailto"))  # fmt: skip
        assert email.attempts == 0  # its send has not returned: the webhook went beside it
    finally:
        rig.smtp.release()
    wait(futures, timeout=30)
    assert len(rig.smtp.messages) == 1
    assert rig.posts() == ["ALARM: Ana needs help"]


def test_a_new_alarm_is_escalated_by_its_batch_not_the_timer(rig: Rig) -> None:
    """The responders' first notices are planned as soon as the alarm is stored, and the
    sending worker is woken: no wait for the next round of the 1 s timer."""
    dispatcher = rig.service.dispatcher
    dispatcher.wake.clear()
    rig.alarm(1)
    assert dispatcher.wake.is_set()
    assert peek(rig.service.store, lambda tx: tx.deliveries.fired_steps(1)) == {"operators"}
    assert dispatcher.run_due(rig.clock()) == 2  # email and webhook, no tick() in between
    assert rig.posts() == ["ALARM: Ana needs help"]
    dispatcher.wake.clear()
    rig.send(parties().device_id, parties().device, Message(seq=2, body=Checkin(), epoch=EPOCH))
    assert not dispatcher.wake.is_set()  # a routine batch plans nothing


def test_a_round_of_notices_is_claimed_by_one_commit(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alarm's notices to its responders (email and webhook) are claimed together: one
    durable commit before they leave, not a read and then one commit each."""
    rig.alarm(1)
    store, opened = rig.service.store, []
    for kind in ("read", "transaction"):
        real = getattr(store, kind)

        def counting(*args: object, _kind: str = kind, _real: Any = real, **kw: object) -> Any:
            if threading.current_thread() is threading.main_thread():  # not the senders' records
                opened.append(_kind)
            return _real(*args, **kw)

        monkeypatch.setattr(store, kind, counting)
    futures = rig.service.dispatcher.dispatch(rig.clock())
    assert (len(futures), opened) == (2, ["transaction"])
    wait(futures, timeout=30)
    monkeypatch.undo()
    assert rig.posts() == ["ALARM: Ana needs help"]
    assert len(rig.smtp.messages) == 1


def test_first_notices_go_ahead_of_retries(rig: Rig) -> None:
    rig.hook.fail_next = 1
    rig.alarm(1)
    rig.service.tick()
    rig.service.deliver()  # Ana's webhook fails: retry in 5 s (rand 1.0: the full backoff)
    rig.clock.advance(10)
    rig.alarm(1, other=True)
    rig.service.tick()
    due = peek(rig.service.store, lambda tx: tx.deliveries.due(rig.clock()))
    assert [(d.alert_id, d.attempts) for d in due] == [(2, 0), (2, 0), (1, 1)]
    service = rig.service
    one_at_a_time = Dispatcher(service.store, AppriseNotifier(), policy=service.config.escalation,
                               map_url=service.config.map_url, limits=service.config.limits,
                               senders=1)  # fmt: skip
    try:
        assert one_at_a_time.run_due(rig.clock()) == 3
    finally:
        one_at_a_time.close()
    assert rig.posts() == ["ALARM: Bea needs help", "ALARM: Ana needs help"]


@pytest.mark.parametrize("closed_by", ["wearer's cancel", "operator's resolve"])
def test_retries_stop_when_the_alert_closes(rig: Rig, closed_by: str) -> None:
    rig.hook.fail_next = 100
    rig.alarm(1)
    rig.service.tick()
    rig.service.deliver()
    if closed_by == "wearer's cancel":
        p = parties()
        rig.send(p.device_id, p.device, Message(seq=2, body=Cancel(alarm_seq=1), epoch=EPOCH))
    else:
        operator.act(rig.service.store, 1, "resolve", by="rosa", now=rig.clock())
    rig.clock.advance(1000)
    assert rig.service.deliver() == 0
    hook = next(d for d in peek(rig.service.store, lambda tx: tx.deliveries.for_alert(1))
                if d.url.startswith("json"))  # fmt: skip
    assert (hook.status, hook.attempts, hook.next_at) == ("stopped", 1, None)


def test_a_flooding_device_never_buries_another_devices_alarm(tmp_path: Path) -> None:
    with smtp_sink() as smtp, webhook_sink() as hook:
        rig = rig_for(f"sqlite:///{tmp_path / 'hub.db'}", tmp_path, smtp, hook,
                      max_active_alerts=5, notices_per_minute=4)  # fmt: skip
        store = rig.service.store
        try:
            for seq in range(1, 601):
                rig.alarm(seq)
            rig.alarm(1, other=True)
            rig.service.tick()
            alerts = peek(store, lambda tx: tx.alerts.all())
            assert [(a.device_id, a.joined) for a in alerts] == [
                *[(parties().device_id, 0)] * 4, (parties().device_id, 595),
                (parties().other_id, 0)]  # fmt: skip
            flood = [e for e in peek(store, lambda tx: tx.audit.entries())
                     if e.action == "alarm flood"]  # fmt: skip
            assert [e.subject for e in flood] == ["alert 5"]
            # One round of the dispatcher (8 senders): Bea's notice is in it.
            wait(rig.service.dispatcher.dispatch(rig.clock()), timeout=30)
            assert "ALARM: Bea needs help" in rig.posts()
            rig.service.deliver()  # the rest that is due now: Ana is at 4 notices a minute
            assert sum(1 for _ in smtp.messages) + len(hook.posts) == 4 + 2
            rig.clock.advance(61)
            rig.service.deliver()
            assert len(smtp.messages) + len(hook.posts) == 4 + 4 + 2
            rig.clock.advance(61)
            rig.service.deliver()
            flooded = [p for p in hook.posts if "FLOOD: 595 further alarms" in p.body.decode()]
            assert len(flooded) == 1
        finally:
            rig.service.dispatcher.close()
            store.close()


def test_escalation_and_silence_are_selected_by_index(rig: Rig) -> None:
    store, clock = rig.service.store, rig.clock
    start = clock()
    rig.alarm(1)  # its batch fires what is due at once (operators); partners at +120 s
    assert peek(store, lambda tx: tx.deliveries.fired_steps(1)) == {"operators"}
    rig.service.tick()
    assert write(store, lambda tx: tx.alerts.due_escalation(start + 119)) == []
    assert [a.id for a in write(store, lambda tx: tx.alerts.due_escalation(start + 120))] == [1]
    clock.now = start + 120
    rig.service.tick()
    assert peek(store, lambda tx: tx.deliveries.fired_steps(1)) == {"operators", "partners"}
    assert write(store, lambda tx: tx.alerts.due_escalation(start + 10**6)) == []
    # Silence: Ana spoke at `start`; Bea never did, and is watched from her enrolment at
    # `start` (version 2: a broker swallowing her from day one must not hide her).
    silent_after, risky = rig.service.config.silent_after, rig.service.config.risk_silent_after
    clock.now = start + silent_after + 1
    rig.service.tick()
    rig.service.tick()  # one alert per silence
    silent = [a for a in peek(store, lambda tx: tx.alerts.all()) if a.kind == "silent"]
    assert sorted((a.device_id.hex, a.state) for a in silent) == sorted(
        [(parties().device_id.hex, "open"), (parties().other_id.hex, "open")])  # fmt: skip
    later = clock() + 10**6
    assert (
        write(
            store,
            lambda tx: tx.devices.due_silent(
                now=later, silent_after=silent_after, risk_silent_after=risky
            ),
        )
        == []
    )
    # She speaks again, proven fresh by echoing a nonce minted now (v2, §8): the silent
    # alert closes and she is watched again. A message with no echo would prove nothing.
    p = parties()
    echo = NonceMinter(p.hub.nonce_secret()).mint(p.device_id, at=clock())
    rig.send(p.device_id, p.device, Message(seq=2, body=Checkin(), epoch=EPOCH, nonce=echo))
    ana_silent = next(a for a in silent if a.device_id == p.device_id)
    assert not peek(store, lambda tx: tx.alerts.get(ana_silent.id)).active
    due = write(store, lambda tx: tx.devices.due_silent(now=clock() + silent_after + 1,
                                                       silent_after=silent_after,
                                                       risk_silent_after=risky))  # fmt: skip
    assert [d.device_id for d in due] == [parties().device_id]


def test_the_due_queries_use_their_indexes(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    open_store(f"sqlite:///{db}", create=True).close()
    conn = sqlite3.connect(db)
    plans = [
        ("alerts_escalation_due", "SELECT id FROM alerts WHERE next_escalation_at <= 1 "
         "ORDER BY next_escalation_at LIMIT 100"),
        # the probe at the end of every ingest batch
        ("alerts_escalation_due", "SELECT 1 AS due FROM alerts WHERE next_escalation_at <= 1 "
         "LIMIT 1"),
        ("devices_watch", "SELECT device_id FROM devices WHERE watch_from IS NOT NULL "
         "AND watch_from < 1 ORDER BY watch_from LIMIT 100"),
        ("deliveries_due", "SELECT id FROM deliveries WHERE status = 'pending' AND next_at <= 1"),
        ("uplinks_failed", "SELECT seq FROM uplinks WHERE error IS NOT NULL "
         "ORDER BY received_at DESC LIMIT 5"),
        # the registry's refresh after an enrolment, revocation or risk window
        ("devices_registry_version", "SELECT device_id FROM devices WHERE registry_version > 1"),
    ]  # fmt: skip
    for index, query in plans:
        plan = " ".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {query}"))
        assert index in plan, (index, plan)
    conn.close()
