"""The hub store's traffic: uplinks deduplicated within a replay window per device life, seqs
signed twice, receipts rate-limited, downlink seqs per device; SQLite and PostgreSQL."""

from __future__ import annotations

import functools

import pytest

from tests.support.parties import EPOCH, OTHER_EPOCH
from vigil.errors import ReplayedMessage
from vigil.hub.store import Acceptance, Accepted, Store, traffic
from vigil.wire import Alarm, Checkin, DeviceId, Heartbeat, Message, Trigger
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import encode_payload

pytestmark = pytest.mark.integration


def test_uplinks_dedup_and_window(store: Store, enrolled: DeviceId) -> None:
    hb = Message(seq=5000, body=Heartbeat(battery=80), epoch=EPOCH)
    older = Message(seq=4999, body=Alarm(Trigger.BUTTON), epoch=EPOCH)
    digest = uplink_digest(encode_payload(hb))
    with store.transaction() as tx:  # many uses of one repository in one transaction
        first = tx.uplinks.accept(enrolled, hb, received_at=1.0)
        assert first == Accepted(Acceptance.NEW, digest, None, new_epoch=True)
        assert tx.uplinks.accept(enrolled, hb, received_at=2.0) == Accepted(
            Acceptance.DUPLICATE, digest
        )
        assert tx.uplinks.accept(enrolled, older, received_at=3.0).status is Acceptance.NEW
    with pytest.raises(ReplayedMessage), store.transaction() as tx:
        tx.uplinks.accept(enrolled, Message(seq=1, body=Heartbeat(), epoch=EPOCH), received_at=4.0)
    with store.transaction() as tx:
        assert tx.uplinks.count() == 2
        assert [u.seq for u in tx.uplinks.unprocessed()] == [5000, 4999]
        tx.uplinks.mark_processed(enrolled, EPOCH.hex, 5000)
        assert [u.seq for u in tx.uplinks.unprocessed()] == [4999]
        stored = tx.uplinks.get(enrolled, EPOCH.hex, 4999)
        assert tx.uplinks.get(enrolled, OTHER_EPOCH.hex, 4999) is None
        assert tx.uplinks.has(enrolled, EPOCH.hex, 4999)
        assert not tx.uplinks.has(enrolled, EPOCH.hex, 4998)
        assert [u.seq for u in tx.uplinks.recent(after=2.5)] == [4999]
        record = tx.devices.get(enrolled)
    assert stored is not None
    assert (stored.kind, stored.epoch) == ("alarm", EPOCH.hex)
    assert stored.digest == uplink_digest(encode_payload(older))
    assert record is not None
    assert (record.last_seen, record.epoch, record.alive_at) == (3.0, EPOCH.hex, 1.0)


def test_a_seq_signed_twice_is_a_conflict_not_a_duplicate(
    store: Store, enrolled: DeviceId
) -> None:
    alarm = Message(seq=3, body=Alarm(Trigger.BUTTON), epoch=EPOCH)
    clone = Message(seq=3, body=Alarm(Trigger.TAMPER), epoch=EPOCH)
    with store.transaction() as tx:
        tx.uplinks.accept(enrolled, alarm, received_at=1.0)
        conflict = tx.uplinks.accept(enrolled, clone, received_at=2.0)
        kept = tx.uplinks.get(enrolled, EPOCH.hex, 3)
    assert conflict == Accepted(Acceptance.CONFLICT, uplink_digest(encode_payload(clone)))
    assert kept is not None
    assert kept.digest == uplink_digest(encode_payload(alarm))  # the first one stays


def test_a_new_epoch_is_a_new_life_with_its_own_window(store: Store, enrolled: DeviceId) -> None:
    """Seqs restarting under a new epoch are new, not replays (docs/protocol.md §7)."""
    with store.transaction() as tx:
        tx.uplinks.accept(
            enrolled, Message(seq=5000, body=Checkin(), epoch=EPOCH), received_at=1.0
        )
        again = tx.uplinks.accept(enrolled, Message(seq=0, body=Checkin(), epoch=OTHER_EPOCH),
                                  received_at=2.0)  # fmt: skip
        back = tx.uplinks.accept(enrolled, Message(seq=4999, body=Checkin(), epoch=EPOCH),
                                 received_at=3.0)  # fmt: skip
        record = tx.devices.get(enrolled)
    assert (again.status, again.previous_epoch, again.new_epoch) == (
        Acceptance.NEW, EPOCH.hex, True)  # fmt: skip
    assert (back.status, back.new_epoch) == (Acceptance.NEW, False)  # the old life's window
    assert record is not None
    assert (record.epoch, record.alive_at) == (OTHER_EPOCH.hex, 2.0)


def test_duplicate_receipts_are_rate_limited(store: Store, enrolled: DeviceId) -> None:
    every = traffic.RECEIPT_EVERY
    with store.transaction() as tx:
        for seq in range(30):
            message = Message(seq=seq, body=Checkin(), epoch=EPOCH)
            tx.uplinks.accept(enrolled, message, received_at=100.0)
        may = functools.partial(tx.uplinks.may_receipt, enrolled, EPOCH.hex)
        assert may(0, now=100.0 + every - 0.1) is False  # the first receipt went just now
        assert may(0, now=100.0 + every) is True
        assert may(0, now=100.0 + 2 * every - 0.1) is False
        assert may(99, now=200.0) is False  # never stored: nothing to answer
        answered = [may(seq, now=100.0 + every) for seq in range(1, 30)]
    cap = traffic.DUPLICATE_RECEIPTS_PER_MINUTE
    assert answered == [True] * (cap - 1) + [False] * (30 - cap)  # seq 0 used one already
    with store.transaction() as tx:
        assert tx.uplinks.may_receipt(enrolled, EPOCH.hex, 29, now=100.0 + every + 60.0)


def test_downlink_seq_is_per_device_and_persisted(store: Store, enrolled: DeviceId) -> None:
    with store.transaction() as tx:
        assert tx.downlinks.queue(enrolled, "stored", 7, now=1.0) == 0
        assert tx.downlinks.queue(enrolled, "acknowledged", 7, now=2.0) == 1
        pending = tx.downlinks.pending()
        assert [(d.seq, d.kind, d.arg) for d in pending] == [
            (0, "stored", 7),
            (1, "acknowledged", 7),
        ]
        tx.downlinks.mark_sent(pending[0].id, at=3.0)
    with store.read() as tx:
        assert [d.seq for d in tx.downlinks.pending()] == [1]
