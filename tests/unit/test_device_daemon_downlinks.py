"""The daemon shell checks every downlink: forged ones, those on other topics, for another life
or another message change nothing; the newest accepted nonce is echoed."""

from __future__ import annotations

from tests.support.daemon_seams import Clock, Recorder, Wire, hold, open_up, opened, receipt
from tests.support.device_setup import ProvisionedDevice
from tests.support.parties import DIGEST, EPOCH
from vigil.device.core import Pattern
from vigil.device.daemon import Daemon
from vigil.wire.keys import HubKeys
from vigil.wire.messages import Acknowledged, Heartbeat, Stored
from vigil.wire.topics import down_topic, up_topic


def test_downlinks_on_other_topics_or_forged_change_nothing(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    daemon, clock, player = parts
    hold(daemon, clock)
    seq = daemon.outbox.pending()[0]
    digest = daemon.outbox.digest(seq)
    assert digest is not None
    good = receipt(dev, Stored(seq, digest))
    forged = receipt(dev, Stored(seq, digest), seq=1, hub=HubKeys.generate())
    for topic, payload in ((up_topic(dev.device_id), good), (down_topic(dev.device_id), forged)):
        daemon.on_message(topic, payload)
        daemon.step()
    assert daemon.outbox.pending() == [seq]
    daemon.on_message(down_topic(dev.device_id), good)
    daemon.step()
    assert daemon.outbox.pending() == []
    assert player.played == [Pattern.RAISED, Pattern.STORED]


def test_receipts_for_another_life_or_another_message_are_dropped(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    """A broker replaying an old life's receipts, or one for other content, changes nothing."""
    daemon, clock, player = parts
    hold(daemon, clock)
    (seq,) = daemon.outbox.pending()
    digest = daemon.outbox.digest(seq)
    assert digest is not None
    stale = [
        receipt(dev, Stored(seq, digest), seq=1, epoch=EPOCH, nonce="01" * 16),  # old life
        receipt(dev, Stored(seq, DIGEST), seq=2, nonce="02" * 16),  # another message
        receipt(dev, Acknowledged(seq, DIGEST), seq=3, nonce="03" * 16),
        receipt(dev, Acknowledged(seq, digest), seq=4, epoch=EPOCH, nonce="04" * 16),
    ]
    for payload in stale:
        daemon.on_message(down_topic(dev.device_id), payload)
        daemon.step()
    assert daemon.outbox.pending() == [seq]
    assert player.played == [Pattern.RAISED]
    assert [m.nonce for m in opened(dev, daemon)] == [None]  # no dropped nonce is echoed
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Stored(seq, digest), seq=5))
    daemon.step()
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Acknowledged(seq, digest), seq=6))
    daemon.step()
    assert daemon.outbox.pending() == []
    assert player.played == [Pattern.RAISED, Pattern.STORED, Pattern.ACKNOWLEDGED]


def test_the_newest_accepted_nonce_is_echoed(
    dev: ProvisionedDevice, parts: tuple[Daemon, Clock, Recorder]
) -> None:
    daemon, clock, _ = parts
    hold(daemon, clock)
    (alarm,) = daemon.outbox.pending()
    digest = daemon.outbox.digest(alarm)
    assert digest is not None
    first, second = "0a" * 16, "0b" * 16
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Acknowledged(alarm, digest),
                                                         seq=1, nonce=first))  # fmt: skip
    daemon.step()
    # A resend is the payload signed before the nonce came: a new envelope, the same word.
    assert [m.nonce for m in opened(dev, daemon)] == [None]
    daemon.on_message(down_topic(dev.device_id), receipt(dev, Stored(alarm, digest), seq=2,
                                                         nonce=second))  # fmt: skip
    daemon.step()
    wire = Wire()
    daemon.attach(wire)
    clock.now += daemon.cfg.alarm.heartbeat_interval * 1.25  # a heartbeat falls due
    daemon.step()
    fresh = [open_up(dev, e) for e in wire.sent]
    assert any(isinstance(m.body, Heartbeat) for m in fresh)
    assert {m.nonce for m in fresh if m.seq > alarm} == {second}
