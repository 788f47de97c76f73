"""The hostile broker (docs/protocol.md §10): one test per attack, each proving the invariant.

Whatever the broker does, within one heartbeat interval (plus its tolerance) the
hub either has the alarm or has raised an alert that says something is being
withheld or the device is silent; and the wearer feels `stored` only for that
exact alarm, in this life of the device.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversary.hostile_broker import Packet, Verdict, drop_all, hold_all
from tests.adversary.rig import (
    HEARTBEAT,
    HUB_TICK,
    SILENT_AFTER,
    DeviceClock,
    Rig,
    restart_device_with_new_state,
    rig,
)
from vigil.device.core import Pattern
from vigil.hub import operator
from vigil.hub.store import AlertKind, AlertState
from vigil.wire.envelope import seal_payload, seal_uplink
from vigil.wire.messages import Alarm, Direction, Kind, Message, Trigger

ONE_INTERVAL = 1.25 * HEARTBEAT + HUB_TICK  # the longest jittered gap, and the hub's timer


def kind_of(r: Rig, packet: Packet) -> Kind:
    """The attacker's oracle: here the test peeks with the hub's key, the worst case."""
    p = r.provisioned
    from vigil.wire.envelope import open_uplink  # noqa: PLC0415 - only the oracle opens

    return open_uplink(packet.payload, device_id=p.device_id, hub_keys=p.hub_keys,
                       lookup=lambda _: p.device_keys.public().signing).kind  # fmt: skip


def drop_up(
    r: Rig, p: Packet, *, only: Kind | None = None, unless: Kind | None = None
) -> Verdict | None:
    """Drop uplinks of kind `only` (or of every kind but `unless`), chosen by the oracle."""
    if p.direction != "up" or p.is_will:
        return None
    kind = kind_of(r, p)
    hit = kind is only if only is not None else kind is not unless
    return Verdict.DROP if hit else None


def test_a_device_whose_state_restarts_is_a_new_life_not_a_duplicate(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.advance(5)
        r.hold()
        r.advance(2)
        assert Pattern.STORED in r.wearer.felt
        (first,) = r.alerts(AlertKind.ALARM)
        restart_device_with_new_state(r)  # the same card rewritten: seqs start at 0 again
        felt = len(r.wearer.felt)
        r.hold()
        r.advance(2)
        alarms = r.alerts(AlertKind.ALARM)
        assert len(alarms) == 2, "the new alarm was taken for a duplicate of the old one"
        assert alarms[0].alarm_seq == alarms[1].alarm_seq == 0
        assert alarms[0].alarm_epoch != alarms[1].alarm_epoch
        assert "device state was reset" in r.audit()
        assert Pattern.STORED in r.wearer.felt[felt:]
        r.cancel()  # the new wearer's cancel closes the new alert only
        with r.hub.store.read() as tx:
            assert tx.alerts.get(first.id).state is AlertState.OPEN
            assert tx.alerts.get(alarms[1].id).state is AlertState.CANCELLED


def test_old_receipts_replayed_to_a_new_life_are_not_felt(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.advance(5)
        r.hold()
        r.advance(2)
        (alert,) = r.alerts(AlertKind.ALARM)
        operator.act(r.hub.store, alert.id, "ack", by="rosa", now=r.clock.now)
        r.advance(HUB_TICK + 1)
        old_receipts = list(r.broker.sent("down"))
        assert {m.kind for m in r.downlinks()} >= {Kind.STORED, Kind.ACKNOWLEDGED}
        restart_device_with_new_state(r)
        r.broker.rules.append(drop_all("up"))  # the new alarm never reaches the hub
        felt = len(r.wearer.felt)
        r.hold()
        for packet in old_receipts:  # ...and the old life's receipts are played back
            r.broker.replay(packet, times=3)
        r.advance(1)
        new = r.wearer.felt[felt:]
        assert Pattern.STORED not in new
        assert Pattern.ACKNOWLEDGED not in new
        r.advance(31)  # undelivered_after = 30 s in the rig
        assert Pattern.UNDELIVERED in r.wearer.felt[felt:]
        r.advance(SILENT_AFTER + HUB_TICK)
        assert r.alerts(AlertKind.SILENT), "everything dropped, yet the hub raised nothing"


def test_dropping_alarms_but_not_heartbeats_is_seen_as_withheld(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.broker.rules.append(lambda p: drop_up(r, p, unless=Kind.HEARTBEAT))
        r.advance(10)
        r.hold()
        r.advance(ONE_INTERVAL)
        assert not r.alerts(AlertKind.ALARM)
        (withheld,) = r.alerts(AlertKind.WITHHELD)
        assert "seq 0" in (withheld.note or "")
        assert Pattern.STORED not in r.wearer.felt
        assert Pattern.UNDELIVERED in r.wearer.felt


def test_a_silent_duress_alarm_withheld_is_seen_and_never_felt(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.broker.rules.append(lambda p: drop_up(r, p, only=Kind.ALARM))
        r.advance(10)
        r.gesture("....")  # the duress gesture: four quick presses
        r.advance(ONE_INTERVAL)
        assert r.alerts(AlertKind.WITHHELD)
        assert r.wearer.felt == [], "a silent alarm must never be felt, not even as undelivered"


def test_stashed_heartbeats_neither_prove_life_nor_close_a_silent_alert(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.advance(3 * HEARTBEAT)  # alive and well, nonces flowing
        r.broker.rules.append(hold_all("up"))  # the attacker stashes every uplink
        r.advance(30 * HEARTBEAT)  # half an hour of genuine heartbeats, held back
        stashed = list(r.broker.held)
        assert len(stashed) >= 20
        r.destroy_device()
        r.broker.rules.clear()
        silent = r.alerts(AlertKind.SILENT)
        assert silent, "the device went unheard for half an hour and no alert was raised"
        for packet in stashed:  # released one a minute, as if the device were still there
            r.broker.release([packet])
            r.advance(HEARTBEAT)
        (alert,) = r.alerts(AlertKind.SILENT)
        assert alert.state is AlertState.OPEN, "a stale heartbeat closed the silent alert"


def test_one_uplink_replayed_many_times_mints_few_receipts(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.advance(5)
        r.hold()
        r.advance(2)
        alarm = next(p for p in r.broker.sent("up") if kind_of(r, p) is Kind.ALARM)
        before = len(r.broker.sent("down"))
        r.broker.replay(alarm, times=200)
        r.advance(1)
        assert len(r.broker.sent("down")) - before <= 1
        for _ in range(10):  # keep replaying for ten minutes
            r.broker.replay(alarm, times=200)
            r.advance(HEARTBEAT)
        receipts = [m for m in r.downlinks() if m.kind is Kind.STORED and m.body.seq == 0]  # type: ignore[union-attr]
        assert len(receipts) <= 1 + 10 * 60 / 10  # at most one per 10 s
        assert len(r.alerts(AlertKind.ALARM)) == 1


def test_an_uplink_in_the_large_bucket_is_refused(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        p = r.provisioned
        big = seal_payload(
            b"{" + b" " * 700 + b"}", Direction.UP, device_id=p.device_id,
            signer=p.device_keys.signing, recipient=p.hub_keys.public().kem,
        )  # fmt: skip
        r.broker.inject(f"vigil/v1/{p.device_id.hex}/up", big)
        assert r.hub.rejected["MalformedEnvelope"] == 1


def test_a_seq_signed_twice_raises_a_conflict_and_gets_no_receipt(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.advance(5)
        r.hold()
        r.advance(2)
        p = r.provisioned
        epoch = r.device.outbox.epoch  # a clone of the key, in the same life
        forged = Message(0, Alarm(Trigger.TAMPER), epoch=epoch)  # seq 0 was a button alarm
        before = len(r.broker.sent("down"))
        sealed = seal_uplink(
            forged, device_id=p.device_id, device_keys=p.device_keys, hub=p.hub_keys.public()
        )
        r.broker.inject(f"vigil/v1/{p.device_id.hex}/up", sealed)
        r.advance(1)
        assert r.alerts(AlertKind.CONFLICT)
        assert len(r.broker.sent("down")) == before


@pytest.mark.parametrize(
    "device_clock",
    [DeviceClock(synced=False), DeviceClock(offset=-4 * 3600.0), DeviceClock(offset=4 * 3600.0)],
    ids=["no-rtc-unsynced", "ntp-stepped-back-4h", "ntp-stepped-forward-4h"],
)
def test_liveness_rests_on_the_nonce_whatever_the_device_clock_says(
    tmp_path: Path, device_clock: DeviceClock
) -> None:
    with rig(tmp_path, device_clock=device_clock) as r:
        r.advance(10 * HEARTBEAT)
        assert not r.alerts(AlertKind.SILENT), "a live device was taken for silent"
        r.broker.rules.append(hold_all("up"))
        r.advance(10 * HEARTBEAT)
        stashed = list(r.broker.held)
        r.destroy_device()
        r.broker.rules.clear()
        assert r.alerts(AlertKind.SILENT)
        r.broker.release(stashed)
        r.advance(HUB_TICK)
        (alert,) = r.alerts(AlertKind.SILENT)
        assert alert.state is AlertState.OPEN


def test_silence_inside_a_risk_window_is_an_alarm_at_once(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.advance(3 * HEARTBEAT)
        with r.hub.store.transaction() as tx:
            tx.devices.set_risk(r.provisioned.device_id, until=r.clock.now + 3600)
        r.broker.rules.append(drop_all("up"))  # the wearable is taken, or jammed
        r.advance(90 + 1.25 * HEARTBEAT + HUB_TICK)  # risk_silent_after = 90 s in the rig
        (dark,) = r.alerts(AlertKind.DARK)
        assert dark.kind.alarm_grade
        assert not r.alerts(AlertKind.SILENT)
