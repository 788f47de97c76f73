"""The sequence-restart and selective-drop attacks again, through a real mosquitto.

The hub service runs its real loop on a real MQTT connection; the wearable is
the real daemon on its own real MQTT connection. The attacker sits where the
broker forwards the wearable's messages: a transport in front of the device's
connection that drops what the attacker chooses (for the worst case it peeks
with the hub's key; a real broker could only guess, which is weaker).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.adversary.rig import Wearer
from tests.support.broker import Broker
from tests.support.device_setup import ProvisionedDevice, make_device
from tests.support.hubrig import FakeClock, running_hub, write_config
from tests.support.parties import parties
from tests.support.sinks import smtp_sink, webhook_sink
from tests.support.wait import wait_until
from vigil.device.config import load_config
from vigil.device.core import ButtonPressed, ButtonReleased, Pattern
from vigil.device.daemon import Daemon, mqtt_settings
from vigil.device.outbox import Outbox
from vigil.hub.daemon import HubService
from vigil.hub.store import AlertKind
from vigil.runtime.mqtt import MqttClient
from vigil.wire.envelope import open_uplink
from vigil.wire.messages import Kind
from vigil.wire.topics import down_topic

pytestmark = pytest.mark.integration

Rule = Callable[[bytes], bool]  # True: the broker forwards the uplink


class AttackerInFront:
    """The device's view of a broker that forwards only what `forward` allows."""

    def __init__(self, client: MqttClient, forward: Rule) -> None:
        self._client, self._forward = client, forward

    @property
    def connected(self) -> bool:
        return self._client.connected

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        if self._forward(payload):
            self._client.publish(topic, payload, qos=qos)


@contextmanager
def running_device(
    provisioned: ProvisionedDevice, broker: Broker, wearer: Wearer, forward: Rule
) -> Iterator[Daemon]:
    cfg = load_config(provisioned.config_path)
    outbox = Outbox.open(cfg.state_dir / "outbox.sqlite3")
    device = Daemon(
        cfg, keys=provisioned.device_keys, outbox=outbox, feedback=wearer,
        battery=lambda: 80, link_quality=lambda: 70, notify=lambda _: True,
    )  # fmt: skip
    client = MqttClient(
        mqtt_settings(cfg), on_message=device.on_message, on_connection=device.on_connection,
        subscriptions=[down_topic(cfg.device_id)],
    )  # fmt: skip
    device.attach(AttackerInFront(client, forward))
    client.start()
    thread = threading.Thread(target=device.run, daemon=True)
    thread.start()
    try:
        assert client.wait_connected(10)
        yield device
    finally:
        device.stop()
        thread.join(timeout=10)
        client.stop()
        outbox.close()


def hold(device: Daemon) -> None:
    """Press, and release once the hold has become an alarm (the core's own deadline)."""
    device.post(ButtonPressed(_now(device)))
    wait_until(lambda: device.core.active_alarms, 10, what="the hold to become an alarm")
    device.post(ButtonReleased(_now(device)))


def _now(device: Daemon) -> float:
    return device._clock()  # the daemon's own monotonic clock


def alerts(hub: HubService, kind: AlertKind) -> list[object]:
    with hub.store.read() as tx:
        return [a for a in tx.alerts.all() if a.kind is kind]


@pytest.fixture
def deployed(tmp_path: Path, mosquitto: Broker) -> Iterator[tuple[Path, ProvisionedDevice]]:
    with smtp_sink() as smtp, webhook_sink() as hook:
        config = write_config(tmp_path, broker=mosquitto, smtp=smtp, hook=hook)
        provisioned = make_device(
            tmp_path / "device", port=mosquitto.port, hub_keys=parties().hub,
            overrides={"alarm": {"hold_seconds": 0.3, "long_press_seconds": 0.2,
                                 "heartbeat_interval": 1.0, "undelivered_after": 2.0}},
        )  # fmt: skip
        yield config, provisioned


def test_a_rewritten_card_is_a_new_life_through_mosquitto(
    deployed: tuple[Path, ProvisionedDevice], mosquitto: Broker
) -> None:
    config, provisioned = deployed
    with running_hub(config, FakeClock()) as hub:
        with hub.store.transaction() as tx:
            keys = provisioned.device_keys.public()
            tx.devices.enroll(
                provisioned.device_id, label="Ana", public_keys=keys, now=hub.clock()
            )
        wearer = Wearer()
        with running_device(provisioned, mosquitto, wearer, lambda _: True) as device:
            hold(device)
            wait_until(lambda: Pattern.STORED in wearer.felt, 15, what="receipt A")
        for path in provisioned.state_dir.iterdir():  # the card is rewritten
            path.unlink()
        again = Wearer()
        with running_device(provisioned, mosquitto, again, lambda _: True) as device:
            hold(device)
            wait_until(lambda: len(alerts(hub, AlertKind.ALARM)) == 2, 15, what="a second alert")
            wait_until(lambda: Pattern.STORED in again.felt, 15, what="receipt A, new life")
        with hub.store.read() as tx:
            assert "device state was reset" in [e.action for e in tx.audit.entries()]


def test_alarms_dropped_heartbeats_forwarded_is_withheld_through_mosquitto(
    deployed: tuple[Path, ProvisionedDevice], mosquitto: Broker
) -> None:
    config, provisioned = deployed
    p = provisioned

    def only_heartbeats(envelope: bytes) -> bool:
        message = open_uplink(envelope, device_id=p.device_id, hub_keys=p.hub_keys,
                              lookup=lambda _: p.device_keys.public().signing)  # fmt: skip
        return message.kind is Kind.HEARTBEAT

    with running_hub(config, FakeClock()) as hub:
        with hub.store.transaction() as tx:
            tx.devices.enroll(p.device_id, label="Ana", public_keys=p.device_keys.public(),
                              now=hub.clock())  # fmt: skip
        wearer = Wearer()
        with running_device(p, mosquitto, wearer, only_heartbeats) as device:
            hold(device)
            wait_until(lambda: alerts(hub, AlertKind.WITHHELD), 15, what="a withheld alert")
            wait_until(lambda: Pattern.UNDELIVERED in wearer.felt, 15, what="not delivered yet")
        assert not alerts(hub, AlertKind.ALARM)
        assert Pattern.STORED not in wearer.felt
