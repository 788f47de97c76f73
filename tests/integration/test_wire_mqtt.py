"""vigil.runtime.mqtt against a real mosquitto: connect, subscribe, publish, offline behaviour."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.broker import Broker, free_port, running_mosquitto
from tests.support.locked_broker import locked_broker, tls_client
from tests.support.wait import wait_until
from vigil.errors import BadConfigValue, TransportError
from vigil.provision.certs import make_broker_certs
from vigil.runtime.mqtt import LinkStatus, MqttClient, MqttSettings, Will

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


# -- a broker that cannot be reached is an error a person sees -----------------------------


def _logged(caplog: pytest.LogCaptureFixture, *needles: str) -> str:
    """The first warning from the wrapper that contains every needle ('' if none yet)."""
    for record in list(caplog.records):
        text = record.getMessage()
        if record.name == "vigil.runtime.mqtt" and all(n in text for n in needles):
            return text
    return ""


@contextmanager
def started(settings: MqttSettings) -> Iterator[MqttClient]:
    client = MqttClient(settings, on_message=lambda t, p: None)
    client.start()
    try:
        yield client
    finally:
        client.stop()


def test_closed_port_is_logged_with_reason_and_next_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="vigil.runtime.mqtt")
    port = free_port()
    with started(MqttSettings("127.0.0.1", port, "closed", reconnect_max=1)) as client:
        line = wait_until(lambda: _logged(caplog, "connection refused"), what="the log line")
        assert f"127.0.0.1:{port}" in line
        assert "mqtt.port" in line
        assert "next retry in" in line
        state = client.state
        assert state.status is LinkStatus.CONNECTING
        assert state.failures >= 1
        assert state.next_retry is not None
        assert "connection refused" in (state.last_error or "")
        assert "connection refused" in state.describe()
    assert client.state.status is LinkStatus.STOPPED


def test_misspelt_host_is_logged_as_a_name_that_does_not_resolve(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="vigil.runtime.mqtt")
    with started(MqttSettings("brokr.vigil.invalid", 8883, "typo", reconnect_max=1)):
        line = wait_until(lambda: _logged(caplog, "cannot resolve"), what="the log line")
        assert "'brokr.vigil.invalid'" in line
        assert "mqtt.host" in line


def test_state_follows_the_connection(mosquitto: Broker, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="vigil.runtime.mqtt")
    with started(settings(mosquitto, "follower", reconnect_max=1)) as client:
        assert client.wait_connected(10)
        assert client.state.status is LinkStatus.CONNECTED
        assert client.state.describe().startswith(f"connected to 127.0.0.1:{mosquitto.port}")
        mosquitto.stop()
        wait_until(lambda: _logged(caplog, "lost the connection"), what="the lost connection")
        wait_until(lambda: client.state.failures >= 2, 20, what="a failed reconnect")
        assert client.state.status is LinkStatus.CONNECTING
        mosquitto.start()
        assert client.wait_connected(20)
        assert client.state.status is LinkStatus.CONNECTED
        assert client.state.failures == 0


def test_tcp_nodelay_is_set_on_the_client_socket(mosquitto: Broker) -> None:
    with started(settings(mosquitto, "quick")) as client:
        assert client.wait_connected(10)
        sock = client._client.socket()  # paho's own socket: the option must be on it
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_wrong_password_is_logged_with_the_reason_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vigil.runtime.mqtt")
    with (
        locked_broker(tmp_path) as locked,
        tls_client(locked, "intruder", user="vigil-hub", password="wrong"),
    ):
        line = wait_until(lambda: _logged(caplog, "refused us"), what="the log line")
        assert "reason code 13" in line  # 134 bad user name or password, or 135 not authorized
        assert "mqtt.password_file" in line
        assert "next retry in" in line


def test_untrusted_certificate_is_logged_as_a_tls_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="vigil.runtime.mqtt")
    other = make_broker_certs(tmp_path / "other-ca", host="broker.vigil.test")
    with (
        locked_broker(tmp_path) as locked,
        tls_client(locked, "stranger", user=None, password=None, ca=other.ca),
    ):
        line = wait_until(lambda: _logged(caplog, "TLS"), what="the log line")
        assert "certificate" in line
        assert "mqtt.tls_ca" in line
