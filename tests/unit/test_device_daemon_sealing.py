"""The daemon shell without a broker: every message is sealed, then committed; the card shows
nothing of what was sent, and an active alarm survives a restart."""

from __future__ import annotations

from pathlib import Path

from tests.support.daemon_seams import Clock, Recorder, Wire, hold, open_up, opened
from tests.support.device_setup import ProvisionedDevice
from tests.support.parties import EPOCH
from vigil.device.config import load_config
from vigil.device.core import ButtonPressed, ButtonReleased, Mode, Pattern
from vigil.device.daemon import MEMORY_KEY, Daemon
from vigil.device.outbox import Outbox
from vigil.wire.envelope import seal_uplink
from vigil.wire.liveness import uplink_digest
from vigil.wire.messages import Alarm, Cancel, ClockSource, Message, Trigger, encode_payload


def test_alarm_is_sealed_and_committed_without_a_broker(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    daemon, clock, player = parts
    hold(daemon, clock)
    (message,) = opened(dev, daemon)
    assert message.body == Alarm(Trigger.BUTTON, None, 42)
    assert (message.sent_at, message.clock) == (None, ClockSource.UNSYNCED)
    assert player.played == [Pattern.RAISED]
    assert message.epoch == daemon.outbox.epoch
    assert message.nonce is None  # no downlink seen yet: nothing to echo


def test_a_seized_card_does_not_show_what_was_sent(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    """Every row is sealed under state.key before SQLite sees it: WAL and database alike
    hold no kind, trigger or mode, a pending duress cancel included."""
    daemon, clock, _ = parts
    hold(daemon, clock)
    for mark in "..-":
        daemon.post(ButtonPressed(clock.now))
        daemon.step()
        clock.now += 0.1 if mark == "." else 0.7
        daemon.post(ButtonReleased(clock.now))
        daemon.step()
        clock.now += 0.2
    clock.now += 1.0
    daemon.step()
    assert [m.body for m in opened(dev, daemon)] == [Alarm(Trigger.BUTTON, None, 42),
                                                     Cancel(0, duress=True)]  # fmt: skip
    raw = b"".join(p.read_bytes() for p in dev.state_dir.iterdir() if p.is_file())
    for word in (b"button", b"alarm", b"cancel", b"duress", b"silent", b"covert", b"true"):
        assert word not in raw, word


def test_every_send_is_a_new_envelope_of_one_payload(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    """The broker never sees the same bytes twice; the hub sees one digest (docs §7)."""
    daemon, clock, _ = parts
    hold(daemon, clock)
    wire = Wire()
    daemon.attach(wire)
    for _ in range(3):
        daemon.outbox.retry_all_now()
        daemon.flush()
    assert len(wire.sent) == len(set(wire.sent)) == 3
    payloads = {encode_payload(open_up(dev, e)) for e in wire.sent}
    assert len(payloads) == 1
    assert uplink_digest(payloads.pop()) == daemon.outbox.digest(daemon.outbox.pending()[0])


def test_duress_cancel_is_the_same_size_on_the_wire(dev: ProvisionedDevice) -> None:
    cfg = load_config(dev.config_path)
    sizes = {
        len(
            seal_uplink(
                Message(seq=7, body=Cancel(3, duress=duress), epoch=EPOCH),
                device_id=dev.device_id,
                device_keys=dev.device_keys,
                hub=cfg.hub,
            )
        )
        for duress in (False, True)
    }
    assert len(sizes) == 1


def test_active_alarm_survives_a_restart(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder], tmp_path: Path
) -> None:
    daemon, clock, _ = parts
    hold(daemon, clock)
    cfg = load_config(dev.config_path)
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3")  # a second process after a power cut
    try:
        again = Daemon(cfg, keys=dev.device_keys, outbox=outbox, feedback=Recorder())
        assert again.core.mode is Mode.ACTIVE
        assert again.core.active_alarms == (0,)
        assert again.core.next_seq == 1
    finally:
        outbox.close()


def test_unreadable_saved_state_starts_idle(dev: ProvisionedDevice) -> None:
    cfg = load_config(dev.config_path)
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3")
    try:
        outbox.save_state(MEMORY_KEY, '{"raised": "x", "covert": [], "tamper": 1}')
        daemon = Daemon(cfg, keys=dev.device_keys, outbox=outbox, feedback=Recorder())
        assert daemon.core.mode is Mode.IDLE
    finally:
        outbox.close()
