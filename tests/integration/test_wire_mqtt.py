"""vigil.runtime.mqtt against a real mosquitto: connect, subscribe, publish, offline behaviour."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.broker import Broker, free_port, running_mosquitto
from tests.support.wait import wait_until
from vigil.errors import BadConfigValue, TransportError
from vigil.runtime.mqtt import MqttClient, MqttSettings, Will

pytestmark = pytest.mark.integration


class Inbox:
    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.items.append((topic, payload))


def settings(broker: Broker, client_id: str, **kw: object) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, client_id=client_id, **kw)  # type: ignore[arg-type]


def test_publish_reaches_subscriber(mosquitto: Broker) -> None:
    inbox = Inbox()
    sub = MqttClient(settings(mosquitto, "sub"), on_message=inbox, subscriptions=["t/#"])
    pub = MqttClient(settings(mosquitto, "pub"), on_message=lambda t, p: None)
    sub.start()
    pub.start()
    try:
        assert sub.wait_connected(10)
        assert pub.wait_connected(10)
        # the subscription is sent after CONNACK; publish until it is in place
        wait_until(lambda: (pub.publish("t/x", b"\x00hello"), inbox.items)[1], what="delivery")
        assert inbox.items[0] == ("t/x", b"\x00hello")
    finally:
        pub.stop()
        sub.stop()


def test_publish_while_disconnected_raises_transport_error(tmp_path: Path) -> None:
    port = free_port()
    client = MqttClient(
        MqttSettings(host="127.0.0.1", port=port, client_id="lonely", reconnect_max=1),
        on_message=lambda t, p: None,
    )
    client.start()
    try:
        with pytest.raises(TransportError, match="not connected"):
            client.publish("t", b"x")
        # the broker comes up later: the client connects by itself
        with running_mosquitto(tmp_path / "late", port=port):
            assert client.wait_connected(15)
            client.publish("t", b"x")
    finally:
        client.stop()


def test_will_is_published_when_client_vanishes(mosquitto: Broker) -> None:
    inbox = Inbox()
    watcher = MqttClient(settings(mosquitto, "watch"), on_message=inbox, subscriptions=["will/#"])
    watcher.start()
    victim = MqttClient(
        settings(mosquitto, "victim", keepalive=5, will=Will("will/victim", b"gone")),
        on_message=lambda t, p: None,
    )
    victim.start()
    try:
        assert watcher.wait_connected(10)
        assert victim.wait_connected(10)
        mosquitto.restart()  # an unclean loss of the victim's connection
        wait_until(lambda: ("will/victim", b"gone") in inbox.items, 20, what="the Will")
    finally:
        victim.stop()
        watcher.stop()


@pytest.mark.parametrize(
    ("field", "value"),
    [("host", ""), ("port", 0), ("port", 70000), ("client_id", ""), ("keepalive", 1)],
)
def test_settings_reject_bad_values(field: str, value: object) -> None:
    base: dict[str, object] = {"host": "h", "port": 1883, "client_id": "c"}
    base[field] = value
    with pytest.raises(BadConfigValue):
        MqttSettings(**base)  # type: ignore[arg-type]
