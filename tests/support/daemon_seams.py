"""Stand-ins for the device daemon's seams (vibration motor, clock, transport) and helpers
that drive it and open what it hands the broker, as the hub would."""

from __future__ import annotations

from tests.support.device_setup import ProvisionedDevice
from tests.support.parties import NONCE
from vigil.device.core import ButtonPressed, Pattern
from vigil.device.daemon import Daemon
from vigil.device.outbox import Outbox
from vigil.wire.envelope import open_uplink, seal_downlink
from vigil.wire.keys import HubKeys
from vigil.wire.liveness import Epoch
from vigil.wire.messages import Message


class Recorder:
    """The vibration motor seam, recording each pattern the wearer would feel."""

    def __init__(self) -> None:
        self.played: list[Pattern] = []

    def play(self, pattern: Pattern) -> None:
        self.played.append(pattern)


class Clock:
    """The daemon's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Wire:
    """The Transport seam, recording what the daemon hands to the broker."""

    def __init__(self, *, connected: bool = True) -> None:
        self.connected = connected
        self.sent: list[bytes] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        self.sent.append(payload)


def open_up(dev: ProvisionedDevice, envelope: bytes) -> Message:
    """Open an uplink as the hub does: decrypt, verify the device's signature, decode."""
    return open_uplink(
        envelope,
        device_id=dev.device_id,
        hub_keys=dev.hub_keys,
        lookup=lambda _: dev.device_keys.public().signing,
    )


def opened(dev: ProvisionedDevice, daemon: Daemon) -> list[Message]:
    """What waits in the outbox, as the hub would read it once the daemon seals it."""
    wire = Wire()
    daemon.attach(wire)
    daemon.outbox.retry_all_now()
    daemon.flush()
    daemon.attach(Wire(connected=False))
    return [open_up(dev, envelope) for envelope in wire.sent]


def receipt(
    dev: ProvisionedDevice, body: object, *, seq: int = 0, epoch: Epoch | None = None,
    nonce: str = NONCE, hub: HubKeys | None = None,
) -> bytes:  # fmt: skip
    """A downlink from the hub (or, with `hub`, from an impostor) for this device's life."""
    with Outbox.open(dev.state_dir / "outbox.sqlite3") as outbox:
        daemon_epoch = outbox.epoch
    return seal_downlink(
        Message(seq=seq, body=body, epoch=epoch or daemon_epoch, nonce=nonce),  # type: ignore[arg-type]
        device_id=dev.device_id,
        hub_keys=hub or dev.hub_keys,
        device=dev.device_keys.public(),
    )


def hold(daemon: Daemon, clock: Clock) -> None:
    daemon.post(ButtonPressed(clock.now))
    daemon.step()
    clock.now += 1.0
    daemon.step()  # the deadline passes: the hold is an alarm
