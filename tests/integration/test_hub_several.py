"""Several hubs on one store: a device changed on one hub is read again by the others (that
device only), a stale record is never kept, the silence watchdog runs on one hub under a
lease with takeover, and one device never has two active silent alerts. Real SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.hubrig import FakeClock
from tests.support.hubstore import postgres_url
from tests.support.offline_hub import (
    enroll_both,
    offline_config,
    offline_service,
    up,
)
from tests.support.parties import EPOCH, parties
from tests.support.peek import peek, write
from tests.support.postgres import PostgresServer
from vigil.errors import StorageError
from vigil.hub.daemon import HubService
from vigil.hub.store import AlertKind, DeviceRecord, Transaction, open_store
from vigil.wire import Alarm, Heartbeat, Message, Trigger

pytestmark = pytest.mark.integration


@pytest.fixture
def two_hubs(tmp_path: Path, postgres: PostgresServer) -> Iterator[tuple[HubService, HubService]]:
    with postgres_url(postgres) as url:
        clock = FakeClock()
        first, second = open_store(url, create=True), open_store(url)
        enroll_both(first, clock.now)
        config = offline_config(tmp_path, url)
        try:
            yield offline_service(config, first, clock), offline_service(config, second, clock)
        finally:
            first.close()
            second.close()


def test_a_device_revoked_on_one_hub_is_refused_by_the_other_within_a_batch(
    two_hubs: tuple[HubService, HubService],
) -> None:
    a, b = two_hubs
    p = parties()
    b.handle(*up(Message(seq=1, body=Heartbeat(), epoch=EPOCH)))  # b caches the device
    assert b.registry.active(p.device_id).label == "Ana"
    write(a.store, lambda tx: tx.devices.revoke(p.device_id, now=0.0))
    b.handle_batch([up(Message(seq=2, body=Alarm(Trigger.BUTTON), epoch=EPOCH)),
                    up(Message(seq=1, body=Heartbeat(), epoch=EPOCH), other=True)])  # fmt: skip
    assert b.rejected["RevokedDevice"] == 1
    assert b.accepted == 2  # the first heartbeat and the other device's
    assert peek(b.store, lambda tx: tx.alerts.all()) == []


def test_a_change_to_one_device_makes_other_hubs_read_only_that_device_again(
    two_hubs: tuple[HubService, HubService],
) -> None:
    """Enrolling, revoking or arming a risk window for one device must not cost the whole
    fleet a read of its record at its next message, on any hub."""
    a, b = two_hubs
    p = parties()
    b.handle_batch([up(Message(seq=1, body=Heartbeat(), epoch=EPOCH)),
                    up(Message(seq=1, body=Heartbeat(), epoch=EPOCH), other=True)])  # fmt: skip
    loads = b.registry.loads
    write(a.store, lambda tx: tx.devices.set_risk(p.other_id, until=3600.0))
    b.handle_batch([up(Message(seq=2, body=Heartbeat(), epoch=EPOCH)),
                    up(Message(seq=2, body=Heartbeat(), epoch=EPOCH), other=True)])  # fmt: skip
    assert b.registry.loads - loads == 1  # the other device's, changed by hub a
    assert b.registry.active(p.other_id).risk_until == 3600.0
    assert b.accepted == 4


def test_a_record_read_while_its_device_changes_is_not_kept(
    hub: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker reads a device's record; before it is cached, another hub changes the device
    and this hub's refresh drops the device: the stale record must not be cached after it."""
    p = parties()
    hub.registry.refresh()
    hub.registry.forget(p.device_id)
    read, armed = hub.store.read, [True]

    @contextmanager
    def read_then_change() -> Iterator[Transaction]:
        with read() as tx:
            yield tx
        if armed:
            armed.clear()
            write(hub.store, lambda tx: tx.devices.set_risk(p.device_id, until=3600.0))
            hub.registry.refresh()

    monkeypatch.setattr(hub.store, "read", read_then_change)
    assert hub.registry.active(p.device_id).risk_until is None  # read before the change
    monkeypatch.undo()
    assert hub.registry.active(p.device_id).risk_until == 3600.0


def test_a_batch_refuses_a_device_revoked_after_its_envelope_was_opened(
    hub: HubService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache said enrolled; the row the batch locks says revoked: the row wins."""
    p = parties()
    stale = hub.registry.active(p.device_id)
    write(hub.store, lambda tx: tx.devices.revoke(p.device_id, now=0.0))
    monkeypatch.setattr(hub.registry, "refresh", lambda: None)  # as if it moved in between
    monkeypatch.setattr(hub.registry, "active", lambda _: stale)
    hub.handle_batch([up(Message(seq=1, body=Alarm(Trigger.BUTTON), epoch=EPOCH)),
                      up(Message(seq=1, body=Heartbeat(), epoch=EPOCH))])  # fmt: skip
    assert hub.rejected["RevokedDevice"] == 2
    assert peek(hub.store, lambda tx: tx.uplinks.count()) == 0


def test_the_watchdog_runs_on_one_hub_and_another_takes_over_when_it_dies(
    two_hubs: tuple[HubService, HubService],
) -> None:
    a, b = two_hubs
    clock = a.clock
    assert isinstance(clock, FakeClock)
    clock.advance(a.config.silent_after + 1)  # both devices never spoke: due
    assert a.watch(clock.now)
    assert not b.watch(clock.now)
    assert len(peek(b.store, lambda tx: tx.alerts.all(active_only=True))) == 2
    a.store.close()  # the lease holder dies: its session, and the lease, go with it
    p = parties()
    minter = a._nonces
    nonce = minter.mint(p.device_id, at=clock.now)
    b.handle(*up(Message(seq=1, body=Heartbeat(), epoch=EPOCH, nonce=nonce)))
    assert len(peek(b.store, lambda tx: tx.alerts.all(active_only=True))) == 1  # closed
    clock.advance(a.config.silent_after + 1)
    assert b.watch(clock.now)  # took the lease over
    silent = [x for x in peek(b.store, lambda tx: tx.alerts.all(active_only=True))
              if x.device_id == p.device_id]  # fmt: skip
    assert [x.kind for x in silent] == [AlertKind.SILENT]


def test_two_active_silent_alerts_for_one_device_cannot_exist(hub: HubService) -> None:
    p = parties()
    record = peek(hub.store, lambda tx: tx.devices.get(p.device_id))
    assert isinstance(record, DeviceRecord)
    from vigil.hub import alerts  # noqa: PLC0415 - only this test builds one by hand

    draft = alerts.device_silent(record, now=1.0, reason="silent")
    first = write(hub.store, lambda tx: tx.alerts.open(draft))
    assert write(hub.store, lambda tx: tx.alerts.open(draft)).id == first.id

    def raw_second(tx: object) -> None:  # what a racing hub's insert would do
        tx.alerts._cur.execute(  # type: ignore[attr-defined]
            "INSERT INTO alerts (device_id, kind, state, opened_at, updated_at) "
            "VALUES (?, 'silent', 'open', 2.0, 2.0)",
            (p.device_id.hex,),
        )

    with pytest.raises(StorageError):
        write(hub.store, raw_second)
