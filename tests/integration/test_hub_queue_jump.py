"""Alarms jump the queue at every stage of a round: one that arrives while a flood's
receipts go out is stored and answered before the rest of them (real SQLite)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.hubrig import FakeClock, write_config
from tests.support.parties import EPOCH, parties
from tests.support.peek import write
from tests.support.sinks import smtp_sink, webhook_sink
from vigil.hub.channels import AppriseNotifier
from vigil.hub.config import load_config
from vigil.hub.daemon import OPEN_CHUNK, HubService
from vigil.hub.ingest import MAX_BATCH
from vigil.hub.store import open_store
from vigil.wire import Alarm, Heartbeat, Message, Trigger, open_downlink, seal_uplink
from vigil.wire.topics import up_topic

pytestmark = pytest.mark.integration


@dataclass
class Wire:
    connected: bool = True
    published: list[bytes] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.published.append(payload)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubService]:
    url, clock, p = f"sqlite:///{tmp_path / 'hub.db'}", FakeClock(), parties()
    store = open_store(url, create=True)
    write(store, functools.partial(_enroll, now=clock.now))
    with smtp_sink() as smtp, webhook_sink() as hook:
        broker = Broker("127.0.0.1", 1, tmp_path / "unused.conf")  # no broker is used
        config = load_config(write_config(tmp_path, broker=broker, smtp=smtp, hook=hook))
    service = HubService(replace(config, store_url=url), store=store, hub_keys=p.hub,
                         notifier=AppriseNotifier(), clock=clock)  # fmt: skip
    service.transport = Wire()
    yield service
    store.close()


def _enroll(tx: object, *, now: float) -> None:
    p = parties()
    tx.devices.enroll(p.device_id, label="Ana", public_keys=p.device.public(), now=now)  # type: ignore[attr-defined]


def up(seq: int, body: Heartbeat | Alarm) -> tuple[str, bytes]:
    p = parties()
    message = Message(seq=seq, body=body, epoch=EPOCH)
    envelope = seal_uplink(message, device_id=p.device_id, device_keys=p.device,
                           hub=p.hub.public())  # fmt: skip
    return up_topic(p.device_id), envelope


def answered(hub: HubService) -> list[int]:
    """The uplink seqs the published receipts answer, in order."""
    p = parties()
    assert isinstance(hub.transport, Wire)
    opened = [open_downlink(e, device_id=p.device_id, device_keys=p.device, hub=p.hub.public())
              for e in hub.transport.published]  # fmt: skip
    return [m.body.seq for m in opened]  # type: ignore[union-attr]


def test_an_alarm_arriving_during_a_floods_receipts_is_answered_before_them(
    hub: HubService,
) -> None:
    beats = [up(s, Heartbeat(battery=80)) for s in range(3 * OPEN_CHUNK)]
    later = [up(100, Alarm(Trigger.BUTTON)), up(101, Heartbeat(battery=79))]
    arrivals = [later]
    hub.arrivals = lambda most: arrivals.pop()[:most] if arrivals else []
    hub.handle_batch(beats)
    assert answered(hub)[0] == 100  # before every receipt of the round it arrived in
    assert sorted(answered(hub)[1:]) == list(range(3 * OPEN_CHUNK))
    assert hub.carried  # the heartbeat beside it waits for the next round, opened
    assert hub.accepted == 3 * OPEN_CHUNK + 1
    hub.handle_batch([])
    assert not hub.carried
    assert answered(hub)[-1] == 101
    assert hub.accepted == 3 * OPEN_CHUNK + 2


def test_what_arrives_during_a_round_is_taken_only_up_to_a_bound(hub: HubService) -> None:
    asked: list[int] = []

    def arrivals(most: int) -> list[tuple[str, bytes]]:
        asked.append(most)
        return [up(1000 + len(asked) * 10 + i, Heartbeat(battery=70)) for i in range(most)]

    hub.arrivals = arrivals
    hub.handle_batch([up(s, Heartbeat(battery=80)) for s in range(4 * OPEN_CHUNK)])
    assert asked
    assert all(0 < n <= OPEN_CHUNK for n in asked)
    hub.arrivals = None
    carried = hub.accepted
    hub.handle_batch([])
    assert 0 < hub.accepted - carried <= MAX_BATCH  # never more than a batch kept in memory
