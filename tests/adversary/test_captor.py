"""The captor with the wearable in hand, as the hub meets them (issue 12).

A real hub and a real device daemon behind the attacker's broker (tests/adversary/rig.py):
what the broker (and the wearable) get from the hub after a duress cancel must be
what they get after a real cancel, whatever the operators do about the duress.
"""

from __future__ import annotations

import base64
import contextlib
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.adversary.rig import HEARTBEAT, HUB_TICK, SILENT_AFTER, T0, Rig, rig
from vigil.device import rekey
from vigil.device.core import GpsFix, Pattern, TamperClosed
from vigil.device.rekey import Keyring
from vigil.errors import BadTransition, DecryptionFailed
from vigil.hub import alerts, operator, views
from vigil.hub.channels import compose
from vigil.hub.store import AlertKind, AlertState
from vigil.hub.tail import Follower
from vigil.wire.envelope import PrivateKem, downlink_keys, envelope_size, seal_uplink
from vigil.wire.fix import Fix
from vigil.wire.keys import DeviceKeys, Suite
from vigil.wire.liveness import Epoch
from vigil.wire.messages import (
    Alarm,
    Cancel,
    Heartbeat,
    Kind,
    Message,
    Mode,
    Trigger,
    UplinkBody,
)
from vigil.wire.rekey import chunk

AFTER = 10 * HEARTBEAT  # how long the broker watches after the cancel


def _folder(tmp_path: Path, name: str) -> Path:
    (tmp_path / name).mkdir()
    return tmp_path / name


def _cancel_then_operators_act(r: Rig, gesture: str) -> Counter[Kind]:
    """Alarm, `gesture` (a cancel), then every operator action an open alarm allows; return
    the downlinks the broker saw after the cancel, by kind."""
    r.device.post(GpsFix(at=r.clock.now, fix=Fix(lat=17.06, lon=-96.72, fix_time=T0)))
    r.advance(5)
    r.hold()
    r.advance(2)
    (alert,) = r.alerts(AlertKind.ALARM)
    before = len(r.broker.sent("down"))
    r.gesture(gesture)
    r.advance(HUB_TICK + 1)
    for action in ("ack", "verify", "resolve"):
        with contextlib.suppress(BadTransition):  # a really cancelled alert is closed
            operator.act(r.hub.store, alert.id, action, by="rosa", now=r.clock.now)
        r.advance(HUB_TICK + 1)
    r.advance(AFTER)
    return Counter(m.kind for m in r.downlinks()[before:])


def test_operators_working_a_duress_cancel_send_the_wearer_nothing(tmp_path: Path) -> None:
    with rig(_folder(tmp_path, "real")) as real:
        after_real = _cancel_then_operators_act(real, real.device.cfg.alarm.cancel)
        assert "cancelled by wearer" in real.audit()
    with rig(_folder(tmp_path, "duress")) as duress:
        after_duress = _cancel_then_operators_act(duress, duress.device.cfg.alarm.duress_cancel)
        (alert,) = duress.alerts(AlertKind.ALARM)
        assert alert.duress, "the duress cancel did not reach the hub"
        # The operators' work is recorded as ever...
        assert {"ack", "verify", "resolve"} <= set(duress.audit())
        assert Pattern.ACKNOWLEDGED not in duress.wearer.felt
    # ...but neither run drew anything but receipts, one per uplink the broker forwarded.
    assert set(after_real) == {Kind.STORED}
    assert set(after_duress) == {Kind.STORED}


def test_a_duress_cancel_draws_as_many_downlinks_as_a_real_one(tmp_path: Path) -> None:
    with rig(_folder(tmp_path, "real")) as real:
        after_real = _cancel_then_operators_act(real, real.device.cfg.alarm.cancel)
    with rig(_folder(tmp_path, "duress")) as duress:
        after_duress = _cancel_then_operators_act(duress, duress.device.cfg.alarm.duress_cancel)
    assert after_real == after_duress


def _forge(
    r: Rig, seq: int, body: UplinkBody, *, nonce: str | None, epoch: Epoch | None = None
) -> None:
    """A captor who copied the wearable's key (and state) sends `body` as seq `seq`."""
    p = r.provisioned
    forged = Message(seq, body, epoch=epoch or r.device.outbox.epoch, nonce=nonce)
    sealed = seal_uplink(
        forged, device_id=p.device_id, device_keys=p.device_keys, hub=p.hub_keys.public()
    )
    r.broker.inject(f"vigil/v1/{p.device_id.hex}/up", sealed)
    r.advance(1)


def test_after_a_stored_tamper_alarm_the_old_key_speaks_only_as_a_possible_captor(
    tmp_path: Path,
) -> None:
    with rig(tmp_path) as r:
        r.device.post(TamperClosed(r.clock.now))  # worn: the loop is armed
        r.advance(5)
        r.tamper()
        r.advance(2)
        assert Pattern.STORED in r.wearer.felt
        (tamper,) = r.alerts(AlertKind.ALARM)
        assert "device compromised" in r.audit()
        r.destroy_device()  # the wearable erased its state; the captor kept a copy
        copied = Epoch.parse(tamper.alarm_epoch)
        r.advance(SILENT_AFTER + 2 * HUB_TICK)
        (silent,) = r.alerts(AlertKind.SILENT)
        # The captor's heartbeat draws a receipt; its fresh nonce, echoed, would prove life.
        _forge(r, 100, Heartbeat(battery=90, mode=Mode.IDLE), nonce=None, epoch=copied)
        nonce = r.downlinks()[-1].nonce
        _forge(r, 101, Heartbeat(battery=90, mode=Mode.IDLE), nonce=nonce, epoch=copied)
        _forge(r, 102, Cancel(alarm_seq=tamper.alarm_seq or 0), nonce=nonce, epoch=copied)
        _forge(r, 103, Alarm(Trigger.BUTTON), nonce=nonce, epoch=copied)
        with r.hub.store.read() as tx:
            device = tx.devices.get(r.provisioned.device_id)
            assert tx.alerts.get(silent.id).state is AlertState.OPEN, "a captor said all clear"
            assert tx.alerts.get(tamper.id).state is AlertState.OPEN, "a captor's cancel counted"
            forged_alarm = tx.alerts.find(r.provisioned.device_id, copied.hex, 103)
        assert device is not None
        assert forged_alarm is not None
        assert "cancel ignored" in r.audit()
        assert views.device_state(device, silent_alert=silent, now=r.clock.now,
                                  silent_after=SILENT_AFTER).startswith("compromised")  # fmt: skip
        assert views.alert_state(forged_alarm, device).endswith(alerts.CAPTOR)
        assert views.alert_state(tamper, device) == "open", "the genuine tamper alarm is flagged"
        notice = compose(forged_alarm, device, now=r.clock.now, map_url="{lat},{lon}")
        assert alerts.CAPTOR in notice.body
        lines = [line for _, line in Follower(r.hub.store).poll() if line.startswith("up ")]
        flagged = [line for line in lines if alerts.CAPTOR in line]
        assert len(flagged) == 4, lines  # the four forged uplinks, and only they


ROTATE = 600.0  # the device's [device] rotate_keys_every in these tests


def _advance_until(r: Rig, done: Callable[[], bool], *, limit: int = 200) -> None:
    for _ in range(limit):
        if done():
            return
        r.advance(HEARTBEAT)
    raise AssertionError("the condition never came true")


def _rotations(r: Rig) -> int:
    return r.audit().count("downlink key rotated")


def _keys_on_the_card(r: Rig) -> list[Mapping[Suite, PrivateKem]]:
    """What a captor reads off the seized wearable: device.key and the rotated keys."""
    p = r.provisioned
    enrolled = DeviceKeys.load(p.config_path.parent / "device.key")
    ring = Keyring.load(p.state_dir / rekey.FILE, enrolled=enrolled,
                        epoch=r.device.outbox.epoch, every=ROTATE, clock=r.clock)  # fmt: skip
    return ring.candidates()


@pytest.mark.parametrize("hybrid", [False, True], ids=["x25519", "mlkem768-x25519"])
def test_a_downlink_recorded_before_a_rotation_cannot_be_opened_after_it(
    tmp_path: Path, hybrid: bool
) -> None:
    with rig(tmp_path, device={"rotate_keys_every": ROTATE}, hybrid=hybrid) as r:
        suite = Suite.MLKEM768_X25519_CHACHA20 if hybrid else Suite.X25519_CHACHA20
        _advance_until(r, lambda: _rotations(r) == 1)
        r.advance(2 * HEARTBEAT)  # a receipt under the new key: the device confirms it
        recorded = r.broker.sent("down")[-1]
        assert recorded.payload[1] == suite
        assert r.open_downlink(recorded.payload, _keys_on_the_card(r)).kind is Kind.STORED
        enrolled = [downlink_keys(r.provisioned.device_keys)]
        with pytest.raises(DecryptionFailed):  # the hub sealed it to the rotated key
            r.open_downlink(recorded.payload, enrolled)
        _advance_until(r, lambda: _rotations(r) == 2)
        r.advance(2 * HEARTBEAT)
        with pytest.raises(DecryptionFailed):  # the card no longer holds the key it needs
            r.open_downlink(recorded.payload, _keys_on_the_card(r))
        key_file = r.provisioned.state_dir / rekey.FILE
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert len(_keys_on_the_card(r)) == 2, "old keys were kept"  # newest + enrolled
        # The announcements changed no uplink's size, and every heartbeat was receipted.
        assert {len(p.payload) for p in r.broker.sent("up")} == {envelope_size(suite)}
        assert all(m.kind is Kind.STORED for m in r.downlinks())


def test_a_hybrid_device_cannot_be_rotated_down_to_a_classic_key(tmp_path: Path) -> None:
    with rig(tmp_path, hybrid=True) as r:
        r.advance(5)
        classic = base64.b64encode(bytes(32)).decode()  # an X25519 key's length
        part = chunk(classic, offset=0, room=100)
        assert part is not None
        _forge(r, 100, Heartbeat(rekey=part), nonce=None)
        assert "downlink key refused" in r.audit()
        assert r.broker.sent("down")[-1].payload[1] == Suite.MLKEM768_X25519_CHACHA20
