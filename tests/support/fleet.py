"""Many simulated wearables on one MQTT connection: a load generator that speaks real v2.

Each `SimDevice` has its own id, keys and epoch, is enrolled in the hub's store,
and seals real version-2 uplinks (heartbeats, alarms) to the hub. `Fleet` is one
MQTT client that publishes on every device's up topic and subscribes to every
down topic: it counts receipts as they come (cheap, for ingest rates) and, when
asked to, opens them as the device would and records which seqs got `stored`
(for the failover check, where an unreceipted alarm must be resent).

    fleet = Fleet(port, devices, hub_public)
    fleet.start()
    pool = heartbeats(devices, hub_public, count=10_000)
    done = fleet.pump(pool, window=1000, seconds=8.0)
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vigil.errors import VigilError
from vigil.hub.store import Store
from vigil.runtime.mqtt import MqttClient, MqttSettings
from vigil.wire import AgedFix, Alarm, DeviceId, DeviceKeys, Fix, Heartbeat, Message, Trigger
from vigil.wire.envelope import open_downlink, seal_uplink_payload
from vigil.wire.keys import HubPublicKeys
from vigil.wire.liveness import Epoch
from vigil.wire.messages import Stored, encode_payload
from vigil.wire.topics import PREFIX, parse_topic, up_topic

DOWN_FILTER = f"{PREFIX}/+/down"
FIX = AgedFix(Fix(lat=52.52, lon=13.405, satellites=8), age=3.0)


@dataclass
class SimDevice:
    """One simulated wearable: identity, keys, its life, and the next seq it will use."""

    device_id: DeviceId
    keys: DeviceKeys
    epoch: Epoch = field(default_factory=Epoch.generate)
    next_seq: int = 0

    @property
    def up(self) -> str:
        return up_topic(self.device_id)

    def take_seq(self) -> int:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        return seq


@dataclass(frozen=True)
class Uplink:
    """One sealed uplink, ready to publish (`payload` is the signed plaintext a resend reuses)."""

    device: SimDevice
    seq: int
    kind: str
    payload: bytes
    envelope: bytes


def make_fleet(n: int) -> list[SimDevice]:
    return [SimDevice(DeviceId.generate(), DeviceKeys.generate()) for _ in range(n)]


def enrol(store: Store, devices: Sequence[SimDevice], *, now: float) -> None:
    """Enrol every device in one transaction, watched from `now` (not from the epoch 0)."""
    with store.transaction() as tx:
        for i, d in enumerate(devices):
            tx.devices.enroll(d.device_id, label=f"sim-{i}", public_keys=d.keys.public(), now=now)


def seal(device: SimDevice, body: Heartbeat | Alarm, hub: HubPublicKeys) -> Uplink:
    message = Message(seq=device.take_seq(), body=body, epoch=device.epoch)
    payload = encode_payload(message)
    return Uplink(device, message.seq, message.kind.value, payload, reseal(device, payload, hub))


def reseal(device: SimDevice, payload: bytes, hub: HubPublicKeys) -> bytes:
    """A new envelope for the same signed payload (what a device's resend is)."""
    return seal_uplink_payload(
        payload, device_id=device.device_id, device_keys=device.keys, hub=hub
    )


def heartbeats(devices: Sequence[SimDevice], hub: HubPublicKeys, *, count: int) -> list[Uplink]:
    """`count` heartbeats, round-robin over the devices."""
    beat = Heartbeat(battery=80, fix=FIX, signal=70)
    return [seal(d, beat, hub) for d in itertools.islice(itertools.cycle(devices), count)]


def alarm(device: SimDevice, hub: HubPublicKeys) -> Uplink:
    return seal(device, Alarm(Trigger.BUTTON, FIX, 80), hub)


@dataclass(frozen=True)
class Pumped:
    """What one `Fleet.pump` did: published, receipted within the run, and its duration."""

    published: int
    receipted: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.receipted / self.seconds if self.seconds > 0 else 0.0


class Fleet:
    """One MQTT connection speaking for many devices (see the module docstring)."""

    def __init__(
        self,
        port: int,
        devices: Iterable[SimDevice],
        hub: HubPublicKeys,
        *,
        client_id: str = "sim-fleet",
        open_receipts: bool = False,
    ) -> None:
        self.devices = {d.device_id.hex: d for d in devices}
        self.hub, self.open_receipts = hub, open_receipts
        self.receipts = 0  # downlinks of any kind, counted on arrival
        self.first_down: dict[str, float] = {}  # device hex -> monotonic time of its downlink
        self.stored: dict[str, set[tuple[str, int]]] = defaultdict(set)  # hex -> (epoch, seq)
        self.bad = 0  # downlinks that did not open or named another life
        self._cond = threading.Condition()
        settings = MqttSettings(
            "127.0.0.1", port, client_id, keepalive=30, clean_start=True, session_expiry=0
        )
        self.client = MqttClient(
            settings, on_message=self._on_message, subscriptions=[DOWN_FILTER]
        )

    def start(self, timeout: float = 10.0) -> None:
        self.client.start()
        if not self.client.wait_subscribed(timeout):
            raise TimeoutError("the simulated fleet did not get its subscription acknowledged")

    def stop(self) -> None:
        self.client.stop()

    def publish(self, up: Uplink) -> None:
        self.client.publish(up.device.up, up.envelope)

    def _on_message(self, topic: str, payload: bytes) -> None:
        now = time.monotonic()
        device_id, _ = parse_topic(topic)
        hex_ = device_id.hex
        stored = self._open(self.devices.get(hex_), payload) if self.open_receipts else None
        with self._cond:
            self.receipts += 1
            self.first_down.setdefault(hex_, now)
            if stored is not None:
                self.stored[hex_].add(stored)
            self._cond.notify_all()

    def _open(self, device: SimDevice | None, payload: bytes) -> tuple[str, int] | None:
        if device is None:
            return None
        try:
            msg = open_downlink(
                payload, device_id=device.device_id, device_keys=device.keys, hub=self.hub
            )
        except VigilError:
            msg = None
        if msg is None or msg.epoch != device.epoch:
            with self._cond:
                self.bad += 1
            return None
        return (msg.epoch.hex, msg.body.seq) if isinstance(msg.body, Stored) else None

    def forget(self, device: SimDevice) -> None:
        """Forget when `device` last heard from the hub (to time its next receipt)."""
        with self._cond:
            self.first_down.pop(device.device_id.hex, None)

    def heard(self, device: SimDevice) -> float | None:
        with self._cond:
            return self.first_down.get(device.device_id.hex)

    def _answered_since(self, base: int) -> int:
        with self._cond:
            return self.receipts - base

    def pump(self, pool: Sequence[Uplink], *, window: int, seconds: float) -> Pumped:
        """Publish `pool` with at most `window` unanswered, for at most `seconds`.

        The rate is receipts that came back within the run over its duration: a closed
        loop, so neither the broker's queue nor the hub's inbox ever overflows.
        """
        base = self._answered_since(0)
        start = time.monotonic()
        deadline = start + seconds
        sent = 0
        while sent < len(pool) and time.monotonic() < deadline:
            room = window - (sent - self._answered_since(base))
            if room <= 0:
                with self._cond:  # woken by each receipt
                    self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
                continue
            for up in pool[sent : sent + room]:
                self.publish(up)
                sent += 1
        total = sent
        with self._cond:  # the last ones, while time remains
            self._cond.wait_for(
                lambda: self.receipts - base >= total,
                timeout=max(0.0, deadline - time.monotonic()),
            )
        got = self._answered_since(base)
        end = time.monotonic() if got >= sent else deadline
        return Pumped(sent, got, end - start)

    def wait_receipts(self, count: int, timeout: float) -> int:
        """Wait until `count` downlinks arrived in all (or `timeout`); return the count."""
        with self._cond:
            self._cond.wait_for(lambda: self.receipts >= count, timeout=timeout)
            return self.receipts
